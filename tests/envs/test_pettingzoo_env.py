"""PlatoonParallelEnv: PettingZoo API and the observation layout on every catalogue scenario,
whole-episode determinism, seeding, spaces, rewards, termination and truncation."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from pettingzoo.test import parallel_api_test

from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.envs.rewards import REWARD_TERMS
from diffplatoon.scenarios import ScenarioSpec, catalogue_names, load_scenario
from diffplatoon.sim.observation import EGO_FEATURES, Observation, flat_layout


def spec_of(**overrides) -> ScenarioSpec:
    data = {
        "name": "env_test",
        "duration": 10,
        "road": {"type": "highway", "lanes": 3, "length": 1000},
        "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": 3, "lane": 1, "start": 200.0, "speed": 20.0, "time_gap": 1.0}],
    }
    data.update(overrides)
    return ScenarioSpec.model_validate(data)


@pytest.mark.parametrize("name", catalogue_names())
def test_parallel_api_on_catalogue_scenario(name: str) -> None:
    env = PlatoonParallelEnv(load_scenario(name))
    parallel_api_test(env, num_cycles=12)
    obs, _ = env.reset(seed=0)
    for agent, o in obs.items():
        assert env.observation_space(agent).contains(o)
    # each agent's vector is its row of the structured observation, read back through the layout
    for _ in range(3):
        if not env.agents:
            break
        structured = env.observation
        structured.validate()
        back = Observation.from_flat(np.stack([obs[a] for a in env.agents]), structured.layout)
        rows = [env.possible_agents.index(a) for a in env.agents]
        for f in structured.layout.fields:
            np.testing.assert_array_equal(getattr(back, f.name), getattr(structured, f.name)[rows], err_msg=f.name)
        obs, *_ = env.step({a: np.zeros(2, np.float32) for a in env.agents})


def rollout(env: PlatoonParallelEnv, seed: int, steps: int | None = None) -> list:
    """Every step's (obs, rewards, terminations, truncations, infos) under seeded random actions."""
    for i, agent in enumerate(env.possible_agents):
        env.action_space(agent).seed(seed * 100 + i)
    trace = [env.reset(seed=seed)]
    while env.agents and (steps is None or len(trace) <= steps):
        actions = {agent: env.action_space(agent).sample() for agent in env.agents}
        trace.append(env.step(actions))
    return trace


@pytest.mark.parametrize("name", ["hard_brake", "onramp_merge"])
def test_same_seed_same_whole_episode(name: str) -> None:
    spec = load_scenario(name)
    a = rollout(PlatoonParallelEnv(spec), seed=5)
    b = rollout(PlatoonParallelEnv(spec), seed=5)
    assert len(a) == len(b) > 20
    for step, (x, y) in enumerate(zip(a, b)):
        assert data_equivalence(x, y, exact=True), f"step {step} differs"
    # a different seed is a different episode (the traffic differs)
    def traffic_x(seed: int) -> np.ndarray:
        env = PlatoonParallelEnv(spec)
        env.reset(seed=seed)
        return np.sort(env.sim.world.x[env.sim.world.active_rows()])

    assert np.array_equal(traffic_x(5), traffic_x(5))
    assert not np.array_equal(traffic_x(5), traffic_x(6))


def test_seed_picks_the_episode_and_none_takes_the_next() -> None:
    spec = load_scenario("onramp_merge")
    env = PlatoonParallelEnv(spec)
    first, _ = env.reset(seed=3)
    assert env.episode == 3
    env.reset(seed=7)
    again, _ = env.reset(seed=3)
    assert data_equivalence(first, again, exact=True)
    env.reset()
    assert env.episode == 4
    shifted = PlatoonParallelEnv(spec, episode_offset=10)
    shifted.reset(seed=2)
    assert shifted.episode == 12
    direct, _ = env.reset(seed=12)
    assert data_equivalence(direct, shifted.reset(seed=2)[0], exact=True)


def test_spaces_are_cached_and_match_vehicle_limits() -> None:
    spec = spec_of()
    env = PlatoonParallelEnv(spec)
    v = spec.platoons[0].vehicle
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)
        np.testing.assert_allclose(env.action_space(agent).low, [-v.max_deceleration, -v.max_steering], rtol=1e-6)
        np.testing.assert_allclose(env.action_space(agent).high, [v.max_acceleration, v.max_steering], rtol=1e-6)
    obs, _ = env.reset(seed=0)
    sim = env.sim
    layout = flat_layout(spec.observation.neighbours, spec.observation.lane_points, *sim.inbox.data.shape[1:])
    assert layout.size == layout.slices["inbox_age"].stop == env.observation_space("p0.0").shape[0]
    assert layout.unflatten(obs["p0.1"])["ego"][EGO_FEATURES.index("member_index")] == 1.0
    # SI actions are clipped to the limits
    acts = env.scale_actions({"p0.0": [100.0, -5.0]})
    assert acts[0].tolist() == pytest.approx([v.max_acceleration, -v.max_steering])


