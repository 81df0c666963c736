"""Lane memberships of vehicles and the front/rear (leader/follower) queries built on them.

A vehicle belongs to every lane whose band holds its centre (highway-env's `on_lane` with a
1 m lateral margin), wherever its own lane index points; a vehicle merging after waiting
(`is_merging`, a zipper merge) also belongs to its target lane from the start of its change, so
the followers there make room for it. `membership_index` turns the frame's
candidate-lane projections into a `traffic.NeighbourIndex`. With `WorldParams.connected_lanes`
(highway-env's `neighbour_vehicles` with connected lanes) a `ConnectedLanes` component also
lists each vehicle on the lanes just before and after its own, in those lanes' frames; it
exists only in that mode.
"""

from __future__ import annotations

import numpy as np
from highway_env.road.road import RoadNetwork

from diffplatoon.sim.kinematics import Candidates
from diffplatoon.geometry import VEHICLE_LENGTH
from diffplatoon.sim.lanes import LaneTable
from diffplatoon.sim.traffic import NeighbourIndex


def lane_key_base(table: LaneTable) -> np.ndarray:
    """Per-lane offsets that keep every lane's s values apart on one sorted key axis."""
    span = 3 * float(table.length.max()) + 8 * VEHICLE_LENGTH + 100.0
    return np.arange(table.n) * span + float(table.length.max()) + 4 * VEHICLE_LENGTH


class ConnectedLanes:
    """For each lane M: the query lanes G whose connected search covers M, with s offsets.

    A vehicle on M at s is listed on G at s + offset; where it appears on G through several
    lanes, the first (G itself, then next, then previous lanes) wins.
    """

    def __init__(self, table: LaneTable, network: RoadNetwork):
        g = network.graph
        entries: list[list[tuple[int, float, int]]] = [[] for _ in range(table.n)]
        for gid, (f, t, i) in enumerate(table.indices):
            ext = [(gid, 0.0)]
            for next_lanes in g.get(t, {}).values():
                if next_lanes:
                    m = _lane_obj_id(table, next_lanes[i] if i < len(next_lanes) else next_lanes[0])
                    if m in table.successors[gid]:  # not a lane back the way it came
                        ext.append((m, float(table.length[gid])))
            for to_dict in g.values():
                if f in to_dict and to_dict[f]:
                    prev = to_dict[f][i] if i < len(to_dict[f]) else to_dict[f][0]
                    pid = _lane_obj_id(table, prev)
                    if gid in table.successors[pid]:
                        ext.append((pid, -float(table.length[pid])))
            for prio, (m, off) in enumerate(ext):
                entries[m].append((gid, off, prio))
        cnt = np.array([len(e) for e in entries], dtype=np.intp)
        flat = [e for es in entries for e in es]
        self.count = cnt
        self.start = np.cumsum(cnt) - cnt
        self.group = np.array([e[0] for e in flat], dtype=np.intp)
        self.offset = np.array([e[1] for e in flat], dtype=np.float64)
        self.priority = np.array([e[2] for e in flat], dtype=np.intp)

    def expand(self, ri: np.ndarray, lanes: np.ndarray, s: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memberships (row, lane, s) re-listed on the query lanes that see them."""
        cnt = self.count[lanes]
        rep = np.repeat(np.arange(len(lanes)), cnt)
        pos = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) \
            + np.repeat(self.start[lanes], cnt)
        ri, lanes, s = ri[rep], self.group[pos], s[rep] + self.offset[pos]
        prio = self.priority[pos]
        order = np.lexsort((prio, lanes, ri))
        ri, lanes, s = ri[order], lanes[order], s[order]
        first = np.ones(len(ri), dtype=bool)
        first[1:] = (ri[1:] != ri[:-1]) | (lanes[1:] != lanes[:-1])
        return ri[first], lanes[first], s[first]


def _lane_obj_id(table: LaneTable, lane_obj) -> int:
    for k, obj in enumerate(table.lanes):
        if obj is lane_obj:
            return k
    raise KeyError("lane not in the network")


def membership_index(table: LaneTable, candidates: Candidates, active: np.ndarray,
                     base: np.ndarray, connected: ConnectedLanes | None,
                     merging: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> NeighbourIndex:
    """Neighbour index of the live rows (`active`, rows [:hi]) from their candidate projections;
    `merging` = (rows, target lanes, their s there) adds those memberships where missing."""
    cand, sc, rc = candidates
    on = table.on_lane(cand, sc, rc) & (cand >= 0) & active[:, None]
    ri, ki = on.nonzero()
    lanes, s = cand[ri, ki], sc[ri, ki]
    if merging is not None and len(merging[0]):
        mr, ml, ms = merging
        have = set(zip(ri.tolist(), lanes.tolist()))
        new = np.array([(r, m) not in have for r, m in zip(mr.tolist(), ml.tolist())], dtype=bool)
        ri, lanes, s = np.concatenate((ri, mr[new])), np.concatenate((lanes, ml[new])), np.concatenate((s, ms[new]))
    if connected is not None:
        ri, lanes, s = connected.expand(ri, lanes, s)
    return NeighbourIndex(ri, lanes, s, base)
