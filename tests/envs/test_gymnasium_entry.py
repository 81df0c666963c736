"""Gymnasium entry points: every catalogue id passes Gymnasium's own checker, the ids need one import (or
none, module-prefixed), overrides are validated like YAML, and the single-agent view is the parallel
env's members stacked (same observations, mean reward, truncation at the scenario's duration)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env, data_equivalence

import diffplatoon.envs  # noqa: F401  (registers the ids)
from diffplatoon.envs import parallel_env
from diffplatoon.envs.gym_env import PlatoonGymEnv
from diffplatoon.envs.registration import ANY_SCENARIO_ID, gym_id
from diffplatoon.scenarios import ScenarioError, catalogue_names, expand_sweep, load_scenario
from diffplatoon.scenarios.loader import resolve_source


@pytest.mark.parametrize("name", catalogue_names())
def test_check_env_passes_on_every_catalogue_id(name: str) -> None:
    env = gymnasium.make(gym_id(name))
    with warnings.catch_warnings():  # the observation Box is unbounded on purpose (speeds, distances)
        warnings.filterwarnings("ignore", message=".*Box observation space (minimum|maximum) value is")
        check_env(env.unwrapped)  # also re-makes it per render mode through env.spec
    variants, _ = expand_sweep(load_scenario(name))
    assert env.spec.max_episode_steps == max(v.steps for v in variants)
    m = variants[0].num_controlled
    assert env.action_space.shape == (2 * m,)
    assert env.observation_space.shape == (m * env.unwrapped.layout.size + m,)


def test_module_prefixed_id_needs_no_import() -> None:
    code = ("import gymnasium; env = gymnasium.make('diffplatoon.envs:diffplatoon/hard_brake-v0'); "
            "obs, _ = env.reset(seed=0); print(obs.shape[0], env.spec.max_episode_steps)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    spec = load_scenario("hard_brake")
    m = spec.num_controlled
    width = PlatoonGymEnv("hard_brake").layout.size
    assert out.stdout.split() == [str(m * width + m), str(spec.steps)]


def test_any_file_through_the_scenario_id(tmp_path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(resolve_source("cut_in")[1])
    mine, catalogue = gymnasium.make(ANY_SCENARIO_ID, scenario=str(path)), gymnasium.make(gym_id("cut_in"))
    assert data_equivalence(mine.reset(seed=4), catalogue.reset(seed=4), exact=True)
    with pytest.raises(ValueError, match="expected scenario="):
        gymnasium.make(ANY_SCENARIO_ID)


def test_overrides_are_scenario_fields_validated_like_yaml() -> None:
    env = gymnasium.make(gym_id("highway_platoon"), traffic={"density": 30}, duration=4)
    spec = env.unwrapped.engine.spec
    assert spec.traffic.density == 30 and spec.traffic.count is None  # density replaces the file's count
    assert load_scenario("highway_platoon").traffic.count is not None
    assert env.spec.max_episode_steps == 4 * spec.policy_frequency
    # a spec or a mapping takes overrides the same way
    assert PlatoonGymEnv(load_scenario("cut_in"), duration=8).engine.spec.duration == 8
    mapping = load_scenario("cut_in").model_dump(mode="json", by_alias=True, exclude_unset=True)
    assert PlatoonGymEnv(mapping, comms={"drop_probability": 0.5}).engine.spec.comms.drop_probability == 0.5
    with pytest.raises(ScenarioError) as err:
        gymnasium.make(gym_id("highway_platoon"), traffic={"density": 1000, "bogus": 1})
    assert err.value.lines == [
        "highway_platoon.yaml (with keyword overrides): traffic.bogus: unknown field; expected one of: count, "
        "density, idm, keep_density, mobil, spawn_region, speed_range, vehicle",
        "highway_platoon.yaml (with keyword overrides): traffic.density: expected a number between 0 and 150.0, got 1000",
    ]


def test_joint_view_is_the_parallel_env_stacked_and_truncates_at_the_duration() -> None:
    gym_env = gymnasium.make(gym_id("hard_brake"), duration=6).unwrapped
    par = parallel_env("hard_brake", duration=6)
    obs, info = gym_env.reset(options={"episode": 7})
    par_obs, _ = par.reset(options={"episode": 7})
    m = len(par.possible_agents)
    rng = np.random.default_rng(0)
    steps = 0
    while True:
        action = rng.uniform(-1, 1, 2 * m).astype(np.float32)
        expected = np.concatenate([par_obs[a] for a in par.possible_agents] + [np.ones(m, np.float32)])
        np.testing.assert_array_equal(obs, expected)
        obs, reward, terminated, truncated, info = gym_env.step(action)
        par_obs, par_rew, *_ = par.step({a: action[2 * i:2 * i + 2] for i, a in enumerate(par.possible_agents)})
        steps += 1
        assert reward == pytest.approx(np.mean(list(par_rew.values())))
        assert info["member_rewards"] == par_rew and info["episode_index"] == 7
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == gym_env.spec.max_episode_steps == 6 * 5


def test_seed_streams_and_sweep_variants() -> None:
    env = gymnasium.make(gym_id("dense_highway_sweep")).unwrapped
    first = [env.reset(seed=2)[1]["episode_index"]] + [env.reset()[1]["episode_index"] for _ in range(2)]
    again = [env.reset(seed=2)[1]["episode_index"]] + [env.reset()[1]["episode_index"] for _ in range(2)]
    assert first == again and first[1:] == [first[0] + 1, first[0] + 2]
    assert env.reset(seed=3)[1]["episode_index"] not in first  # another seed, another stream
    names = {env._engines[k % len(env._engines)].spec.name for k in range(len(env._engines))}
    assert len(names) == len(expand_sweep(load_scenario("dense_highway_sweep"))[0]) > 1
    env.reset(options={"episode": 1})
    assert env.engine is env._engines[1]


def test_rgb_array_render() -> None:
    env = gymnasium.make(gym_id("onramp_merge"), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0
    plain = gymnasium.make(gym_id("onramp_merge"))
    plain.reset(seed=0)
    assert plain.render() is None
