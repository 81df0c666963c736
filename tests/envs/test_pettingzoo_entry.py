"""PettingZoo entry points: `parallel_env()` and `env()` (the AEC view) pass PettingZoo's API tests on
every catalogue scenario, take scenario overrides, default to normalized actions; (slow) SuperSuit's
vector-env conversion drives them under Stable-Baselines3."""

from __future__ import annotations

import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test

from diffplatoon.envs import env, parallel_env
from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv, action_limits
from diffplatoon.scenarios import ScenarioError, catalogue_names, load_scenario


@pytest.mark.parametrize("name", catalogue_names())
def test_api_tests_pass_on_every_catalogue_scenario(name: str) -> None:
    api_test(env(scenario=name), num_cycles=8)
    parallel_api_test(parallel_env(scenario=name), num_cycles=8)


def test_overrides_and_action_scaling() -> None:
    par = parallel_env("highway_platoon", platoons=[{"id": "a", "size": 2, "lane": 1, "start": 200.0}], duration=3)
    assert par.possible_agents == ["a.0", "a.1"] and par.spec.duration == 3
    assert par.action_space("a.0").low.tolist() == [-1.0, -1.0] and par.action_space("a.0").high.tolist() == [1.0, 1.0]
    si = parallel_env("highway_platoon", normalize_actions=False)
    low, high = action_limits(load_scenario("highway_platoon"))
    np.testing.assert_array_equal(si.action_space("p0.0").low, low[0].astype(np.float32))
    np.testing.assert_array_equal(si.action_space("p0.0").high, high[0].astype(np.float32))
    # the scenario's own setting, as the class keeps it
    assert PlatoonParallelEnv(load_scenario("highway_platoon")).action_space("p0.0") == si.action_space("p0.0")
    with pytest.raises(ScenarioError, match=r"\(with keyword overrides\): platoons\[0\]\.size: expected an integer"):
        parallel_env("highway_platoon", platoons=[{"id": "a", "size": 99}])


def test_aec_view_plays_the_parallel_episode() -> None:
    """Zero actions through the AEC view give the same rewards as through the parallel env."""
    aec, par = env("highway_platoon", duration=2), parallel_env("highway_platoon", duration=2)
    aec.reset(seed=1)
    _, _ = par.reset(seed=1)
    while par.agents:
        _, par_rew, *_ = par.step({a: np.zeros(2, np.float32) for a in par.agents})
        for _ in range(len(aec.agents)):
            aec.step(np.zeros(2, np.float32) if not (aec.terminations[aec.agent_selection]
                                                      or aec.truncations[aec.agent_selection]) else None)
        assert {a: aec.rewards[a] for a in par_rew} == pytest.approx(par_rew)


@pytest.mark.slow
def test_supersuit_vector_env_trains_under_sb3() -> None:
    ss = pytest.importorskip("supersuit")
    sb3 = pytest.importorskip("stable_baselines3")
    # SuperSuit's vector env needs every agent present until the episode ends (its black_death_v3 of
    # 3.11 never ends an episode): a straight highway where nobody departs, crashed members staying on
    par = parallel_env("highway_platoon", duration=4, safety={"terminate_on_collision": False})
    vec = ss.concat_vec_envs_v1(ss.pettingzoo_env_to_vec_env_v1(par), 2, num_cpus=0, base_class="stable_baselines3")
    m = len(par.possible_agents)
    assert vec.num_envs == 2 * m
    obs = vec.reset()
    assert obs.shape == (2 * m, par.observation_space("p0.0").shape[0])
    # SuperSuit's vector env has no seed() for SB3 to call: seed torch and numpy, not the env
    sb3.common.utils.set_random_seed(0)
    model = sb3.PPO("MlpPolicy", vec, n_steps=32, batch_size=64, n_epochs=1, device="cpu")
    model.learn(total_timesteps=2 * m * 32 * 2)  # two rollouts of 32 steps: episodes (20 steps) end and restart
    assert model.num_timesteps == 2 * m * 64
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (2 * m, 2) and np.all(np.abs(actions) <= 1.0)
