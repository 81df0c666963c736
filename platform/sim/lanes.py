"""Lane geometry of a highway-env `RoadNetwork` as arrays, vectorized over vehicles.

Owns the `LaneTable`: every lane of the network gets an int id (in the order highway-env's
`get_closest_lane_index` enumerates lanes, so ties break the same way), and its parameters
live in per-lane arrays. Coordinate transforms (`local_coordinates`, `position`,
`heading_at`, `distance_with_heading`, `on_lane`) take an array of lane ids and arrays of
coordinates of the same shape, so one call serves vehicles on lanes of mixed types.

Lane types with closed forms, replicating highway-env's own formulas exactly:

| kind | class | local coordinates |
|---|---|---|
| 0 | `StraightLane` | projection on the start→end segment |
| 1 | `SineLane` | straight projection, lateral minus ``A·sin(ω·s + φ)`` (s along the chord) |
| 2 | `CircularLane` | polar angle around the centre |
| 3 | anything else (`PolyLane`, subclasses) | the lane's own methods, element by element (slow) |

The SineLane row is highway-env's own approximation: s is measured along the chord, not the
curve, and r is the offset from the sine in the chord's normal direction.

Topology: `left`/`right` neighbours on the same road (lane id −1 / +1 in highway-env terms),
`successors` (every lane of every road that starts where this lane's road ends, except roads
turning back by more than 90°: the intersection's and roundabout's arms end their outgoing
lanes at the node their incoming lanes start from, so without this traffic would U-turn),
`predecessors`, `default_next` (what highway-env's `next_lane` picks at the lane end without
a route), `follow_next` (what it picks from the centre line half a vehicle length before the
end, where traffic's `follow_road` switches lanes; the two differ where next lanes start at
one point, as at the intersection's stop lines), `entry_lanes` (no predecessor) and `near`: for each lane, the lanes whose band
(|r| ≤ width/2 + 1 m, s within one vehicle length of the ends, i.e. highway-env's
`on_lane(margin=1)` region) touches its own band. `near` is the candidate set for the
closest-lane search and the lane-membership projection of the simulator.

Vehicles off the road: `near` only holds lanes touching a lane's band, so the World also asks
`far_lanes_may_be_closer`, which bounds highway-env's lane distance from below by the distance
to a box around each other lane's centre line (minus a SineLane's amplitude) and so tells when
the search over all lanes can be skipped with the same result.

Routes: `road_next` (roads reachable from each road, U-turns excluded as for `successors`),
`exit_roads` (no successor), `has_junctions` (some road leads to more than one road),
`exit_paths(road)` (shortest road sequences to every reachable exit road) and
`road_exit_lane` (the lane to drive on before a road with another lane count).

Conflicts (right of way), built once, only when the lanes' highway-env `priority` values
differ (so highways and every all-default network get none). A conflict is an ordered pair
(ego lane E, other lane O) of lanes with different priorities, either

- crossing or converging: not on the same road, not consecutive, not diverging from the same
  node, and a reference body (5 m × 2 m plus 0.5 m on every side) centred on one lane's
  centre line overlaps the corridor the other lane's bodies sweep; or
- merging: both lanes continue onto the same `follow_next` lane N (a ramp or dropped lane
  ending beside the lane that carries on, a roundabout entry joining the ring, connectors
  ending at one outgoing lane). Each lane's zone then also covers its last vehicle length,
  and the priority lane's zone reaches a body length (plus margin) into N.

Each side gets a zone [z0, z1] of centre positions along its own lane where its body may
touch the other's. Per lane, `zone_start` is the first z0 of all its conflicts (the World's
yield line is just before it) and `zone_end` the last z1; `lane_yields` marks lanes with at
least one yielding conflict. `conflict_yields` is True where the ego lane has the lower
priority. Watch entries say where vehicles relevant to a conflict can be: on O itself, on
O's successors (only where O's zone reaches its end), and, for yielding conflicts, on lanes
up to `WATCH_HOPS` predecessors upstream (within `WATCH_HORIZON` of the zone) whose lane
numbering lets them lead into O; a vehicle on watch lane F at s sits at s + offset in O's
frame. `watch_next_lane` is the lane the chain continues on (−1 on O and after it): a vehicle
on F counts only if it will take that lane next (its route's road, else `follow_next`).
"""

