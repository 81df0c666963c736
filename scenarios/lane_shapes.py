"""Lane shapes: the plain-data description of one lane that a road spec produces.

A road spec (`diffplatoon.scenarios.roads`) describes each lane as a `StraightShape`,
`SineShape` or `ArcShape`: end points or circle, width, side lines, speed limit, priority,
whether changing into it is forbidden. The simulator's road builder
(`diffplatoon.sim.roads`) maps each shape one to one onto highway-env's `StraightLane`,
`SineLane` or `CircularLane` with the same arguments; the shapes carry just enough closed-form
geometry — length, centre-line position and heading, lane coordinates of a point — for the
scenario to be validated (joins, adjacent lanes, spawn positions) without building that
network. The formulas are highway-env's lane conventions, so a shape's `length` equals what
the built lane reports (a test holds them together).

Coordinates follow highway-env: x right, y down on screen; `position(s, r)` is the point `s`
metres along the centre line and `r` metres to its right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from diffplatoon.geometry import wrap_angle

LineKind = Literal["none", "striped", "continuous", "continuous_line"]
"""A lane side line, named as highway-env's `LineType` constants (lower case)."""

Point = tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class LaneShape:
    """What every lane has besides its centre line."""

    kind: ClassVar[str]
    width: float  # [m]
    speed_limit: float  # [m/s]
    line_types: tuple[LineKind, LineKind] = ("striped", "striped")  # (left, right) of travel
    forbidden: bool = False  # changing into this lane is forbidden
    priority: int = 0  # right of way: higher goes first

    @property
    def length(self) -> float:
        """Length along the centre line [m] (as the highway-env lane reports it)."""
        raise NotImplementedError

    def position(self, s: float, r: float) -> np.ndarray:
        """World point `s` metres along the lane and `r` metres to the right of its centre line."""
        raise NotImplementedError

    def heading_at(self, s: float) -> float:
        """Heading of the centre line `s` metres along the lane [rad]."""
        raise NotImplementedError

    def local_coordinates(self, point: np.ndarray) -> tuple[float, float]:
        """(s, r) of a world point in this lane's frame."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class StraightShape(LaneShape):
    """A straight lane from `start` to `end`."""

    kind: ClassVar[str] = "straight"
    start: Point
    end: Point

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.subtract(self.end, self.start)))

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        direction = np.subtract(self.end, self.start) / self.length
        return direction, np.array([-direction[1], direction[0]])

    def position(self, s: float, r: float) -> np.ndarray:
        direction, lateral = self._axes()
        return np.asarray(self.start, dtype=float) + s * direction + r * lateral

    def heading_at(self, s: float) -> float:
        return math.atan2(self.end[1] - self.start[1], self.end[0] - self.start[0])

    def local_coordinates(self, point: np.ndarray) -> tuple[float, float]:
        direction, lateral = self._axes()
        delta = np.asarray(point, dtype=float) - self.start
        return float(delta @ direction), float(delta @ lateral)


@dataclass(frozen=True, kw_only=True)
class SineShape(StraightShape):
    """A lane swinging sideways around the base line `start`→`end`: offset amplitude·sin(pulsation·s + phase)."""

    kind: ClassVar[str] = "sine"
    amplitude: float  # [m]
    pulsation: float  # [rad/m]
    phase: float  # [rad] at the start

    def _offset(self, s: float) -> float:
        return self.amplitude * math.sin(self.pulsation * s + self.phase)

    def position(self, s: float, r: float) -> np.ndarray:
        return super().position(s, r + self._offset(s))

    def heading_at(self, s: float) -> float:
        slope = self.amplitude * self.pulsation * math.cos(self.pulsation * s + self.phase)
        return super().heading_at(s) + math.atan(slope)

    def local_coordinates(self, point: np.ndarray) -> tuple[float, float]:
        s, r = super().local_coordinates(point)
        return s, r - self._offset(s)


@dataclass(frozen=True, kw_only=True)
class ArcShape(LaneShape):
    """A circular lane around `center` from phase `start_phase` to `end_phase` (increasing when clockwise on screen)."""

    kind: ClassVar[str] = "arc"
    center: Point
    radius: float  # [m]
    start_phase: float  # [rad] angle of the start point seen from the centre
    end_phase: float  # [rad]
    clockwise: bool = True

    @property
    def _direction(self) -> int:
        return 1 if self.clockwise else -1

    @property
    def length(self) -> float:
        return float(self.radius * (self.end_phase - self.start_phase) * self._direction)

    def position(self, s: float, r: float) -> np.ndarray:
        phi = self._direction * s / self.radius + self.start_phase
        return np.asarray(self.center, dtype=float) + (self.radius - r * self._direction) * np.array([math.cos(phi), math.sin(phi)])

    def heading_at(self, s: float) -> float:
        return self._direction * s / self.radius + self.start_phase + math.pi / 2 * self._direction

    def local_coordinates(self, point: np.ndarray) -> tuple[float, float]:
        delta = np.asarray(point, dtype=float) - self.center
        turned = wrap_angle(math.atan2(delta[1], delta[0]) - self.start_phase)
        return self._direction * turned * self.radius, self._direction * (self.radius - float(np.hypot(*delta)))


# Constructors with highway-env's argument order, so a road reads like the network it describes.


def _point(p: Sequence[float]) -> Point:
    return (float(p[0]), float(p[1]))


def straight(start: Sequence[float], end: Sequence[float], *, line_types: Sequence[LineKind] = ("striped", "striped"),
             **style: Any) -> StraightShape:
    """A `StraightShape` from two points (lists, tuples or arrays)."""
    return StraightShape(start=_point(start), end=_point(end), line_types=tuple(line_types), **style)


def sine(start: Sequence[float], end: Sequence[float], amplitude: float, pulsation: float, phase: float, *,
         line_types: Sequence[LineKind] = ("striped", "striped"), **style: Any) -> SineShape:
    """A `SineShape` around the base line start→end."""
    return SineShape(start=_point(start), end=_point(end), amplitude=float(amplitude), pulsation=float(pulsation),
                     phase=float(phase), line_types=tuple(line_types), **style)


def arc(center: Sequence[float], radius: float, start_phase: float, end_phase: float, clockwise: bool = True, *,
        line_types: Sequence[LineKind] = ("striped", "striped"), **style: Any) -> ArcShape:
    """An `ArcShape` around `center`."""
    return ArcShape(center=_point(center), radius=float(radius), start_phase=float(start_phase),
                    end_phase=float(end_phase), clockwise=clockwise, line_types=tuple(line_types), **style)


__all__ = ["LaneShape", "StraightShape", "SineShape", "ArcShape", "LineKind", "Point", "straight", "sine", "arc"]
