"""Road builders: pydantic road specs that build highway-env lane networks.

Each road type is a frozen pydantic model discriminated on `type`; `RoadSpec` is their union.
A spec builds a highway-env `RoadNetwork` of `StraightLane` / `SineLane` / `CircularLane`, mirrors
it as a lane-level `networkx.DiGraph` for validation and routing, and answers lane references,
routes and the drivable area. Everything derived is built once and cached on the spec.

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
import weakref
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union

import networkx as nx
import numpy as np
import shapely
from highway_env.road.lane import AbstractLane, CircularLane, LineType, SineLane, StraightLane
from highway_env.road.road import RoadNetwork
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

LaneIndex = tuple[str, str, int]

_JOIN_TOL = 0.5  # [m] end of one lane to start of the next, and arc end to its node
_HEADING_TOL = 0.15  # [rad] heading jump allowed where two lanes join
_LATERAL_COST = 25.0  # [m] routing cost of one lane change, on top of the distance driven
_SAMPLE_STEP = 1.0  # [m] centre-line sampling for the drivable area
_SEAM = 0.05  # [m] each lane surface is extended this much at both ends to close seams

_N, _S, _C = LineType.NONE, LineType.STRIPED, LineType.CONTINUOUS_LINE
_ARMS = ("south", "west", "north", "east")  # arm k is the south arm rotated by k * 90 degrees


class _Cache:
    """Holder for derived objects; compares equal to any other cache and pickles empty.

    `owner` lets a spec notice a cache inherited through `model_copy(update=...)`, which copies
    private attributes as they are and would otherwise serve the original's network.
    """

    def __init__(self) -> None:
        self.items: dict[str, Any] = {}
        self.owner: weakref.ref | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Cache)

    def __hash__(self) -> int:
        return 0

    def __reduce__(self) -> tuple:
        return (_Cache, ())


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _edge_lines(i: int, n: int) -> list[int]:
    """Line types of lane i of n parallel lanes: outer borders continuous, separators striped once."""
    return [_C if i == 0 else _S, _C if i == n - 1 else _N]


def _lane_kind(lane: AbstractLane) -> str:
    if isinstance(lane, SineLane):
        return "sine"
    if isinstance(lane, CircularLane):
        return "arc"
    return "straight"


def _fmt(idx: LaneIndex) -> str:
    return f"[{idx[0]}, {idx[1]}, {idx[2]}]"


class RoadBase(BaseModel):
    """Shared behaviour of every road type; subclasses provide the lanes and the names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _cache: _Cache = PrivateAttr(default_factory=_Cache)

    # --- hooks for subclasses -----------------------------------------------------------------
    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        raise NotImplementedError

    def _spawn_edge(self) -> tuple[str, str]:
        raise NotImplementedError

    def _names(self) -> dict[str, LaneIndex]:
        return {}

    def _destination_nodes(self) -> list[str]:
        graph = self.build().graph
        return sorted({t for tos in graph.values() for t in tos if t not in graph})

    def _lane_path(self, idx: LaneIndex) -> str:
        return ""

    def _spec_problems(self) -> list[tuple[str, str]]:
        return []

    # --- cached products ----------------------------------------------------------------------
    def _cached(self, key: str, make: Any) -> Any:
        if self._cache.owner is None or self._cache.owner() is not self:
            self._cache = _Cache()
            self._cache.owner = weakref.ref(self)
        items = self._cache.items
        if key not in items:
            items[key] = make()
        return items[key]

    def build(self) -> RoadNetwork:
        """The highway-env lane network of this road (built once; treat it as read-only)."""
        return self._cached("network", self._build)

    def _build(self) -> RoadNetwork:
        net = RoadNetwork()
        for frm, to, lane in self._make_lanes():
            net.add_lane(frm, to, lane)
        return net

    def _lanes(self) -> dict[LaneIndex, AbstractLane]:
        return self._cached("lanes", lambda: dict(self.build().lanes_dict()))

    def lane_graph(self) -> nx.DiGraph:
        """Lane-level graph: nodes are LaneIndex, edges kind="next" | "left" | "right"."""
        return self._cached("lane_graph", self._make_lane_graph)

    def _make_lane_graph(self) -> nx.DiGraph:
        net, lanes = self.build(), self._lanes()
        graph = nx.DiGraph()
        for idx, lane in lanes.items():
            graph.add_node(
                idx,
                length=float(lane.length),
                kind=_lane_kind(lane),
                speed_limit=float(lane.speed_limit),
                width=float(lane.width_at(0.0)),
                forbidden=bool(lane.forbidden),
            )
        for u, v, gap, turn in self._joins():
            if gap <= _JOIN_TOL and turn <= _HEADING_TOL:
                graph.add_edge(u, v, kind="next", weight=float(lanes[u].length))
        for idx, lane in lanes.items():
            frm, to, k = idx
            for j in (k - 1, k + 1):
                if not 0 <= j < len(net.graph[frm][to]):
                    continue
                other = net.graph[frm][to][j]
                if other.forbidden:
                    continue
                s, r = lane.local_coordinates(other.position(0.0, 0.0))
                expected = (lane.width_at(0.0) + other.width_at(0.0)) / 2
                if abs(s) <= _JOIN_TOL and abs(abs(r) - expected) <= _JOIN_TOL:
                    side = "right" if r > 0 else "left"
                    graph.add_edge(idx, (frm, to, j), kind=side, weight=_LATERAL_COST)
        return graph

    def _joins(self) -> list[tuple[LaneIndex, LaneIndex, float, float]]:
        """(u, v, gap [m], heading change [rad]) for every lane v starting at the node where u ends."""
        net, out = self.build(), []
        for u, lane in self._lanes().items():
            end, heading = lane.position(lane.length, 0.0), lane.heading_at(lane.length)
            for nxt_to, nxt_lanes in net.graph.get(u[1], {}).items():
                for j, nxt in enumerate(nxt_lanes):
                    gap = float(np.linalg.norm(nxt.position(0.0, 0.0) - end))
                    out.append((u, (u[1], nxt_to, j), gap, abs(_wrap(nxt.heading_at(0.0) - heading))))
        return out

    def _has_next(self, idx: LaneIndex, outgoing: bool) -> bool:
        graph = self.lane_graph()
        edges = graph.out_edges(idx, data="kind") if outgoing else graph.in_edges(idx, data="kind")
        return any(kind == "next" for _, _, kind in edges)

    # --- lanes --------------------------------------------------------------------------------
    def entry_lanes(self) -> list[LaneIndex]:
        """Lanes no other lane leads into (where traffic enters the road)."""
        return [idx for idx in self._lanes() if not self._has_next(idx, outgoing=False)]

    def exit_lanes(self) -> list[LaneIndex]:
        """Lanes without a successor that end at a destination node (where traffic leaves)."""
        dest = set(self.destinations())
        return [idx for idx in self._lanes() if not self._has_next(idx, True) and idx[1] in dest]

    def dead_end_lanes(self) -> list[LaneIndex]:
        """Lanes without a successor that do not end at a destination (left by changing lanes)."""
        dest = set(self.destinations())
        return [idx for idx in self._lanes() if not self._has_next(idx, True) and idx[1] not in dest]

    def lane_length(self, idx: LaneIndex) -> float:
        """Length of a lane along its centre line [m]."""
        return float(self._lane(idx).length)

    def _lane(self, idx: LaneIndex) -> AbstractLane:
        lanes = self._lanes()
        if tuple(idx) not in lanes:
            raise ValueError(f"expected an existing lane ({self._short_lanes()}), got {list(idx)}")
        return lanes[tuple(idx)]

    def named_lanes(self) -> dict[str, LaneIndex]:
        """Readable lane names usable in YAML instead of [from, to, id]."""
        return dict(self._names())

    def _short_lanes(self, limit: int = 10) -> str:
        lanes = [_fmt(idx) for idx in self._lanes()]
        return ", ".join(lanes[:limit]) + (f", … ({len(lanes)} lanes)" if len(lanes) > limit else "")

    def resolve_lane(self, ref: int | str | Sequence[Any]) -> LaneIndex:
        """Turn a lane reference (int id on the spawn edge, lane name, or [from, to, id]) into a LaneIndex."""
        frm, to = self._spawn_edge()
        lanes, names = self._lanes(), self._names()
        n_spawn = sum(1 for f, t, _ in lanes if (f, t) == (frm, to))
        expected = (
            f"an int lane id on [{frm}, {to}] (0..{n_spawn - 1}), a lane name "
            f"({', '.join(list(names)[:8])}{', …' if len(names) > 8 else ''}) or [from, to, id]"
        )
        if isinstance(ref, bool):
            raise ValueError(f"expected {expected}, got {ref!r}")
        if isinstance(ref, (int, np.integer)):
            idx: LaneIndex = (frm, to, int(ref))
        elif isinstance(ref, str):
            if ref not in names:
                raise ValueError(f"expected {expected}, got unknown lane name {ref!r}")
            return names[ref]
        elif isinstance(ref, Sequence) and len(ref) == 3 and not isinstance(ref[2], bool) and isinstance(ref[2], (int, np.integer)):
            idx = (str(ref[0]), str(ref[1]), int(ref[2]))
        else:
            raise ValueError(f"expected {expected}, got {ref!r}")
        if idx not in lanes:
            raise ValueError(f"expected an existing lane, got {list(idx)}; valid lanes: {self._short_lanes()}")
        return idx

    # --- routing ------------------------------------------------------------------------------
    def destinations(self) -> list[str]:
        """Node names a route may end at."""
        return list(self._destination_nodes())

    def route(self, start: LaneIndex, destination: str) -> list[LaneIndex]:
        """Cheapest lane chain from `start` to a lane ending at `destination` (lane changes cost extra)."""
        start = tuple(start)
        self._lane(start)
        dests = self.destinations()
        if destination not in dests:
            raise ValueError(f"expected a destination node ({', '.join(dests) or 'none on this road'}), got {destination!r}")
        graph = self.lane_graph()
        dist, paths = nx.single_source_dijkstra(graph, start, weight="weight")
        ends = [idx for idx in dist if idx[1] == destination]
        if not ends:
            raise ValueError(f"expected a destination reachable from lane {_fmt(start)}, but {destination!r} is not")
        best = min(ends, key=lambda idx: dist[idx] + graph.nodes[idx]["length"])
        return [tuple(idx) for idx in paths[best]]

    # --- geometry -----------------------------------------------------------------------------
    def drivable_area(self) -> shapely.Geometry:
        """Union of all lane surfaces (shapely), for off-road checks."""
        return self._cached("drivable_area", self._make_drivable_area)

    def _make_drivable_area(self) -> shapely.Geometry:
        surfaces = []
        for lane in self._lanes().values():
            curved = isinstance(lane, (SineLane, CircularLane))
            n = max(2, int(math.ceil(lane.length / _SAMPLE_STEP)) + 1) if curved else 2
            s = np.linspace(-_SEAM, lane.length + _SEAM, n)
            points = np.array([lane.position(float(si), 0.0) for si in s])
            line = shapely.LineString(points)
            surfaces.append(shapely.buffer(line, lane.width_at(0.0) / 2, cap_style="flat", join_style="round"))
        return shapely.union_all(surfaces)

    # --- validation ---------------------------------------------------------------------------
    def problems(self) -> list[tuple[str, str]]:
        """Structural problems as (field path relative to the road, message); empty when sound."""
        found = list(self._spec_problems())
        if found:
            return found
        graph = self.lane_graph()
        lanes = self._lanes()
        exits, entries = self.exit_lanes(), self.entry_lanes()

        # Lanes that meet at a node but turn abruptly: nobody can drive that join.
        for u, v, gap, turn in self._joins():
            if gap <= _JOIN_TOL and turn > _HEADING_TOL:
                found.append((
                    self._lane_path(u),
                    f"expected lane {_fmt(v)} to continue lane {_fmt(u)} smoothly, "
                    f"but the heading jumps by {math.degrees(turn):.0f} deg at node {u[1]!r}",
                ))

        # Every lane must lead somewhere: to an exit, or on a closed circuit to a loop.
        targets = set(exits) or {n for comp in nx.strongly_connected_components(graph) if len(comp) > 1 for n in comp}
        reverse = graph.reverse(copy=False)
        can_leave = set(targets)
        for t in targets:
            can_leave |= nx.descendants(reverse, t)
        for idx in lanes:
            if idx in can_leave:
                continue
            if not self._has_next(idx, True) and graph.out_degree(idx) == 0:
                end = lanes[idx].position(lanes[idx].length, 0.0)
                found.append((
                    self._lane_path(idx),
                    f"expected lane {_fmt(idx)} to continue: it ends at node {idx[1]!r} "
                    f"({end[0]:.1f}, {end[1]:.1f}), no lane continues smoothly from there and it has no lane to change into",
                ))
            else:
                what = "an exit lane" if exits else "a closed loop"
                found.append((self._lane_path(idx), f"expected {what} to be reachable from lane {_fmt(idx)}, but vehicles there get stuck"))

        # Every lane must be reachable from an entry (unless the road is a closed circuit).
        if entries:
            reached = set(entries)
            for e in entries:
                reached |= nx.descendants(graph, e)
            for idx in lanes:
                if idx not in reached:
                    found.append((self._lane_path(idx), f"expected lane {_fmt(idx)} to be reachable from an entry lane, but none leads to it"))

        parts = list(nx.weakly_connected_components(graph))
        if len(parts) > 1:
            firsts = ", ".join(_fmt(min(p)) for p in parts[:6])
            found.append(("", f"expected one connected road, got {len(parts)} separate parts (containing {firsts})"))
        return found


