"""Warm starts of the planner: each platoon's last chosen plan, shifted, as the prior of its next plan.

Replanning at every policy step from pure noise spends the whole DDIM chain on a plan that is mostly the one
chosen a step ago. A warm start (truncated diffusion, as DiffusionDrive samples from anchors) instead takes
the previous plan, drops the steps executed since it was chosen, pads its tail, re-noises it with the forward
process to an intermediate step t_k (`CosineSchedule.add_noise`) and runs only the last ``steps`` DDIM steps
from there (`schedule.ddim_sample` with ``start``). ``fresh`` of the samples still start from pure noise
(over the same number of network calls, a coarser chain) so that sample-and-select keeps choices the previous
plan would not offer; the warm samples differ among themselves by their re-noising draws.

`WarmStarts` remembers, per platoon key, the plan and the `layout` it was chosen in, and gives it back shifted
(`shift_plan`) only while that layout holds: a member that left or crashed, a vehicle now between members
(a cut-in), a plan older than its horizon, a shield fallback, or a reset make the next plan a cold one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

import numpy as np

from diffplatoon.agents.diffusion.features import PlatoonInputs

# A non-member is "between" the members if it is within this lateral distance of one of them [m] (half a lane).
_SAME_LANE = 2.0


@dataclass(frozen=True)
class WarmStartConfig:
    """How a warm-started plan is sampled.

    Attributes:
        steps: DDIM steps (network calls) of a warm plan, k.
        level: the re-noising step t_k as a fraction of the schedule's last step (0.3 of T − 1 = 99 → t_k = 30).
        fresh: samples per scene drawn from pure noise instead (at most samples − 1: one sample is always warm).
        anchors: samples per scene whose prior is the route's lane change instead (`anchors.lane_change_prior`),
            in scenes where the route asks some member to change lanes; taken from the warm samples, of which one
            always stays. Off by default: with 3, shielded merging rose on `lane_drop` (0.53 → 0.67) but the
            shielded planner had 2/60 at-fault collisions on `onramp_merge` (README, planner rows).
    """

    steps: int = 2
    level: float = 0.3
    fresh: int = 2
    anchors: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or not 0.0 <= self.level <= 1.0 or self.fresh < 0 or self.anchors < 0:
            raise ValueError(f"warm start needs steps >= 1, level in [0, 1], fresh >= 0 and anchors >= 0, got {self}")

    def rows(self, samples: int) -> tuple[int, int]:
        """(fresh, anchored) samples of a scene of ``samples``: the last ``fresh`` rows start from noise, the
        ``anchored`` rows before them from the lane-change anchor; at least the first row stays warm."""
        fresh = min(self.fresh, samples - 1)
        return fresh, min(self.anchors, samples - 1 - fresh)

    def start_step(self, num_train_steps: int) -> int:
        """t_k: the diffusion step the previous plan is re-noised to (at least steps − 1, so the chain fits)."""
        return max(self.steps - 1, int(round(self.level * (num_train_steps - 1))))


def shift_plan(actions: np.ndarray, executed: int) -> np.ndarray:
    """A plan (n, H, 2) of [acceleration, steering] advanced by ``executed`` steps: its first steps dropped and
    the tail padded at constant speed (acceleration 0) with the last steering held (constant curvature)."""
    actions = np.asarray(actions)
    horizon = actions.shape[1]
    if not 0 <= executed < horizon:
        raise ValueError(f"executed must be in [0, {horizon}), got {executed}")
    out = np.empty_like(actions)
    out[:, : horizon - executed] = actions[:, executed:]
    out[:, horizon - executed:, 0] = 0.0
    out[:, horizon - executed:, 1] = actions[:, -1:, 1]
    return out


def layout(inputs: PlatoonInputs, n: int) -> tuple:
    """What a warm start assumes unchanged: which of the n members are present, and how many non-members are
    between them (along the platoon within `_SAME_LANE` of a member laterally: a cut-in raises the count)."""
    present = inputs.member_mask[:n].astype(bool)
    members = inputs.ego_state[:n][present]
    between = 0
    if len(members) >= 2 and inputs.neighbour_mask.any():
        nb = inputs.neighbours[inputs.neighbour_mask.astype(bool)]
        inside = (nb[:, 0] > members[:, 0].min()) & (nb[:, 0] < members[:, 0].max())
        near = (np.abs(nb[:, None, 1] - members[None, :, 1]) < _SAME_LANE).any(axis=1)
        between = int((inside & near).sum())
    return tuple(present.tolist()), between


@dataclass
class _Remembered:
    actions: np.ndarray  # (n, H, 2)
    layout: tuple
    step: int  # policy step at which the plan was chosen


class WarmStarts:
    """Per platoon key: the last chosen plan and its layout (module docstring)."""

    def __init__(self) -> None:
        self._plans: dict[Hashable, _Remembered] = {}

    def remember(self, key: Hashable, actions: np.ndarray, layout: tuple, step: int) -> None:
        """Keep ``actions`` (n, H, 2), chosen at policy step ``step`` in ``layout``, as key's next prior."""
        self._plans[key] = _Remembered(np.array(actions, dtype=np.float32), layout, int(step))

    def recall(self, key: Hashable, layout: tuple, step: int) -> np.ndarray | None:
        """Key's remembered plan shifted to policy step ``step``, or None (nothing kept, another layout, too old)."""
        kept = self._plans.get(key)
        if kept is None or kept.layout != layout:
            return None
        executed = step - kept.step
        if not 0 < executed < kept.actions.shape[1]:
            return None
        return shift_plan(kept.actions, executed)

    def forget(self, key: Hashable) -> None:
        """Drop key's plan (its next plan starts cold)."""
        self._plans.pop(key, None)

    def clear(self) -> None:
        """Drop every plan (a new episode)."""
        self._plans.clear()

    def __len__(self) -> int:
        return len(self._plans)