from __future__ import annotations

import heapq

import numpy as np
import shapely
from highway_env.road.lane import AbstractLane, CircularLane, SineLane, StraightLane
from highway_env.road.road import LaneIndex, RoadNetwork

STRAIGHT, SINE, CIRCULAR, OTHER = 0, 1, 2, 3

VEHICLE_LENGTH = float(AbstractLane.VEHICLE_LENGTH)  # [m] highway-env's on_lane / after_end margin
ON_LANE_MARGIN = 1.0  # [m] lateral margin highway-env's neighbour search adds to half the width

# Sampling used once at build time to find which lane bands touch: step along s [m], and
# extra slack [m] on the band so that sampling cannot miss a touching pair.
_NEAR_STEP = 1.0
_NEAR_SLACK = 0.5
_NEAR_MAX_SAMPLES = 20000
_MAX_TURN = np.pi / 2  # [rad] a next road turning more than this at the node is no successor

# Conflict zones: reference body, clearance added on every side, sampling step along lanes [m];
# how far and how many lanes upstream of a zone traffic is watched.
BODY_LENGTH, BODY_WIDTH, BODY_MARGIN = 5.0, 2.0, 0.5
_CONFLICT_STEP = 0.5
WATCH_HORIZON = 150.0  # [m]
WATCH_HOPS = 3


def _wrap_to_pi(a: np.ndarray) -> np.ndarray:
    return ((a + np.pi) % (2 * np.pi)) - np.pi


