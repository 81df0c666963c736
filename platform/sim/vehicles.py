"""Vehicle storage: one row of numpy state arrays per vehicle slot, spawning, despawning, routes.

Owns `Vehicles`, the arrays of the World's state layout (world.py's table), grown by doubling;
a row is live while `active`, and freed rows are reused. Rows [hi:] are all inactive. Also owns
the route storage (`route`, `route_free`, `route_pos`, `route_len`, `route_last_road`) and the
route look-ups the behaviour modules share (`route_next_road`, `next_lanes`). Lane geometry
comes from the `LaneTable` passed in; nothing here moves a vehicle.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from highway_env.road.road import LaneIndex

from diffplatoon.sim.lanes import LaneTable

ROUTE_LEN = 16  # most lanes a route may list

FLOAT_FIELDS = ("x", "y", "heading", "speed", "accel", "steering", "s", "r", "length",
                "width", "target_speed", "delta", "lane_change_timer", "wait_time")
INT_FIELDS = ("lane", "target_lane", "platoon", "member", "route_pos", "route_len",
              "route_last_road")
BOOL_FIELDS = ("is_controlled", "crashed", "active", "lane_change_forced", "is_yielding", "is_merging")
# Per-row constants of the collision broad phase, set at spawn: half length, half width and the
# radius of the circle around the body.
BODY_FIELDS = ("half_length", "half_width", "body_radius")
# Every per-row array the World exposes as its own attribute.
STATE_FIELDS = FLOAT_FIELDS + INT_FIELDS + BOOL_FIELDS + ("accel_override", "vid", "route", "route_free")


class Vehicles:
    """Per-row state arrays of `capacity` vehicle slots (layout in world.py's docstring)."""

    def __init__(self, table: LaneTable, capacity: int):
        self.table = table
        self.capacity = 0
        self.hi = 0  # rows >= hi are all inactive
        self.next_vid = 0
        self.n_routes = 0  # rows with a route
        self.n_overrides = 0  # rows with a finite accel_override
        self._controlled: np.ndarray | None = None  # cached `controlled_rows`
        self.alloc(max(int(capacity), 1))

    def alloc(self, capacity: int) -> None:
        """Grow every array to `capacity` rows, keeping the existing rows."""
        n_old = self.capacity
        for name in FLOAT_FIELDS + BODY_FIELDS:
            self._resize(name, capacity, 0.0, np.float64, n_old)
        for name in INT_FIELDS:
            self._resize(name, capacity, -1, np.intp, n_old)
        for name in BOOL_FIELDS:
            self._resize(name, capacity, False, bool, n_old)
        self._resize("accel_override", capacity, np.nan, np.float64, n_old)
        self._resize("vid", capacity, -1, np.int64, n_old)
        route = np.full((capacity, ROUTE_LEN), -1, dtype=np.intp)
        free = np.zeros((capacity, ROUTE_LEN), dtype=bool)
        if n_old:
            route[:n_old], free[:n_old] = self.route, self.route_free
        self.route, self.route_free = route, free
        self.capacity = capacity

    def _resize(self, name: str, capacity: int, fill, dtype, n_old: int) -> None:
        arr = np.full(capacity, fill, dtype=dtype)
        if n_old:
            arr[:n_old] = getattr(self, name)
        setattr(self, name, arr)

    # ------------------------------------------------------------- rows
    def add(self, lane_id: int, s: float, speed: float, *, controlled: bool, platoon: int,
            member: int, length: float, width: float, target_speed: float | None,
            delta: float, lane_change_delay: float, lane_change_timer: float | None) -> int:
        """Fill a free row with a vehicle on the centre line of `lane_id` at `s`; returns the row.

        The caller re-picks the closest lane (`lane` is set to `lane_id`) and sets the route.
        """
        tab = self.table
        free = (~self.active[: self.hi]).nonzero()[0]
        row = int(free[0]) if len(free) else self.hi
        if row >= self.capacity:
            self.alloc(2 * self.capacity)
        ids = np.array([lane_id])
        x, y = tab.position(ids, np.array([s], dtype=float), np.zeros(1))
        h = float(tab.heading_at(ids, np.array([s], dtype=float))[0])
        self.x[row], self.y[row], self.heading[row] = float(x[0]), float(y[0]), h
        self.speed[row] = speed
        self.accel[row] = self.steering[row] = 0.0
        self.length[row], self.width[row] = length, width
        half_l, half_w = 0.5 * self.length[row: row + 1], 0.5 * self.width[row: row + 1]
        self.half_length[row], self.half_width[row] = half_l[0], half_w[0]
        self.body_radius[row] = np.hypot(half_l, half_w)[0]
        self.is_controlled[row] = controlled
        self.platoon[row], self.member[row] = platoon, member
        self.crashed[row] = False
        self.active[row] = True
        self.target_speed[row] = speed if target_speed is None else target_speed
        self.delta[row] = delta
        if lane_change_timer is None:  # highway-env's position-derived initial phase
            lane_change_timer = (float(x[0] + y[0]) * np.pi) % lane_change_delay
        self.lane_change_timer[row] = lane_change_timer
        self.wait_time[row] = 0.0
        self.accel_override[row] = np.nan
        self.lane_change_forced[row] = False
        self.is_yielding[row] = False
        self.is_merging[row] = False
        self.vid[row] = self.next_vid
        self.next_vid += 1
        self.hi = max(self.hi, row + 1)
        self.lane[row] = lane_id
        self._controlled = None
        return row

    def remove(self, row: int) -> bool:
        """Free `row`; False if it held no vehicle."""
        if not self.active[row]:
            return False
        if self.route_len[row] > 0:
            self.n_routes -= 1
            self.route_len[row] = 0
        if not np.isnan(self.accel_override[row]):
            self.n_overrides -= 1
        self.active[row] = False
        self.crashed[row] = False
        self.is_controlled[row] = False
        self.speed[row] = self.accel[row] = self.steering[row] = 0.0
        self.accel_override[row] = np.nan
        self.route_last_road[row] = -1
        while self.hi > 0 and not self.active[self.hi - 1]:
            self.hi -= 1
        self._controlled = None
        return True

    def set_accel_override(self, row: int, value: float) -> None:
        """Force the acceleration of `row` (NaN clears it)."""
        was = not np.isnan(self.accel_override[row])
        now = not np.isnan(value)
        self.n_overrides += int(now) - int(was)
        self.accel_override[row] = value

    @property
    def n_active(self) -> int:
        return int(np.count_nonzero(self.active[: self.hi]))

    def active_rows(self) -> np.ndarray:
        """Rows of live vehicles, ascending."""
        return self.active[: self.hi].nonzero()[0]

    def controlled_rows(self) -> np.ndarray:
        """Live controlled rows ordered by (platoon, member)."""
        if self._controlled is None:
            rows = (self.active[: self.hi] & self.is_controlled[: self.hi]).nonzero()[0]
            order = np.lexsort((rows, self.member[rows], self.platoon[rows]))
            self._controlled = rows[order]
        return self._controlled

    # ----------------------------------------------------------- routes
    def set_route(self, row: int, route: Sequence[LaneIndex] | None) -> None:
        """Give `row` a route of highway-env lane indices (lane id None: any lane of that road)."""
        if self.route_len[row] > 0:
            self.n_routes -= 1
        self.route[row] = -1
        self.route_free[row] = False
        self.route_pos[row], self.route_len[row], self.route_last_road[row] = 0, 0, -1
        if not route:
            return
        if len(route) > ROUTE_LEN:
            raise ValueError(f"a route may list at most {ROUTE_LEN} lanes")
        for k, idx in enumerate(route):
            self.route[row, k] = self.table.lane_id(idx)
            self.route_free[row, k] = idx[2] is None
        self.route_len[row] = len(route)
        self.route_last_road[row] = self.table.road[self.route[row, len(route) - 1]]
        self.n_routes += 1

    def set_road_route(self, row: int, roads: Sequence[int]) -> None:
        """Route `row` along road ids, any lane on each."""
        self.set_route(row, [(*self.table.roads[r], None) for r in roads])

    def route_next_road(self, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Road id (−1: none) a routed vehicle on `lanes` takes after that lane's road."""
        tab = self.table
        route = self.route[rows]
        k = np.arange(ROUTE_LEN)[None, :]
        pos, n = self.route_pos[rows, None], self.route_len[rows, None]
        valid = (k >= pos) & (k < n)
        roads = np.where(valid, tab.road[np.maximum(route, 0)], -1)
        here = roads == tab.road[lanes][:, None]
        ar = np.arange(len(rows))
        j = np.argmax(here, axis=1)
        after = np.minimum(j + 1, ROUTE_LEN - 1)
        nxt_here = np.where(here.any(axis=1) & (j + 1 < n[:, 0]), roads[ar, after], -1)
        # No entry for this road: the route head is already past it.
        head = roads[ar, np.minimum(pos[:, 0], ROUTE_LEN - 1)]
        return np.where(here.any(axis=1), nxt_here, head)

    def next_lanes(self, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Lane each vehicle will take after `lanes` (−1: none): its route's, else `follow_next`."""
        tab = self.table
        nxt = tab.follow_next[lanes].copy()
        if self.n_routes:
            routed = (self.route_len[rows] > self.route_pos[rows]).nonzero()[0]
            if len(routed):
                road = self.route_next_road(rows[routed], lanes[routed])
                ok = road >= 0
                fn = nxt[routed]
                same = ok & (fn >= 0) & (tab.road[np.maximum(fn, 0)] == road)
                r = np.maximum(road, 0)
                same_pos = np.minimum(tab.lane_pos[lanes[routed]], tab.road_size[tab.road_first[r]] - 1)
                guess = tab.road_first[r] + same_pos
                nxt[routed] = np.where(same, fn, np.where(ok, guess, fn))
        return nxt
