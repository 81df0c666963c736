"""The World: every vehicle as a row of numpy state arrays, stepped all at once.

Owns the state arrays, spawning/despawning, the step loop (simulation frames inside a
policy step), traffic behaviour (highway-env's `IDMVehicle`: IDM + MOBIL + lane keeping,
for all traffic at once), the kinematic bicycle model, lane re-assignment, departures,
collision flags, traffic entry at a density, and the hooks scripted events use. Built on a
highway-env `RoadNetwork` through `LaneTable` (lanes.py); kernels live in traffic.py;
collision geometry in geometry.py.

State layout: attributes of the World, each an array with one row per vehicle slot
(`capacity` rows; a row is live while `active`; freed rows are reused by `spawn`):

| attribute | dtype | meaning |
|---|---|---|
| `x`, `y` | float64 | centre position [m] |
| `heading` | float64 | heading [rad], not wrapped (as highway-env) |
| `speed` | float64 | speed along the heading [m/s] |
| `accel`, `steering` | float64 | acceleration [m/s2] and front-wheel angle [rad] applied in the last frame |
| `lane` | intp | current lane id in `world.table` (closest lane, highway-env's rule) |
| `s`, `r` | float64 | longitudinal / lateral coordinates on `lane` [m] |
| `target_lane` | intp | lane the lane-keeping controller steers to (traffic; experts may use it) |
| `length`, `width` | float64 | body size [m] (default 5 × 2) |
| `is_controlled` | bool | platoon member driven by external [acceleration, steering] actions |
| `platoon`, `member` | intp | platoon id and index in it (−1 for traffic) |
| `crashed` | bool | collided; stops (accel = −speed, steering 0) and stays as an obstacle |
| `active` | bool | row holds a live vehicle |
| `target_speed` | float64 | IDM desired speed [m/s] (clipped to the lane speed limit when used) |
| `delta` | float64 | per-vehicle IDM exponent |
| `lane_change_timer` | float64 | time since the last MOBIL decision [s] |
| `route` | intp (capacity, ROUTE_LEN) | planned lane ids, −1 padded (`route_free`: any lane of that road) |
| `route_pos`, `route_len` | intp | index of the route head, number of route entries |
| `route_last_road` | intp | road id (`table.road`) of the last route entry, −1 without a route |
| `accel_override` | float64 | NaN = none; else replaces the IDM output or the action's acceleration |
| `lane_change_forced` | bool | a scripted lane change is under way (never aborted) |
| `is_yielding` | bool | traffic held back by the yielding rule in the last frame |
| `vid` | int64 | unique id of the vehicle in the row (rows are reused, ids are not) |

Scalars: `time` [s], `frame_count`, `step_count`. `table` is the `LaneTable` whose ids `lane`,
`target_lane` and `route` hold (`table.lane_id(("0", "1", 2))`, `table.lane_index(k)`).
Per policy step: `collisions` (list of `Collision(i, j, time)`, pairs whose overlap began
during the step) and `departed` (list of `Departure(row, vid, time, reason)`, reason
"end_of_road", "destination" or "crashed"); read `departed` before spawning, which reuses rows.

Frame order (as highway-env: all vehicles decide, then all move, then collisions):
1. traffic decides: follow_road at lane ends (highway-env's `next_lane`), aborting a lane
   change when another vehicle changes into the same lane within the desired gap, MOBIL for
   vehicles whose lane-change timer expired, IDM on the current lane (and the target lane
   while changing; the lower acceleration wins), the yielding rule (below; it can only lower
   the acceleration), lane-keeping steering to the target lane;
2. controlled rows take their [acceleration, steering] as given (limits are the caller's);
   `accel_override` replaces accelerations;
3. every vehicle integrates the kinematic bicycle model (crashed ones brake to a stop);
4. each vehicle re-picks its closest lane among the `near` candidates of its lane (falls
   back to all lanes when no candidate is close and a lane box bound says another lane may
   be as close, `LaneTable.far_lanes_may_be_closer`); leaving a lane end moves the vehicle to
   the next lane with the excess s, because s is recomputed on the new lane;
5. departures (end of a road with no successor, end of the route), then collisions.

Yielding at merges, intersections and roundabouts (`WorldParams.yielding`, on by default).
It acts only where lanes of different highway-env `priority` merge or cross (the conflicts
of `LaneTable`, lanes.py); on a road whose lanes all share one priority, such as a highway or
highway-env's own merge scene, nothing changes (highway-env's plain `Road`). The rule: a
traffic vehicle follows its path lane (the lane it steers to). Before the first conflict zone
of that lane, or of the lane it takes next (its route's, else `follow_next`), within
max(`yield_lookahead`, its IDM desired gap to a stopped vehicle) of the zone, and while it
can still stop before the zone at `a_max`, it checks every conflict of that lane at once.
Where its lane has the lower priority it waits if a vehicle on the other lane (or on lanes
leading into it, up to three upstream, or just past its end) is inside the other side's
zone, or will reach it (accelerating comfortably up to its lane's speed) before the waiting
vehicle, accelerating comfortably from its speed, has cleared its own zone plus `yield_gap`
seconds. Where its lane has the higher priority it waits only while a lower-priority vehicle
is inside the other side's zone (that one has committed). Waiting is IDM behind a stopped
virtual vehicle whose jam distance ends `yield_stop_gap` before the first zone, so the vehicle
brakes comfortably and stops at the yield line; past the line it never yields, and a vehicle
never stops between two zones of one lane, so the rule cannot deadlock by itself. Platoon
members do not follow the rule (their policies decide), but every vehicle is watched.
On such roads a few supporting behaviours come with it: near a lane end traffic also follows
the last vehicle on its next lane, and MOBIL finds its new leader/follower across lane
joints by where vehicles drive (yield queues start right after joints, where highway-env's
lane-band search is blind); a lane that yields at its end and has a neighbour (an
acceleration or dropped lane) looks to MOBIL as if stopped at its yield line, so traffic
leaves it by changing lanes early (highway-env's merge scene puts an obstacle there); traffic
stands still instead of reversing; `populate` leaves conflict zones empty; and on roads with
junctions no traffic lane change ends inside a conflict zone or within `zone_change_guard`
before it (a vehicle merging or crossing there has judged the gap on that lane already).

Traffic routes at junctions. On a road where some lane leads to more than one road (an
intersection, a roundabout; `LaneTable.has_junctions`), every traffic vehicle that `populate`
or `fill_to_density` spawns gets a route to an exit road drawn uniformly among those reachable
from its road (one draw from the generator they use, the World's by default), along the
shortest way there, with any lane on every road (highway-env's `plan_route_to`). Straight
roads, merges and lane drops keep route-less traffic. Where the next road has another lane
count (a roundabout exit leaves from the outer ring lane), a routed vehicle within
`exit_lane_lookahead` of it moves to the lane that road continues from: MOBIL then accepts
only moves towards that lane, when safe; a vehicle held alongside by traffic on that lane
falls back behind it; and one that still reaches the end of its road on another lane drives
on along the ring and takes the shortest way back to its exit instead of cutting across.

Differences from highway-env, by design: controlled rows keep a `target_speed` (highway-env's
continuous-action vehicles have none, which makes MOBIL treat them as infinitely braking);
crashes stop vehicles without highway-env's impact displacement; vehicles leave at the end of
the road instead of driving on past it; collisions use geometry.py's strict overlap test;
only traffic rows count as "another vehicle changing into my target lane" when a lane change
is aborted (highway-env counts every `ControlledVehicle`), and that check sees other vehicles'
targets as set after their own `follow_road` of this frame; a lane is no successor of a lane
whose end it meets heading back the way it came (lanes.py), so traffic at the outer end of an
intersection or roundabout arm leaves instead of turning into the incoming lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from highway_env.road.road import LaneIndex, RoadNetwork

from diffplatoon.sim import geometry, traffic
from diffplatoon.sim.lanes import VEHICLE_LENGTH, LaneTable

ROUTE_LEN = 16  # most lanes a route may list
_EMPTY_INT = np.empty(0, dtype=np.intp)


@dataclass(frozen=True)
class WorldParams:
    """Simulation settings; defaults are highway-env's (`IDMVehicle`, `Vehicle`, `AbstractEnv`)."""

    simulation_frequency: int = 15  # [Hz]
    policy_frequency: int = 5  # [Hz]
    a_max: float = 6.0  # [m/s2] IDM output clip (highway-env ACC_MAX)
    comfort_acc_max: float = 3.0  # [m/s2]
    comfort_acc_min: float = -5.0  # [m/s2]
    distance_wanted: float = 10.0  # [m] 5 m + vehicle length, centre to centre
    time_wanted: float = 1.5  # [s]
    delta: float = 4.0  # IDM exponent when not randomised
    delta_range: tuple[float, float] = (3.5, 4.5)
    randomize_delta: bool = True  # draw each traffic vehicle's delta from delta_range at spawn
    politeness: float = 0.0
    min_acc_gain: float = 0.2  # [m/s2]
    max_braking_imposed: float = 2.0  # [m/s2]
    lane_change_delay: float = 1.0  # [s]
    lane_changes_enabled: bool = True
    crashed_stay: bool = True  # crashed vehicles stay as obstacles; else they are removed
    max_speed: float = 40.0  # [m/s]
    min_speed: float = -40.0  # [m/s]
    check_collisions: bool = True
    connected_lanes: bool = False  # highway-env's neighbour_vehicles_connected_lanes
    yielding: bool = True  # right of way at merges, intersections, roundabouts (module docstring)
    yield_gap: float = 1.5  # [s] a priority vehicle must arrive this long after the yielding one clears
    yield_stop_gap: float = 1.0  # [m] a yielding vehicle's centre stops this far before its zone
    yield_lookahead: float = 40.0  # [m] least distance before a zone from which the rule applies
    zone_change_guard: float = 20.0  # [m] at junctions, no lane change into this stretch before a zone
    exit_lane_lookahead: float = 60.0  # [m] routed traffic moves to the lane its next road continues from

    @property
    def frames_per_step(self) -> int:
        return int(self.simulation_frequency // self.policy_frequency)

    def idm_constants(self) -> traffic.IDMConstants:
        return traffic.IDMConstants(self.comfort_acc_max, self.comfort_acc_min,
                                    self.distance_wanted, self.time_wanted)


def _travel_time(v0: np.ndarray, a: float, v_max: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Time [s] to cover distance d [m] from speed v0 accelerating at a up to v_max (0 if d ≤ 0)."""
    v_max = np.maximum(v_max, np.maximum(v0, 0.1))
    t_acc = (v_max - v0) / a
    d_acc = 0.5 * (v0 + v_max) * t_acc
    dd = np.maximum(d, 0.0)
    t = np.where(dd <= d_acc, (np.sqrt(v0 * v0 + 2 * a * dd) - v0) / a, t_acc + (dd - d_acc) / v_max)
    return np.where(d > 0, t, 0.0)


class Collision(NamedTuple):
    i: int
    j: int
    time: float


class Departure(NamedTuple):
    row: int
    vid: int
    time: float
    reason: str


_FLOAT_FIELDS = ("x", "y", "heading", "speed", "accel", "steering", "s", "r", "length",
                 "width", "target_speed", "delta", "lane_change_timer")
_INT_FIELDS = ("lane", "target_lane", "platoon", "member", "route_pos", "route_len",
               "route_last_road")
_BOOL_FIELDS = ("is_controlled", "crashed", "active", "lane_change_forced", "is_yielding")
# Private per-row constants of the collision broad phase, set at spawn: half length, half width
# and the radius of the circle around the body.
_BODY_FIELDS = ("_half_length", "_half_width", "_body_radius")


class World:
    """All vehicles on one highway-env road network, stepped together (see module docstring)."""

    def __init__(self, network: RoadNetwork, params: WorldParams = WorldParams(),
                 rng: np.random.Generator | None = None, capacity: int = 256):
        self.network = network
        self.params = params
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.table = LaneTable(network)
        self._idm_c = params.idm_constants()
        self.capacity = 0
        self._alloc(max(int(capacity), 1))
        self.time = 0.0
        self.frame_count = 0
        self.step_count = 0
        self.collisions: list[Collision] = []
        self.departed: list[Departure] = []
        self._hi = 0  # rows >= _hi are all inactive
        self._next_vid = 0
        self._n_routes = 0
        self._n_overrides = 0
        self._ctrl_rows: np.ndarray | None = None
        self._trig_hi = -1  # rows [:_trig_hi] of `_cos`, `_sin` hold the current headings; -1: stale
        self._cand: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._index: traffic.NeighbourIndex | None = None  # built from `_cand`, reset with it
        self._touching = np.empty(0, dtype=np.int64)  # pair codes overlapping in the last frame
        self._entry_state: dict[int, tuple[float, float]] = {}
        self._entry_succ: np.ndarray | None = None  # (entry lanes, lanes): successors of each entry
        tab = self.table
        span = 3 * float(tab.length.max()) + 8 * VEHICLE_LENGTH + 100.0
        self._base = np.arange(tab.n) * span + float(tab.length.max()) + 4 * VEHICLE_LENGTH
        if params.connected_lanes:
            self._build_connected_groups()
        self._yield_on = params.yielding and self.table.has_conflicts
        box = tab.box[: tab.n][np.isfinite(tab.box[: tab.n, :4]).all(axis=1)]
        # Collision broad phase sweeps along the road network's longer extent.
        self._sweep_x = len(box) == 0 or np.ptp(box[:, :2]) >= np.ptp(box[:, 2:4])

    # ------------------------------------------------------------------ storage
    def _alloc(self, capacity: int) -> None:
        old, n_old = self.capacity, self.capacity
        for name in _FLOAT_FIELDS + _BODY_FIELDS:
            self._resize(name, capacity, 0.0, np.float64, old)
        for name in _INT_FIELDS:
            self._resize(name, capacity, -1, np.intp, old)
        for name in _BOOL_FIELDS:
            self._resize(name, capacity, False, bool, old)
        self._resize("accel_override", capacity, np.nan, np.float64, old)
        self._resize("vid", capacity, -1, np.int64, old)
        route = np.full((capacity, ROUTE_LEN), -1, dtype=np.intp)
        free = np.zeros((capacity, ROUTE_LEN), dtype=bool)
        if n_old:
            route[:n_old], free[:n_old] = self.route, self.route_free
        self.route, self.route_free = route, free
        self.capacity = capacity
        self._cand = None
        self._index = None

    def _resize(self, name: str, capacity: int, fill, dtype, n_old: int) -> None:
        arr = np.full(capacity, fill, dtype=dtype)
        if n_old:
            arr[:n_old] = getattr(self, name)
        setattr(self, name, arr)

    # ---------------------------------------------------------------- spawning
    def spawn(self, lane: LaneIndex | int, s: float, speed: float, *, controlled: bool = False,
              platoon: int = -1, member: int = -1, length: float = 5.0, width: float = 2.0,
              target_speed: float | None = None, route: Sequence[LaneIndex] | None = None,
              delta: float | None = None, lane_change_timer: float | None = None) -> int:
        """Add a vehicle on `lane` at longitudinal coordinate `s`, on the centre line; returns its row."""
        tab, p = self.table, self.params
        lane_id = int(lane) if isinstance(lane, (int, np.integer)) else tab.lane_id(lane)
        free = (~self.active[: self._hi]).nonzero()[0]
        row = int(free[0]) if len(free) else self._hi
        if row >= self.capacity:
            self._alloc(2 * self.capacity)
        ids = np.array([lane_id])
        x, y = tab.position(ids, np.array([s], dtype=float), np.zeros(1))
        h = float(tab.heading_at(ids, np.array([s], dtype=float))[0])
        self.x[row], self.y[row], self.heading[row] = float(x[0]), float(y[0]), h
        self.speed[row] = speed
        self.accel[row] = self.steering[row] = 0.0
        self.length[row], self.width[row] = length, width
        half_l, half_w = 0.5 * self.length[row: row + 1], 0.5 * self.width[row: row + 1]
        self._half_length[row], self._half_width[row] = half_l[0], half_w[0]
        self._body_radius[row] = np.hypot(half_l, half_w)[0]
        self.is_controlled[row] = controlled
        self.platoon[row], self.member[row] = platoon, member
        self.crashed[row] = False
        self.active[row] = True
        self.target_speed[row] = speed if target_speed is None else target_speed
        if delta is None:
            delta = float(self.rng.uniform(*p.delta_range)) if p.randomize_delta else p.delta
        self.delta[row] = delta
        if lane_change_timer is None:  # highway-env's position-derived initial phase
            lane_change_timer = (float(x[0] + y[0]) * np.pi) % p.lane_change_delay
        self.lane_change_timer[row] = lane_change_timer
        self.accel_override[row] = np.nan
        self.lane_change_forced[row] = False
        self.is_yielding[row] = False
        self.vid[row] = self._next_vid
        self._next_vid += 1
        self._set_route(row, route)
        self._hi = max(self._hi, row + 1)
        # Closest lane among the candidates of the spawn lane, as highway-env's constructor does.
        self.lane[row] = lane_id
        self._relocate(np.array([row]))
        self.target_lane[row] = self.lane[row]
        self._invalidate()
        return row

    def _set_route(self, row: int, route: Sequence[LaneIndex] | None) -> None:
        if self.route_len[row] > 0:
            self._n_routes -= 1
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
        self._n_routes += 1

    def despawn(self, row: int) -> None:
        """Remove the vehicle in `row`; the row becomes free."""
        if not self.active[row]:
            return
        if self.route_len[row] > 0:
            self._n_routes -= 1
            self.route_len[row] = 0
        if not np.isnan(self.accel_override[row]):
            self._n_overrides -= 1
        self.active[row] = False
        self.crashed[row] = False
        self.is_controlled[row] = False
        self.speed[row] = self.accel[row] = self.steering[row] = 0.0
        self.accel_override[row] = np.nan
        self.route_last_road[row] = -1
        while self._hi > 0 and not self.active[self._hi - 1]:
            self._hi -= 1
        self._invalidate()

    def _invalidate(self) -> None:
        self._ctrl_rows = None
        self._trig_hi = -1
        self._cand = None
        self._index = None

    @property
    def n_active(self) -> int:
        return int(np.count_nonzero(self.active[: self._hi]))

    def active_rows(self) -> np.ndarray:
        """Rows of live vehicles, ascending."""
        return self.active[: self._hi].nonzero()[0]

    def controlled_rows(self) -> np.ndarray:
        """Live controlled rows ordered by (platoon, member): the row order of `step`'s actions."""
        if self._ctrl_rows is None:
            rows = (self.active[: self._hi] & self.is_controlled[: self._hi]).nonzero()[0]
            order = np.lexsort((rows, self.member[rows], self.platoon[rows]))
            self._ctrl_rows = rows[order]
        return self._ctrl_rows

    # ---------------------------------------------------------- event hooks
    def set_accel_override(self, row: int, value: float) -> None:
        """Force the acceleration of `row` (NaN clears it); used by scripted events."""
        was = not np.isnan(self.accel_override[row])
        now = not np.isnan(value)
        self._n_overrides += int(now) - int(was)
        self.accel_override[row] = value

    def force_lane_change(self, row: int, target_lane: LaneIndex | int) -> None:
        """Make `row` change to `target_lane` now; it is not aborted and MOBIL waits until done."""
        lane_id = int(target_lane) if isinstance(target_lane, (int, np.integer)) \
            else self.table.lane_id(target_lane)
        self.target_lane[row] = lane_id
        self.lane_change_forced[row] = lane_id != self.lane[row]

    def set_pose(self, row: int, x: float, y: float, heading: float,
                 speed: float | None = None) -> None:
        """Move `row` to a world pose; its lane becomes the closest of all lanes (highway-env's rule)."""
        self.x[row], self.y[row], self.heading[row] = x, y, heading
        if speed is not None:
            self.speed[row] = speed
        self._relocate_everywhere(np.array([row]))
        self._cand = None
        self._index = None
        self._trig_hi = -1

    # ------------------------------------------------------------- stepping
    def step(self, actions: np.ndarray | None = None) -> None:
        """One policy step: `frames_per_step` frames with the controlled actions held constant.

        `actions` is (n_controlled, 2) = [acceleration, steering] in `controlled_rows()` order.
        """
        self.collisions = []
        self.departed = []
        rows = self.controlled_rows()
        acts = self._check_actions(rows, actions)
        for _ in range(self.params.frames_per_step):
            self._frame(rows, acts)
        self.step_count += 1

    def frame(self, actions: np.ndarray | None = None) -> None:
        """A single simulation frame (1 / simulation_frequency s); does not clear the step records."""
        rows = self.controlled_rows()
        self._frame(rows, self._check_actions(rows, actions))

    def _check_actions(self, rows: np.ndarray, actions) -> np.ndarray:
        if actions is None:
            return np.zeros((len(rows), 2))
        acts = np.asarray(actions, dtype=np.float64)
        if acts.shape != (len(rows), 2):
            raise ValueError(f"actions must have shape ({len(rows)}, 2), got {acts.shape}")
        return acts

    def _frame(self, ctrl_rows: np.ndarray, acts: np.ndarray) -> None:
        p = self.params
        dt = 1.0 / p.simulation_frequency
        hi = self._hi
        if self._cand is None:
            self._relocate(np.arange(hi), update_lane=False)
        act = self.active[:hi]
        if self._trig_hi != hi:
            self._update_trig(hi)
        traffic_mask = act & ~self.is_controlled[:hi]
        rows = (traffic_mask & ~self.crashed[:hi]).nonzero()[0]
        if len(rows):
            self._traffic_decide(rows, self._neighbour_index())
        if len(ctrl_rows):
            ok = self.active[ctrl_rows]
            if np.count_nonzero(ok) == len(ok):
                self.accel[ctrl_rows] = acts[:, 0]
                self.steering[ctrl_rows] = acts[:, 1]
            else:
                self.accel[ctrl_rows[ok]] = acts[ok, 0]
                self.steering[ctrl_rows[ok]] = acts[ok, 1]
        if self._n_overrides:
            ov = self.accel_override[:hi]
            m = ~np.isnan(ov)
            self.accel[:hi][m] = ov[m]
        self._integrate(hi, dt)
        self._update_trig(hi)  # for the collision test and the next frame's decisions
        timer = self.lane_change_timer[:hi]
        np.add(timer, dt, out=timer, where=traffic_mask)
        old_lane = self.lane[:hi].copy() if self._n_routes else None
        self._relocate(np.arange(hi))
        self.time += dt
        self.frame_count += 1
        self._departures(hi, old_lane)
        if p.check_collisions:
            self._collide()

    def _update_trig(self, hi: int) -> None:
        """cos and sin of the headings of rows [:hi] (valid until headings change or rows do)."""
        self._cos = np.cos(self.heading[:hi])
        self._sin = np.sin(self.heading[:hi])
        self._trig_hi = hi

    # ------------------------------------------------------------ dynamics
    def _integrate(self, hi: int, dt: float) -> None:
        """Kinematic bicycle model of highway-env's `Vehicle.step`, all rows [:hi] at once."""
        p = self.params
        v = self.speed[:hi]
        a = self.accel[:hi]
        delta_f = self.steering[:hi]
        cr = self.crashed[:hi]
        if np.count_nonzero(cr):
            delta_f[cr] = 0.0
            a[cr] = -v[cr]
        if hi and np.maximum.reduce(v) > p.max_speed:
            np.copyto(a, np.minimum(a, p.max_speed - v), where=v > p.max_speed)
        if hi and np.minimum.reduce(v) < p.min_speed:
            np.copyto(a, np.maximum(a, p.min_speed - v), where=v < p.min_speed)
        beta = np.arctan(0.5 * np.tan(delta_f))
        hb = self.heading[:hi] + beta
        self.x[:hi] += v * np.cos(hb) * dt
        self.y[:hi] += v * np.sin(hb) * dt
        self.heading[:hi] += v * np.sin(beta) / (self.length[:hi] / 2) * dt
        v += a * dt

    def _relocate(self, rows: np.ndarray, update_lane: bool = True) -> None:
        """Project rows on the `near` candidates of their lane; re-pick the closest lane.

        A vehicle further than `near_trust` from every candidate searches all lanes, unless
        no lane outside the candidates can be as close (`LaneTable.far_lanes_may_be_closer`).
        Caches the candidate projections of all rows [:hi] (used for lane memberships)
        when `rows` covers them.
        """
        tab = self.table
        whole = len(rows) == self._hi
        old = self.lane[: self._hi] if whole else self.lane[rows]
        cand = tab.near_ids[old]  # (n, K), padding on lane 0
        if whole:
            x, y, h = self.x[: self._hi, None], self.y[: self._hi, None], self.heading[: self._hi, None]
        else:
            x, y, h = self.x[rows, None], self.y[rows, None], self.heading[rows, None]
        sc, rc = tab.local_coordinates(cand, x, y)
        if update_lane:
            pad = tab.near_pad[old]
            dist = tab.distance_with_heading(cand, sc, rc, h)
            np.copyto(dist, np.inf, where=pad)
            n_c = cand.shape[1]
            flat = np.argmin(dist, axis=1)
            flat += np.arange(0, len(rows) * n_c, n_c)
            best = dist.take(flat)
            far = best > tab.near_trust
            if np.count_nonzero(far):
                f = (far & self.active[rows]).nonzero()[0]
                if len(f):
                    f = f[tab.far_lanes_may_be_closer(old[f], self.x[rows[f]], self.y[rows[f]], best[f])]
            else:
                f = _EMPTY_INT
            self.lane[rows] = cand.take(flat)
            self.s[rows] = sc.take(flat)
            self.r[rows] = rc.take(flat)
            if len(f):
                self._relocate_everywhere(rows[f])
        else:
            pad = tab.near_pad[old]
        if whole:
            self._cand = (np.where(pad, -1, cand), sc, rc)
            self._index = None

    def _relocate_everywhere(self, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        tab = self.table
        lanes = tab.closest_lane(self.x[rows], self.y[rows], self.heading[rows])
        self.lane[rows] = lanes
        self.s[rows], self.r[rows] = tab.local_coordinates(lanes, self.x[rows], self.y[rows])

    # ----------------------------------------------------------- neighbours
    def _build_connected_groups(self) -> None:
        """For each lane M: the query lanes G whose connected search covers M, with offsets."""
        tab, g = self.table, self.network.graph
        entries: list[list[tuple[int, float, int]]] = [[] for _ in range(tab.n)]
        for gid, (f, t, i) in enumerate(tab.indices):
            ext = [(gid, 0.0)]
            for next_lanes in g.get(t, {}).values():
                if next_lanes:
                    m = self._lane_obj_id(next_lanes[i] if i < len(next_lanes) else next_lanes[0])
                    if m in tab.successors[gid]:  # not a lane back the way it came
                        ext.append((m, float(tab.length[gid])))
            for to_dict in g.values():
                if f in to_dict and to_dict[f]:
                    prev = to_dict[f][i] if i < len(to_dict[f]) else to_dict[f][0]
                    pid = self._lane_obj_id(prev)
                    if gid in tab.successors[pid]:
                        ext.append((pid, -float(tab.length[pid])))
            for prio, (m, off) in enumerate(ext):
                entries[m].append((gid, off, prio))
        cnt = np.array([len(e) for e in entries], dtype=np.intp)
        flat = [e for es in entries for e in es]
        self._grp_count = cnt
        self._grp_start = np.cumsum(cnt) - cnt
        self._grp_g = np.array([e[0] for e in flat], dtype=np.intp)
        self._grp_off = np.array([e[1] for e in flat], dtype=np.float64)
        self._grp_prio = np.array([e[2] for e in flat], dtype=np.intp)

    def _lane_obj_id(self, lane_obj) -> int:
        for k, obj in enumerate(self.table.lanes):
            if obj is lane_obj:
                return k
        raise KeyError("lane not in the network")

    def _neighbour_index(self) -> traffic.NeighbourIndex:
        """Lane memberships of all live vehicles (highway-env's on_lane with a 1 m margin).

        Built once per `_cand` (the frame's lane projections) and shared by every query until
        vehicles move, spawn or leave.
        """
        if self._index is not None:
            return self._index
        cand, sc, rc = self._cand
        hi = self._hi
        on = self.table.on_lane(cand, sc, rc) & (cand >= 0) & self.active[:hi, None]
        ri, ki = on.nonzero()
        lanes, s = cand[ri, ki], sc[ri, ki]
        if self.params.connected_lanes:
            cnt = self._grp_count[lanes]
            rep = np.repeat(np.arange(len(lanes)), cnt)
            pos = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) \
                + np.repeat(self._grp_start[lanes], cnt)
            ri, lanes, s = ri[rep], self._grp_g[pos], s[rep] + self._grp_off[pos]
            prio = self._grp_prio[pos]
            order = np.lexsort((prio, lanes, ri))
            ri, lanes, s = ri[order], lanes[order], s[order]
            first = np.ones(len(ri), dtype=bool)
            first[1:] = (ri[1:] != ri[:-1]) | (lanes[1:] != lanes[:-1])
            ri, lanes, s = ri[first], lanes[first], s[first]
        self._index = traffic.NeighbourIndex(ri, lanes, s, self._base)
        return self._index

    def neighbours(self, rows: np.ndarray, lanes: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(front, rear) rows (−1 = none) of `rows` on `lanes` (default: their own lanes)."""
        rows = np.asarray(rows, dtype=np.intp)
        if self._cand is None:
            self._relocate(np.arange(self._hi), update_lane=False)
        if lanes is None:
            lanes, s = self.lane[rows], self.s[rows]
        else:
            lanes = np.asarray(lanes, dtype=np.intp)
            s, _ = self.table.local_coordinates(lanes, self.x[rows], self.y[rows])
        return self._neighbour_index().query(rows, lanes, s)

    # -------------------------------------------------------------- traffic
    def _idm(self, ego: np.ndarray, front: np.ndarray, delta: np.ndarray) -> np.ndarray:
        """IDM acceleration of rows `ego` behind rows `front` (−1: none); ego −1 gives 0."""
        all_ego = np.minimum.reduce(ego) >= 0  # only MOBIL's followers may be missing
        e = ego if all_ego else np.maximum(ego, 0)  # ego is −1 or a row
        has_front = front >= 0
        f = np.where(has_front, front, e)
        tab = self.table
        lane_e = self.lane[e]
        sf = tab.longitudinal(lane_e, self.x[f], self.y[f])
        d = sf - self.s[e]
        v_e, v_f = self.speed[e], self.speed[f]
        dv = traffic.projected_closing_speed(v_e, self._cos[e], self._sin[e],
                                             v_f, self._cos[f], self._sin[f])
        vt = np.minimum(np.maximum(self.target_speed[e], tab.speed_floor[lane_e]),
                        tab.speed_limit[lane_e])
        acc = traffic.idm_acceleration_f64(self._idm_c, v_e, vt, delta, has_front, d, dv)
        return acc if all_ego else np.where(ego >= 0, acc, 0.0)

    def _traffic_decide(self, rows: np.ndarray, index: traffic.NeighbourIndex) -> None:
        """highway-env `IDMVehicle.act` for all `rows` at once: sets accel, steering, targets.

        One neighbour query for the own lanes, one for target/candidate lanes, and one IDM
        evaluation batch serve the whole decision: MOBIL's "my acceleration behind the new
        leader" is also the target-lane IDM term of a vehicle that starts changing lanes.
        """
        p, tab = self.params, self.table
        n = len(rows)
        x, y = self.x[rows], self.y[rows]
        # 1. follow_road: past the last half length of the target lane, take the next lane.
        tgt = self.target_lane[rows]
        st, rt = tab.local_coordinates(tgt, x, y)
        ending = st > tab.follow_at[tgt]
        if np.count_nonzero(ending):
            for row in rows[ending]:
                self._follow_road(int(row))
            tgt = self.target_lane[rows]
            st, rt = tab.local_coordinates(tgt, x, y)
        lane, s = self.lane[rows], self.s[rows]
        if self._yield_on:
            path = self._path_state(rows, tgt, st)
        changing = lane != tgt
        c0 = changing.nonzero()[0]
        # 2. MOBIL candidates (left before right) of the vehicles whose decision timer expired.
        who = _EMPTY_INT
        fire = None
        if p.lane_changes_enabled:
            fire = ~changing & (self.lane_change_timer[rows] > p.lane_change_delay)
            if np.count_nonzero(fire):
                f_idx = fire.nonzero()[0]
                self.lane_change_timer[rows[f_idx]] = 0.0
                who, cand, cand_s, cand_r, n_left = self._mobil_candidates(rows, lane, f_idx)
        m = len(who)
        # 3. Leaders on own lanes, target lanes (vehicles changing) and candidate lanes (MOBIL).
        if len(c0) or m:
            q_rows = np.concatenate((rows, rows[c0], rows[who]))
            q_lanes = np.concatenate((lane, tgt[c0], cand)) if m else np.concatenate((lane, tgt[c0]))
            q_s = np.concatenate((s, st[c0], cand_s)) if m else np.concatenate((s, st[c0]))
            qf, qr = index.query(q_rows, q_lanes, q_s)
            front, rear, qf, qr = qf[:n], qr[:n], qf[n:], qr[n:]
        else:
            front, rear = index.query(rows, lane, s)
        if len(c0) or m:
            if self._yield_on and m:
                # Neighbours across lane joints: a lane change just after a joint must see
                # who is about to cross it (the band search of highway-env does not).
                pf, pr = path[1].query(rows[who], cand, cand_s)
                nxt = tab.follow_next[cand]
                far = ((pf < 0) & (nxt >= 0)).nonzero()[0]
                if len(far):  # the new leader may already be past the candidate lane's end
                    pf[far] = path[0].query(rows[who][far], nxt[far], cand_s[far] - tab.length[cand[far]])[0]
                k0 = len(c0)
                qf[k0:] = np.where(qf[k0:] < 0, pf, qf[k0:])
                qr[k0:] = np.where(qr[k0:] < 0, pr, qr[k0:])
        # 4. Every IDM acceleration of this frame in one batch.
        if m:
            me = rows[who]
            new_pre, new_fol = qf[len(c0):], qr[len(c0):]
            old_pre, old_fol = front[who], rear[who]
            ego = np.concatenate((rows, rows[c0], new_fol, new_fol, me, old_fol, old_fol))
            lead = np.concatenate((front, qf[: len(c0)], new_pre, me, new_pre, me, old_pre))
            deltas = self.delta[np.concatenate((rows, rows[c0], me, me, me, me, me))]
        else:
            ego = np.concatenate((rows, rows[c0])) if len(c0) else rows
            lead = np.concatenate((front, qf)) if len(c0) else front
            deltas = self.delta[np.concatenate((rows, rows[c0]))] if len(c0) else self.delta[rows]
        acc_all = self._idm(ego, lead, deltas)
        acc = acc_all[:n].copy()
        acc_tgt = acc_all[n: n + len(c0)]
        if self._yield_on:
            # Before MOBIL: a vehicle held at a yield line sees the gain of changing lanes.
            acc_mobil = self._yield(rows, path, acc)
        # 5. Lane-change decisions: aborts of ongoing changes, MOBIL acceptances.
        keep = None
        if m:
            nf_a, nf_pred_a, self_pred_a, of_a, of_pred_a = acc_all[n + len(c0):].reshape(5, m)
            self_a = acc_mobil[who] if self._yield_on else acc[who]
            accept = self._mobil_accept(rows[who], cand, nf_a, nf_pred_a, self_pred_a, self_a,
                                        of_a, of_pred_a)
            chosen = np.empty(n, dtype=np.intp)
            chosen.fill(-1)
            left_acc = accept[:n_left].nonzero()[0]
            chosen[who[left_acc]] = left_acc
            right_acc = n_left + accept[n_left:].nonzero()[0]
            chosen[who[right_acc]] = right_acc  # the right lane overrides, as in highway-env
            new_idx = (chosen >= 0).nonzero()[0]
            k = chosen[new_idx]
            new_tgt = tgt.copy()
            new_tgt[new_idx] = cand[k]
        else:
            new_idx = _EMPTY_INT
            new_tgt = tgt
        if len(c0) and p.lane_changes_enabled:
            aborted = self._abort_lane_changes(rows, lane, tgt, c0, new_tgt, fire)
            keep = ~aborted
            if np.count_nonzero(aborted):
                a = c0[aborted]
                new_tgt = new_tgt.copy() if new_tgt is tgt else new_tgt
                new_tgt[a] = lane[a]
                st, rt = st.copy(), rt.copy()
                st[a], rt[a] = s[a], self.r[rows[a]]
        if len(new_idx):
            st, rt = st.copy(), rt.copy()
            st[new_idx], rt[new_idx] = cand_s[k], cand_r[k]
        if new_tgt is not tgt:
            self.target_lane[rows] = new_tgt
        # 6. IDM: the lower of the current-lane and target-lane accelerations while changing.
        if len(c0):
            kc = c0 if keep is None else c0[keep]
            acc[kc] = np.minimum(acc[kc], acc_tgt if keep is None else acc_tgt[keep])
        if len(new_idx):
            acc[new_idx] = np.minimum(acc[new_idx], self_pred_a[k])
        if self._n_routes and tab.has_junctions:
            self._let_pass_for_exit(rows, lane, new_tgt, acc, index)
        acc = np.minimum(np.maximum(acc, -p.a_max), p.a_max)
        if self._yield_on:
            # Queues stop and go at yield lines: traffic stands still instead of reversing.
            acc = np.maximum(acc, -np.maximum(self.speed[rows], 0.0) * p.simulation_frequency)
        self.accel[rows] = acc
        # 7. Lane keeping towards the target lane.
        v = self.speed[rows]
        future = tab.heading0[new_tgt] if tab.all_linear else tab.heading_at(new_tgt, st + v * traffic.TAU_PURSUIT)
        self.steering[rows] = traffic.lane_keeping_steering(
            rt, future, self.heading[rows], v, self.length[rows])

    # ------------------------------------------------------------- yielding
    def _path_state(self, rows: np.ndarray, tgt: np.ndarray, st: np.ndarray
                    ) -> tuple[traffic.NeighbourIndex, traffic.NeighbourIndex, np.ndarray, np.ndarray]:
        """(on-lane index, approach index, path lane, path s) of all rows [:hi] for yielding.

        A vehicle's path lane is the lane it steers to (traffic: its target lane, which is the
        next road's lane once follow_road switched and the new lane while changing lanes;
        controlled rows: their lane). The on-lane index holds every vehicle on its path lane;
        the approach index also holds it on the lane it takes next (at s minus its lane's
        length), so queries find vehicles across lane joints by where they drive, not by
        highway-env's lane bands (which overlap everywhere inside an intersection).
        """
        tab, hi = self.table, self._hi
        path_lane, path_s = self.lane[:hi].copy(), self.s[:hi].copy()
        path_lane[rows], path_s[rows] = tgt, st
        act = self.active[:hi].nonzero()[0]
        pl, ps = path_lane[act], path_s[act]
        on_lane = traffic.NeighbourIndex(act, pl, ps, self._base)
        nxt = self._next_lanes(act, pl)
        has = nxt >= 0
        approach = traffic.NeighbourIndex(
            np.concatenate((act, act[has])), np.concatenate((pl, nxt[has])),
            np.concatenate((ps, ps[has] - tab.length[pl[has]])), self._base)
        return on_lane, approach, path_lane, path_s

    def _yield(self, rows: np.ndarray, path: tuple, acc: np.ndarray) -> np.ndarray:
        """The right-of-way rule (module docstring): lowers `acc` of traffic `rows` that must wait.

        Returns the accelerations MOBIL compares against: on a lane that yields at its end
        and has a neighbour lane (an acceleration or dropped lane), as if stopped at the yield
        line whether or not a priority vehicle comes, so that traffic leaves the lane early
        by changing lanes (highway-env's merge scene puts an obstacle there for the same reason).
        """
        p, tab = self.params, self.table
        hi = self._hi
        self.is_yielding[:hi] = False
        _, _, path_lane, path_s = path
        ego_lane, ego_s = path_lane[rows], path_s[rows]
        # The lane whose zones an ego checks: its own while before its first zone, else the next.
        v = np.maximum(self.speed[rows], 0.0)
        look = np.maximum(p.yield_lookahead, traffic.desired_gap(self._idm_c, v, v))
        own = np.isfinite(tab.zone_start[ego_lane]) & (ego_s < tab.zone_start[ego_lane])
        check = np.where(own, ego_lane, -1)
        u = ego_s.copy()
        near_end = (tab.length[ego_lane] - ego_s < look).nonzero()[0]
        if len(near_end):
            nxt = self._next_lanes(rows[near_end], ego_lane[near_end])
            u_next = ego_s[near_end] - tab.length[ego_lane[near_end]]
            self._follow_across(rows, near_end, nxt, u_next, acc, path)
            go_on = ~own[near_end]
            ahead = near_end[go_on]
            check[ahead], u[ahead] = nxt[go_on], u_next[go_on]
        has = check >= 0
        dist = np.where(has, tab.zone_start[np.maximum(check, 0)] - u, np.inf)
        # Within look-ahead and still able to stop before the zone (otherwise it is committed).
        within = (dist > 0) & (dist <= look)
        acc_mobil = acc
        leave = (within & own & tab.lane_yields[ego_lane]
                 & ((tab.left[ego_lane] >= 0) | (tab.right[ego_lane] >= 0))).nonzero()[0]
        if len(leave):
            acc_mobil = acc.copy()
            acc_mobil[leave] = np.minimum(acc[leave], self._stop_accel(rows[leave], dist[leave]))
        idx = (within & (v * v < 2 * p.a_max * dist)).nonzero()[0]
        if len(idx) == 0:
            return acc_mobil
        e_lane = check[idx]
        first = tab.conflict_start[e_lane]
        cnt = tab.conflict_start[e_lane + 1] - first
        pair_ego = np.repeat(np.arange(len(idx)), cnt)
        pair_c = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(first, cnt)
        needed = np.zeros(tab.n_conflicts, dtype=bool)
        needed[pair_c] = True
        arrive = self._conflict_arrivals(needed, path_lane, path_s)
        r_i = rows[idx]
        v_max = np.maximum(v[idx], np.minimum(self.target_speed[r_i], tab.speed_limit[e_lane]))
        t_clear = _travel_time(v[idx][pair_ego], p.comfort_acc_max, v_max[pair_ego],
                               tab.conflict_zone[pair_c, 1] - u[idx][pair_ego])
        a = arrive[pair_c]
        blocked_pair = np.where(tab.conflict_yields[pair_c], a < t_clear + p.yield_gap, a <= 0.0)
        blocked = np.bincount(pair_ego, weights=blocked_pair, minlength=len(idx)) > 0
        if not np.count_nonzero(blocked):
            return acc_mobil
        b = idx[blocked]
        rb = rows[b]
        acc_y = self._stop_accel(rb, dist[b])
        acc[b] = np.minimum(acc[b], acc_y)
        if acc_mobil is not acc:
            acc_mobil[b] = np.minimum(acc_mobil[b], acc_y)
        self.is_yielding[rb] = True
        return acc_mobil

    def _stop_accel(self, rows: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """IDM acceleration behind a stopped virtual vehicle whose jam distance ends at the
        yield line, `yield_stop_gap` before a zone `dist` ahead (floored at −a_max)."""
        p, tab = self.params, self.table
        gap = dist - p.yield_stop_gap + p.distance_wanted
        lane = self.lane[rows]
        vt = np.minimum(np.maximum(self.target_speed[rows], tab.speed_floor[lane]), tab.speed_limit[lane])
        acc = traffic.idm_acceleration_f64(self._idm_c, self.speed[rows], vt, self.delta[rows],
                                       np.ones(len(rows), dtype=bool), gap, self.speed[rows])
        return np.maximum(acc, -p.a_max)

    def _follow_across(self, rows: np.ndarray, ahead: np.ndarray, nxt: np.ndarray, u: np.ndarray,
                       acc: np.ndarray, path: tuple) -> None:
        """IDM behind the last vehicle on the next lane (by path lane), for vehicles near
        their lane end. Vehicles that will enter it from other lanes are left to the rule.

        Queues at yield lines start right after lane joints, where the own-lane leader search
        (highway-env's, without connected lanes) does not see them.
        """
        p = self.params
        index, _, _, path_s = path
        ok = nxt >= 0
        if not np.count_nonzero(ok):
            return
        a, nl, un = ahead[ok], nxt[ok], u[ok]
        ra = rows[a]
        front, _ = index.query(ra, nl, un)
        has = (front >= 0) & (front != ra)
        if not np.count_nonzero(has):
            return
        a, nl, un, ra, f = a[has], nl[has], un[has], ra[has], front[has]
        d = path_s[f] - un
        keep = d > 0
        if not np.count_nonzero(keep):
            return
        a, ra, f, d = a[keep], ra[keep], f[keep], d[keep]
        dv = traffic.projected_closing_speed(self.speed[ra], self._cos[ra], self._sin[ra],
                                             self.speed[f], self._cos[f], self._sin[f])
        lane = self.lane[ra]
        vt = np.minimum(np.maximum(self.target_speed[ra], self.table.speed_floor[lane]),
                        self.table.speed_limit[lane])
        acc_f = traffic.idm_acceleration_f64(self._idm_c, self.speed[ra], vt, self.delta[ra],
                                         np.ones(len(a), dtype=bool), d, dv)
        acc[a] = np.minimum(acc[a], np.maximum(acc_f, -p.a_max))

    def _conflict_arrivals(self, needed: np.ndarray, path_lane: np.ndarray, path_s: np.ndarray
                           ) -> np.ndarray:
        """(n_conflicts,) earliest time [s] a vehicle reaches the other side's zone of each needed
        conflict: 0 while one is inside it, inf when none comes (only `needed` ones computed).

        Approaching vehicles count only on yielding conflicts; they are assumed to accelerate
        at the comfortable rate up to their lane's speed (a conservative arrival time).
        Crashed vehicles never arrive but do occupy.
        """
        p, tab = self.params, self.table
        hi = self._hi
        arrive = np.full(tab.n_conflicts, np.inf)
        act = self.active[:hi].nonzero()[0]
        pl = path_lane[act]
        first = tab.watch_start[pl]
        cnt = tab.watch_start[pl + 1] - first
        veh = np.repeat(act, cnt)
        ent = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(first, cnt)
        c = tab.watch_conflict[ent]
        keep = needed[c]
        veh, ent, c = veh[keep], ent[keep], c[keep]
        if len(veh) == 0:
            return arrive
        u = path_s[veh] + tab.watch_offset[ent]
        o0, o1 = tab.conflict_other_zone[c, 0], tab.conflict_other_zone[c, 1]
        inside = (u >= o0) & (u <= o1)
        approach = (u < o0) & tab.conflict_yields[c] & ~self.crashed[veh]
        nl = tab.watch_next_lane[ent]
        chk = (approach & (nl >= 0)).nonzero()[0]
        if len(chk):
            vc, nc = veh[chk], nl[chk]
            goes = tab.follow_next[path_lane[vc]] == nc
            if self._n_routes:
                routed = self.route_len[vc] > self.route_pos[vc]
                if np.count_nonzero(routed):
                    rr = routed.nonzero()[0]
                    goes[rr] = self._route_next_road(vc[rr], path_lane[vc[rr]]) == tab.road[nc[rr]]
            approach[chk] = goes
        w_lane = path_lane[veh]
        v = np.maximum(self.speed[veh], 0.0)
        v_max = np.maximum(v, np.minimum(np.maximum(self.target_speed[veh], v), tab.speed_limit[w_lane]))
        t = np.where(inside, 0.0, _travel_time(v, p.comfort_acc_max, v_max, o0 - u))
        t = np.where(inside | approach, t, np.inf)
        np.minimum.at(arrive, c, t)
        return arrive

    def _route_next_road(self, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
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

    def _next_lanes(self, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
        """Lane each vehicle will take after `lanes` (−1: none): its route's, else `follow_next`."""
        tab = self.table
        nxt = tab.follow_next[lanes].copy()
        if self._n_routes:
            routed = (self.route_len[rows] > self.route_pos[rows]).nonzero()[0]
            if len(routed):
                road = self._route_next_road(rows[routed], lanes[routed])
                ok = road >= 0
                fn = nxt[routed]
                same = ok & (fn >= 0) & (tab.road[np.maximum(fn, 0)] == road)
                r = np.maximum(road, 0)
                guess = tab.road_first[r] + np.minimum(tab.lane_pos[lanes[routed]], tab.road_size[tab.road_first[r]] - 1)
                nxt[routed] = np.where(same, fn, np.where(ok, guess, fn))
        return nxt

    def lane_keeping_steering(self, rows: np.ndarray, target_lane: np.ndarray | int | None = None
                              ) -> np.ndarray:
        """Steering [rad] of highway-env's lane-keeping controller for `rows` towards `target_lane`.

        `target_lane` (lane ids, one per row, or one id for all) defaults to each row's
        `target_lane`.
        """
        rows = np.asarray(rows, dtype=np.intp)
        tgt = self.target_lane[rows] if target_lane is None else np.broadcast_to(
            np.asarray(target_lane, dtype=np.intp), rows.shape)
        st, rt = self.table.local_coordinates(tgt, self.x[rows], self.y[rows])
        v = self.speed[rows]
        future = self.table.heading_at(tgt, st + v * traffic.TAU_PURSUIT)
        return traffic.lane_keeping_steering(rt, future, self.heading[rows], v, self.length[rows])

    def _follow_road(self, row: int) -> None:
        """highway-env's `follow_road` for one row: switch the target to the next lane (rare)."""
        tab = self.table
        if self.route_len[row] > self.route_pos[row] and self.route_free[row, self.route_pos[row]]:
            self._go_round_if_exit_missed(row)
        route = None
        n_left = 0
        if self.route_len[row] > self.route_pos[row]:
            route = [
                (*tab.indices[self.route[row, k]][:2],
                 None if self.route_free[row, k] else tab.indices[self.route[row, k]][2])
                for k in range(self.route_pos[row], self.route_len[row])
            ]
            n_left = len(route)
        current = tab.indices[self.target_lane[row]]
        nxt = self.network.next_lane(current, route=route,
                                     position=np.array([self.x[row], self.y[row]]))
        if route is not None:
            self.route_pos[row] += n_left - len(route)
        self.target_lane[row] = tab.lane_id(nxt)

    def _exit_lane_wish(self, row: int, lane: int) -> int:
        """Lane position a vehicle on a free route should drive on now (−1: any): where its route
        reaches a road with another lane count within `exit_lane_lookahead`, the lane that road
        continues from (the outer ring lane before a roundabout exit; highway-env keeps the
        lane number between roads with equal lane counts)."""
        tab = self.table
        k, n = int(self.route_pos[row]), int(self.route_len[row])
        if tab.road[self.route[row, k]] != tab.road[lane]:
            return -1
        dist = float(tab.length[lane] - self.s[row])
        while k + 1 < n and dist <= self.params.exit_lane_lookahead:
            r, m = tab.road[self.route[row, k]], tab.road[self.route[row, k + 1]]
            if tab.road_exit_lane[r, m] >= 0:
                return int(tab.road_exit_lane[r, m])
            dist += float(tab.road_length[m])
            k += 1
        return -1

    def _let_pass_for_exit(self, rows: np.ndarray, lane: np.ndarray, tgt: np.ndarray, acc: np.ndarray,
                           index: traffic.NeighbourIndex) -> None:
        """A vehicle that must move to another lane for its exit (`_exit_lane_wish`) but has a
        vehicle on that lane beside it, within the desired gap behind or ahead (so MOBIL
        refuses), falls back to slot in behind it instead of driving alongside up to the exit:
        it slows towards 3 m/s below a vehicle behind, or follows a vehicle ahead by IDM,
        braking at most at the comfortable rate."""
        tab, c = self.table, self._idm_c
        for k in ((self.route_len[rows] > self.route_pos[rows]) & (tgt == lane)).nonzero()[0]:
            row = int(rows[k])
            if not self.route_free[row, self.route_pos[row]]:
                continue
            want = self._exit_lane_wish(row, int(lane[k]))
            if want < 0 or want == tab.lane_pos[lane[k]]:
                continue
            wish = np.array([tab.road_first[tab.road[lane[k]]] + want])
            me = np.array([row])
            s_w = tab.longitudinal(wish, self.x[me], self.y[me])
            front, rear = index.query(me, wish, s_w)
            v = max(float(self.speed[row]), 0.0)
            if rear[0] >= 0:
                gap, desired = self._gap_and_desired(rear, me)
                if gap[0] < desired[0]:
                    v_cap = max(float(self.speed[rear[0]]) - 3.0, 0.5)
                    acc[k] = min(acc[k], c.comfort_acc_max * (1 - (v / v_cap) ** self.delta[row]))
            if front[0] >= 0:
                gap = tab.longitudinal(wish, self.x[front], self.y[front]) - s_w
                dv = traffic.projected_closing_speed(self.speed[me], self._cos[me], self._sin[me],
                                                     self.speed[front], self._cos[front], self._sin[front])
                if gap[0] < traffic.desired_gap(c, self.speed[me], dv)[0]:
                    behind = traffic.idm_acceleration_f64(c, self.speed[me], self.target_speed[me],
                                                          self.delta[me], np.ones(1, dtype=bool), gap, dv)
                    acc[k] = min(acc[k], max(float(behind[0]), -c.comfort_acc_max))

    def _go_round_if_exit_missed(self, row: int) -> None:
        """A vehicle on a free route (any lane of each road) that reaches the end of its road on
        another lane than the one its next road continues from (an inner ring lane before a
        roundabout exit) does not cut across: it goes on along its lane and takes the shortest
        way back to its destination road."""
        tab = self.table
        head, n = int(self.route_pos[row]), int(self.route_len[row])
        tgt = int(self.target_lane[row])
        road = int(tab.road[tgt])
        if head + 1 >= n or tab.road[self.route[row, head]] != road:
            return
        want = tab.road_exit_lane[road, tab.road[self.route[row, head + 1]]]
        cont = int(tab.follow_next[tgt])
        if want < 0 or tab.lane_pos[tgt] == want or cont < 0:
            return
        dest = int(tab.road[self.route[row, n - 1]])
        for path in tab.exit_paths(int(tab.road[cont])):
            if path[-1] == dest and len(path) < ROUTE_LEN:
                self._set_route(row, [(*tab.roads[r], None) for r in [road, *path]])
                return

    def _mobil_candidates(self, rows, lane, f_idx):
        """(who, lane, s, r, n_left): reachable side lanes of deciders, left-side pairs first."""
        tab = self.table
        lf = lane[f_idx]
        left, right = tab.left[lf], tab.right[lf]
        has_l, has_r = left >= 0, right >= 0
        who = np.concatenate((f_idx[has_l], f_idx[has_r]))
        cand = np.concatenate((left[has_l], right[has_r]))
        r_ = rows[who]
        cs, cr = tab.local_coordinates(cand, self.x[r_], self.y[r_])
        ok = tab.is_reachable(cand, cs, cr) & (np.abs(self.speed[r_]) >= 1)
        if self._yield_on and tab.has_junctions:
            # No lane change into a lane's conflict zone or the stretch just before it: traffic
            # merging or crossing there has judged the gap on that lane already.
            ok &= ~((cs >= tab.zone_start[cand] - self.params.zone_change_guard) & (cs <= tab.zone_end[cand]))
        n_left = int(np.count_nonzero(ok[: int(np.count_nonzero(has_l))]))
        return who[ok], cand[ok], cs[ok], cr[ok], n_left

    def _mobil_accept(self, me, cand, nf_a, nf_pred_a, self_pred_a, self_a, of_a, of_pred_a):
        """MOBIL's verdict per (vehicle, candidate lane) pair, highway-env's `IDMVehicle.mobil`."""
        p, tab = self.params, self.table
        accept = ~(nf_pred_a < -p.max_braking_imposed)
        gain = self_pred_a - self_a + p.politeness * (nf_pred_a - nf_a + of_pred_a - of_a)
        by_gain = ~(gain < p.min_acc_gain)
        if not self._n_routes:
            return accept & by_gain
        # A route head naming a lane: only move towards it, and only if that is safe for me.
        head = np.minimum(self.route_pos[me], ROUTE_LEN - 1)
        routed = self.route_len[me] > self.route_pos[me]
        lane_route = routed & ~self.route_free[me, head]
        route_pos_id = tab.lane_pos[np.maximum(self.route[me, head], 0)]
        cur_lane = self.target_lane[me]
        cur = tab.lane_pos[cur_lane]
        for k in (routed & ~lane_route).nonzero()[0]:  # any lane, but maybe not for long
            want = self._exit_lane_wish(int(me[k]), int(cur_lane[k]))
            if want >= 0:
                lane_route[k], route_pos_id[k] = True, want
        wrong = np.sign(tab.lane_pos[cand] - cur) != np.sign(route_pos_id - cur)
        by_route = ~wrong & ~(self_pred_a < -p.max_braking_imposed)
        return accept & np.where(lane_route, by_route, by_gain)

    def _abort_lane_changes(self, rows, lane, tgt, c0, new_tgt, fire) -> np.ndarray:
        """Which ongoing lane changes (positions `c0` in `rows`) abort this frame.

        highway-env aborts when another vehicle, not on the target lane, targets it too and is
        ahead within the desired gap. It decides vehicle by vehicle, so a vehicle sees the
        decisions taken this frame by the vehicles before it (lower rows) and the old targets
        of the others. A vectorized pre-check finds candidate conflicts (rare); those are then
        resolved in row order.
        """
        tab = self.table
        aborted = np.zeros(len(c0), dtype=bool)
        chk = (tab.road[lane[c0]] == tab.road[tgt[c0]]) & ~self.lane_change_forced[rows[c0]]
        movers = ((tgt != lane) | (new_tgt != lane)).nonzero()[0]
        if not np.count_nonzero(chk) or len(movers) < 2:
            return aborted
        ci = chk.nonzero()[0]
        v_i = c0[ci][:, None]  # (C, 1) positions in `rows`
        u_i = movers[None, :]  # (1, M)
        t_v = tgt[v_i]
        match = ((tgt[u_i] == t_v) | (new_tgt[u_i] == t_v)) & (lane[u_i] != t_v) & (v_i != u_i)
        if not np.count_nonzero(match):
            return aborted
        a_i, b_i = match.nonzero()
        va, ub = c0[ci[a_i]], movers[b_i]
        d, dstar = self._gap_and_desired(rows[va], rows[ub])
        close = (d > 0) & (d < dstar)
        if not np.count_nonzero(close):
            return aborted
        conflicts: dict[int, list[int]] = {}
        for a, b in zip(va[close], ub[close]):
            conflicts.setdefault(int(a), []).append(int(b))
        pos_in_c0 = {int(c): k for k, c in enumerate(c0)}
        current = new_tgt.copy()
        for a in sorted(conflicts):
            for b in conflicts[a]:
                seen = current[b] if b < a else tgt[b]
                if seen == tgt[a] and lane[b] != tgt[a]:
                    current[a] = lane[a]
                    aborted[pos_in_c0[a]] = True
                    break
        return aborted

    def _gap_and_desired(self, ego: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distance along the ego lane to `other` and the ego's IDM desired gap to it."""
        tab = self.table
        so, _ = tab.local_coordinates(self.lane[ego], self.x[other], self.y[other])
        d = so - self.s[ego]
        dv = traffic.projected_closing_speed(
            self.speed[ego], np.cos(self.heading[ego]), np.sin(self.heading[ego]),
            self.speed[other], np.cos(self.heading[other]), np.sin(self.heading[other]))
        return d, traffic.desired_gap(self._idm_c, self.speed[ego], dv)

    # --------------------------------------------------- departures, crashes
    def _departures(self, hi: int, old_lane: np.ndarray | None) -> None:
        tab = self.table
        act = self.active[:hi]
        lane = self.lane[:hi]
        gone = act & (self.s[:hi] > tab.exit_at[lane])
        if old_lane is not None:
            last = self.route_last_road[:hi]
            dest = act & (last >= 0) & (tab.road[old_lane] == last) & (tab.road[lane] != last) \
                & (self.route_pos[:hi] >= self.route_len[:hi] - 1)
            out = (gone | dest).nonzero()[0]
            dest_out = dest[out]
        else:
            out = gone.nonzero()[0]
            dest_out = False
        if len(out) == 0:
            return
        last = self.route_last_road[out]
        reached = dest_out | ((last >= 0) & (tab.road[lane[out]] == last))
        for row, done in zip(out, reached):
            reason = "destination" if done else "end_of_road"
            self.departed.append(Departure(int(row), int(self.vid[row]), self.time, reason))
            self.despawn(int(row))

    def _collide(self) -> None:
        hi = self._hi
        near = self._contact_candidates(hi)
        if near is None:
            self._touching = np.empty(0, dtype=np.int64)
            return
        pairs = geometry.overlapping_pairs(self.x[:hi], self.y[:hi], self.heading[:hi],
                                           self.length[:hi], self.width[:hi], near)
        if len(pairs) == 0:
            self._touching = np.empty(0, dtype=np.int64)
            return
        codes = pairs[:, 0].astype(np.int64) * self.capacity + pairs[:, 1]
        onset = ~np.isin(codes, self._touching)
        self._touching = codes
        self.crashed[pairs.ravel()] = True
        for i, j in pairs[onset]:
            self.collisions.append(Collision(int(i), int(j), self.time))
        if not self.params.crashed_stay:
            for row in np.unique(pairs.ravel()):
                self.departed.append(Departure(int(row), int(self.vid[row]), self.time, "crashed"))
                self.despawn(int(row))

    def _contact_candidates(self, hi: int) -> np.ndarray | None:
        """Mask of rows that may overlap another row, or None (the common case).

        A cheap necessary test so that the exact test of geometry.py runs only when two
        vehicles are close: pairs within reach along the axis of larger spread (sort and
        window), then box i against the bounding circle of box j in i's own frame, which
        separates vehicles driving side by side in adjacent lanes.
        """
        rows = self.active[:hi].nonzero()[0]
        m = len(rows)
        if m < 2:
            return None
        xs, ys = self.x[rows], self.y[rows]
        half_l, half_w, rad = self._half_length[rows], self._half_width[rows], self._body_radius[rows]
        # Any axis gives a superset of the overlapping rows; the road's longer one prunes most.
        along = xs if self._sweep_x else ys
        order = along.argsort()
        a_sorted = along[order]
        end = a_sorted.searchsorted(a_sorted + 2 * np.maximum.reduce(rad), side="right")
        first = np.arange(m)
        w = int(np.maximum.reduce(end - first)) - 1
        if w <= 0:
            return None
        j = first[:, None] + np.arange(1, w + 1)[None, :]  # (m, w) later neighbours in order
        oj = order[np.minimum(j, m - 1)]
        oi = order[:, None]
        ro = rows[order]
        c, s = self._cos[ro][:, None], self._sin[ro][:, None]
        dx, dy = xs[oj] - xs[oi], ys[oj] - ys[oi]
        hit = (j < end[:, None]) & (np.abs(dx * c + dy * s) <= half_l[oi] + rad[oj]) & (
            np.abs(dy * c - dx * s) <= half_w[oi] + rad[oj])
        if not np.count_nonzero(hit):
            return None
        ii, jj = hit.nonzero()
        mask = np.zeros(hi, dtype=bool)
        mask[rows[oi[ii, 0]]] = True
        mask[rows[oj[ii, jj]]] = True
        return mask

    # -------------------------------------------------------------- traffic entry
    def _random_exit_route(self, row: int, rng: np.random.Generator) -> None:
        """Route the vehicle in `row` to an exit drawn uniformly among those reachable from the
        road of its target lane (shortest way there; one draw from `rng` when several)."""
        tab = self.table
        paths = [p for p in tab.exit_paths(int(tab.road[self.target_lane[row]])) if len(p) <= ROUTE_LEN]
        if not paths:
            return
        path = paths[int(rng.integers(len(paths)))] if len(paths) > 1 else paths[0]
        self._set_route(row, [(*tab.roads[r], None) for r in path])

    def _entry_gaps(self) -> tuple[list[float], list[float]]:
        """Per entry lane: distance from its start to the nearest vehicle on it or on one of its
        successors (inf if none) and that vehicle's speed; ties go to the lowest row on the
        entry lane, then the lowest row on a successor."""
        tab, hi = self.table, self._hi
        entries = tab.entry_lanes
        if self._entry_succ is None:
            self._entry_succ = np.zeros((len(entries), tab.n), dtype=bool)
            for k, e in enumerate(entries):
                self._entry_succ[k, tab.successors[e]] = True
        lane, act, s = self.lane[:hi], self.active[:hi], self.s[:hi]
        dist = np.full((len(entries), 2 * hi), np.inf)
        dist[:, :hi] = np.where((lane == entries[:, None]) & act, s, np.inf)
        dist[:, hi:] = np.where(self._entry_succ[:, lane] & act, tab.length[entries][:, None] + s, np.inf)
        k = dist.argmin(axis=1) if hi else np.zeros(len(entries), dtype=np.intp)
        gaps = dist[np.arange(len(entries)), k] if hi else np.full(len(entries), np.inf)
        return gaps.tolist(), self.speed[k % max(hi, 1)].tolist()

    def populate(self, density: float, speed_range: tuple[float, float],
                 rng: np.random.Generator | None = None) -> list[int]:
        """Place traffic along every lane at about `density` vehicles/km/lane; returns the rows.

        Vehicles are placed back to front with spacing 1000/density × U(0.75, 1.25); a place
        within the jam distance of a vehicle already on that lane (e.g. at a lane joint), or
        touching the body of any vehicle (crossing lanes), is skipped, and a speed drawn from
        `speed_range` is lowered so that the gap to the vehicle ahead is at least d0 + v·T.
        With the yielding rule on, no vehicle starts inside a conflict zone (it would be
        committed against crossing traffic), and speeds are lowered so that a vehicle can stop
        before the next zone at half the comfortable deceleration.
        """
        rng = self.rng if rng is None else rng
        if density <= 0:
            return []
        p, tab = self.params, self.table
        spacing = 1000.0 / density
        placed: list[int] = []
        zones = p.yielding and tab.has_conflicts
        for lane_id in range(tab.n):
            ids = np.array([lane_id])
            nxt = tab.follow_next[lane_id]
            line_next = tab.length[lane_id] + (tab.zone_start[nxt] if nxt >= 0 else np.inf)
            half_w = tab.width[lane_id] / 2
            s = tab.length[lane_id] - VEHICLE_LENGTH - spacing * rng.uniform(0.0, 1.0)
            s_ahead = np.inf
            while s > VEHICLE_LENGTH:
                speed = float(rng.uniform(*speed_range))
                rows = self.active_rows()
                so, ro = tab.local_coordinates(np.broadcast_to(ids, rows.shape), self.x[rows],
                                               self.y[rows])
                same_lane = (np.abs(ro) < half_w) & (np.abs(so - s) < p.distance_wanted)
                body = (np.abs(ro) < self.width[rows] + 0.5) & (np.abs(so - s) < self.length[rows] + 1.0)
                in_zone = zones and tab.zone_start[lane_id] - p.yield_stop_gap <= s <= tab.zone_end[lane_id]
                if not np.any(same_lane | body) and not in_zone:
                    if zones:
                        line = tab.zone_start[lane_id] if s < tab.zone_start[lane_id] else line_next
                        room = max(0.0, line - p.yield_stop_gap - s)
                        speed = min(speed, float(np.sqrt(-p.comfort_acc_min * room)))
                    if np.isfinite(s_ahead):
                        speed = min(speed, max(0.0, (s_ahead - s - p.distance_wanted) / p.time_wanted))
                    placed.append(self.spawn(lane_id, float(s), speed))
                    if tab.has_junctions:
                        self._random_exit_route(placed[-1], rng)
                    s_ahead = s
                s -= spacing * rng.uniform(0.75, 1.25)
        return placed

    def fill_to_density(self, density: float, speed_range: tuple[float, float],
                        rng: np.random.Generator | None = None) -> list[int]:
        """Spawn traffic at the start of entry lanes to hold `density` vehicles/km/lane.

        On each entry lane a vehicle enters once the last vehicle that entered is further from
        the lane start than a drawn spacing 1000/density × U(0.75, 1.25) and than the IDM
        desired gap for the drawn entry speed; it is placed exactly that far behind it (so the
        density does not depend on how often this is called). Densities above what the IDM
        gap allows at the drawn speeds saturate at that gap. Call once per policy step or
        frame; returns the new rows.
        """
        rng = self.rng if rng is None else rng
        if density <= 0:
            return []
        tab = self.table
        spacing = 1000.0 / density
        new: list[int] = []
        gaps, leader_speeds = self._entry_gaps()
        for k, e in enumerate(tab.entry_lanes.tolist()):
            if e not in self._entry_state:
                self._entry_state[e] = (spacing * float(rng.uniform(0.75, 1.25)),
                                        float(rng.uniform(*speed_range)))
            need, speed = self._entry_state[e]
            s_new = 0.0
            gap = gaps[k]
            if gap < np.inf:
                v_f = leader_speeds[k]
                dstar = traffic.desired_gap_scalar(self._idm_c, speed, speed - v_f)
                want = max(need, dstar)
                if gap < want:
                    continue
                # Enter where the spacing was reached during the step, not further back.
                s_new = min(gap - want, max(tab.length[e] - VEHICLE_LENGTH, 0.0))
            new.append(self.spawn(e, s_new, speed))
            if tab.has_junctions:
                self._random_exit_route(new[-1], rng)
            gaps, leader_speeds = self._entry_gaps()  # the new vehicle leads now
            self._entry_state[e] = (spacing * float(rng.uniform(0.75, 1.25)),
                                    float(rng.uniform(*speed_range)))
        return new
