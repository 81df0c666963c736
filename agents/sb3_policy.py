"""`sb3:<model.zip>` policies: a Stable-Baselines3 PPO/A2C `MlpPolicy` trained on a Gymnasium id of
`diffplatoon.envs.gym_env`, as a batched `Policy` for the evaluator (needs the `sb3` extra).

The zip that `model.save()` writes is read without SB3's loader, which unpickles the objects in it
(spaces, schedules, the policy class) and so can run code: only its weights (``policy.pth``, read
with torch's weights-only loader) and plain JSON fields of ``data`` are used. The network is rebuilt
as an `ActorCriticPolicy` on the scenario's own spaces (`PlatoonGymEnv`), its hidden widths read from
the weights' shapes and its activation from the saved ``policy_kwargs`` (default Tanh, as SB3's),
and loaded strictly: a zip of another algorithm or architecture is a one-line `CheckpointError`.
Observation normalisation (`VecNormalize`) is not part of the zip and not supported.

Actions are deterministic (the Gaussian mean clipped to the action space, as `model.predict`), for
the joint observation of all members (`gym_env.joint_observation`), then scaled to SI units as the
env scales them (`pettingzoo_env.to_si`): a model trained with ``normalize_actions=True`` (the
default) acts in [-1, 1], one trained without it in the scenario's SI bounds.

Parameters (``sb3:path`` plus keyword params of `make_policy`): ``torch_threads`` (default 1).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffplatoon.agents.policy import CheckpointError, Policy, SimInfo, load_tensors
from diffplatoon.envs.gym_env import PlatoonGymEnv, joint_observation
from diffplatoon.envs.pettingzoo_env import action_limits, to_si
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import Observation

__all__ = ["SB3Policy", "make_sb3_policy"]

_WHAT = "Stable-Baselines3 model zip (model.save() of PPO or A2C with MlpPolicy)"
_ACTIVATIONS = {"Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU, "ELU": torch.nn.ELU, "LeakyReLU": torch.nn.LeakyReLU,
                "GELU": torch.nn.GELU, "SiLU": torch.nn.SiLU}


class _Member(io.BytesIO):
    """A zip member's bytes, named like a path in `load_tensors`' messages."""

    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name

    def __str__(self) -> str:
        return self.name


def read_model_zip(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(policy weights, plain JSON fields of `data`) of an SB3 model zip; nothing in it is unpickled."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            missing = [n for n in ("data", "policy.pth") if n not in names]
            if missing:
                raise CheckpointError(f"{path}: not a {_WHAT} (no {' or '.join(missing)} in it)")
            weights = load_tensors(_Member(archive.read("policy.pth"), f"{path}:policy.pth"), _WHAT)
            data = json.loads(archive.read("data").decode("utf-8"))
    except (OSError, zipfile.BadZipFile, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a {_WHAT} ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a {_WHAT} (its data is not a JSON object)")
    return weights, data


def _hidden(weights: dict[str, torch.Tensor], net: str) -> list[int]:
    """Hidden widths of `mlp_extractor.<net>` (Linear layers at even indices of its Sequential)."""
    pattern = re.compile(rf"mlp_extractor\.{net}\.(\d+)\.weight")
    layers = sorted((int(m.group(1)), w.shape[0]) for k, w in weights.items() if (m := pattern.fullmatch(k)))
    return [width for _, width in layers]


def _activation(data: dict[str, Any]) -> type[torch.nn.Module]:
    """The activation named (as plain text) in the saved policy_kwargs; SB3's default Tanh otherwise."""
    kwargs = data.get("policy_kwargs")
    text = str(kwargs.get("activation_fn", "")) if isinstance(kwargs, dict) else ""
    name = text.rsplit(".", 1)[-1].rstrip("'>")
    return _ACTIVATIONS.get(name, torch.nn.Tanh)


def _normalized(data: dict[str, Any]) -> bool:
    """Whether the saved action space is [-1, 1] (its plain-text bounds)."""
    space = data.get("action_space")
    return isinstance(space, dict) and space.get("low_repr") == "-1.0" and space.get("high_repr") == "1.0"


class SB3Policy(Policy):
    """A Stable-Baselines3 actor-critic acting for every member at once (see the module docstring)."""

    name = "sb3"
    version = "1"

    def __init__(self, spec: ScenarioSpec, path: Path, torch_threads: int = 1):
        weights, data = read_model_zip(path)  # refuses a foreign file before SB3 is even imported
        from stable_baselines3.common.policies import ActorCriticPolicy

        torch.set_num_threads(int(torch_threads))
        self.normalized = _normalized(data)
        env = PlatoonGymEnv(spec, normalize_actions=self.normalized)
        net_arch = {"pi": _hidden(weights, "policy_net"), "vf": _hidden(weights, "value_net")}
        self.policy = ActorCriticPolicy(env.observation_space, env.action_space, lambda _: 0.0,
                                        net_arch=net_arch, activation_fn=_activation(data))
        try:
            self.policy.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: not a {_WHAT} for scenario {spec.name!r} with {len(env.agent_names)} "
                                  f"members ({first})") from None
        self.policy.eval()
        self._low, self._high = action_limits(spec)
        self.name = f"sb3:{path}"

    def reset(self, info: SimInfo) -> None:
        """Nothing to clear: the policy is memoryless and deterministic."""

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        action, _ = self.policy.predict(joint_observation(obs), deterministic=True)
        actions = to_si(np.asarray(action, np.float64).reshape(-1, 2), self._low, self._high, normalized=self.normalized)
        alive = obs.alive if obs.alive is not None else np.ones(len(actions), dtype=bool)
        return np.where(alive[:, None], actions, 0.0)


def make_sb3_policy(spec: ScenarioSpec, argument: str | None, **params: Any) -> Policy:
    """Factory of ``sb3:<model.zip>`` for `diffplatoon.agents.policy.make_policy`."""
    if not argument:
        raise ValueError("expected sb3:<model.zip>, got no path")
    path = Path(argument)
    if not path.is_file():
        raise CheckpointError(f"{path}: not a {_WHAT} (no such file)")
    return SB3Policy(spec, path, **params)
