"""The user-drawn road type: named node positions and lane segments between them (`type: lane_graph`).

Each `LaneSegment` lays `count` parallel lanes from one node to another as straight, arc or
sine shapes (`diffplatoon.scenarios.lane_shapes`); `LaneGraphRoad` checks at validation time
that arcs start and end on their nodes, sines fit between them and names are unique, and
names the lanes for references. Lanes, graph, routes and problems come from `RoadBase`.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from diffplatoon.scenarios.lane_shapes import LaneShape, arc, sine, straight
from diffplatoon.scenarios.limits import MAX_LANE_WIDTH, MAX_PRIORITY, MAX_RADIUS, MAX_SPEED, MIN_LENGTH
from diffplatoon.scenarios.road_base import JOIN_TOL, LaneIndex, RoadBase, edge_lines
from diffplatoon.geometry import VEHICLE_WIDTH


class LaneSegment(BaseModel):
    """One edge of a user lane graph: `count` parallel lanes from node `from` to node `to`.

    The node positions are the centre line of lane 0; further lanes are laid out to its right.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True,
                              allow_inf_nan=False)

    from_: str = Field(alias="from", description="Node the lanes start at.")
    to: str = Field(description="Node the lanes end at.")
    kind: Literal["straight", "arc", "sine"] = Field("straight", description="Centre-line shape.")
    name: str | None = Field(None, description="Lane name for references (name_k for each lane when count > 1).")
    width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")
    speed_limit: float = Field(20.0, gt=0, le=MAX_SPEED, description="Speed limit [m/s].")
    forbidden: bool = Field(False, description="Whether changing into these lanes is forbidden.")
    priority: StrictInt = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY, description="Right of way (higher goes first): where lanes of different priority merge or cross, "
                                         "traffic on the lower-priority lane yields.")
    count: StrictInt = Field(1, ge=1, le=8, description="Parallel lanes, laid out to the right of lane 0.")
    center: tuple[float, float] | None = Field(None, description="arc: circle centre [m].")
    radius: float | None = Field(None, ge=MIN_LENGTH, le=MAX_RADIUS, description="arc: radius of lane 0 [m].")
    start_phase: float | None = Field(None, description="arc: angle of the start point seen from the centre [rad].")
    end_phase: float | None = Field(None, description="arc: angle of the end point seen from the centre [rad].")
    clockwise: bool = Field(True, description="arc: phase increases along the lane (clockwise on screen, y down).")
    amplitude: float | None = Field(None, description="sine: lateral amplitude [m]; with the default phase the lane starts `amplitude` "
                                     "right of its base line and ends `amplitude` left of it (a shift of 2 * amplitude).")
    pulsation: float | None = Field(None, gt=0, description="sine: spatial pulsation [rad/m]; default half a wave between the nodes.")
    phase: float | None = Field(None, description="sine: phase at the start [rad]; default pi/2.")

    @model_validator(mode="after")
    def _kind_fields(self) -> LaneSegment:
        arc = {"center": self.center, "radius": self.radius, "start_phase": self.start_phase, "end_phase": self.end_phase}
        sine = {"amplitude": self.amplitude, "pulsation": self.pulsation, "phase": self.phase}
        if self.kind == "arc":
            missing = [k for k, v in arc.items() if v is None]
            if missing:
                raise ValueError(f"expected {', '.join(missing)} for an arc lane")
            if (self.end_phase - self.start_phase) * (1 if self.clockwise else -1) <= 0:
                rel = "greater" if self.clockwise else "smaller"
                raise ValueError(f"expected end_phase {rel} than start_phase for clockwise={self.clockwise}")
            if self.clockwise and self.radius <= (self.count - 1) * self.width:
                raise ValueError(f"expected radius > (count - 1) * width for a clockwise arc, got {self.radius:g}")
        elif self.kind == "sine" and self.amplitude is None:
            raise ValueError("expected amplitude for a sine lane")
        unused = [k for k, v in (arc if self.kind != "arc" else {}).items() if v is not None]
        unused += [k for k, v in (sine if self.kind != "sine" else {}).items() if v is not None]
        if unused:
            raise ValueError(f"expected no {', '.join(unused)} on a {self.kind} lane")
        return self


