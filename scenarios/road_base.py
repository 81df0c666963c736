"""What every road spec can answer from its lane shapes alone: lanes, lane graph, routes, problems.

A road type (`diffplatoon.scenarios.roads`) only lists its lanes as plain shapes
(`diffplatoon.scenarios.lane_shapes`) and names them; `RoadBase` numbers the lanes as
highway-env's `RoadNetwork` does, mirrors them as a lane-level `networkx.DiGraph`, resolves
lane references, plans routes and finds structural problems. Everything derived is computed
once per distinct spec (`diffplatoon.scenarios.memo`). Nothing here builds highway-env objects:
`diffplatoon.sim.roads` does, from the same shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
from pydantic import BaseModel, ConfigDict

from diffplatoon.scenarios.lane_shapes import LaneShape, LineKind
from diffplatoon.scenarios.memo import cached_on_spec
from diffplatoon.geometry import wrap_angle

LaneIndex = tuple[str, str, int]

JOIN_TOL = 0.5  # [m] end of one lane to start of the next, and arc end to its node
_HEADING_TOL = 0.15  # [rad] heading jump allowed where two lanes join
_LATERAL_COST = 25.0  # [m] routing cost of one lane change, on top of the distance driven


def edge_lines(i: int, n: int) -> tuple[LineKind, LineKind]:
    """Side lines of lane i of n parallel lanes: outer borders continuous, separators striped once."""
    return ("continuous_line" if i == 0 else "striped", "continuous_line" if i == n - 1 else "none")


def _fmt(idx: LaneIndex) -> str:
    return f"[{idx[0]}, {idx[1]}, {idx[2]}]"


@dataclass(frozen=True)
class _Layout:
    lanes: dict[LaneIndex, LaneShape]  # in highway-env's `lanes_dict` order
    graph: nx.DiGraph


class RoadBase(BaseModel):
    """Shared behaviour of every road type; subclasses provide the lanes and the names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # --- hooks for subclasses -----------------------------------------------------------------
    def _make_lanes(self) -> list[tuple[str, str, LaneShape]]:
        """(from node, to node, shape) of every lane, in the order they are added to the network."""
        raise NotImplementedError

    def _spawn_edge(self) -> tuple[str, str]:
        raise NotImplementedError

    def _names(self) -> dict[str, LaneIndex]:
        return {}

    def _destination_nodes(self) -> list[str]:
        lanes = self.lane_shapes()
        starts = {frm for frm, _, _ in lanes}
        return sorted({to for _, to, _ in lanes if to not in starts})

    def _lane_path(self, idx: LaneIndex) -> str:
        return ""

    def _spec_problems(self) -> list[tuple[str, str]]:
        return []

    # --- lanes --------------------------------------------------------------------------------
    def lane_shapes(self) -> dict[LaneIndex, LaneShape]:
        """Every lane's shape by index, in highway-env's order (shared: treat as read-only)."""
        return _layout(self).lanes

    def lane_shape(self, idx: LaneIndex) -> LaneShape:
        """The shape of one lane; ValueError naming the valid lanes when there is none."""
        lanes = self.lane_shapes()
        if tuple(idx) not in lanes:
            raise ValueError(f"expected an existing lane ({self._short_lanes()}), got {list(idx)}")
        return lanes[tuple(idx)]

    def lane_length(self, idx: LaneIndex) -> float:
        """Length of a lane along its centre line [m]."""
        return self.lane_shape(idx).length

    def lane_graph(self) -> nx.DiGraph:
        """Lane-level graph: nodes are LaneIndex, edges kind="next" | "left" | "right" (shared: read-only)."""
        return _layout(self).graph

    def entry_lanes(self) -> list[LaneIndex]:
        """Lanes no other lane leads into (where traffic enters the road)."""
        return [idx for idx in self.lane_shapes() if not self._has_next(idx, outgoing=False)]

    def exit_lanes(self) -> list[LaneIndex]:
        """Lanes without a successor that end at a destination node (where traffic leaves)."""
        dest = set(self.destinations())
        return [idx for idx in self.lane_shapes() if not self._has_next(idx, True) and idx[1] in dest]

    def dead_end_lanes(self) -> list[LaneIndex]:
        """Lanes without a successor that do not end at a destination (left by changing lanes)."""
        dest = set(self.destinations())
        return [idx for idx in self.lane_shapes() if not self._has_next(idx, True) and idx[1] not in dest]

    def named_lanes(self) -> dict[str, LaneIndex]:
        """Readable lane names usable in YAML instead of [from, to, id]."""
        return dict(self._names())

    def _has_next(self, idx: LaneIndex, outgoing: bool) -> bool:
        graph = self.lane_graph()
        edges = graph.out_edges(idx, data="kind") if outgoing else graph.in_edges(idx, data="kind")
        return any(kind == "next" for _, _, kind in edges)

    def _short_lanes(self, limit: int = 10) -> str:
        lanes = [_fmt(idx) for idx in self.lane_shapes()]
        return ", ".join(lanes[:limit]) + (f", … ({len(lanes)} lanes)" if len(lanes) > limit else "")

    def resolve_lane(self, ref: int | str | Sequence[Any]) -> LaneIndex:
        """Turn a lane reference (int id on the spawn edge, lane name, or [from, to, id]) into a LaneIndex."""
        frm, to = self._spawn_edge()
        lanes, names = self.lane_shapes(), self._names()
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
        self.lane_shape(start)
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

    # --- validation ---------------------------------------------------------------------------
    def problems(self) -> list[tuple[str, str]]:
        """Structural problems as (field path relative to the road, message); empty when sound."""
        found = list(self._spec_problems())
        if found:
            return found
        graph = self.lane_graph()
        lanes = self.lane_shapes()
        exits, entries = self.exit_lanes(), self.entry_lanes()

        # Lanes that meet at a node but turn abruptly: nobody can drive that join.
        for u, v, gap, turn in _joins(lanes):
            if gap <= JOIN_TOL and turn > _HEADING_TOL:
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
# Derived once per distinct spec.


