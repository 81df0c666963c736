"""Environments: thin adapters over `diffplatoon.sim` (PettingZoo `ParallelEnv` and its AEC view, a
single-agent Gymnasium env, RLlib adapters beside them). Importing this package registers the
Gymnasium ids `diffplatoon/<catalogue name>-v0` and `diffplatoon/scenario-v0` (`registration`)."""

from diffplatoon.envs.gym_env import PlatoonGymEnv
from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv, env, parallel_env
from diffplatoon.envs.registration import register_gymnasium_envs

register_gymnasium_envs()

__all__ = ["PlatoonGymEnv", "PlatoonParallelEnv", "env", "parallel_env", "register_gymnasium_envs"]
