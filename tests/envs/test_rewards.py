"""Reward terms of `diffplatoon.envs.rewards`, one hand-built situation per term on real roads through
the PettingZoo env; the collision bound; the weights' validation; and the on-ramp shortcut (cutting
across the verge at full throttle) scoring below the CACC expert's merge."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.envs.episodes import resolve_scenario
from diffplatoon.envs.rewards import REWARD_TERMS
from diffplatoon.evaluation.episode import run_episode
from diffplatoon.geometry import wrap_angle
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, catalogue_names, load_scenario
from diffplatoon.sim.merge_targets import MergeTargets
from diffplatoon.sim.simulation import Simulation

Actions = Callable[[PlatoonParallelEnv], np.ndarray]


def highway(**overrides) -> ScenarioSpec:
    """A straight 2-lane highway (lane i at y = 4 i, 4 m wide, speed limit 30 m/s) without traffic."""
    data = {
        "name": "reward_test", "duration": 8,
        "road": {"type": "highway", "lanes": 2, "length": 1000},
        "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": 2, "lane": 0, "start": 200.0, "speed": 20.0, "time_gap": 1.0}],
    }
    data.update(overrides)
    return ScenarioSpec.model_validate(data)


def drive(env: PlatoonParallelEnv, act: Actions) -> list[tuple[dict, dict]]:
    """(rewards, infos) of every step of one episode, the (M, 2) SI actions from `act(env)` each step."""
    env.reset(seed=0)
    steps = []
    while env.agents:
        acts = act(env)
        _, rewards, _, _, infos = env.step({a: acts[env.possible_agents.index(a)] for a in env.agents})
        steps.append((rewards, infos))
    return steps


def coast(env: PlatoonParallelEnv) -> np.ndarray:
    return np.zeros((len(env.possible_agents), 2))


def term(steps: list[tuple[dict, dict]], agent: str, name: str) -> np.ndarray:
    return np.array([infos[agent]["reward_terms"][name] for _, infos in steps if agent in infos])


def test_progress_pays_seconds_at_the_lane_speed_limit() -> None:
    """A step at the limit pays dt × weight on a highway (30 m/s) and on a ramp (20 m/s); faster pays no more."""
    dt = 0.2
    on_limit = highway(platoons=[{"id": "p0", "size": 1, "lane": 0, "start": 200.0, "speed": 30.0}])
    faster = highway(platoons=[{"id": "p0", "size": 1, "lane": 0, "start": 200.0, "speed": 40.0}])
    slower = highway(platoons=[{"id": "p0", "size": 1, "lane": 0, "start": 200.0, "speed": 15.0}])
    ramp = resolve_scenario("onramp_merge", {"traffic": {"count": 0}, "platoons": [
        {"id": "p0", "size": 1, "lane": "ramp", "start": 100.0, "speed": 20.0, "destination": "main_out"}]})
    for spec, paid in [(on_limit, dt), (faster, dt), (slower, dt / 2), (ramp, dt)]:
        env = PlatoonParallelEnv(spec)
        env.reset(seed=0)
        _, rewards, _, _, infos = env.step({"p0.0": np.zeros(2)})
        assert infos["p0.0"]["reward_terms"]["progress"] == pytest.approx(paid * spec.reward.progress, rel=1e-6)
        assert rewards["p0.0"] == pytest.approx(sum(infos["p0.0"]["reward_terms"].values()))


def leave_the_road(env: PlatoonParallelEnv) -> np.ndarray:
    """The leader steers towards y = −8 m (the road's edge is at y = −2 m) and drives on there; the follower coasts."""
    w, rows = env.sim.world, env.sim.controlled
    acts = coast(env)
    aim = np.arctan2(-8.0 - w.y[rows[0]], 20.0)
    acts[0, 1] = np.clip(2.0 * wrap_angle(aim - w.heading[rows[0]]), -0.3, 0.3)
    return acts


def test_off_the_road_every_step_costs_offroad_and_pays_no_progress() -> None:
    spec = highway()
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    dt, w = 1 / spec.policy_frequency, spec.reward
    outside = 0
    while env.agents:
        acts = leave_the_road(env)
        _, rewards, _, _, infos = env.step({a: acts[env.possible_agents.index(a)] for a in env.agents})
        lead = env.sim.world.y[env.sim.controlled[0]]
        terms = infos["p0.0"]["reward_terms"]
        assert infos["p0.0"]["offroad"] == (lead < -2.0)  # the centre beyond the edge of lane 0
        if infos["p0.0"]["offroad"]:
            outside += 1
            assert terms["offroad"] == pytest.approx(w.offroad * dt) and terms["progress"] == 0.0
            assert rewards["p0.0"] < 0  # no step off the road pays
        else:
            assert terms["offroad"] == 0.0
        # lane keeping: the lateral offset from lane 0's centre line (y = 0) over half its width
        assert terms["lane_keeping"] == pytest.approx(w.lane_keeping * min(abs(lead) / 2.0, 2.0), abs=1e-9)
        assert infos["p0.1"]["reward_terms"]["offroad"] == 0.0
    assert outside >= 0.5 * spec.steps  # it stayed off the road, paying every step, not once


def test_lane_departure_is_the_share_of_body_corners_over_the_edge() -> None:
    spec = highway()
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    dt, weight = 1 / spec.policy_frequency, spec.reward.lane_departure
    seen = set()
    for _ in range(20):
        acts = leave_the_road(env)
        _, _, _, _, infos = env.step({a: acts[env.possible_agents.index(a)] for a in env.agents})
        w, row = env.sim.world, env.sim.controlled[0]
        c, s = np.cos(w.heading[row]), np.sin(w.heading[row])
        corner_y = [w.y[row] + lon * w.length[row] * s + lat * w.width[row] * c for lon in (0.5, -0.5) for lat in (0.5, -0.5)]
        share = np.mean(np.array(corner_y) < -2.0)  # the road's edge beside lane 0
        assert infos["p0.0"]["reward_terms"]["lane_departure"] == pytest.approx(weight * dt * share, abs=1e-12)
        assert infos["p0.1"]["reward_terms"]["lane_departure"] == 0.0  # on its lane
        if not infos["p0.0"]["offroad"]:
            seen.add(share)
    assert max(seen) > 0  # wheels over the edge cost before the centre leaves the road


def test_gap_keeping_pays_the_change_of_the_time_gap_error_and_regrouping_nets_nothing() -> None:
    spec = highway(duration=8)
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    w, rows = env.sim.world, env.sim.controlled
    desired = spec.platoons[0].desired_time_gap

    def error() -> float:  # straight lane along x: the route position is x
        gap = w.x[rows[0]] - w.x[rows[1]] - (w.length[rows[0]] + w.length[rows[1]]) / 2
        return min(abs(gap / max(w.speed[rows[1]], 1.0) - desired), 5.0)

    start, errors, paid = error(), [error()], []
    # the leader pulls away for 2 s (a split), then the follower catches up and both settle at the start speed
    plan = [([4.0, 0.0], [0.0, 0.0])] * 10 + [([-4.0, 0.0], [0.0, 0.0])] * 10 + [([0.0, 0.0], [4.0, 0.0])] * 10 \
        + [([0.0, 0.0], [-4.0, 0.0])] * 10
    for lead, follow in plan:
        _, _, _, _, infos = env.step({"p0.0": np.array(lead), "p0.1": np.array(follow)})
        errors.append(error())
        paid.append(infos["p0.1"]["reward_terms"]["gap_keeping"])
        assert paid[-1] == pytest.approx(spec.reward.gap_keeping * (errors[-1] - errors[-2]), abs=1e-9)
        assert infos["p0.0"]["reward_terms"]["gap_keeping"] == 0.0  # the leader has no predecessor
    split = int(np.argmax(errors))
    assert errors[split] > start + 0.5  # the platoon did split ...
    assert sum(paid[:split]) < 0 < sum(paid[split:])  # ... paid for falling back, was paid for closing up
    assert sum(paid) == pytest.approx(spec.reward.gap_keeping * (errors[-1] - start), abs=1e-9)
    assert errors[-1] == pytest.approx(start, abs=0.01) and sum(paid) == pytest.approx(0.0, abs=0.01)  # regrouped


def test_comfort_costs_squared_jerk() -> None:
    spec = highway()
    env = PlatoonParallelEnv(spec)
    env.reset(seed=0)
    env.step({a: np.zeros(2) for a in env.agents})
    _, _, _, _, infos = env.step({"p0.0": np.array([-4.0, 0.0]), "p0.1": np.zeros(2)})
    # jerk = −4 m/s² / 0.2 s = −20 m/s³ → (20/10)² = 4
    assert infos["p0.0"]["reward_terms"]["comfort"] == pytest.approx(4.0 * spec.reward.comfort)
    assert infos["p0.1"]["reward_terms"]["comfort"] == 0.0


def test_crash_costs_more_than_any_member_can_gain_in_an_episode() -> None:
    spec = highway(vehicles=[{"id": "wall", "lane": 0, "start": 260.0, "speed": 0.0}])
    r = spec.reward
    # the most a member could be paid: progress at the limit for the whole episode, the merge bonus,
    # and closing a 5 s time-gap error
    most = abs(r.progress) * spec.duration + r.merge + abs(r.gap_keeping) * 5.0
    steps = drive(PlatoonParallelEnv(spec), lambda env: np.tile([4.0, 0.0], (2, 1)))  # full throttle into it
    crash = [infos["p0.0"]["reward_terms"]["collision"] for _, infos in steps if infos.get("p0.0", {}).get("crashed")]
    assert len(crash) == 1 and crash[0] < -most
    stand = drive(PlatoonParallelEnv(spec), lambda env: np.tile([-8.0, 0.0], (2, 1)))  # brakes and stays
    assert not any(i["crashed"] for _, infos in stand for i in infos.values())
    crashed_return = sum(rewards["p0.0"] for rewards, _ in steps if "p0.0" in rewards)
    stand_return = sum(rewards["p0.0"] for rewards, _ in stand if "p0.0" in rewards)
    # everything the crash run gained (≤ most) does not make up for the crash (1 + most)
    assert crashed_return < -1.0 and crashed_return < stand_return


@pytest.mark.parametrize("reward, message", [
    ("collision: -0.5", "bad.yaml:6: reward.collision: expected a number between -1000.0 and -1.0, got -0.5"),
    ("progress: 2\n  offroad: -1", "bad.yaml:5: reward: expected offroad <= -|progress| = -2"),
])
def test_weights_that_would_let_a_crash_or_leaving_the_road_pay_are_refused(tmp_path: Path, reward: str,
                                                                             message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nroad: {type: highway}\nplatoons:\n  - {id: p0, size: 2, lane: 1}\n"
                    f"reward:\n  {reward}\n")
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert message in str(err.value)


@pytest.mark.parametrize("name", catalogue_names())
def test_merge_tasks_of_the_catalogue(name: str) -> None:
    """Routed platoons going to another road and platoons starting on a dropped lane merge; nobody else."""
    spec = load_scenario(name)
    sim = Simulation(spec, 0)
    targets = MergeTargets.of(sim)
    w, tab = sim.world, sim.world.table
    for k, row in enumerate(sim.controlled):
        platoon = spec.platoons[int(w.platoon[row])]
        routed = platoon.destination is not None or platoon.route is not None
        dropped = spec.road.type == "lane_drop" and platoon.lane == (spec.road.lanes - 1 if spec.road.drop_side == "right" else 0)
        assert targets.mergers[k] == (routed or dropped), sim.agent_names[k]
        assert targets.target[k].any() == targets.mergers[k]
        assert not targets.target[k, w.lane[row]]  # nobody starts merged
        assert not targets.target[k, tab.n]  # lane −1: off the road, never a target


@pytest.mark.parametrize("name, merged", [
    ("onramp_merge", lambda index: index[:2] == ("merge_end", "main_out")),  # its route's last road
    ("lane_drop", lambda index: index != ("start", "drop", 2)),  # off the lane that ends
], ids=["onramp_merge", "lane_drop"])
def test_merge_bonus_once_where_the_evaluation_counts_a_merge(name: str, merged: Callable) -> None:
    """The bonus comes once per merging member, the first step it is on a lane that counts, and the
    evaluation counts those members as merged; members with nothing to merge into never get it."""
    spec = resolve_scenario(name, {"traffic": {"density": 0}})
    env = PlatoonParallelEnv(spec)
    policy = make_policy("cacc", spec)
    policy.reset(SimInfo.from_spec(spec, 0))
    env.reset(seed=0)
    sim, tab = env.sim, env.sim.world.table
    first_merged: dict[str, int] = {}
    paid: dict[str, list[int]] = {a: [] for a in env.possible_agents}
    step = 0
    while env.agents:
        acts = policy.act(env.observation)
        _, _, _, _, infos = env.step({a: acts[env.possible_agents.index(a)] for a in env.agents})
        step += 1
        for agent, info in infos.items():
            lane = sim.world.lane[sim.controlled[env.possible_agents.index(agent)]]
            if sim.is_live(agent) and merged(tab.lane_index(lane)):
                first_merged.setdefault(agent, step)
            if info["reward_terms"]["merge"]:
                assert info["reward_terms"]["merge"] == spec.reward.merge
                paid[agent].append(step)
    mergers = [a for a in env.possible_agents if a.startswith(f"{spec.platoons[0].id}.")]  # p0 merges, p1 does not
    assert mergers and paid == {a: [first_merged[a]] if a in mergers else [] for a in env.possible_agents}
    assert run_episode(spec, "cacc", 0).record["merge_success"] == 1.0
    plain = drive(PlatoonParallelEnv(highway()), coast)
    assert not any(term(plain, a, "merge").any() for a in ("p0.0", "p0.1"))


def test_cutting_the_ramp_across_the_verge_scores_below_merging() -> None:
    """The shortcut MLP PPO found under the old reward: full throttle from the ramp straight onto the
    main road, across the verge. Without traffic (so that neither run crashes) it reaches the
    destination sooner and still scores below the CACC expert's merge through the acceleration lane."""
    spec = resolve_scenario("onramp_merge", {"traffic": {"density": 0}})
    v = spec.platoons[0].vehicle

    def cut(env: PlatoonParallelEnv) -> np.ndarray:
        w, rows = env.sim.world, env.sim.controlled
        aim = np.arctan2(4.0 - w.y[rows], 30.0)  # main lane 1 (y = 4 m), 30 m ahead
        steer = np.clip(wrap_angle(aim - w.heading[rows]), -v.max_steering, v.max_steering)
        return np.stack([np.full(len(rows), v.max_acceleration), steer], axis=1)

    policy = make_policy("cacc", spec)
    policy.reset(SimInfo.from_spec(spec, 0))
    runs = {"shortcut": drive(PlatoonParallelEnv(spec), cut),
            "merge": drive(PlatoonParallelEnv(spec), lambda env: policy.act(env.observation))}
    returns = {k: sum(sum(rewards.values()) for rewards, _ in steps) for k, steps in runs.items()}
    for k, steps in runs.items():
        assert not any(i["crashed"] for _, infos in steps for i in infos.values()), k
    shortcut = runs["shortcut"]
    assert sum(i["offroad"] for _, infos in shortcut for i in infos.values()) >= 4  # it did cross the verge ...
    assert len(shortcut) < len(runs["merge"])  # ... and got everyone to the destination sooner
    assert all(term(shortcut, a, "merge").sum() == spec.reward.merge for a in shortcut[0][1])  # bonus for both
    assert returns["shortcut"] < returns["merge"]
    assert set(REWARD_TERMS) == set(shortcut[0][1]["p0.0"]["reward_terms"])
