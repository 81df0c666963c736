"""`rllib:<checkpoint>` policies: an RLlib training checkpoint as a batched `Policy` for the evaluator.

The argument is a checkpoint folder (``runs/ppo_mlp/checkpoint_000030``) or a run folder (its newest
checkpoint). The checkpoint's ``diffplatoon.json`` says which module kind made it; `POLICIES` maps
the kind to the class that acts with it ("mlp": `VehicleMLPPolicy`, "diffusion": `PlatoonDiffusionPolicy`,
which plans per platoon with the fine-tuned planner, see `diffusion_module`). The RLModule is rebuilt from
diffplatoon's own files of the checkpoint (`module_file.load_module`: validated JSON config, tensors-only
weights), never from RLlib's pickles; actions are deterministic (the Gaussian mean) and
computed for all members in one batch, then scaled from [-1, 1] to SI units the way the training
env scales them (`diffplatoon.envs.pettingzoo_env.to_si` with the scenario's action limits).

Parameters (``rllib:path`` plus keyword params of `make_policy`): ``torch_threads`` (default 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffplatoon.agents.policy import CheckpointError, Policy, SimInfo
from diffplatoon.agents.rllib.module_file import CHECKPOINT_META, CheckpointMeta, load_module, read_meta
from diffplatoon.envs.pettingzoo_env import action_limits, to_si
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import Observation

__all__ = ["POLICIES", "load_module", "make_rllib_policy", "read_meta", "resolve_checkpoint"]


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from a checkpoint or run folder path (the run's newest checkpoint)."""
    path = Path(path)
    if (path / CHECKPOINT_META).is_file():
        return path
    found = sorted((p for p in path.glob("checkpoint_*") if (p / CHECKPOINT_META).is_file()),
                   key=lambda p: p.name) if path.is_dir() else []
    if not found:
        what = "no such folder" if not path.exists() else f"no {CHECKPOINT_META} in it or in a checkpoint_* folder"
        raise CheckpointError(f"{path}: not a diffplatoon RLlib checkpoint or run folder ({what})")
    return found[-1]


class _CheckpointPolicy(Policy):
    """A policy acting with the (first) RLModule of an RLlib checkpoint, in this process's torch threads."""

    name = "rllib"
    version = "1"

    def __init__(self, spec: ScenarioSpec, checkpoint: Path, meta: CheckpointMeta, torch_threads: int = 1):
        torch.set_num_threads(int(torch_threads))
        self.spec = spec
        self.checkpoint = checkpoint
        self.module = load_module(checkpoint, meta.module_ids[0], meta)
        self.name = f"rllib:{checkpoint}"


class VehicleMLPPolicy(_CheckpointPolicy):
    """Vehicle-grouping checkpoint: one shared actor applied to every member's flat observation."""

    def __init__(self, spec: ScenarioSpec, checkpoint: Path, meta: CheckpointMeta, torch_threads: int = 1):
        super().__init__(spec, checkpoint, meta, torch_threads)
        self.obs_dim = int(self.module.observation_space["obs"].shape[0])
        self._low, self._high = action_limits(spec)

    def reset(self, info: SimInfo) -> None:
        self._agents = list(info.agent_names)

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        flat = obs.flat()
        if flat.shape[1] != self.obs_dim:
            raise ValueError(f"{self.checkpoint} was trained on observations of width {self.obs_dim}; "
                             f"this scenario gives {flat.shape[1]}")
        mean = self.module.action_mean(torch.from_numpy(flat)).numpy().astype(np.float64)
        mean = np.clip(mean, -1.0, 1.0)
        actions = to_si(mean, self._low, self._high, normalized=True)
        alive = obs.alive if obs.alive is not None else np.ones(len(flat), dtype=bool)
        return np.where(alive[:, None], actions, 0.0)


class PlatoonDiffusionPolicy(_CheckpointPolicy):
    """Platoon-grouping DPPO checkpoint: every platoon featurised in its frame, planned in one batch, and the
    first `act_steps` plan steps executed (the action chunk it was trained with, one per policy step).

    Deterministic: the module's inference chain (fixed-seed start noise, no step noise), with the
    guidance and shield settings it was trained with; `stats` counts shield fallbacks."""

    def reset(self, info: SimInfo) -> None:
        from diffplatoon.agents.diffusion import features

        self.info = info
        self.rows = [np.flatnonzero(info.platoon == k) for k in range(len(info.spec.platoons))]
        if max(len(r) for r in self.rows) > self.module.n_max:
            raise ValueError(f"{self.checkpoint} drives platoons of at most {self.module.n_max} members")
        self.length = features.member_lengths(info.spec)
        self.module.shield_fired = self.module.plans = 0
        self.module.controller.reset()  # the shield's counters and the neighbours seen before
        self._chunk: list[np.ndarray] = []  # the planned chunk's actions still to execute, (agents, 2) each

    def stats(self) -> dict[str, Any]:
        """Plans made this episode; with the shield, the fallbacks and the count of each shield level."""
        if self.module.shield is None:
            return {"plans": self.module.plans}
        return {"plans": self.module.plans, "shield_fired": self.module.shield_fired,
                "shield": dict(self.module.shield.counts)}

    @torch.no_grad()
    def act(self, obs: Observation) -> np.ndarray:
        m = len(self.info.agent_names)
        alive = obs.alive.astype(bool) if obs.alive is not None else np.ones(m, dtype=bool)
        if not self._chunk:
            due = [(k, rows) for k, rows in enumerate(self.rows) if alive[rows].any()]
            if not due:
                return np.zeros((m, 2))
            scenes = [self.module.scene(k, obs, rows, self.length[rows]) for k, rows in due]
            actions, _, _, _ = self.module.plan_actions(scenes, explore=False)
            self._chunk = [np.zeros((m, 2)) for _ in range(actions.shape[1])]
            for (_, rows), a in zip(due, actions):  # a: (T, N, 2)
                for k, out in enumerate(self._chunk):
                    out[rows] = a[k, :len(rows)]
        return np.where(alive[:, None], self._chunk.pop(0), 0.0)


# module kind (the checkpoint's "module") → Policy class(spec, checkpoint, meta, **params)
POLICIES: dict[str, type[Policy]] = {
    "mlp": VehicleMLPPolicy,
    "diffusion": PlatoonDiffusionPolicy,
}


def make_rllib_policy(spec: ScenarioSpec, argument: str | None, **params: Any) -> Policy:
    """Factory of ``rllib:<checkpoint>`` for `diffplatoon.agents.policy.make_policy`."""
    if not argument:
        raise ValueError("expected rllib:<checkpoint or run folder>, got no path")
    checkpoint = resolve_checkpoint(argument)
    meta = read_meta(checkpoint)
    return POLICIES[meta.module](spec, checkpoint, meta, **params)
