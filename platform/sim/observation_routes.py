"""Per-lane route quantities the `Observer` reads: where a vehicle's route asks for a lane change,
how far it has driven along its route and how far the route goes on, tabulated once per vehicle.

Tables are indexed by the `LaneTable`'s lane ids. Lanes off a vehicle's route get the values of the
cheapest way to any exit of the road network (`default_table`); a route overwrites the lanes of every
road it visits (`route_table`). Lane continuations follow the lane graph's smooth ("next") joins.
`PathLanes` tracks each member's path lane (the lane it steers to) from step to step.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from diffplatoon.geometry import wrap_angle
from diffplatoon.sim.lanes import LaneTable


@dataclass
class RouteTable:
    """Per-lane route quantities of one vehicle (arrays indexed by lane id)."""

    need: np.ndarray  # lanes to move (−left/+right) before the deadline
    deadline: np.ndarray  # distance from the lane's start to where the move must be done [m]
    before: np.ndarray  # route length driven before the lane's start [m]
    remaining: np.ndarray  # distance from the lane's start to the route end [m]
    next: np.ndarray  # lane taken at the end of this lane (−1: the lane ends)


def continuations(table: LaneTable, graph: nx.DiGraph) -> tuple[np.ndarray, np.ndarray]:
    """(next, previous) lane ids along smooth joins (the lane graph's "next" edges), −1 if none.

    Where a lane splits or several lanes merge, the one with the same lane position wins,
    else the first one listed.
    """
    nxt = np.full(table.n, -1, dtype=np.intp)
    prv = np.full(table.n, -1, dtype=np.intp)
    for k, idx in enumerate(table.indices):
        if idx not in graph:
            continue
        succ = [v for _, v, kind in graph.out_edges(idx, data="kind") if kind == "next"]
        pred = [u for u, _, kind in graph.in_edges(idx, data="kind") if kind == "next"]
        for out, cands in ((nxt, succ), (prv, pred)):
            if cands:
                same = [c for c in cands if c[2] == idx[2]]
                out[k] = table.id_of[tuple((same or cands)[0])]
    return nxt, prv


def chain_length(table: LaneTable, link: np.ndarray, include_self: bool) -> np.ndarray:
    """Length along `link` from each lane (its own length first if `include_self`); a loop is counted once."""
    out = np.zeros(table.n)
    for k in range(table.n):
        total, lane, seen = (table.length[k] if include_self else 0.0), link[k], {k}
        while lane >= 0 and lane not in seen:
            seen.add(lane)
            total += table.length[lane]
            lane = link[lane]
        out[k] = total
    return out


def _route_entries(table: LaneTable, route: list[int], lane: int, block: int,
                   blocks: list[tuple[int, int]]) -> tuple[int, float, float]:
    """(need, deadline, remaining) of `lane`, which lies on the road of route block `block`.

    `blocks` are (first, last) route indices of each road the route visits, in order.
    """
    pos = table.lane_pos
    lengths = [table.length[route[last]] for _, last in blocks]
    lengths[block] = table.length[lane]
    remaining = float(sum(lengths[block:]))
    exit_pos = pos[route[blocks[block][1]]]
    if pos[lane] != exit_pos:
        return int(exit_pos - pos[lane]), float(table.length[lane]), remaining
    for b in range(block + 1, len(blocks)):
        first, last = blocks[b]
        if pos[route[first]] != pos[route[last]]:
            return int(pos[route[last]] - pos[route[first]]), float(sum(lengths[block:b + 1])), remaining
    return 0, remaining, remaining


def route_table(table: LaneTable, route: list[int], base: RouteTable) -> RouteTable:
    """`base` with the lanes of every road on `route` overwritten by the route's quantities."""
    out = RouteTable(*(a.copy() for a in (base.need, base.deadline, base.before, base.remaining, base.next)))
    blocks: list[tuple[int, int]] = []
    for j, lane in enumerate(route):
        if blocks and table.road[route[blocks[-1][0]]] == table.road[lane]:
            blocks[-1] = (blocks[-1][0], j)
        else:
            blocks.append((j, j))
    driven, done_roads = 0.0, set()
    for b, (first, last) in enumerate(blocks):
        road = int(table.road[route[first]])
        if road in done_roads:  # a road visited twice keeps its first visit
            continue
        done_roads.add(road)
        for lane in np.flatnonzero(table.road == road):
            need, deadline, remaining = _route_entries(table, route, int(lane), b, blocks)
            out.need[lane], out.deadline[lane], out.remaining[lane] = need, deadline, remaining
            out.before[lane] = driven
            if lane == route[last] and b + 1 < len(blocks):
                out.next[lane] = route[blocks[b + 1][0]]
        driven += float(table.length[route[last]])
    return out


def default_table(table: LaneTable, graph: nx.DiGraph, exits: list, nxt: np.ndarray,
                   prv: np.ndarray) -> RouteTable:
    """Route quantities of vehicles without a route: from each lane, the cheapest way to any exit."""
    n = table.n
    out = RouteTable(np.zeros(n, dtype=np.intp), np.zeros(n), chain_length(table, prv, False),
                      chain_length(table, nxt, True), nxt.copy())
    sources = [e for e in exits if e in graph]
    if not sources:  # closed circuit: nothing to reach
        out.deadline[:] = out.remaining
        return out
    _, paths = nx.multi_source_dijkstra(graph.reverse(copy=False), sources, weight="weight")
    for k, idx in enumerate(table.indices):
        if idx not in paths:
            continue
        route = [table.id_of[tuple(p)] for p in reversed(paths[idx])]
        one = route_table(table, route, out)
        out.need[k], out.deadline[k] = one.need[k], one.deadline[k]
        out.remaining[k] = one.remaining[k]
    return out


class PathLanes:
    """Each member's path lane, highway-env's target lane (the `Observer`'s only state).

    The current lane, or once past that lane's `follow_at` (its last half vehicle length) the lane
    the member's route takes next, kept while the member is within a lane width of it and not yet
    on it: where a road forks, the lane band it crosses first may be the other branch's.
    """

    def __init__(self, table: LaneTable, m: int, next_flat: np.ndarray):
        self.table = table
        self.lane = np.full(m, -1, dtype=np.intp)  # (M,) path lane, −1 not yet known
        self._next_flat = next_flat  # (M · n_lanes,) route table's next lane per (member, lane)

    def offsets(self, idx: np.ndarray, lane: np.ndarray, s: np.ndarray, r: np.ndarray,
                      heading_error: np.ndarray, x: np.ndarray, y: np.ndarray, h: np.ndarray) -> np.ndarray:
        """(n, 2) r and heading error of members `idx` (on `lane` at `s`, r, heading error, pose)
        on their path lanes; updates the path lanes."""
        tab = self.table
        path = self.lane[idx]
        if np.minimum.reduce(path) < 0:  # not yet known: the current lane
            path = np.where(path < 0, lane, path)
        out = np.empty((len(idx), 2))  # np.stack's Python wrapper costs more than two column writes
        out[:, 0] = r
        out[:, 1] = heading_error
        other = (path != lane).nonzero()[0]
        if len(other):  # kept while the member is near it and not on it (a fork's other branch)
            pl = path[other]
            sp, rp = tab.local_coordinates(pl, x[other], y[other])
            keep = (tab.road[pl] != tab.road[lane[other]]) & (np.abs(rp) < tab.width[pl]) & (sp <= tab.length[pl])
            path[other[~keep]] = lane[other[~keep]]
            k = other[keep]
            out[k, 0] = rp[keep]
            out[k, 1] = wrap_angle(h[k] - tab.heading_at(pl[keep], sp[keep]))
            sp_all = s.copy()
            sp_all[k] = sp[keep]
        else:
            sp_all = s
        late = (sp_all > tab.follow_at[path]).nonzero()[0]  # past the path lane's follow_at (rare)
        if len(late):
            nxt = self._next_flat.take(idx[late] * tab.n + path[late])
            go = (path[late] == lane[late]) & (nxt >= 0)
            adv, nl = late[go], nxt[go]
            if len(adv):
                sn, rn = tab.local_coordinates(nl, x[adv], y[adv])
                path[adv] = nl
                out[adv, 0] = rn
                out[adv, 1] = wrap_angle(h[adv] - tab.heading_at(nl, sn))
        self.lane[idx] = path
        return out
