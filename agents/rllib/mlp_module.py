"""`SharedMLPModule`: parameter-shared Gaussian MLP actor on a member's own observation, centralized critic on the platoon state.

The vehicle grouping of `PlatoonMultiAgentEnv` hands every member a Dict observation
``{"obs": own flat observation, "state": platoon joint state}``; one module serves all members
(CTDE: decentralized execution, the critic sees the whole platoon, one row per agent-step, so the
stock PPO learner and GAE work unchanged while members crash or leave).

Inputs go through symlog (sign(x)·log(1 + |x|)) instead of a running normaliser: the raw features
mix metres up to 1000 and unit flags, and a stateless squash keeps the checkpoint self-contained
and the evaluator's inputs identical to training's.

The critic's output is the value in symlog units (value = symexp(output)), so returns of −50 to −300
are reached in a few updates from an initial output near 0.

Actions: diagonal Gaussian, mean from the actor, a learned state-independent log std
(``action_dist_inputs`` = [mean, log_std]); deterministic inference returns the mean.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.rllib.core.columns import Columns
from ray.rllib.core.distribution.torch.torch_distribution import TorchDiagGaussian
from ray.rllib.core.rl_module.apis import InferenceOnlyAPI, ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn


class MLPModuleConfig(BaseModel):
    """`model_config` of `SharedMLPModule`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor_hiddens: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        [64, 64], min_length=1, max_length=16, description="Hidden widths of the actor.")
    critic_hiddens: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        [128, 128], min_length=1, max_length=16, description="Hidden widths of the critic.")
    init_log_std: float = Field(-0.5, ge=-5, le=2, description="Initial log std of the Gaussian actions.")
    min_log_std: float = Field(-5.0, ge=-20, le=2, description="Floor of the log std.")


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·log(1 + |x|): bounded growth for inputs of very different scales."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def symexp(x: torch.Tensor) -> torch.Tensor:
    """sign(x)·(exp(|x|) − 1), the inverse of `symlog`."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def _mlp(sizes: list[int], out: int, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, gain=2**0.5)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    head = nn.Linear(sizes[-1], out)
    nn.init.orthogonal_(head.weight, gain=out_gain)
    nn.init.zeros_(head.bias)
    return nn.Sequential(*layers, head)


class SharedMLPModule(TorchRLModule, ValueFunctionAPI, InferenceOnlyAPI):
    """MLP PPO module for the vehicle grouping (see the module docstring)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        # RLlib merges its own defaults (e.g. vf_share_layers) into model_config; read only ours.
        ours = {k: v for k, v in (self.model_config or {}).items() if k in MLPModuleConfig.model_fields}
        cfg = MLPModuleConfig.model_validate(ours)
        self.cfg = cfg
        obs_dim = int(self.observation_space["obs"].shape[0])
        act_dim = int(self.action_space.shape[0])
        self.actor = _mlp([obs_dim, *cfg.actor_hiddens], act_dim, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(cfg.init_log_std)))
        if not self.inference_only:
            state_dim = int(self.observation_space["state"].shape[0])
            self.critic = _mlp([state_dim, *cfg.critic_hiddens], 1, out_gain=1.0)
        self.action_dist_cls = TorchDiagGaussian

    def action_mean(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, act_dim) mean action of the members' own flat observations (B, obs_dim)."""
        return self.actor(symlog(obs))

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        mean = self.action_mean(batch[Columns.OBS]["obs"])
        log_std = self.log_std.clamp(min=self.cfg.min_log_std).expand_as(mean)
        return {Columns.ACTION_DIST_INPUTS: torch.cat([mean, log_std], dim=-1)}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return symexp(self.critic(symlog(batch[Columns.OBS]["state"])).squeeze(-1))

    @override(InferenceOnlyAPI)
    def get_non_inference_attributes(self) -> list[str]:
        return ["critic"]
