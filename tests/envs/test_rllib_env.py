"""PlatoonMultiAgentEnv: RLlib's own env checker and episode bookkeeping on every catalogue scenario,
both groupings, faithfulness to the PettingZoo env's rewards, observation layout, and seeding."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import data_equivalence
from ray.rllib.env.env_context import EnvContext
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from ray.rllib.utils.pre_checks.env import check_multiagent_environments

from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv
from diffplatoon.envs.rllib_env import EPISODES_PER_STREAM, PlatoonMultiAgentEnv
from diffplatoon.scenarios import catalogue_names, load_scenario, validate_data
from diffplatoon.scenarios.schema import ActionSpec

GROUPINGS = ("vehicle", "platoon")

SMALL = {
    "name": "rllib_env_small", "seed": 2, "duration": 6,
    "road": {"type": "highway", "lanes": 2, "length": 600},
    "traffic": {"count": 2},
    "platoons": [
        {"id": "a", "size": 3, "lane": 0, "start": 150.0, "speed": 20.0, "time_gap": 1.0},
        {"id": "b", "size": 2, "lane": 1, "start": 100.0, "speed": 20.0, "time_gap": 1.0},
    ],
}


def play(env: PlatoonMultiAgentEnv, seed: int, scale: float = 1.0, options: dict | None = None) -> list:
    """(reset result, then (actions, step result, env.agents after it) per step) of one random episode."""
    rng = np.random.default_rng(seed)
    trace: list = [env.reset(seed=seed, options=options)]
    obs = trace[0][0]
    assert set(obs) == set(env.agents)
    acting = set(obs)
    while True:
        actions = {a: np.clip(scale * rng.standard_normal(env.action_spaces[a].shape), -1, 1).astype(np.float32)
                   for a in sorted(acting)}
        result = env.step(actions)
        trace.append((actions, result, list(env.agents)))
        # RLlib asks agents with an observation that are not done (a finished agent's final obs is data only)
        acting = {a for a in result[0] if not (result[2][a] or result[3][a])}
        if result[2]["__all__"] or result[3]["__all__"]:
            return trace


@pytest.mark.parametrize("grouping", GROUPINGS)
@pytest.mark.parametrize("name", catalogue_names())
def test_rllib_env_checker_passes(name: str, grouping: str) -> None:
    env = PlatoonMultiAgentEnv({"scenario": name, "grouping": grouping})
    check_multiagent_environments(env)
    assert env.possible_agents == (env.members if grouping == "vehicle" else env.platoon_ids)


@pytest.mark.parametrize("name", catalogue_names())
def test_episode_consistency_on_catalogue_scenario(name: str) -> None:
    """A whole random episode per grouping obeys every rule RLlib's episode bookkeeping enforces."""
    for grouping in GROUPINGS:
        env = PlatoonMultiAgentEnv({"scenario": name, "grouping": grouping})
        possible = set(env.possible_agents)
        # RLlib's own episode object raises on: a reward missing for an agent that acted, data after done,
        # a truncated agent without a final observation.
        episode = MultiAgentEpisode(
            observation_space={a: env.get_observation_space(a) for a in env.possible_agents},
            action_space={a: env.get_action_space(a) for a in env.possible_agents},
            agent_to_module_mapping_fn=lambda agent, ep: "shared",
        )
        trace = play(env, seed=1)
        obs, infos = trace[0]
        episode.add_env_reset(observations=obs, infos=infos)
        assert set(obs) == possible
        done: set[str] = set()
        steps = len(trace) - 1
        for t, (actions, (obs, rewards, terms, truncs, infos), agents) in enumerate(trace[1:], start=1):
            for d in (obs, rewards, terms, truncs, infos):
                assert set(d) - {"__all__"} <= possible
            assert set(rewards) == set(actions), "every agent that acted gets a reward, nobody else"
            assert not (set(obs) | set(rewards)) & done, "no data after done"
            assert all(np.isfinite(r) and isinstance(r, float) for r in rewards.values())
            for agent, o in obs.items():
                assert env.observation_spaces[agent].contains(o), (name, grouping, agent)
            finished = {a for a in actions if terms[a] or truncs[a]}
            assert not any(terms[a] and truncs[a] for a in actions)
            done |= finished
            live = set(actions) - finished
            assert set(agents) == live == set(obs) - finished
            last = t == steps
            assert terms["__all__"] == (last and not truncs["__all__"])
            if truncs["__all__"]:
                assert last and t == env.spec.steps
                assert live == set(), "truncation ends every remaining agent"
                assert {a for a in actions if truncs[a]} <= set(obs), "final obs for every truncated agent"
            if terms["__all__"]:
                assert done == possible or not live
            episode.add_env_step(obs, actions, rewards, infos, terminateds=terms, truncateds=truncs)
        assert episode.is_done
        assert terms["__all__"] or truncs["__all__"]
        assert env.last_episode_stats is not None and env.last_episode_stats["steps"] == steps
        with pytest.raises(RuntimeError):
            env.step({})


