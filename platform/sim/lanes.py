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

Attributes, by group:

- identity: `n`, `indices`, `lanes`, `id_of`, `roads`, `road` (road id per lane), `lane_pos`
  (highway-env's lane number), `road_size`, `road_first`;
- geometry (`_fill_geometry`): `kind` and the closed-form parameters of each kind, `length`,
  `width`, `speed_limit`/`speed_floor`, `forbidden`, `priority`;
- topology (`_fill_topology`): `left`/`right` neighbours on the same road, `successors`
  (every lane of every road that starts where this lane's road ends, except roads turning
  back by more than 90°: the intersection's and roundabout's arms end their outgoing lanes at
  the node their incoming lanes start from, so without this traffic would U-turn),
  `predecessors`, `default_next` (what highway-env's `next_lane` picks at the lane end
  without a route), `follow_next` (what it picks from the centre line half a vehicle length
  before the end, where traffic's `follow_road` switches lanes; the two differ where next
  lanes start at one point, as at the intersection's stop lines), `entry_lanes` (no
  predecessor), `follow_at`/`exit_at` (s where traffic switches lanes / leaves the road);
- `road_graph`: road-level topology for traffic routes (road_graph.py `RoadGraph`);
- `search`: the candidate lanes of the closest-lane search (lane_search.py `LaneSearch`);
- `conflicts`: right-of-way conflicts between lanes of different priority (conflicts.py).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from highway_env.road.lane import AbstractLane, CircularLane, SineLane, StraightLane
from highway_env.road.road import LaneIndex, RoadNetwork

from diffplatoon.sim.conflicts import Conflicts
from diffplatoon.geometry import VEHICLE_LENGTH, wrap_angle
from diffplatoon.sim.lane_search import ON_LANE_MARGIN, LaneSearch
from diffplatoon.sim.road_graph import RoadGraph

STRAIGHT, SINE, CIRCULAR, OTHER = 0, 1, 2, 3

_MAX_TURN = np.pi / 2  # [rad] a next road turning more than this at the node is no successor


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
        self.road_graph = RoadGraph(self)
        self.search = LaneSearch(self)
        self.conflicts = Conflicts(self)

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
        # [floor, limit] shared by every lane, or None: the IDM's clip then needs no per-lane gather
        same = bool(np.all(self.speed_limit == self.speed_limit[0]) and np.all(self.speed_floor == self.speed_floor[0]))
        self.speed_bounds = (float(self.speed_floor[0]), float(self.speed_limit[0])) if same else None
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
                if abs(wrap_angle(lanes[0].heading_at(0.0) - end_heading)) > _MAX_TURN:
                    continue  # a lane back the way it came (an arm's outgoing and incoming lanes share a node)
                for j in range(len(lanes)):
                    m = self.id_of[(t, nt, j)]
                    succ[k].append(m)
                    pred[m].append(k)
        self.sides = np.stack([self.left, self.right], axis=1)  # (n, 2) left, right lane (−1 = none)
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
        self.has_successors = bool(np.count_nonzero(self.n_successors))
        self._enterable = ~self.forbidden
        self._reach_r = 2 * self.width
        self._reach_end = self.length + VEHICLE_LENGTH
        self._band_half = self.width / 2 + ON_LANE_MARGIN

    # ------------------------------------------------------------ look-ups
    @cached_property
    def merges_into(self) -> np.ndarray:
        """Per lane: the adjacent lane of its road it merges into at its end (both continue onto one
        `follow_next` lane, which keeps that neighbour's position), -1 where the lane does not end."""
        out = np.full(self.n, -1, dtype=np.intp)
        for k in range(self.n):
            nxt = int(self.follow_next[k])
            if nxt < 0 or self.lane_pos[nxt] == self.lane_pos[k]:
                continue
            for j in (int(self.left[k]), int(self.right[k])):
                if j >= 0 and self.follow_next[j] == nxt and self.lane_pos[j] == self.lane_pos[nxt]:
                    out[k] = j
        return out

    @cached_property
    def has_merges(self) -> bool:
        """Whether any lane merges into a neighbour (`merges_into`); without, zipper courtesy has nothing to do."""
        return bool(np.count_nonzero(self.merges_into >= 0))

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
        phi = sp + wrap_angle(np.arctan2(dy, dx) - sp)
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
        return d + np.abs(wrap_angle(heading - self.heading_at(lanes, s)))

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