# ---------------------------------------------------------------------------------------------
# Built-in road types.


class HighwayRoad(RoadBase):
    """Straight multi-lane highway."""

    type: Literal["highway"] = Field("highway", description="Road type.")
    lanes: int = Field(3, ge=1, le=8, description="Number of lanes.")
    length: float = Field(1000.0, gt=0, description="Length [m].")
    speed_limit: float = Field(30.0, gt=0, description="Speed limit [m/s].")
    lane_width: float = Field(4.0, gt=0, description="Lane width [m].")

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        w = self.lane_width
        return [
            ("start", "end", StraightLane([0.0, i * w], [self.length, i * w], width=w,
                                          line_types=_edge_lines(i, self.lanes), speed_limit=self.speed_limit))
            for i in range(self.lanes)
        ]

    def _spawn_edge(self) -> tuple[str, str]:
        return ("start", "end")

    def _names(self) -> dict[str, LaneIndex]:
        return {f"lane_{i}": ("start", "end", i) for i in range(self.lanes)}


class OnrampMergeRoad(RoadBase):
    """Main road with an on-ramp that converges into an acceleration lane which then ends."""

    type: Literal["onramp_merge"] = Field("onramp_merge", description="Road type.")
    main_lanes: int = Field(2, ge=1, le=6, description="Lanes of the main road.")
    main_length: float = Field(600.0, gt=0, description="Length of the main road [m].")
    ramp_length: float = Field(150.0, gt=0, description="Straight approach of the ramp, parallel to the main road [m].")
    converge_length: float = Field(80.0, gt=0, description="Sinusoidal section bringing the ramp beside the main road [m].")
    accel_length: float = Field(100.0, gt=0, description="Acceleration lane beside the main road, ending at its end [m].")
    ramp_offset: float = Field(6.5, gt=0, description="Lateral distance from the ramp approach to the acceleration lane [m].")
    main_speed_limit: float = Field(30.0, gt=0, description="Speed limit on the main road and acceleration lane [m/s].")
    ramp_speed_limit: float = Field(20.0, gt=0, description="Speed limit on the ramp [m/s].")
    lane_width: float = Field(4.0, gt=0, description="Lane width [m].")

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

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        n, w = self.main_lanes, self.lane_width
        x_begin = self.ramp_length + self.converge_length
        x_end = x_begin + self.accel_length
        main = dict(width=w, speed_limit=self.main_speed_limit, priority=1)
        ramp = dict(width=w, speed_limit=self.ramp_speed_limit, priority=0)
        out: list[tuple[str, str, AbstractLane]] = []
        for i in range(n):
            y = i * w
            merge_lines = [_edge_lines(i, n)[0], _S if i == n - 1 else _N]
            out.append(("main_in", "merge_begin", StraightLane([0, y], [x_begin, y], line_types=_edge_lines(i, n), **main)))
            out.append(("merge_begin", "merge_end", StraightLane([x_begin, y], [x_end, y], line_types=merge_lines, **main)))
            out.append(("merge_end", "main_out", StraightLane([x_end, y], [self.main_length, y], line_types=_edge_lines(i, n), **main)))
        # Main traffic may not move onto the acceleration lane (it ends); ramp traffic may leave it.
        y_accel = n * w
        out.append(("merge_begin", "merge_end", StraightLane([x_begin, y_accel], [x_end, y_accel], line_types=[_N, _C],
                                                             forbidden=True, **{**main, "priority": 0})))
        amp = self.ramp_offset / 2
        y_ramp = y_accel + self.ramp_offset
        out.append(("ramp_in", "ramp_bend", StraightLane([0, y_ramp], [self.ramp_length, y_ramp], line_types=[_C, _C],
                                                         forbidden=True, **ramp)))
        out.append(("ramp_bend", "merge_begin", SineLane(
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
    lanes: int = Field(3, ge=2, le=8, description="Lanes upstream of the drop (one fewer downstream).")
    length: float = Field(1000.0, gt=0, description="Total length [m].")
    drop_position: float = Field(500.0, gt=0, description="Where the dropped lane ends, from the start [m].")
    drop_side: Literal["right", "left"] = Field("right", description="Which outer lane ends.")
    speed_limit: float = Field(30.0, gt=0, description="Speed limit [m/s].")
    lane_width: float = Field(4.0, gt=0, description="Lane width [m].")

    @model_validator(mode="after")
    def _drop_inside(self) -> LaneDropRoad:
        if not self.drop_position < self.length:
            raise ValueError(f"expected drop_position < length ({self.length:g} m), got {self.drop_position:g}")
        return self

    @property
    def _dropped_id(self) -> int:
        return self.lanes - 1 if self.drop_side == "right" else 0

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        n, w, x = self.lanes, self.lane_width, self.drop_position
        kw = dict(width=w, speed_limit=self.speed_limit)
        out: list[tuple[str, str, AbstractLane]] = []
        for i in range(n):
            prio = 0 if i == self._dropped_id else 1
            out.append(("start", "drop", StraightLane([0, i * w], [x, i * w], line_types=_edge_lines(i, n), priority=prio, **kw)))
        shift = 1 if self.drop_side == "left" else 0
        for j in range(n - 1):
            y = (j + shift) * w
            out.append(("drop", "end", StraightLane([x, y], [self.length, y], line_types=_edge_lines(j, n - 1), priority=1, **kw)))
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
    arm_length: float = Field(100.0, gt=0, description="Length of each arm up to the stop line [m].")
    lanes: int = Field(1, ge=1, le=3, description="Lanes per direction on each arm.")
    lane_width: float = Field(4.0, gt=0, description="Lane width [m].")
    right_turn_radius: float = Field(9.0, gt=0, description="Radius of the right turn from the rightmost lane [m].")
    speed_limit: float = Field(14.0, gt=0, description="Speed limit on the arms [m/s].")
    turn_speed_limit: float = Field(10.0, gt=0, description="Speed limit inside the intersection [m/s].")

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        n, w = self.lanes, self.lane_width
        d = self.right_turn_radius + w / 2 + (n - 1) * w  # centre to stop line
        arm = dict(width=w, speed_limit=self.speed_limit)
        box = dict(width=w, speed_limit=self.turn_speed_limit, line_types=[_N, _N], forbidden=True)
        out: list[tuple[str, str, AbstractLane]] = []
        # Lanes of the south arm (heading north = -y); the other arms are rotations of it.
        for k, name in enumerate(_ARMS):
            rot, ang = _rotation(k * math.pi / 2), k * math.pi / 2
            right, straight, left = _ARMS[(k - 1) % 4], _ARMS[(k + 2) % 4], _ARMS[(k + 1) % 4]
            prio = 3 if k % 2 else 1  # west (k=1) and east (k=3) form the major road
            for i in range(n):
                e = w / 2 + i * w
                lines_in = [_S, _C if i == n - 1 else _N]
                lines_out = [_N if i == 0 else _S, _C if i == n - 1 else _N]
                out.append((name, f"{name}_in", StraightLane(rot @ [e, d + self.arm_length], rot @ [e, d], line_types=lines_in,
                                                             priority=prio, **arm)))
                out.append((f"{name}_out", name, StraightLane(rot @ [-e, d], rot @ [-e, d + self.arm_length], line_types=lines_out,
                                                              priority=prio, **arm)))
            for i in range(n):
                e = w / 2 + i * w
                out.append((f"{name}_in", f"{right}_out", CircularLane(rot @ [d, d], d - e, ang + math.pi, ang + 1.5 * math.pi,
                                                                         clockwise=True, priority=prio, **box)))
                out.append((f"{name}_in", f"{straight}_out", StraightLane(rot @ [e, d], rot @ [e, -d], priority=prio, **box)))
                out.append((f"{name}_in", f"{left}_out", CircularLane(rot @ [-d, d], d + e, ang, ang - 0.5 * math.pi,
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
    radius: float = Field(20.0, gt=0, description="Radius of the inner ring lane's centre line [m].")
    lanes: int = Field(2, ge=1, le=3, description="Ring lanes (0 = inner).")
    lane_width: float = Field(4.0, gt=0, description="Lane width [m].")
    arm_length: float = Field(80.0, gt=0, description="Length of the straight part of each arm [m].")
    entry_radius: float = Field(15.0, gt=0, description="Radius of the entry and exit curves [m].")
    speed_limit: float = Field(10.0, gt=0, description="Speed limit on the ring and its entry/exit curves [m/s].")
    arm_speed_limit: float = Field(15.0, gt=0, description="Speed limit on the straight arms [m/s].")

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

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        w, m, r = self.lane_width, self.lanes, self.entry_radius
        e, y = w / 2, self._tangent_offset()
        theta = math.atan2(y, e + r)  # ring phase where the south entry joins, in (pi/4, pi/2)
        arm = dict(width=w, speed_limit=self.arm_speed_limit)
        ring = dict(width=w, speed_limit=self.speed_limit)
        enter, leave = dict(priority=0), dict(priority=1)
        out: list[tuple[str, str, AbstractLane]] = []
        phases: dict[str, float] = {}
        for k, name in enumerate(_ARMS):
            rot, ang = _rotation(k * math.pi / 2), k * math.pi / 2
            out.append((name, f"{name}_yield", StraightLane(rot @ [e, y + self.arm_length], rot @ [e, y], line_types=[_S, _C],
                                                            **enter, **arm)))
            enter_end = math.atan2(-y, -(e + r)) + 2 * math.pi
            out.append((f"{name}_yield", f"ring_{name}_in", CircularLane(rot @ [e + r, y], r, ang + math.pi, ang + enter_end,
                                                                          clockwise=True, line_types=[_C, _C], forbidden=True,
                                                                          **enter, **ring)))
            out.append((f"ring_{name}_out", f"{name}_leave", CircularLane(rot @ [-(e + r), y], r, ang + math.atan2(-y, e + r), ang,
                                                                           clockwise=True, line_types=[_C, _C], forbidden=True,
                                                                           **leave, **ring)))
            out.append((f"{name}_leave", name, StraightLane(rot @ [-e, y], rot @ [-e, y + self.arm_length], line_types=[_N, _C],
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
                out.append((a, b, CircularLane([0.0, 0.0], self.radius + i * w, start, end, clockwise=False,
                                               line_types=_edge_lines(i, m), **leave, **ring)))
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


# ---------------------------------------------------------------------------------------------
# User-defined lane graph.


class LaneSegment(BaseModel):
    """One edge of a user lane graph: `count` parallel lanes from node `from` to node `to`.

    The node positions are the centre line of lane 0; further lanes are laid out to its right.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True)

    from_: str = Field(alias="from", description="Node the lanes start at.")
    to: str = Field(description="Node the lanes end at.")
    kind: Literal["straight", "arc", "sine"] = Field("straight", description="Centre-line shape.")
    name: str | None = Field(None, description="Lane name for references (name_k for each lane when count > 1).")
    width: float = Field(4.0, gt=0, description="Lane width [m].")
    speed_limit: float = Field(20.0, gt=0, description="Speed limit [m/s].")
    forbidden: bool = Field(False, description="Whether changing into these lanes is forbidden.")
    priority: int = Field(0, description="Right of way (higher goes first): where lanes of different priority merge or cross, "
                                         "traffic on the lower-priority lane yields.")
    count: int = Field(1, ge=1, le=8, description="Parallel lanes, laid out to the right of lane 0.")
    center: tuple[float, float] | None = Field(None, description="arc: circle centre [m].")
    radius: float | None = Field(None, gt=0, description="arc: radius of lane 0 [m].")
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

    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True, populate_by_name=True)

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
                lane = self._segment_lanes(seg)[0]
                for field, node, s in (("start_phase", seg.from_, 0.0), ("end_phase", seg.to, lane.length)):
                    gap = float(np.linalg.norm(lane.position(s, 0.0) - self.nodes[node]))
                    if gap > _JOIN_TOL:
                        pos = lane.position(s, 0.0)
                        found.append((f"lanes.{i}.{field}", f"expected the arc to {'start' if s == 0 else 'end'} on node {node!r} "
                                      f"{tuple(round(c, 1) for c in self.nodes[node])}, got ({pos[0]:.1f}, {pos[1]:.1f}), {gap:.1f} m away"))
            elif float(np.linalg.norm(p1 - p0)) < 1e-6:
                found.append((f"lanes.{i}.to", f"expected distinct positions for nodes {seg.from_!r} and {seg.to!r}"))
            elif seg.kind == "sine":
                try:
                    self._segment_lanes(seg)
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

    def _segment_lanes(self, seg: LaneSegment) -> list[AbstractLane]:
        common = dict(width=seg.width, speed_limit=seg.speed_limit, forbidden=seg.forbidden, priority=seg.priority)
        p0, p1 = np.array(self.nodes[seg.from_], float), np.array(self.nodes[seg.to], float)
        out: list[AbstractLane] = []
        for k in range(seg.count):
            lines = _edge_lines(k, seg.count)
            if seg.kind == "arc":
                sign = -1.0 if seg.clockwise else 1.0  # to the right is inward when clockwise
                out.append(CircularLane(seg.center, seg.radius + sign * k * seg.width, seg.start_phase, seg.end_phase,
                                        clockwise=seg.clockwise, line_types=lines, **common))
                continue
            direction = (p1 - p0) / np.linalg.norm(p1 - p0)
            if seg.kind == "straight":
                shift = k * seg.width * np.array([-direction[1], direction[0]])
                out.append(StraightLane(p0 + shift, p1 + shift, line_types=lines, **common))
            else:
                phase = math.pi / 2 if seg.phase is None else seg.phase
                start, end, pulsation = _sine_base(p0, p1, seg.amplitude, seg.pulsation, phase)
                base_dir = (end - start) / np.linalg.norm(end - start)
                shift = k * seg.width * np.array([-base_dir[1], base_dir[0]])
                out.append(SineLane(start + shift, end + shift, seg.amplitude, pulsation, phase, line_types=lines, **common))
        return out

    @staticmethod
    def _segment_names(seg: LaneSegment) -> list[str]:
        if seg.name is None:
            return []
        return [seg.name] if seg.count == 1 else [f"{seg.name}_{k}" for k in range(seg.count)]

    def _make_lanes(self) -> list[tuple[str, str, AbstractLane]]:
        return [(seg.from_, seg.to, lane) for seg in self.lanes for lane in self._segment_lanes(seg)]

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


RoadSpec = Annotated[
    Union[HighwayRoad, OnrampMergeRoad, LaneDropRoad, IntersectionRoad, RoundaboutRoad, LaneGraphRoad],
    Field(discriminator="type"),
]

__all__ = [
    "LaneIndex",
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