def test_vehicle_rewards_match_the_pettingzoo_env() -> None:
    """The RLlib env regroups the PettingZoo env's results: same episode, same actions → same rewards."""
    env = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "vehicle"})
    trace = play(env, seed=4, scale=0.3)
    spec = validate_data(dict(SMALL), "<test>").model_copy(update={"action": ActionSpec(normalized=True)})
    pz = PlatoonParallelEnv(spec)
    pz.reset(options={"episode": env.episode})
    for actions, (obs, rewards, terms, truncs, _), _ in trace[1:]:
        p_obs, p_rew, p_term, p_trunc, _ = pz.step(actions)
        assert rewards == p_rew
        for a in obs:
            np.testing.assert_array_equal(obs[a]["obs"], p_obs[a])
            assert terms[a] == p_term[a]


def test_platoon_grouping_layout_and_rewards() -> None:
    env = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "platoon"})
    obs, _ = env.reset(seed=0)
    assert env.possible_agents == ["a", "b"] and env.n_max == 3
    b = obs["b"]
    np.testing.assert_array_equal(b["member_mask"], [1, 1, 0])
    assert b["obs"].shape == (3, env.obs_dim) and not b["obs"][2].any()
    assert b["comm_mask"][:2, :2].diagonal().all() and not b["comm_mask"][2].any() and not b["comm_mask"][:, 2].any()
    assert env.action_spaces["a"].shape == (6,)
    # The platoon's reward is the mean of its members' rewards (mean is the default aggregate).
    actions = {pid: np.zeros(6, np.float32) for pid in obs}
    _, rewards, _, _, infos = env.step(actions)
    for pid in ("a", "b"):
        members = infos[pid]["member_rewards"]
        assert len(members) == (3 if pid == "a" else 2)
        assert rewards[pid] == pytest.approx(np.mean(list(members.values())))
    with pytest.raises(ValueError, match="groupin"):  # a typo in env_config is an error, not a default
        PlatoonMultiAgentEnv({"scenario": SMALL, "groupin": "platoon"})
    summed = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "platoon", "platoon_reward": "sum"})
    summed.reset(seed=0)
    _, s_rewards, _, _, s_infos = summed.step(actions)
    assert s_rewards["a"] == pytest.approx(sum(s_infos["a"]["member_rewards"].values()))


def test_action_chunks_run_as_single_policy_steps() -> None:
    """act_steps T: one env step with T stacked joint actions = T single steps with the same actions (rewards
    summed, same final observation and episode end; the
    last chunk of the 30-step episode stops after 2 steps); RLlib's env checker accepts the chunked spaces."""
    chunked = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "platoon", "act_steps": 4})
    single = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "platoon"})
    assert chunked.action_spaces["a"].shape == (4 * 6,)
    check_multiagent_environments(chunked)
    obs_c, _ = chunked.reset(seed=3)
    obs_s, _ = single.reset(seed=3)
    rng = np.random.default_rng(0)
    policy_steps = 0
    while True:
        actions = {a: np.clip(0.5 * rng.standard_normal(chunked.action_spaces[a].shape), -1, 1).astype(np.float32)
                   for a in chunked.agents}
        obs_c, rew_c, term_c, trunc_c, info_c = chunked.step(actions)
        total = dict.fromkeys(rew_c, 0.0)
        crashed: dict[str, list] = {a: [] for a in rew_c}
        for k in range(4):
            sub = {a: act.reshape(4, 6)[k] for a, act in actions.items() if a in single.agents}
            obs_s, rew_s, term_s, trunc_s, info_s = single.step(sub)
            policy_steps += 1
            for a, r in rew_s.items():
                total[a] += r
                crashed[a] += info_s[a]["crashed"]
            if term_s["__all__"] or trunc_s["__all__"]:
                break
        assert rew_c == pytest.approx(total)
        assert {a: i["crashed"] for a, i in info_c.items()} == crashed
        assert set(obs_c) == set(obs_s) and (term_c, trunc_c) == (term_s, trunc_s)
        for a in obs_c:
            for key in obs_c[a]:
                np.testing.assert_array_equal(obs_c[a][key], obs_s[a][key])
        if term_c["__all__"] or trunc_c["__all__"]:
            break
    assert chunked.last_episode_stats == single.last_episode_stats
    assert chunked.last_episode_stats["steps"] == policy_steps
    with pytest.raises(ValueError, match="act_steps 2 needs grouping 'platoon'"):
        PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "vehicle", "act_steps": 2})


