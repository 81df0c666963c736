"""The shield's data: its levels (`ShieldLevel`), thresholds (`ShieldConfig`), one platoon's situation
(`ShieldScene`), its decision (`ShieldDecision`) and the stack of scenes its vectorized checks take."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from diffplatoon.agents.diffusion.corridor import Corridor
from diffplatoon import geometry


class ShieldLevel(str, Enum):
    """What the shield chose, in order of escalation; the values are the record/stat keys."""

    ACCEPTED_FIRST = "accepted_first"  # the best-ranked sample is safe
    NEXT_SAMPLE = "next_sample"  # a lower-ranked sample is safe
    LANE_KEPT = "lane_kept"  # a sample's accelerations, steered by lane keeping
    COMFORTABLE_BRAKE = "comfortable_brake"
    EMERGENCY_BRAKE = "emergency_brake"

    @property
    def lane_keeping(self) -> bool:
        """Whether the executor steers this level by the lane-keeping law (every fallback)."""
        return self not in (ShieldLevel.ACCEPTED_FIRST, ShieldLevel.NEXT_SAMPLE)

    @property
    def overrides(self) -> bool:
        """Whether the executed plan is not the sampled plan ranked first."""
        return self is not ShieldLevel.ACCEPTED_FIRST


LEVELS = tuple(level.value for level in ShieldLevel)
"""The level names in escalation order (the keys of `SafetyShield.counts` and of episode records)."""



@dataclass(frozen=True)
class ShieldConfig:
    """Shield thresholds.

    Attributes:
        comfortable_decel: deceleration of the first fallback [m/s²].
        min_time_headway: time-headway floor to the vehicle ahead [s].
        standstill_gap: bumper-to-bumper gap the floor adds at any speed [m].
        lateral_margin: a vehicle counts as "in my lane" (ahead, or behind) when the lateral offset of the
            centres is below the half widths plus this [m].
        headway_tolerance: growth of an existing headway deficit that is still accepted [m].
        neighbour_width: width of predicted neighbours [m].
        backup_steps: length of the emergency stop appended to every checked plan [plan steps].
        max_speed: speed cap of accelerating predicted neighbours [m/s].
        max_heading_error: largest heading difference to the lane direction a plan may reach [rad].
        road_tolerance: growth of an existing corridor excess that is still accepted [m, rad].
        road_margin: room [m] each side of a member keeps inside its corridor's bounds (condition 3 checks a box
            this much wider on each side): where the corridor's chords cut a curve (a roundabout's entry) a plan
            that grazes the bound leaves the lane on the next observation.
        lane_end_margin: room [m] a member still in a lane that ends must be able to keep, braking at its
            ``max_deceleration``, between its front and the end (`corridor.Corridor.end_excess`).
    """

    comfortable_decel: float = 3.0
    min_time_headway: float = 0.5
    standstill_gap: float = 1.0
    lateral_margin: float = 0.3
    headway_tolerance: float = 0.05
    neighbour_width: float = geometry.VEHICLE_WIDTH
    backup_steps: int = 15
    max_speed: float = 40.0
    max_heading_error: float = 0.35
    road_tolerance: float = 0.02
    road_margin: float = 0.25
    lane_end_margin: float = 0.5


@dataclass
class ShieldScene:
    """One platoon's situation at plan time (N members, M neighbours; one frame for everything).

    Attributes:
        start: (N, 4) member states [x, y, heading, speed] now.
        length, width: (N,) member sizes [m].
        member_mask: (N,) bool, present (alive) members; the others are ignored.
        max_deceleration: (N,) emergency deceleration of each member, positive [m/s²].
        neighbours: (M, 5) non-platoon vehicles [x, y, heading, speed, length] now.
        neighbour_mask: (M,) bool.
        neighbour_accel: (M,) estimated accelerations [m/s²] (None = 0, constant velocity).
        corridor: the members' lane corridors (None = no road check).
    """

    start: np.ndarray
    length: np.ndarray
    width: np.ndarray
    member_mask: np.ndarray
    max_deceleration: np.ndarray
    neighbours: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    neighbour_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    neighbour_accel: np.ndarray | None = None
    corridor: Corridor | None = None

    def __post_init__(self) -> None:
        n = len(self.start)
        self.start = np.asarray(self.start, dtype=np.float64).reshape(n, 4)
        self.length, self.width, self.max_deceleration = (
            np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()
            for v in (self.length, self.width, self.max_deceleration)
        )
        self.member_mask = np.asarray(self.member_mask, dtype=bool).reshape(n)
        self.neighbours = np.asarray(self.neighbours, dtype=np.float64).reshape(-1, 5)
        self.neighbour_mask = np.asarray(self.neighbour_mask, dtype=bool).reshape(len(self.neighbours))
        accel = np.zeros(len(self.neighbours)) if self.neighbour_accel is None else self.neighbour_accel
        self.neighbour_accel = np.asarray(accel, dtype=np.float64).reshape(len(self.neighbours))


@dataclass
class ShieldDecision:
    """What the shield chose for one platoon.

    Attributes:
        level: the `ShieldLevel` chosen.
        sample: index of the accepted sample (−1 for a braking fallback).
        actions: (N, H, 2) [acceleration, steering] (fallbacks: the lane-keeping law's steering along the
            predicted states with a corridor, else 0 — lane keeping is then the executor's job).
        states: (N, H, 4) predicted states after each step.
    """

    level: ShieldLevel
    sample: int
    actions: np.ndarray
    states: np.ndarray


@dataclass
class _Stack:
    """B scenes stacked along a leading axis (one member count N; neighbours padded to the largest M with
    masked rows), the input of the shield's vectorized checks."""

    start: np.ndarray  # (B, N, 4)
    length: np.ndarray  # (B, N)
    width: np.ndarray
    member_mask: np.ndarray
    max_deceleration: np.ndarray
    neighbours: np.ndarray  # (B, M, 5)
    neighbour_mask: np.ndarray  # (B, M)
    neighbour_accel: np.ndarray
    corridors: list[Corridor | None]

    @staticmethod
    def of(scenes: list[ShieldScene]) -> "_Stack":
        n = {len(s.start) for s in scenes}
        if len(n) != 1:
            raise ValueError(f"stacked scenes need one member count, got {sorted(n)}")
        m = max(len(s.neighbours) for s in scenes)

        def stacked(name: str, rows: int | None = None) -> np.ndarray:
            values = [getattr(s, name) for s in scenes]
            if len(values) == 1:
                return values[0][None]
            return np.stack([v if rows is None or len(v) == rows
                             else np.pad(v, [(0, rows - len(v))] + [(0, 0)] * (v.ndim - 1)) for v in values])

        return _Stack(*(stacked(f) for f in ("start", "length", "width", "member_mask", "max_deceleration")),
                      *(stacked(f, m) for f in ("neighbours", "neighbour_mask", "neighbour_accel")),
                      [s.corridor for s in scenes])

    def rows(self, index: np.ndarray | list[int]) -> "_Stack":
        """The stack of scenes ``index``."""
        index = np.asarray(index, dtype=np.intp)
        return _Stack(self.start[index], self.length[index], self.width[index], self.member_mask[index],
                      self.max_deceleration[index], self.neighbours[index], self.neighbour_mask[index],
                      self.neighbour_accel[index], [self.corridors[i] for i in index])
