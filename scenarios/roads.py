"""Road specs: the built-in road types and the `RoadSpec` union, described as plain lane shapes.

Each road type is a frozen pydantic model discriminated on `type`; `RoadSpec` is their union.
A spec lists its lanes as plain shapes (`diffplatoon.scenarios.lane_shapes`: straight, sine or
arc, with width, side lines, speed limit, priority); from them `RoadBase`
(`diffplatoon.scenarios.road_base`) numbers the lanes, mirrors them as a lane-level
`networkx.DiGraph` for validation and routing, and answers lane references and routes.
Nothing here builds highway-env objects: `diffplatoon.sim.roads.build_network(road)` maps the
same shapes one to one onto a highway-env `RoadNetwork` of `StraightLane` / `SineLane` /
`CircularLane`, and `diffplatoon.sim.roads.drivable_area(road)` gives the drivable area.

Coordinates follow highway-env: x right, y *down* on screen, so "south" is +y and lateral offsets
are positive to the right of travel. Parallel lanes of one edge are numbered from the left
(id 0) to the right. Traffic drives on the right.

Lane graph (`lane_graph()`): nodes are `LaneIndex` tuples (from, to, id) with attributes
`length`, `kind` ("straight" | "sine" | "arc"), `speed_limit`, `width`, `forbidden`; edges have
`kind` "next" (the end of u meets the start of v within 0.5 m with continuous heading, and v
starts at u's end node), or "left" / "right" (v is the adjacent lane of the same edge and lane
changes into v are not forbidden), and a routing `weight` in metres.
`exit_lanes()` are lanes without a successor that end at a destination node; a lane without a
successor that ends elsewhere (the dropped lane of `lane_drop`, the acceleration lane of
`onramp_merge`) is a dead end that vehicles leave by changing lanes.

Node names, named lanes and what an `int` lane ref means, per road type:

| type | nodes | named lanes | int ref k |
|---|---|---|---|
| highway | start → end | lane_0 … lane_{n-1} | (start, end, k) |
| onramp_merge | main: main_in → merge_begin → merge_end → main_out; ramp: ramp_in → ramp_bend → merge_begin | main_0 … main_{n-1} (first main segment), ramp (straight approach), ramp_bend (sine), accel (acceleration lane, id n on merge_begin → merge_end), after_0 … (after the merge) | (main_in, merge_begin, k) |
| lane_drop | start → drop → end | lane_0 … lane_{n-1} (upstream), dropped (the lane that ends), down_0 … down_{n-2} | (start, drop, k) |
| intersection | arms south, west, north, east (outer ends); {arm}_in (stop line), {arm}_out (start of the outgoing lane) | {arm}_in (incoming lane 0), {arm}_out (outgoing lane 0), plus {arm}_in_k / {arm}_out_k when lanes > 1 | (south, south_in, k) |
| roundabout | arms south, west, north, east; {arm}_yield (end of the approach), {arm}_leave (end of the exit curve); ring nodes ring_{arm}_in (entry joins) and ring_{arm}_out (exit leaves) | {arm}_entry (approach), {arm}_exit (outgoing straight), ring_k (ring lane k just after the south entry; 0 = inner) | (south, south_yield, k) |
| lane_graph | user `nodes` | segments with a `name` (name, or name_k when count > 1) | (first segment's from, to, k) |

Destinations: highway `end`; onramp `main_out`; lane_drop `end`; intersection and roundabout the
four arm names; lane_graph the given `destinations`, else every node where lanes end and none start.

Right of way: every lane carries highway-env's `priority` (an int, higher goes first). Where
lanes of different priority merge or cross, the World's traffic on the lower-priority lane
yields (see `diffplatoon.sim.world`); lanes of equal priority never yield to each other.

| type | priority (higher has right of way) |
|---|---|
| highway | 0 everywhere (nothing merges or crosses) |
| onramp_merge | main road 1; ramp, ramp_bend and the acceleration lane 0 (ramp traffic yields) |
| lane_drop | through lanes 1; the dropped lane 0 (its traffic yields where it ends) |
| intersection | the west–east axis is the major road: its arms, straight and right-turn connectors 3, its left turns 2; the south–north arms, straight and right-turn connectors 1, their left turns 0 (highway-env's intersection-v0 levels) |
| roundabout | ring lanes, exit curves and outgoing arms 1; approach arms and entry curves 0 (entering traffic yields to the ring) |
| lane_graph | each segment's `priority` (default 0) |
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field, StrictInt, model_validator

from diffplatoon.scenarios.lane_graph_road import LaneGraphRoad, LaneSegment
from diffplatoon.scenarios.lane_shapes import LaneShape, arc, sine, straight
from diffplatoon.scenarios.limits import MAX_LANE_LENGTH, MAX_LANE_WIDTH, MAX_RADIUS, MAX_SPEED, MIN_LENGTH
from diffplatoon.scenarios.road_base import LaneIndex, RoadBase, edge_lines
from diffplatoon.geometry import VEHICLE_WIDTH

_N, _S, _C = "none", "striped", "continuous_line"  # side lines
_ARMS = ("south", "west", "north", "east")  # arm k is the south arm rotated by k * 90 degrees


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


# ---------------------------------------------------------------------------------------------
# Built-in road types.


class HighwayRoad(RoadBase):
    """Straight multi-lane highway."""

    type: Literal["highway"] = Field("highway", description="Road type.")
    lanes: StrictInt = Field(3, ge=1, le=8, description="Number of lanes.")
    length: float = Field(1000.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Length [m].")
    speed_limit: float = Field(30.0, gt=0, le=MAX_SPEED, description="Speed limit [m/s].")
    lane_width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        w = self.lane_width
        return [
            ("start", "end", straight([0.0, i * w], [self.length, i * w], width=w,
                                      line_types=edge_lines(i, self.lanes), speed_limit=self.speed_limit))
            for i in range(self.lanes)
        ]

    def _spawn_edge(self) -> tuple[str, str]:
        return ("start", "end")

    def _names(self) -> dict[str, LaneIndex]:
        return {f"lane_{i}": ("start", "end", i) for i in range(self.lanes)}


class OnrampMergeRoad(RoadBase):
    """Main road with an on-ramp that converges into an acceleration lane which then ends."""

    type: Literal["onramp_merge"] = Field("onramp_merge", description="Road type.")
    main_lanes: StrictInt = Field(2, ge=1, le=6, description="Lanes of the main road.")
    main_length: float = Field(600.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Length of the main road [m].")
    ramp_length: float = Field(150.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Straight approach of the ramp, parallel to the main road [m].")
    converge_length: float = Field(80.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Sinusoidal section bringing the ramp beside the main road [m].")
    accel_length: float = Field(100.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Acceleration lane beside the main road, ending at its end [m].")
    ramp_offset: float = Field(6.5, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Lateral distance from the ramp approach to the acceleration lane [m].")
    main_speed_limit: float = Field(30.0, gt=0, le=MAX_SPEED, description="Speed limit on the main road and acceleration lane [m/s].")
    ramp_speed_limit: float = Field(20.0, gt=0, le=MAX_SPEED, description="Speed limit on the ramp [m/s].")
    lane_width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")

    @model_validator(mode="after")
    def _fits(self) -> OnrampMergeRoad:
        merge_end = self.ramp_length + self.converge_length + self.accel_length
        if self.main_length < merge_end + 20.0:
            raise ValueError(
                f"expected main_length >= ramp_length + converge_length + accel_length + 20 m "
                f"= {merge_end + 20.0:g} m, got {self.main_length:g}"
            )
        if self.ramp_offset < self.lane_width:
            raise ValueError(f"expected ramp_offset >= lane_width ({self.lane_width:g} m), got {self.ramp_offset:g}")
        return self

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        n, w = self.main_lanes, self.lane_width
        x_begin = self.ramp_length + self.converge_length
        x_end = x_begin + self.accel_length
        main = dict(width=w, speed_limit=self.main_speed_limit, priority=1)
        ramp = dict(width=w, speed_limit=self.ramp_speed_limit, priority=0)
        out: list[tuple[str, str, LaneShape]] = []
        for i in range(n):
            y = i * w
            merge_lines = [edge_lines(i, n)[0], _S if i == n - 1 else _N]
            out.append(("main_in", "merge_begin", straight([0, y], [x_begin, y], line_types=edge_lines(i, n), **main)))
            out.append(("merge_begin", "merge_end", straight([x_begin, y], [x_end, y], line_types=merge_lines, **main)))
            out.append(("merge_end", "main_out", straight([x_end, y], [self.main_length, y], line_types=edge_lines(i, n), **main)))
        # Main traffic may not move onto the acceleration lane (it ends); ramp traffic may leave it.
        y_accel = n * w
        out.append(("merge_begin", "merge_end", straight([x_begin, y_accel], [x_end, y_accel], line_types=[_N, _C],
                                                         forbidden=True, **{**main, "priority": 0})))
        amp = self.ramp_offset / 2
        y_ramp = y_accel + self.ramp_offset
        out.append(("ramp_in", "ramp_bend", straight([0, y_ramp], [self.ramp_length, y_ramp], line_types=[_C, _C],
                                                     forbidden=True, **ramp)))
        out.append(("ramp_bend", "merge_begin", sine(
            [self.ramp_length, y_ramp - amp], [x_begin, y_ramp - amp], amp, math.pi / self.converge_length, math.pi / 2,
            line_types=[_C, _C], forbidden=True, **ramp)))
        return out

    def _spawn_edge(self) -> tuple[str, str]:
        return ("main_in", "merge_begin")

    def _names(self) -> dict[str, LaneIndex]:
        names: dict[str, LaneIndex] = {f"main_{i}": ("main_in", "merge_begin", i) for i in range(self.main_lanes)}
        names |= {"ramp": ("ramp_in", "ramp_bend", 0), "ramp_bend": ("ramp_bend", "merge_begin", 0),
                  "accel": ("merge_begin", "merge_end", self.main_lanes)}
        names |= {f"after_{i}": ("merge_end", "main_out", i) for i in range(self.main_lanes)}
        return names


class LaneDropRoad(RoadBase):
    """Straight road whose outermost lane ends at `drop_position`; n lanes become n-1."""

    type: Literal["lane_drop"] = Field("lane_drop", description="Road type.")
    lanes: StrictInt = Field(3, ge=2, le=8, description="Lanes upstream of the drop (one fewer downstream).")
    length: float = Field(1000.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Total length [m].")
    drop_position: float = Field(500.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Where the dropped lane ends, from the start [m].")
    drop_side: Literal["right", "left"] = Field("right", description="Which outer lane ends.")
    speed_limit: float = Field(30.0, gt=0, le=MAX_SPEED, description="Speed limit [m/s].")
    lane_width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")

    @model_validator(mode="after")
    def _drop_inside(self) -> LaneDropRoad:
        if not self.drop_position < self.length:
            raise ValueError(f"expected drop_position < length ({self.length:g} m), got {self.drop_position:g}")
        return self

    @property
    def _dropped_id(self) -> int:
        return self.lanes - 1 if self.drop_side == "right" else 0

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        n, w, x = self.lanes, self.lane_width, self.drop_position
        kw = dict(width=w, speed_limit=self.speed_limit)
        out: list[tuple[str, str, LaneShape]] = []
        for i in range(n):
            prio = 0 if i == self._dropped_id else 1
            out.append(("start", "drop", straight([0, i * w], [x, i * w], line_types=edge_lines(i, n), priority=prio, **kw)))
        shift = 1 if self.drop_side == "left" else 0
        for j in range(n - 1):
            y = (j + shift) * w
            out.append(("drop", "end", straight([x, y], [self.length, y], line_types=edge_lines(j, n - 1), priority=1, **kw)))
        return out

    def _spawn_edge(self) -> tuple[str, str]:
        return ("start", "drop")

    def _names(self) -> dict[str, LaneIndex]:
        names: dict[str, LaneIndex] = {f"lane_{i}": ("start", "drop", i) for i in range(self.lanes)}
        names["dropped"] = ("start", "drop", self._dropped_id)
        names |= {f"down_{j}": ("drop", "end", j) for j in range(self.lanes - 1)}
        return names


class IntersectionRoad(RoadBase):
    """Unsignalised 4-way intersection; every arm has incoming and outgoing lanes and turning connectors.

    The west–east axis is the major road (lane priorities as highway-env's intersection-v0):
    its arms, straight and right-turn connectors have priority 3, its left turns 2; the
    south–north arms, straight and right-turn connectors 1, their left turns 0.
    """

    type: Literal["intersection"] = Field("intersection", description="Road type.")
    arm_length: float = Field(100.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Length of each arm up to the stop line [m].")
    lanes: StrictInt = Field(1, ge=1, le=3, description="Lanes per direction on each arm.")
    lane_width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")
    right_turn_radius: float = Field(9.0, ge=MIN_LENGTH, le=MAX_RADIUS, description="Radius of the right turn from the rightmost lane [m].")
    speed_limit: float = Field(14.0, gt=0, le=MAX_SPEED, description="Speed limit on the arms [m/s].")
    turn_speed_limit: float = Field(10.0, gt=0, le=MAX_SPEED, description="Speed limit inside the intersection [m/s].")

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        n, w = self.lanes, self.lane_width
        d = self.right_turn_radius + w / 2 + (n - 1) * w  # centre to stop line
        arm = dict(width=w, speed_limit=self.speed_limit)
        box = dict(width=w, speed_limit=self.turn_speed_limit, line_types=[_N, _N], forbidden=True)
        out: list[tuple[str, str, LaneShape]] = []
        # Lanes of the south arm (heading north = -y); the other arms are rotations of it.
        for k, name in enumerate(_ARMS):
            rot, ang = _rotation(k * math.pi / 2), k * math.pi / 2
            right, ahead, left = _ARMS[(k - 1) % 4], _ARMS[(k + 2) % 4], _ARMS[(k + 1) % 4]
            prio = 3 if k % 2 else 1  # west (k=1) and east (k=3) form the major road
            for i in range(n):
                e = w / 2 + i * w
                lines_in = [_S, _C if i == n - 1 else _N]
                lines_out = [_N if i == 0 else _S, _C if i == n - 1 else _N]
                out.append((name, f"{name}_in", straight(rot @ [e, d + self.arm_length], rot @ [e, d], line_types=lines_in,
                                                         priority=prio, **arm)))
                out.append((f"{name}_out", name, straight(rot @ [-e, d], rot @ [-e, d + self.arm_length], line_types=lines_out,
                                                          priority=prio, **arm)))
            for i in range(n):
                e = w / 2 + i * w
                out.append((f"{name}_in", f"{right}_out", arc(rot @ [d, d], d - e, ang + math.pi, ang + 1.5 * math.pi,
                                                              clockwise=True, priority=prio, **box)))
                out.append((f"{name}_in", f"{ahead}_out", straight(rot @ [e, d], rot @ [e, -d], priority=prio, **box)))
                out.append((f"{name}_in", f"{left}_out", arc(rot @ [-d, d], d + e, ang, ang - 0.5 * math.pi,
                                                             clockwise=False, priority=prio - 1, **box)))
        return out

    def _spawn_edge(self) -> tuple[str, str]:
        return ("south", "south_in")

    def _names(self) -> dict[str, LaneIndex]:
        names: dict[str, LaneIndex] = {}
        for arm in _ARMS:
            names[f"{arm}_in"] = (arm, f"{arm}_in", 0)
            names[f"{arm}_out"] = (f"{arm}_out", arm, 0)
            if self.lanes > 1:
                for i in range(self.lanes):
                    names[f"{arm}_in_{i}"] = (arm, f"{arm}_in", i)
                    names[f"{arm}_out_{i}"] = (f"{arm}_out", arm, i)
        return names

    def _destination_nodes(self) -> list[str]:
        return list(_ARMS)


class RoundaboutRoad(RoadBase):
    """Roundabout: a ring of circular lanes (counter-clockwise on screen) with four single-lane arms.

    Entries and exits are circular arcs tangent to both the straight arm and the outer ring lane, so
    every join is exact in position and heading. The ring has right of way: ring lanes, exit
    curves and outgoing arms have priority 1, approach arms and entry curves 0.
    """

    type: Literal["roundabout"] = Field("roundabout", description="Road type.")
    radius: float = Field(20.0, ge=MIN_LENGTH, le=MAX_RADIUS, description="Radius of the inner ring lane's centre line [m].")
    lanes: StrictInt = Field(2, ge=1, le=3, description="Ring lanes (0 = inner).")
    lane_width: float = Field(4.0, ge=VEHICLE_WIDTH, le=MAX_LANE_WIDTH, description="Lane width [m].")
    arm_length: float = Field(80.0, ge=MIN_LENGTH, le=MAX_LANE_LENGTH, description="Length of the straight part of each arm [m].")
    entry_radius: float = Field(15.0, ge=MIN_LENGTH, le=MAX_RADIUS, description="Radius of the entry and exit curves [m].")
    speed_limit: float = Field(10.0, gt=0, le=MAX_SPEED, description="Speed limit on the ring and its entry/exit curves [m/s].")
    arm_speed_limit: float = Field(15.0, gt=0, le=MAX_SPEED, description="Speed limit on the straight arms [m/s].")

    @model_validator(mode="after")
    def _curves_fit(self) -> RoundaboutRoad:
        if self.radius < self.lane_width:
            raise ValueError(f"expected radius >= lane_width ({self.lane_width:g} m), got {self.radius:g}")
        e, r = self.lane_width / 2, self.entry_radius
        if self._tangent_offset() <= e + r:
            raise ValueError(
                f"expected entry_radius small enough for entries and exits of neighbouring arms not to overlap "
                f"on a ring of radius {self.radius:g} m, got {r:g}"
            )
        return self

    def _tangent_offset(self) -> float:
        """Distance from the centre, along the arm, where the entry curve leaves the straight arm."""
        outer = self.radius + (self.lanes - 1) * self.lane_width
        e, r = self.lane_width / 2, self.entry_radius
        return math.sqrt((r + outer) ** 2 - (e + r) ** 2)

    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        w, m, r = self.lane_width, self.lanes, self.entry_radius
        e, y = w / 2, self._tangent_offset()
        theta = math.atan2(y, e + r)  # ring phase where the south entry joins, in (pi/4, pi/2)
        arm = dict(width=w, speed_limit=self.arm_speed_limit)
        ring = dict(width=w, speed_limit=self.speed_limit)
        enter, leave = dict(priority=0), dict(priority=1)
        out: list[tuple[str, str, LaneShape]] = []
        phases: dict[str, float] = {}
        for k, name in enumerate(_ARMS):
            rot, ang = _rotation(k * math.pi / 2), k * math.pi / 2
            out.append((name, f"{name}_yield", straight(rot @ [e, y + self.arm_length], rot @ [e, y], line_types=[_S, _C],
                                                        **enter, **arm)))
            enter_end = math.atan2(-y, -(e + r)) + 2 * math.pi
            out.append((f"{name}_yield", f"ring_{name}_in", arc(rot @ [e + r, y], r, ang + math.pi, ang + enter_end,
                                                                clockwise=True, line_types=[_C, _C], forbidden=True,
                                                                **enter, **ring)))
            out.append((f"ring_{name}_out", f"{name}_leave", arc(rot @ [-(e + r), y], r, ang + math.atan2(-y, e + r), ang,
                                                                 clockwise=True, line_types=[_C, _C], forbidden=True,
                                                                 **leave, **ring)))
            out.append((f"{name}_leave", name, straight(rot @ [-e, y], rot @ [-e, y + self.arm_length], line_types=[_N, _C],
                                                        **leave, **arm)))
            phases[f"ring_{name}_in"] = theta + ang
            phases[f"ring_{name}_out"] = math.pi - theta + ang
        # Ring in travel order (decreasing phase): south, east, north, west.
        order = []
        for name in ("south", "east", "north", "west"):
            order += [f"ring_{name}_out", f"ring_{name}_in"]
        for a, b in zip(order, order[1:] + order[:1]):
            start = phases[a]
            end = start - (start - phases[b]) % (2 * math.pi)
            for i in range(m):
                out.append((a, b, arc([0.0, 0.0], self.radius + i * w, start, end, clockwise=False,
                                      line_types=edge_lines(i, m), **leave, **ring)))
        return out

    def _spawn_edge(self) -> tuple[str, str]:
        return ("south", "south_yield")

    def _names(self) -> dict[str, LaneIndex]:
        names: dict[str, LaneIndex] = {}
        for arm in _ARMS:
            names[f"{arm}_entry"] = (arm, f"{arm}_yield", 0)
            names[f"{arm}_exit"] = (f"{arm}_leave", arm, 0)
        names |= {f"ring_{i}": ("ring_south_in", "ring_east_out", i) for i in range(self.lanes)}
        return names

    def _destination_nodes(self) -> list[str]:
        return list(_ARMS)


RoadSpec = Annotated[
    Union[HighwayRoad, OnrampMergeRoad, LaneDropRoad, IntersectionRoad, RoundaboutRoad, LaneGraphRoad],
    Field(discriminator="type"),
]

__all__ = [
    "LaneIndex",
    "LaneShape",
    "RoadBase",
    "RoadSpec",
    "LaneSegment",
    "HighwayRoad",
    "OnrampMergeRoad",
    "LaneDropRoad",
    "IntersectionRoad",
    "RoundaboutRoad",
    "LaneGraphRoad",
]