def test_vehicle_state_is_the_platoon_joint_observation() -> None:
    env = PlatoonMultiAgentEnv({"scenario": SMALL, "grouping": "vehicle"})
    obs, _ = env.reset(seed=0)
    n, d = env.n_max, env.obs_dim
    state = obs["b.1"]["state"]
    np.testing.assert_array_equal(state[d:2 * d], obs["b.1"]["obs"])  # member 1's slot holds its own obs
    np.testing.assert_array_equal(state[:d], obs["b.0"]["obs"])
    np.testing.assert_array_equal(state[n * d:n * d + n], [1, 1, 0])  # member mask
    np.testing.assert_array_equal(state[n * d + n:], [0, 1, 0])  # which member this is


def test_same_seed_same_episode_and_runners_draw_different_episodes() -> None:
    a = play(PlatoonMultiAgentEnv({"scenario": "hard_brake"}), seed=7)
    b = play(PlatoonMultiAgentEnv({"scenario": "hard_brake"}), seed=7)
    assert len(a) == len(b) > 10
    for t, (x, y) in enumerate(zip(a, b)):
        assert data_equivalence(x, y, exact=True), f"step {t} differs"

    env = PlatoonMultiAgentEnv({"scenario": "hard_brake"})
    env.reset(seed=3)
    first = env.episode
    env.reset()
    assert env.episode == first + 1  # an unseeded reset takes the next episode of the stream
    # RLlib seeds runner w's k-th vector copy with seed + w + k; (worker, seed) pairs never collide.
    seen = set()
    for worker in range(3):
        for k in range(3):
            e = PlatoonMultiAgentEnv(EnvContext({"scenario": "hard_brake"}, worker_index=worker))
            e.reset(seed=10 + worker + k)
            seen.add(e.episode)
    assert len(seen) == 9
    env.reset(options={"episode": 42})
    assert env.episode == 42
    assert EPISODES_PER_STREAM > env.spec.steps


def test_sweep_variants_cycle_per_episode() -> None:
    env = PlatoonMultiAgentEnv({"scenario": "dense_highway_sweep", "duration": 1})
    names = set()
    for episode in range(3):
        env.reset(options={"episode": episode})
        names.add(env.spec.name)
    assert len(names) == 3
    assert load_scenario("dense_highway_sweep").sweep  # the catalogue entry really is a sweep


def _cacc_episode_stats(scenario, coast: bool = False) -> dict[str, float]:
    """The vehicle-grouped env's `last_episode_stats` of episode 0 driven by the CACC expert (normalised actions),
    or with `coast` by zero actions (speed held, wheel straight)."""
    from diffplatoon.agents.policy import SimInfo, make_policy

    env = PlatoonMultiAgentEnv({"scenario": scenario, "grouping": "vehicle"})
    env.reset(seed=0)
    engine = env.engine
    policy = make_policy("cacc", env.spec)
    policy.reset(SimInfo.from_spec(env.spec, env.episode))
    low, high = engine._low, engine._high
    while env.agents:
        si = policy.act(engine.observation) * (not coast)
        norm = np.where(si < 0, -si / low, si / high)
        env.step({a: norm[engine.possible_agents.index(a)].astype(np.float32) for a in env.agents})
    return env.last_episode_stats


def test_episode_stats_give_the_share_of_mergers_that_merged() -> None:
    """lane_drop without traffic under CACC: every member of the platoon on the dropped lane merges (1.0, as the
    evaluation counts it), coasting none of them (they drive off the lane's end); a scenario without merge tasks
    has no merge_success."""
    from diffplatoon.envs.episodes import resolve_scenario

    spec = resolve_scenario("lane_drop", {"traffic": {"density": 0}})
    assert _cacc_episode_stats(spec)["merge_success"] == 1.0
    assert _cacc_episode_stats(spec, coast=True)["merge_success"] == 0.0
    assert "merge_success" not in _cacc_episode_stats(SMALL)