def _index_lanes(made: list[tuple[str, str, LaneShape]]) -> dict[LaneIndex, LaneShape]:
    """Number parallel lanes per (from, to) in the order added, listed as `RoadNetwork.lanes_dict` lists them."""
    by_edge: dict[str, dict[str, list[LaneShape]]] = {}
    for frm, to, shape in made:
        by_edge.setdefault(frm, {}).setdefault(to, []).append(shape)
    return {(frm, to, k): shape for frm, tos in by_edge.items() for to, shapes in tos.items() for k, shape in enumerate(shapes)}


def _joins(lanes: dict[LaneIndex, LaneShape]) -> list[tuple[LaneIndex, LaneIndex, float, float]]:
    """(u, v, gap [m], heading change [rad]) for every lane v starting at the node where u ends."""
    starting: dict[str, list[LaneIndex]] = {}
    for idx in lanes:
        starting.setdefault(idx[0], []).append(idx)
    out = []
    for u, lane in lanes.items():
        end, heading = lane.position(lane.length, 0.0), lane.heading_at(lane.length)
        for v in starting.get(u[1], []):
            nxt = lanes[v]
            gap = float(np.linalg.norm(nxt.position(0.0, 0.0) - end))
            out.append((u, v, gap, abs(wrap_angle(nxt.heading_at(0.0) - heading))))
    return out


def _lane_graph(lanes: dict[LaneIndex, LaneShape]) -> nx.DiGraph:
    graph = nx.DiGraph()
    for idx, lane in lanes.items():
        graph.add_node(idx, length=lane.length, kind=lane.kind, speed_limit=float(lane.speed_limit),
                       width=float(lane.width), forbidden=bool(lane.forbidden))
    for u, v, gap, turn in _joins(lanes):
        if gap <= JOIN_TOL and turn <= _HEADING_TOL:
            graph.add_edge(u, v, kind="next", weight=lanes[u].length)
    for idx, lane in lanes.items():
        frm, to, k = idx
        for j in (k - 1, k + 1):
            other = lanes.get((frm, to, j))
            if other is None or other.forbidden:
                continue
            s, r = lane.local_coordinates(other.position(0.0, 0.0))
            expected = (lane.width + other.width) / 2
            if abs(s) <= JOIN_TOL and abs(abs(r) - expected) <= JOIN_TOL:
                side = "right" if r > 0 else "left"
                graph.add_edge(idx, (frm, to, j), kind=side, weight=_LATERAL_COST)
    return graph


@cached_on_spec
def _layout(road: RoadBase) -> _Layout:
    lanes = _index_lanes(road._make_lanes())
    return _Layout(lanes, _lane_graph(lanes))


__all__ = ["LaneIndex", "RoadBase", "edge_lines", "JOIN_TOL"]
