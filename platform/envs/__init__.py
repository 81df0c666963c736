"""Environments: thin adapters over `diffplatoon.sim` (PettingZoo `ParallelEnv`; RLlib adapters live beside it)."""

from diffplatoon.envs.pettingzoo_env import PlatoonParallelEnv

__all__ = ["PlatoonParallelEnv"]