def _sine_base(p0: np.ndarray, p1: np.ndarray, amp: float, pulsation: float | None, phase: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Base line (start, end) and pulsation of a SineLane whose centre runs exactly from p0 to p1."""
    dist = float(np.linalg.norm(p1 - p0))
    if pulsation is None:  # half a wave over the base length
        delta = -2 * amp * math.sin(phase)
        if dist <= abs(delta):
            raise ValueError(f"expected the nodes further apart than the sine's lateral swing ({abs(delta):.1f} m), got {dist:.1f} m")
        length = math.sqrt(dist**2 - delta**2)
        pulsation = math.pi / length
    else:  # base length L solves L^2 + delta(L)^2 = dist^2 on (0, dist]
        def f(x: float) -> float:
            return x * x + (amp * (math.sin(pulsation * x + phase) - math.sin(phase))) ** 2 - dist * dist

        lo, hi = 0.0, dist
        for _ in range(80):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if f(mid) < 0 else (lo, mid)
        length = hi
        delta = amp * (math.sin(pulsation * length + phase) - math.sin(phase))
    v = p1 - p0
    u = np.array([length * v[0] + delta * v[1], -delta * v[0] + length * v[1]]) / (length**2 + delta**2)
    u /= np.linalg.norm(u)
    normal = np.array([-u[1], u[0]])
    start = p0 - normal * amp * math.sin(phase)
    return start, start + length * u, pulsation


class LaneGraphRoad(RoadBase):
    """A road drawn by hand: named node positions and lane segments between them."""

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, populate_by_name=True,
                              allow_inf_nan=False)

    type: Literal["lane_graph"] = Field("lane_graph", description="Road type.")
    nodes: dict[str, tuple[float, float]] = Field(description="Node name -> (x, y) position of lane 0's centre line [m].")
    lanes: list[LaneSegment] = Field(min_length=1, description="Lane segments between nodes.")
    destinations_: list[str] | None = Field(
        None, alias="destinations",
        description="Nodes routes may end at; default: nodes where lanes end and none start.",
    )

    @model_validator(mode="after")
    def _geometry(self) -> LaneGraphRoad:
        errors = [f"{path}: {msg}" for path, msg in self._spec_problems()]
        if errors:
            raise ValueError("; ".join(errors))
        return self

    def _spec_problems(self) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        known = ", ".join(list(self.nodes)[:10])
        for i, seg in enumerate(self.lanes):
            for field, node in (("from", seg.from_), ("to", seg.to)):
                if node not in self.nodes:
                    found.append((f"lanes.{i}.{field}", f"expected a node name ({known}), got {node!r}"))
            if seg.from_ not in self.nodes or seg.to not in self.nodes:
                continue
            p0, p1 = np.array(self.nodes[seg.from_]), np.array(self.nodes[seg.to])
            if seg.kind == "arc":
                lane = self._segment_shapes(seg)[0]
                for field, node, s in (("start_phase", seg.from_, 0.0), ("end_phase", seg.to, lane.length)):
                    gap = float(np.linalg.norm(lane.position(s, 0.0) - self.nodes[node]))
                    if gap > JOIN_TOL:
                        pos = lane.position(s, 0.0)
                        found.append((f"lanes.{i}.{field}", f"expected the arc to {'start' if s == 0 else 'end'} on node {node!r} "
                                      f"{tuple(round(c, 1) for c in self.nodes[node])}, got ({pos[0]:.1f}, {pos[1]:.1f}), {gap:.1f} m away"))
            elif float(np.linalg.norm(p1 - p0)) < 1e-6:
                found.append((f"lanes.{i}.to", f"expected distinct positions for nodes {seg.from_!r} and {seg.to!r}"))
            elif seg.kind == "sine":
                try:
                    self._segment_shapes(seg)
                except ValueError as exc:
                    found.append((f"lanes.{i}.amplitude", str(exc)))
        names = [n for seg in self.lanes for n in self._segment_names(seg)]
        for dup in sorted({n for n in names if names.count(n) > 1}):
            found.append(("lanes", f"expected unique lane names, got {dup!r} more than once"))
        ends = {seg.to for seg in self.lanes}
        for j, d in enumerate(self.destinations_ or []):
            if d not in ends:
                found.append((f"destinations.{j}", f"expected a node where lanes end ({', '.join(sorted(ends))}), got {d!r}"))
        return found

    def _segment_shapes(self, seg: LaneSegment) -> list[LaneShape]:
        common = dict(width=seg.width, speed_limit=seg.speed_limit, forbidden=seg.forbidden, priority=seg.priority)
        p0, p1 = np.array(self.nodes[seg.from_], float), np.array(self.nodes[seg.to], float)
        out: list[LaneShape] = []
        for k in range(seg.count):
            lines = edge_lines(k, seg.count)
            if seg.kind == "arc":
                sign = -1.0 if seg.clockwise else 1.0  # to the right is inward when clockwise
                out.append(arc(seg.center, seg.radius + sign * k * seg.width, seg.start_phase, seg.end_phase,
                               clockwise=seg.clockwise, line_types=lines, **common))
                continue
            direction = (p1 - p0) / np.linalg.norm(p1 - p0)
            if seg.kind == "straight":
                shift = k * seg.width * np.array([-direction[1], direction[0]])
                out.append(straight(p0 + shift, p1 + shift, line_types=lines, **common))
            else:
                phase = math.pi / 2 if seg.phase is None else seg.phase
                start, end, pulsation = _sine_base(p0, p1, seg.amplitude, seg.pulsation, phase)
                base_dir = (end - start) / np.linalg.norm(end - start)
                shift = k * seg.width * np.array([-base_dir[1], base_dir[0]])
                out.append(sine(start + shift, end + shift, seg.amplitude, pulsation, phase, line_types=lines, **common))
        return out

    @staticmethod
    def _segment_names(seg: LaneSegment) -> list[str]:
        if seg.name is None:
            return []
        return [seg.name] if seg.count == 1 else [f"{seg.name}_{k}" for k in range(seg.count)]

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        return [(seg.from_, seg.to, lane) for seg in self.lanes for lane in self._segment_shapes(seg)]

    def _indexed_segments(self) -> list[tuple[int, LaneSegment, LaneIndex]]:
        """(segment number, segment, lane index) for every lane, in build order."""
        counts: dict[tuple[str, str], int] = {}
        out = []
        for i, seg in enumerate(self.lanes):
            for _ in range(seg.count):
                key = (seg.from_, seg.to)
                out.append((i, seg, (seg.from_, seg.to, counts.get(key, 0))))
                counts[key] = counts.get(key, 0) + 1
        return out

    def _lane_path(self, idx: LaneIndex) -> str:
        for i, _, lane in self._indexed_segments():
            if lane == tuple(idx):
                return f"lanes.{i}"
        return "lanes"

    def _spawn_edge(self) -> tuple[str, str]:
        return (self.lanes[0].from_, self.lanes[0].to)

    def _names(self) -> dict[str, LaneIndex]:
        names: dict[str, LaneIndex] = {}
        per_segment: dict[int, list[LaneIndex]] = {}
        for i, _, idx in self._indexed_segments():
            per_segment.setdefault(i, []).append(idx)
        for i, seg in enumerate(self.lanes):
            names |= dict(zip(self._segment_names(seg), per_segment[i]))
        return names

    def _destination_nodes(self) -> list[str]:
        if self.destinations_ is not None:
            return list(self.destinations_)
        return super()._destination_nodes()


__all__ = ["LaneSegment", "LaneGraphRoad"]