def test_normalized_actions_scale_to_limits_keeping_zero() -> None:
    spec = spec_of(action={"normalized": True})
    env = PlatoonParallelEnv(spec)
    v = spec.platoons[0].vehicle
    assert env.action_space("p0.0").low.tolist() == [-1.0, -1.0]
    acts = env.scale_actions({"p0.0": [1.0, -1.0], "p0.1": [-0.5, 0.5], "p0.2": [0.0, 0.0]})
    assert acts[0].tolist() == pytest.approx([v.max_acceleration, -v.max_steering])
    assert acts[1].tolist() == pytest.approx([-0.5 * v.max_deceleration, 0.5 * v.max_steering])
    assert acts[2].tolist() == [0.0, 0.0]


def test_reward_terms_by_hand_at_constant_speed() -> None:
    spec = spec_of()
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    _, rewards, _, _, infos = env.step({a: np.zeros(2) for a in env.agents})
    dt = 1 / spec.policy_frequency
    terms = infos["p0.1"]["reward_terms"]
    assert set(terms) == set(REWARD_TERMS)
    # 20 m/s for 0.2 s = 4 m of progress at a 30 m/s limit → 4/30 s × weight 1.0
    assert terms["progress"] == pytest.approx(20.0 * dt / 30.0 * spec.reward.progress, rel=1e-6)
    # equal speeds keep the time gap (1.1 s vs 1.0 s desired): its error does not change, nothing is paid
    assert terms["gap_keeping"] == pytest.approx(0.0, abs=1e-6)
    assert infos["p0.0"]["reward_terms"]["gap_keeping"] == 0.0  # the leader has no predecessor
    assert terms["comfort"] == 0.0 and terms["lane_keeping"] == pytest.approx(0.0, abs=1e-9)
    assert terms["collision"] == 0.0 and terms["offroad"] == 0.0 and terms["lane_departure"] == 0.0
    assert terms["merge"] == 0.0  # nothing to merge into on a straight highway
    assert rewards["p0.1"] == pytest.approx(sum(terms.values()))
    # braking now costs comfort: jerk = −4 m/s² / 0.2 s = −20 m/s³ → (20/10)² = 4
    _, _, _, _, infos = env.step({a: np.array([-4.0, 0.0]) for a in env.agents})
    assert infos["p0.0"]["reward_terms"]["comfort"] == pytest.approx(4.0 * spec.reward.comfort)


def test_crashed_member_is_terminated_and_removed() -> None:
    spec = spec_of(vehicles=[{"id": "wall", "lane": 1, "start": 208.0, "speed": 0.0}])
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    _, rewards, terminations, truncations, infos = env.step({a: np.zeros(2) for a in env.agents})
    assert terminations["p0.0"] and infos["p0.0"]["crashed"]
    assert not terminations["p0.1"] and not any(truncations.values())
    assert infos["p0.0"]["reward_terms"]["collision"] == pytest.approx(spec.reward.collision * env.reward_fn.crash_cost)
    assert rewards["p0.0"] < spec.reward.collision * spec.duration * spec.reward.progress  # more than all progress
    assert env.agents == ["p0.1", "p0.2"]


@pytest.mark.parametrize("start", [296.5, 299.0], ids=["in_the_last_frame", "in_the_first_frame"])
def test_departed_member_is_terminated(start: float) -> None:
    # 20 m/s = 1.33 m per frame: the leader passes the road end (300 m) in the step's last frame (from 296.5 m)
    # or in its first (from 299 m)
    spec = spec_of(road={"type": "highway", "lanes": 3, "length": 300},
                   platoons=[{"id": "p0", "size": 2, "lane": 1, "start": start, "speed": 20.0}])
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    obs, _, terminations, _, infos = env.step({a: np.zeros(2) for a in env.agents})
    assert terminations == {"p0.0": True, "p0.1": False}
    assert infos["p0.0"]["departed"] and not infos["p0.0"]["crashed"]
    assert np.all(obs["p0.0"] == 0.0)
    assert env.agents == ["p0.1"]


def test_time_limit_truncates_every_remaining_agent() -> None:
    spec = spec_of(duration=1.0)
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    for step in range(spec.steps):
        _, _, terminations, truncations, infos = env.step({a: np.zeros(2) for a in env.agents})
    assert all(truncations.values()) and not any(terminations.values())
    assert set(truncations) == set(env.possible_agents)
    assert env.agents == []
    assert infos["p0.0"]["time"] == pytest.approx(spec.duration)
