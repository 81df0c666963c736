"""RLlib env names: after `register_rllib_envs()`, "diffplatoon-vehicle" and "diffplatoon-platoon" build
`PlatoonMultiAgentEnv` with their grouping, through RLlib's own env runner from a `PPOConfig`, keeping
the runner's worker index (episode streams); a conflicting grouping is refused."""

from __future__ import annotations

import pytest
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.env.env_context import EnvContext
from ray.rllib.env.multi_agent_env_runner import MultiAgentEnvRunner
from ray.rllib.utils.pre_checks.env import check_multiagent_environments
from ray.tune.registry import ENV_CREATOR, _global_registry

from diffplatoon.agents.rllib.mlp_module import SharedMLPModule
from diffplatoon.envs.episodes import EPISODES_PER_STREAM, MAX_WORKERS
from diffplatoon.envs.rllib_env import PlatoonMultiAgentEnv, register_rllib_envs


def test_ppo_config_builds_the_vehicle_env_by_name() -> None:
    assert register_rllib_envs() == ("diffplatoon-platoon", "diffplatoon-vehicle")
    config = (PPOConfig()
              .environment("diffplatoon-vehicle", env_config={"scenario": "hard_brake"})
              .env_runners(num_env_runners=0, num_envs_per_env_runner=1)
              .multi_agent(policies={"vehicle"}, policy_mapping_fn=lambda agent_id, episode=None, **kw: "vehicle")
              .rl_module(rl_module_spec=MultiRLModuleSpec(
                  rl_module_specs={"vehicle": RLModuleSpec(module_class=SharedMLPModule, model_config={})})))
    runner = MultiAgentEnvRunner(config=config)
    env = runner.env.unwrapped.envs[0].unwrapped
    assert isinstance(env, PlatoonMultiAgentEnv) and env.grouping == "vehicle" and env.spec.name == "hard_brake"
    episodes = runner.sample(num_timesteps=12, random_actions=True)
    assert sum(e.env_steps() for e in episodes) >= 12
    assert set(episodes[0].agent_ids) == set(env.members)


@pytest.mark.parametrize("name,grouping", [("diffplatoon-platoon", "platoon"), ("diffplatoon-vehicle", "vehicle")])
def test_each_name_has_its_grouping_and_keeps_the_worker_index(name: str, grouping: str) -> None:
    register_rllib_envs()
    creator = _global_registry.get(ENV_CREATOR, name)
    env = creator(EnvContext({"scenario": "cut_in"}, worker_index=3))
    assert env.grouping == grouping
    check_multiagent_environments(env)
    env.reset(seed=1)
    assert env.episode == (1 * MAX_WORKERS + 3) * EPISODES_PER_STREAM
    other = "vehicle" if grouping == "platoon" else "platoon"
    with pytest.raises(ValueError, match=f"uses grouping '{grouping}', got env_config grouping '{other}'"):
        creator(EnvContext({"scenario": "cut_in", "grouping": other}, worker_index=0))