class LaneTable:
    """Per-lane parameter arrays and vectorized geometry for one road network."""

    def __init__(self, network: RoadNetwork):
        self.network = network
        self.indices: list[LaneIndex] = []
        self.lanes: list[AbstractLane] = []
        for _from, to_dict in network.graph.items():
            for _to, lanes in to_dict.items():
                for _id, lane in enumerate(lanes):
                    self.indices.append((_from, _to, _id))
                    self.lanes.append(lane)
        if not self.lanes:
            raise ValueError("the road network has no lanes")
        self.id_of: dict[LaneIndex, int] = {idx: k for k, idx in enumerate(self.indices)}
        n = self.n = len(self.lanes)

        self.roads: list[tuple[str, str]] = list(dict.fromkeys(idx[:2] for idx in self.indices))
        road_id = {r: k for k, r in enumerate(self.roads)}
        self.road = np.array([road_id[idx[:2]] for idx in self.indices], dtype=np.intp)
        self.lane_pos = np.array([idx[2] for idx in self.indices], dtype=np.intp)
        self.road_size = np.array(
            [len(network.graph[f][t]) for f, t, _ in self.indices], dtype=np.intp
        )

        self._fill_geometry()
        self._fill_topology()
        self.near = self._near_lanes()
        self._fill_conflicts()
        # Lanes no further than this from any band point: a closest-lane distance above it may
        # have missed a lane outside the `near` candidates (see `closest_lane`).
        self.near_trust = float(np.min(self.width) / 2 + ON_LANE_MARGIN)
        self._fill_far_search()

    # ------------------------------------------------------------------ build
    def _fill_geometry(self) -> None:
        n = self.n
        z = lambda: np.zeros(n)  # noqa: E731
        self.kind = np.full(n, OTHER, dtype=np.int8)
        self.start_x, self.start_y, self.dir_x, self.dir_y, self.heading0 = z(), z(), z(), z(), z()
        self.amplitude, self.pulsation, self.phase = z(), z(), z()
        self.center_x, self.center_y, self.radius, self.start_phase = z(), z(), np.ones(n), z()
        self.cdir = np.ones(n)
        self.length, self.width = z(), z()
        self.speed_limit = np.full(n, np.inf)
        self.speed_floor = np.full(n, -np.inf)  # IDM clips target speed to [0, limit] only if a limit exists
        self.forbidden = np.zeros(n, dtype=bool)
        self.priority = np.zeros(n, dtype=np.intp)
        for k, lane in enumerate(self.lanes):
            t = type(lane)
            if t is StraightLane or t is SineLane:
                self.kind[k] = STRAIGHT if t is StraightLane else SINE
                self.start_x[k], self.start_y[k] = lane.start
                self.dir_x[k], self.dir_y[k] = lane.direction
                self.heading0[k] = lane.heading
                if t is SineLane:
                    self.amplitude[k], self.pulsation[k], self.phase[k] = (
                        lane.amplitude, lane.pulsation, lane.phase)
            elif t is CircularLane:
                self.kind[k] = CIRCULAR
                self.center_x[k], self.center_y[k] = lane.center
                self.radius[k], self.start_phase[k] = lane.radius, lane.start_phase
                self.cdir[k] = lane.direction
            self.length[k] = lane.length
            self.width[k] = lane.width_at(0.0)
            if lane.speed_limit is not None:
                self.speed_limit[k] = lane.speed_limit
                self.speed_floor[k] = 0.0
            self.forbidden[k] = bool(getattr(lane, "forbidden", False))
            self.priority[k] = int(getattr(lane, "priority", 0) or 0)
        self.has_sine = bool(np.any(self.kind == SINE))
        self.circular_ids = np.flatnonzero(self.kind == CIRCULAR)
        self.other_ids = np.flatnonzero(self.kind == OTHER)
        self.is_circular = self.kind == CIRCULAR
        self.is_other = self.kind == OTHER
        self.all_linear = not self.has_sine and len(self.circular_ids) == 0 and len(self.other_ids) == 0

    def _fill_topology(self) -> None:
        g = self.network.graph
        n = self.n
        self.left = np.full(n, -1, dtype=np.intp)
        self.right = np.full(n, -1, dtype=np.intp)
        succ: list[list[int]] = [[] for _ in range(n)]
        pred: list[list[int]] = [[] for _ in range(n)]
        for k, (f, t, i) in enumerate(self.indices):
            if i > 0:
                self.left[k] = self.id_of[(f, t, i - 1)]
            if i < len(g[f][t]) - 1:
                self.right[k] = self.id_of[(f, t, i + 1)]
            end_heading = self.lanes[k].heading_at(self.lanes[k].length)
            for nt, lanes in g.get(t, {}).items():
                if abs(_wrap_to_pi(lanes[0].heading_at(0.0) - end_heading)) > _MAX_TURN:
                    continue  # a lane back the way it came (an arm's outgoing and incoming lanes share a node)
                for j in range(len(lanes)):
                    m = self.id_of[(t, nt, j)]
                    succ[k].append(m)
                    pred[m].append(k)
        self.successors = [np.array(s, dtype=np.intp) for s in succ]
        self.predecessors = [np.array(p, dtype=np.intp) for p in pred]
        self.n_successors = np.array([len(s) for s in succ], dtype=np.intp)
        self.entry_lanes = np.array([k for k in range(n) if not pred[k]], dtype=np.intp)
        self.default_next = np.full(n, -1, dtype=np.intp)
        self.follow_next = np.full(n, -1, dtype=np.intp)
        for k, idx in enumerate(self.indices):
            if succ[k]:
                length = self.lanes[k].length
                for out, s in ((self.default_next, length), (self.follow_next, length - VEHICLE_LENGTH / 2)):
                    nxt = self.network.next_lane(idx, route=None, position=self.lanes[k].position(s, 0.0))
                    if nxt != idx and self.id_of[nxt] in succ[k]:
                        out[k] = self.id_of[nxt]
                    elif nxt != idx:  # highway-env picked a lane back the way it came: take the closest successor
                        end = self.lanes[k].position(length, 0.0)
                        out[k] = min(succ[k], key=lambda m: self.lanes[m].distance(end))
        # First lane id of each road (a road's lanes have consecutive ids).
        self.road_first = np.array([self.id_of[(f, t, 0)] for f, t in self.roads], dtype=np.intp)
        # s beyond which traffic switches to the next lane (follow_road), resp. leaves the road.
        self.follow_at = np.where(self.n_successors > 0, self.length - VEHICLE_LENGTH / 2, np.inf)
        self.exit_at = np.where(self.n_successors == 0, self.length, np.inf)
        self._enterable = ~self.forbidden
        self._reach_r = 2 * self.width
        self._reach_end = self.length + VEHICLE_LENGTH
        self._band_half = self.width / 2 + ON_LANE_MARGIN
        self._fill_road_graph()

    def _fill_road_graph(self) -> None:
        """Road-level topology for traffic routes: next roads, exit roads, junctions."""
        n_roads = len(self.roads)
        nxt: list[set[int]] = [set() for _ in range(n_roads)]
        for k in range(self.n):
            nxt[self.road[k]].update(int(self.road[m]) for m in self.successors[k])
        self.road_next = [sorted(s) for s in nxt]
        self.road_length = self.length[self.road_first]
        self.exit_roads = [r for r in range(n_roads) if not nxt[r]]
        self.has_junctions = any(len(s) > 1 for s in nxt)
        self._exit_paths: dict[int, list[list[int]]] = {}
        self.road_exit_lane = self._exit_lanes_of_roads()

    def exit_paths(self, road: int) -> list[list[int]]:
        """Shortest road sequences (by length) from `road` to every exit road reachable from it,
        `road` first, ordered by exit road id."""
        if road not in self._exit_paths:
            dist, prev, todo = {road: 0.0}, {road: -1}, [(0.0, road)]
            while todo:
                d, r = heapq.heappop(todo)
                if d > dist[r]:
                    continue
                for m in self.road_next[r]:
                    dm = d + float(self.road_length[m])
                    if dm < dist.get(m, np.inf):
                        dist[m], prev[m] = dm, r
                        heapq.heappush(todo, (dm, m))
            paths = []
            for e in self.exit_roads:
                if e in prev:
                    path = [e]
                    while prev[path[-1]] >= 0:
                        path.append(prev[path[-1]])
                    paths.append(path[::-1])
            self._exit_paths[road] = paths
        return self._exit_paths[road]

    def _exit_lanes_of_roads(self) -> np.ndarray:
        """(roads, roads) lane position to drive on road r before road m where m follows r with
        another lane count: the lane ending nearest m's first lane (the outer ring lane before a
        roundabout exit); −1 elsewhere (highway-env keeps the lane number)."""
        n_roads = len(self.roads)
        out = np.full((n_roads, n_roads), -1, dtype=np.intp)
        for r in range(n_roads):
            first = self.road_first[r]
            lanes = np.arange(first, first + self.road_size[first])
            xe, ye = self.position(lanes, self.length[lanes], np.zeros(len(lanes)))
            for m in self.road_next[r]:
                nxt = self.road_first[m]
                if self.road_size[nxt] != len(lanes):
                    x0, y0 = self.position(np.array([nxt]), np.zeros(1), np.zeros(1))
                    out[r, m] = int(np.argmin(np.hypot(xe - x0[0], ye - y0[0])))
        return out

    def _near_lanes(self) -> np.ndarray:
        """(n, K) lane ids, −1 padded, sorted: lanes whose on-lane band touches each lane's band."""
        near: list[list[int]] = []
        for k in range(self.n):
            lo, hi = -VEHICLE_LENGTH - 3.0, self.length[k] + VEHICLE_LENGTH + 3.0
            n_s = int(min(_NEAR_MAX_SAMPLES, np.ceil((hi - lo) / _NEAR_STEP) + 1))
            half = self.width[k] / 2 + ON_LANE_MARGIN + _NEAR_SLACK
            s, r = np.meshgrid(np.linspace(lo, hi, n_s), np.linspace(-half, half, 9))
            s, r = s.ravel(), r.ravel()
            px, py = self.position(np.full(s.shape, k), s, r)
            found = {k}
            found.update(int(m) for m in self.successors[k])
            found.update(int(m) for m in self.predecessors[k])
            found.update(int(m) for m in (self.left[k], self.right[k]) if m >= 0)
            for m in range(self.n):
                if m in found:
                    continue
                ids = np.full(px.shape, m)
                sm, rm = self.local_coordinates(ids, px, py)
                band = (np.abs(rm) <= self.width[m] / 2 + ON_LANE_MARGIN + _NEAR_SLACK) & (
                    sm >= -VEHICLE_LENGTH - 3.0) & (sm <= self.length[m] + VEHICLE_LENGTH + 3.0)
                if np.count_nonzero(band):
                    found.add(m)
            near.append(sorted(found))
        width = max(len(x) for x in near)
        out = np.full((self.n, width), -1, dtype=np.intp)
        for k, ids in enumerate(near):
            out[k, : len(ids)] = ids
        return out

    def _fill_far_search(self) -> None:
        """What `far_lanes_may_be_closer` needs: each lane's lanes outside `near`, and boxes.

        Each lane gets an axis-aligned box holding its centre line and a slack such that
        distance(point, box) − slack ≤ `distance_with_heading` of the point on that lane (the
        point at the clamped s lies on the centre line, or for a SineLane within the
        amplitude of its chord); lanes of unknown shape get an infinite box.
        """
        n = self.n
        box = np.empty((n + 1, 4))  # x0, x1, y0, y1; row n: an empty box for padding
        box[n] = (np.inf, -np.inf, np.inf, -np.inf)
        self.box_slack = np.zeros(n + 1)
        for k in range(n):
            if self.kind[k] == OTHER:
                box[k] = (-np.inf, np.inf, -np.inf, np.inf)
                continue
            if self.kind[k] == CIRCULAR:
                n_s = 512
                s = np.linspace(0.0, self.length[k], n_s)
                step = self.length[k] / (n_s - 1) / self.radius[k]
                pad = self.radius[k] * (1 - np.cos(step / 2)) + 1e-6  # sagitta between samples
            else:
                s = np.array([0.0, self.length[k]])
                pad = 1e-6
                self.box_slack[k] = abs(self.amplitude[k])
            ids = np.full(len(s), k)
            if self.kind[k] == SINE:  # the chord, not the curve
                px = self.start_x[k] + s * self.dir_x[k]
                py = self.start_y[k] + s * self.dir_y[k]
            else:
                px, py = self.position(ids, s, np.zeros(len(s)))
            box[k] = (px.min() - pad, px.max() + pad, py.min() - pad, py.max() + pad)
        self.box = np.concatenate((box, self.box_slack[:, None]), axis=1)  # (n + 1, 5) with the slack
        far = [np.setdiff1d(np.arange(n), self.near[k][self.near[k] >= 0]) for k in range(n)]
        width = max(len(f) for f in far)
        self.far = np.full((n, width), n, dtype=np.intp)  # padded with n (the empty box)
        for k, ids in enumerate(far):
            self.far[k, : len(ids)] = ids
        self.near_ids = np.where(self.near >= 0, self.near, 0)  # `near` with padding on lane 0
        self.near_pad = self.near < 0

    def far_lanes_may_be_closer(self, lanes: np.ndarray, x: np.ndarray, y: np.ndarray,
                                best: np.ndarray) -> np.ndarray:
        """Whether a lane outside `near[lanes]` may be within `best` (highway-env's lane distance)
        of the points (x, y): where False, the closest lane among the `near` ones is the closest."""
        far = self.far[lanes]  # (m, F)
        if far.shape[1] == 0:
            return np.zeros(len(lanes), dtype=bool)
        box = self.box[far]  # (m, F, 5)
        xc, yc = x[:, None], y[:, None]
        dx = np.maximum(np.maximum(box[..., 0] - xc, xc - box[..., 1]), 0.0)
        dy = np.maximum(np.maximum(box[..., 2] - yc, yc - box[..., 3]), 0.0)
        need = np.hypot(dx, dy) - box[..., 4] <= best[:, None] + 1e-6
        if not np.count_nonzero(need):
            return np.zeros(len(lanes), dtype=bool)
        return need.any(axis=1)

    def _fill_conflicts(self) -> None:
        """Conflict pairs, zones and watch entries (see the module docstring)."""
        n = self.n
        pairs: dict[tuple[int, int], list[float]] = {}  # (ego, other) -> [z0, z1, o0, o1]
        if self.priority.min() != self.priority.max():
            self._geometric_conflicts(pairs)
            self._merge_conflicts(pairs)
        keys = sorted(pairs)
        c = len(keys)
        self.n_conflicts = c
        ego = np.array([k[0] for k in keys], dtype=np.intp)
        self.conflict_lane = ego
        self.conflict_other = np.array([k[1] for k in keys], dtype=np.intp)
        z = np.array([pairs[k] for k in keys], dtype=np.float64).reshape(c, 4)
        self.conflict_zone, self.conflict_other_zone = z[:, :2].copy(), z[:, 2:].copy()
        self.conflict_yields = self.priority[ego] < self.priority[self.conflict_other]
        self.conflict_start = np.searchsorted(ego, np.arange(n + 1)).astype(np.intp)
        self.zone_start = np.full(n, np.inf)
        self.zone_end = np.full(n, -np.inf)
        if c:
            np.minimum.at(self.zone_start, ego, self.conflict_zone[:, 0])
            np.maximum.at(self.zone_end, ego, self.conflict_zone[:, 1])
        self.lane_yields = np.zeros(n, dtype=bool)
        self.lane_yields[ego[self.conflict_yields]] = True
        self.has_conflicts = c > 0
        self._fill_watch()

    def _samples(self, k: int, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n_s = max(2, int(np.ceil((hi - lo) / _CONFLICT_STEP)) + 1)
        s = np.linspace(lo, hi, n_s)
        ids = np.full(n_s, k)
        x, y = self.position(ids, s, np.zeros(n_s))
        return s, x, y, self.heading_at(ids, s)

    def _geometric_conflicts(self, pairs: dict) -> None:
        half_l, half_w = BODY_LENGTH / 2 + BODY_MARGIN, BODY_WIDTH / 2 + BODY_MARGIN
        corridors, bodies = [], []
        for k in range(self.n):
            _, x, y, _ = self._samples(k, -half_l, self.length[k] + half_l)
            corridors.append(shapely.buffer(shapely.linestrings(np.stack([x, y], 1)), half_w, cap_style="flat"))
            s, x, y, h = self._samples(k, 0.0, self.length[k])
            c, sn = np.cos(h), np.sin(h)
            corners = np.stack([
                np.stack([x + a * half_l * c - b * half_w * sn, y + a * half_l * sn + b * half_w * c], -1)
                for a, b in ((1, 1), (1, -1), (-1, -1), (-1, 1))], 1)
            bodies.append((s, shapely.polygons(corners)))
        tree = shapely.STRtree(corridors)
        start_node = [idx[0] for idx in self.indices]
        for a, b in zip(*tree.query(corridors, predicate="intersects")):
            a, b = int(a), int(b)
            if a >= b or self.priority[a] == self.priority[b] or self.road[a] == self.road[b]:
                continue
            if start_node[a] == start_node[b] or b in self.successors[a] or a in self.successors[b]:
                continue
            za, zb = self._zone(bodies[a], corridors[b]), self._zone(bodies[b], corridors[a])
            if za is None or zb is None:
                continue
            pairs[(a, b)] = [*za, *zb]
            pairs[(b, a)] = [*zb, *za]

    @staticmethod
    def _zone(body: tuple[np.ndarray, np.ndarray], corridor) -> tuple[float, float] | None:
        s, boxes = body
        hit = shapely.intersects(boxes, corridor)
        if not np.count_nonzero(hit):
            return None
        return float(s[hit].min()), float(s[hit].max())

    def _merge_conflicts(self, pairs: dict) -> None:
        into = BODY_LENGTH + BODY_MARGIN
        for a in range(self.n):
            for b in range(self.n):
                nxt = self.follow_next[a]
                if a == b or nxt < 0 or self.follow_next[b] != nxt or self.priority[a] >= self.priority[b]:
                    continue
                la, lb = self.length[a], self.length[b]
                za = [la - BODY_LENGTH, la, lb - BODY_LENGTH, lb + into]  # a yields to b
                for key, z in (((a, b), za), ((b, a), [*za[2:], *za[:2]])):
                    old = pairs.get(key, z)
                    pairs[key] = [min(old[0], z[0]), max(old[1], z[1]), min(old[2], z[2]), max(old[3], z[3])]

    def _fill_watch(self) -> None:
        entries: dict[tuple[int, int], tuple[float, int]] = {}  # (conflict, lane) -> (offset, next lane)

        def add(c: int, lane: int, offset: float, next_road: int) -> None:
            old = entries.get((c, lane))
            if old is None or offset > old[0]:  # the closest chain is the conservative one
                entries[(c, lane)] = (offset, next_road)

        for c in range(self.n_conflicts):
            o = int(self.conflict_other[c])
            o0, o1 = self.conflict_other_zone[c]
            add(c, o, 0.0, -1)
            if o1 > self.length[o]:
                for m in self.successors[o]:
                    add(c, int(m), float(self.length[o]), -1)
            if not self.conflict_yields[c]:
                continue
            frontier = [(o, 0.0)]
            for _ in range(WATCH_HOPS):
                nxt_frontier = []
                for lane, off in frontier:
                    for p in self.predecessors[lane]:
                        p = int(p)
                        same_count = self.road_size[p] == self.road_size[lane]
                        if same_count and self.lane_pos[p] != self.lane_pos[lane]:
                            continue  # highway-env keeps the lane number between equal roads
                        p_off = off - float(self.length[p])
                        if o0 - p_off > WATCH_HORIZON + self.length[p]:
                            continue
                        add(c, p, p_off, lane)
                        nxt_frontier.append((p, p_off))
                frontier = nxt_frontier
        keys = sorted(entries, key=lambda k: (k[1], k[0]))
        lanes = np.array([k[1] for k in keys], dtype=np.intp)
        self.watch_conflict = np.array([k[0] for k in keys], dtype=np.intp)
        self.watch_offset = np.array([entries[k][0] for k in keys], dtype=np.float64)
        self.watch_next_lane = np.array([entries[k][1] for k in keys], dtype=np.intp)
        self.watch_start = np.searchsorted(lanes, np.arange(self.n + 1)).astype(np.intp)

    # ------------------------------------------------------------ look-ups
    def lane_id(self, index: LaneIndex) -> int:
        """Int id of a highway-env lane index ``(from, to, id)``."""
        f, t, i = index
        if i is None:
            i = 0
        return self.id_of[(f, t, int(i))]

    def lane_index(self, lane_id: int) -> LaneIndex:
        """highway-env lane index of an int lane id."""
        return self.indices[int(lane_id)]

    # ------------------------------------------------------------ geometry
    def local_coordinates(self, lanes: np.ndarray, x: np.ndarray, y: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
        """(s, r): longitudinal and lateral coordinates of world points on the given lanes."""
        dx = x - self.start_x[lanes]
        dy = y - self.start_y[lanes]
        ux, uy = self.dir_x[lanes], self.dir_y[lanes]
        s = dx * ux + dy * uy
        r = dy * ux - dx * uy  # lateral axis is (-uy, ux)
        if self.all_linear:
            return s, r
        x, y = np.broadcast_to(x, s.shape), np.broadcast_to(y, s.shape)
        if self.has_sine:
            r = r - self.amplitude[lanes] * np.sin(self.pulsation[lanes] * s + self.phase[lanes])
        if len(self.circular_ids):
            self._circular_local(lanes, x, y, s, r)
        if len(self.other_ids):
            self._other_apply(lanes, x, y, s, r, "local")
        return s, r

    def longitudinal(self, lanes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """s of `local_coordinates` alone (the same values)."""
        if self.all_linear:
            return (x - self.start_x[lanes]) * self.dir_x[lanes] + (y - self.start_y[lanes]) * self.dir_y[lanes]
        return self.local_coordinates(lanes, x, y)[0]

    def _circular_local(self, lanes, x, y, s, r) -> None:
        m = self.is_circular[lanes]
        if not np.count_nonzero(m):
            return
        lc = lanes[m]
        dx = x[m] - self.center_x[lc]
        dy = y[m] - self.center_y[lc]
        sp = self.start_phase[lc]
        phi = sp + _wrap_to_pi(np.arctan2(dy, dx) - sp)
        cd = self.cdir[lc]
        s[m] = cd * (phi - sp) * self.radius[lc]
        r[m] = cd * (self.radius[lc] - np.hypot(dx, dy))

    def _other_apply(self, lanes, a, b, out1, out2, what: str) -> None:
        m = np.flatnonzero(self.is_other[lanes].ravel())
        if len(m) == 0:
            return
        fl, fa, fb = lanes.ravel(), np.ravel(a), np.ravel(b)
        o1, o2 = out1.reshape(-1), out2.reshape(-1)
        for k in m:
            lane = self.lanes[fl[k]]
            if what == "local":
                o1[k], o2[k] = lane.local_coordinates(np.array([fa[k], fb[k]]))
            else:
                o1[k], o2[k] = lane.position(fa[k], fb[k])

    def position(self, lanes: np.ndarray, s: np.ndarray, r: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) world points at lane coordinates (s, r) on the given lanes."""
        lanes = np.asarray(lanes)
        s = np.asarray(s, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if self.has_sine:
            r = r + self.amplitude[lanes] * np.sin(self.pulsation[lanes] * s + self.phase[lanes])
        ux, uy = self.dir_x[lanes], self.dir_y[lanes]
        x = self.start_x[lanes] + s * ux - r * uy
        y = self.start_y[lanes] + s * uy + r * ux
        if self.all_linear:
            return x, y
        x, y = np.array(x, dtype=np.float64), np.array(y, dtype=np.float64)
        lanes, s, r = np.broadcast_arrays(lanes, s, r)
        if len(self.circular_ids):
            m = self.is_circular[lanes]
            if np.count_nonzero(m):
                lc = lanes[m]
                phi = self.cdir[lc] * s[m] / self.radius[lc] + self.start_phase[lc]
                rad = self.radius[lc] - r[m] * self.cdir[lc]
                x[m] = self.center_x[lc] + rad * np.cos(phi)
                y[m] = self.center_y[lc] + rad * np.sin(phi)
        if len(self.other_ids):
            self._other_apply(lanes, s, r, x, y, "position")
        return x, y

    def heading_at(self, lanes: np.ndarray, s: np.ndarray) -> np.ndarray:
        """Lane heading [rad] at longitudinal coordinate s on the given lanes."""
        h = self.heading0[lanes]
        if self.all_linear:
            return h
        s = np.asarray(s, dtype=np.float64)
        if self.has_sine:
            a = self.amplitude[lanes]
            w = self.pulsation[lanes]
            h = h + np.arctan(a * w * np.cos(w * s + self.phase[lanes]))
        if len(self.circular_ids) or len(self.other_ids):
            lanes, s = np.broadcast_arrays(lanes, s)
            h = np.array(np.broadcast_to(h, s.shape), dtype=np.float64)
            m = self.is_circular[lanes]
            if np.count_nonzero(m):
                lc = lanes[m]
                phi = self.cdir[lc] * s[m] / self.radius[lc] + self.start_phase[lc]
                h[m] = phi + np.pi / 2 * self.cdir[lc]
            for k in np.flatnonzero(self.is_other[lanes].ravel()):
                h.reshape(-1)[k] = self.lanes[np.ravel(lanes)[k]].heading_at(np.ravel(s)[k])
        return h

    def distance_with_heading(self, lanes: np.ndarray, s: np.ndarray, r: np.ndarray,
                              heading: np.ndarray) -> np.ndarray:
        """highway-env's lane distance: |r| + distance beyond the ends + |heading error|."""
        length = self.length[lanes]
        d = np.abs(r) + np.maximum(s - length, 0.0) + np.maximum(-s, 0.0)
        return d + np.abs(_wrap_to_pi(heading - self.heading_at(lanes, s)))

    def on_lane(self, lanes: np.ndarray, s: np.ndarray, r: np.ndarray,
                margin: float = ON_LANE_MARGIN) -> np.ndarray:
        """highway-env's `on_lane` from known lane coordinates (constant-width lanes)."""
        half = self._band_half[lanes] if margin == ON_LANE_MARGIN else self.width[lanes] / 2 + margin
        return (np.abs(r) <= half) & (s >= -VEHICLE_LENGTH) & (s < self._reach_end[lanes])

    def is_reachable(self, lanes: np.ndarray, s: np.ndarray, r: np.ndarray) -> np.ndarray:
        """highway-env's `is_reachable_from` from known lane coordinates."""
        return self._enterable[lanes] & (np.abs(r) <= self._reach_r[lanes]) & (s >= 0) & (
            s < self._reach_end[lanes])

    def closest_lane(self, x: np.ndarray, y: np.ndarray, heading: np.ndarray,
                     lanes: np.ndarray | None = None) -> np.ndarray:
        """Closest lane by highway-env's `distance_with_heading`, searching all lanes."""
        x, y, heading = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (x, y, heading))
        all_ids = np.arange(self.n) if lanes is None else np.asarray(lanes)
        ids = np.broadcast_to(all_ids[None, :], (len(x), len(all_ids)))
        xs, ys, hs = (np.broadcast_to(v[:, None], ids.shape) for v in (x, y, heading))
        s, r = self.local_coordinates(ids, np.ascontiguousarray(xs), np.ascontiguousarray(ys))
        d = self.distance_with_heading(ids, s, r, hs)
        return all_ids[np.argmin(d, axis=1)]
