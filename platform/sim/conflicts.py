"""Right-of-way conflicts between lanes of different highway-env `priority`, built once per network.

Owns `Conflicts` (`LaneTable.conflicts`). There are none when every lane has the same
priority (highways and every all-default network). A conflict is an ordered pair (ego lane E,
other lane O) of lanes with different priorities, either

- crossing or converging: not on the same road, not consecutive, not diverging from the same
  node, and a reference body (`VEHICLE_LENGTH` × `VEHICLE_WIDTH` plus `BODY_MARGIN` on every
  side) centred on one lane's centre line overlaps the corridor the other lane's bodies sweep; or
- merging: both lanes continue onto the same `follow_next` lane N (a ramp or dropped lane
  ending beside the lane that carries on, a roundabout entry joining the ring, connectors
  ending at one outgoing lane). Each lane's zone then also covers its last vehicle length,
  and the priority lane's zone reaches a body length (plus margin) into N.

Each side gets a zone [z0, z1] of centre positions along its own lane where its body may
touch the other's (`zone`, `other_zone`). Conflicts are sorted by ego lane; `start[k]` is the
first conflict of lane k. Per lane, `zone_start` is the first z0 of all its conflicts (the
yield line is just before it) and `zone_end` the last z1; `lane_yields` marks lanes with at
least one yielding conflict. `yields` is True where the ego lane has the lower priority.

Watch entries say where vehicles relevant to a conflict can be: on O itself, on O's
successors (only where O's zone reaches its end), and, for yielding conflicts, on lanes up to
`WATCH_HOPS` predecessors upstream (within `WATCH_HORIZON` of the zone) whose lane numbering
lets them lead into O; a vehicle on watch lane F at s sits at s + `watch_offset` in O's frame.
`watch_next_lane` is the lane the chain continues on (−1 on O and after it): a vehicle on F
counts only if it will take that lane next (its route's road, else `follow_next`). Entries
are sorted by lane; `watch_start[k]` is the first entry of lane k.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import shapely

from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH

if TYPE_CHECKING:
    from diffplatoon.sim.lanes import LaneTable

BODY_MARGIN = 0.5  # [m] clearance around the reference body on every side
_CONFLICT_STEP = 0.5  # [m] sampling step along lanes
WATCH_HORIZON = 150.0  # [m] how far upstream of a zone traffic is watched
WATCH_HOPS = 3  # how many lanes upstream of a zone traffic is watched


class Conflicts:
    """Conflict pairs, zones and watch entries of one `LaneTable` (module docstring)."""

    def __init__(self, table: LaneTable):
        t = table
        n = t.n
        pairs: dict[tuple[int, int], list[float]] = {}  # (ego, other) -> [z0, z1, o0, o1]
        if t.priority.min() != t.priority.max():
            _geometric_conflicts(t, pairs)
            _merge_conflicts(t, pairs)
        keys = sorted(pairs)
        c = len(keys)
        self.n = c
        ego = np.array([k[0] for k in keys], dtype=np.intp)
        self.lane = ego
        self.other = np.array([k[1] for k in keys], dtype=np.intp)
        z = np.array([pairs[k] for k in keys], dtype=np.float64).reshape(c, 4)
        self.zone, self.other_zone = z[:, :2].copy(), z[:, 2:].copy()
        self.yields = t.priority[ego] < t.priority[self.other]
        self.start = np.searchsorted(ego, np.arange(n + 1)).astype(np.intp)
        self.zone_start = np.full(n, np.inf)
        self.zone_end = np.full(n, -np.inf)
        if c:
            np.minimum.at(self.zone_start, ego, self.zone[:, 0])
            np.maximum.at(self.zone_end, ego, self.zone[:, 1])
        self.lane_yields = np.zeros(n, dtype=bool)
        self.lane_yields[ego[self.yields]] = True
        self._fill_watch(t)

    def _fill_watch(self, t: LaneTable) -> None:
        entries: dict[tuple[int, int], tuple[float, int]] = {}  # (conflict, lane) -> (offset, next lane)

        def add(c: int, lane: int, offset: float, next_road: int) -> None:
            old = entries.get((c, lane))
            if old is None or offset > old[0]:  # the closest chain is the conservative one
                entries[(c, lane)] = (offset, next_road)

        for c in range(self.n):
            o = int(self.other[c])
            o0, o1 = self.other_zone[c]
            add(c, o, 0.0, -1)
            if o1 > t.length[o]:
                for m in t.successors[o]:
                    add(c, int(m), float(t.length[o]), -1)
            if not self.yields[c]:
                continue
            frontier = [(o, 0.0)]
            for _ in range(WATCH_HOPS):
                nxt_frontier = []
                for lane, off in frontier:
                    for p in t.predecessors[lane]:
                        p = int(p)
                        same_count = t.road_size[p] == t.road_size[lane]
                        if same_count and t.lane_pos[p] != t.lane_pos[lane]:
                            continue  # highway-env keeps the lane number between equal roads
                        p_off = off - float(t.length[p])
                        if o0 - p_off > WATCH_HORIZON + t.length[p]:
                            continue
                        add(c, p, p_off, lane)
                        nxt_frontier.append((p, p_off))
                frontier = nxt_frontier
        keys = sorted(entries, key=lambda k: (k[1], k[0]))
        lanes = np.array([k[1] for k in keys], dtype=np.intp)
        self.watch_conflict = np.array([k[0] for k in keys], dtype=np.intp)
        self.watch_offset = np.array([entries[k][0] for k in keys], dtype=np.float64)
        self.watch_next_lane = np.array([entries[k][1] for k in keys], dtype=np.intp)
        self.watch_start = np.searchsorted(lanes, np.arange(t.n + 1)).astype(np.intp)


def _samples(t: LaneTable, k: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n_s = max(2, int(np.ceil((hi - lo) / _CONFLICT_STEP)) + 1)
    s = np.linspace(lo, hi, n_s)
    ids = np.full(n_s, k)
    x, y = t.position(ids, s, np.zeros(n_s))
    return s, x, y, t.heading_at(ids, s)


def _geometric_conflicts(t: LaneTable, pairs: dict) -> None:
    half_l, half_w = VEHICLE_LENGTH / 2 + BODY_MARGIN, VEHICLE_WIDTH / 2 + BODY_MARGIN
    corridors, bodies = [], []
    for k in range(t.n):
        _, x, y, _ = _samples(t, k, -half_l, t.length[k] + half_l)
        corridors.append(shapely.buffer(shapely.linestrings(np.stack([x, y], 1)), half_w, cap_style="flat"))
        s, x, y, h = _samples(t, k, 0.0, t.length[k])
        c, sn = np.cos(h), np.sin(h)
        corners = np.stack([
            np.stack([x + a * half_l * c - b * half_w * sn, y + a * half_l * sn + b * half_w * c], -1)
            for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))], 1)
        bodies.append((s, shapely.polygons(corners)))
    tree = shapely.STRtree(corridors)
    start_node = [idx[0] for idx in t.indices]
    for a, b in zip(*tree.query(corridors, predicate="intersects")):
        a, b = int(a), int(b)
        if a >= b or t.priority[a] == t.priority[b] or t.road[a] == t.road[b]:
            continue
        if start_node[a] == start_node[b] or b in t.successors[a] or a in t.successors[b]:
            continue
        za, zb = _zone(bodies[a], corridors[b]), _zone(bodies[b], corridors[a])
        if za is None or zb is None:
            continue
        pairs[(a, b)] = [*za, *zb]
        pairs[(b, a)] = [*zb, *za]


def _zone(body: tuple[np.ndarray, np.ndarray], corridor) -> tuple[float, float] | None:
    s, boxes = body
    hit = shapely.intersects(boxes, corridor)
    if not np.count_nonzero(hit):
        return None
    return float(s[hit].min()), float(s[hit].max())


def _merge_conflicts(t: LaneTable, pairs: dict) -> None:
    into = VEHICLE_LENGTH + BODY_MARGIN
    for a in range(t.n):
        for b in range(t.n):
            nxt = t.follow_next[a]
            if a == b or nxt < 0 or t.follow_next[b] != nxt or t.priority[a] >= t.priority[b]:
                continue
            la, lb = t.length[a], t.length[b]
            za = [la - VEHICLE_LENGTH, la, lb - VEHICLE_LENGTH, lb + into]  # a yields to b
            for key, z in (((a, b), za), ((b, a), [*za[2:], *za[:2]])):
                old = pairs.get(key, z)
                pairs[key] = [min(old[0], z[0]), max(old[1], z[1]), min(old[2], z[2]), max(old[3], z[3])]
