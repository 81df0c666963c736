"""The World: every vehicle as a row of numpy state arrays, stepped all at once.

Owns the step loop (simulation frames inside a policy step), departures, the per-step
records and the hooks scripted events use, and orchestrates the modules listed below. Built
on a highway-env `RoadNetwork` through `LaneTable` (lanes.py); kernels live in traffic.py;
collision geometry in geometry.py.

State layout: attributes of the World (held by `world.vehicles`), each an array with one
row per vehicle slot (`capacity` rows; a row is live while `active`; freed rows are reused by `spawn`):

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
| `wait_time` | float64 | traffic: time it has been standing or creeping (below `wait_speed`) [s] |
| `route` | intp (capacity, ROUTE_LEN) | planned lane ids, −1 padded (`route_free`: any lane of that road) |
| `route_pos`, `route_len` | intp | index of the route head, number of route entries |
| `route_last_road` | intp | road id (`table.road`) of the last route entry, −1 without a route |
| `accel_override` | float64 | NaN = none; else replaces the IDM output or the action's acceleration |
| `lane_change_forced` | bool | a scripted lane change is under way (never aborted) |
| `is_yielding` | bool | traffic held back by the yielding rule in the last frame |
| `is_merging` | bool | traffic changing lanes after waiting (zipper): listed on its target lane too |
| `vid` | int64 | unique id of the vehicle in the row (rows are reused, ids are not) |

Scalars: `time` [s], `frame_count`, `step_count`. `table` is the `LaneTable` whose ids `lane`,
`target_lane` and `route` hold (`table.lane_id(("0", "1", 2))`, `table.lane_index(k)`).
Per policy step: `collisions` (list of `Collision(i, j, time)`, pairs whose overlap began
during the step) and `departed` (list of `Departure(row, vid, time, reason)`, reason
"end_of_road", "destination" or "crashed"); read `departed` before spawning, which reuses rows.

Frame order (as highway-env: all vehicles decide, then all move, then collisions):
1. traffic decides: follow_road at lane ends (highway-env's `next_lane`), aborting a lane
   change when another vehicle changes into the same lane within the desired gap or when the
   new follower would have to brake beyond the comfortable deceleration, MOBIL for vehicles
   whose lane-change timer expired (its safety bound relaxing with waiting time, so queues at
   lane ends zipper-merge), IDM on the current lane (and the target lane
   while changing; the lower acceleration wins), the yielding rule (right_of_way.py; it can only lower
   the acceleration), lane-keeping steering to the target lane;
2. controlled rows take their [acceleration, steering] as given (limits are the caller's);
   `accel_override` replaces accelerations;
3. every vehicle integrates the kinematic bicycle model (crashed ones brake to a stop);
4. each vehicle re-picks its closest lane among the `near` candidates of its lane (falls
   back to all lanes when no candidate is close and a lane box bound says another lane may
   be as close; lane_search.py); leaving a lane end moves the vehicle to the next lane with
   the excess s, because s is recomputed on the new lane;
5. departures (end of a road with no successor, end of the route), then collisions.

Modules (each owns one concern; `World` holds one of each and `frame` calls them in order):

| module | owns |
|---|---|
| vehicles.py | `Vehicles`: the state arrays below, spawning/despawning rows, routes storage |
| frame_cache.py | `FrameCache`: cos/sin of headings, candidate-lane projections, neighbour index |
| kinematics.py | the bicycle model, lane re-assignment (steps 3-4) |
| neighbours.py | lane memberships, `ConnectedLanes` (only with `connected_lanes`) |
| behaviour.py | traffic's decision (step 1): follow_road, MOBIL, IDM, lane keeping |
| idm_mobil.py | the IDM and MOBIL formulas, one function per role |
| right_of_way.py | the yielding rule at merges, intersections and roundabouts |
| routes.py | routes to exits at junctions, exit lanes |
| contacts.py | collision broad phase, onset tracking, crash flags |
| entry.py | `populate`, `fill_to_density` |

Differences from highway-env, by design: controlled rows keep a `target_speed` (highway-env's
continuous-action vehicles have none, which makes MOBIL treat them as infinitely braking);
crashes stop vehicles without highway-env's impact displacement; vehicles leave at the end of
the road instead of driving on past it; collisions use geometry.py's strict overlap test;
traffic enters only where and as fast as entry.py's `insertion_speed` allows; a lane change is
aborted when its new follower would brake beyond the comfortable deceleration, and a vehicle
that has waited may change lanes from a standstill, seen by the followers on its target lane
from the start of the change (zipper merging; highway-env changes lanes only above 1 m/s);
only traffic rows count as "another vehicle changing into my target lane" when a lane change
is aborted (highway-env counts every `ControlledVehicle`), and that check sees other vehicles'
targets as set after their own `follow_road` of this frame; a lane is no successor of a lane
whose end it meets heading back the way it came (lanes.py), so traffic at the outer end of an
intersection or roundabout arm leaves instead of turning into the incoming lane.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
from highway_env.road.road import LaneIndex, RoadNetwork

from diffplatoon.sim import behaviour, kinematics, traffic
from diffplatoon.sim import snapshot as snapshots
from diffplatoon.sim.contacts import Contacts
from diffplatoon.sim.entry import TrafficEntry
from diffplatoon.sim.frame_cache import FrameCache
from diffplatoon.sim.kinematics import Candidates
from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH
from diffplatoon.sim.lanes import LaneTable
from diffplatoon.sim.neighbours import ConnectedLanes, lane_key_base
from diffplatoon.sim.right_of_way import RightOfWay
from diffplatoon.sim.vehicles import ROUTE_LEN, STATE_FIELDS, Vehicles

__all__ = ["ROUTE_LEN", "Collision", "Departure", "World", "WorldParams"]


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
    # Zipper: a vehicle standing or creeping (below wait_speed) accepts gaps imposing more braking
    # on its new follower the longer it waits, up to -comfort_acc_min after `patience` seconds.
    wait_speed: float = 2.0  # [m/s]
    patience: float = 10.0  # [s]
    lane_change_delay: float = 1.0  # [s]
    lane_changes_enabled: bool = True
    crashed_stay: bool = True  # crashed vehicles stay as obstacles; else they are removed
    max_speed: float = 40.0  # [m/s]
    min_speed: float = -40.0  # [m/s]
    check_collisions: bool = True
    connected_lanes: bool = False  # highway-env's neighbour_vehicles_connected_lanes
    yielding: bool = True  # right of way at merges, intersections, roundabouts (right_of_way.py)
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


class Collision(NamedTuple):
    i: int
    j: int
    time: float


class Departure(NamedTuple):
    row: int
    vid: int
    time: float
    reason: str


class World:
    """All vehicles on one highway-env road network, stepped together (see module docstring).

    The per-row state arrays (`x`, `y`, `lane`, `active`, ... `STATE_FIELDS`) are read-only
    attributes delegating to `vehicles`; write into them (`world.speed[row] = v`), never
    rebind them.
    """

    def __init__(self, network: RoadNetwork, params: WorldParams = WorldParams(),
                 rng: np.random.Generator | None = None, capacity: int = 256):
        self.network = network
        self.params = params
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.table = LaneTable(network)
        self.idm = params.idm_constants()
        self.vehicles = Vehicles(self.table, capacity)
        self.time = 0.0
        self.frame_count = 0
        self.step_count = 0
        self.collisions: list[Collision] = []
        self.departed: list[Departure] = []
        self.lane_key_base = lane_key_base(self.table)
        self.connected = ConnectedLanes(self.table, network) if params.connected_lanes else None
        self.right_of_way = (RightOfWay(self.vehicles, params, self.idm)
                             if params.yielding and self.table.conflicts.n else None)
        self.contacts = Contacts(self.vehicles, self.table)
        self.entry = TrafficEntry()
        self._new_cache()

    @property
    def capacity(self) -> int:
        return self.vehicles.capacity

    @property
    def n_active(self) -> int:
        return self.vehicles.n_active

    def active_rows(self) -> np.ndarray:
        """Rows of live vehicles, ascending."""
        return self.vehicles.active_rows()

    def controlled_rows(self) -> np.ndarray:
        """Live controlled rows ordered by (platoon, member): the row order of `step`'s actions."""
        return self.vehicles.controlled_rows()

    # ---------------------------------------------------------------- spawning
    def spawn(self, lane: LaneIndex | int, s: float, speed: float, *, controlled: bool = False,
              platoon: int = -1, member: int = -1, length: float = VEHICLE_LENGTH,
              width: float = VEHICLE_WIDTH, target_speed: float | None = None,
              route: Sequence[LaneIndex] | None = None, delta: float | None = None,
              lane_change_timer: float | None = None) -> int:
        """Add a vehicle on `lane` at longitudinal coordinate `s`, on the centre line; returns its row."""
        p, veh = self.params, self.vehicles
        lane_id = int(lane) if isinstance(lane, (int, np.integer)) else self.table.lane_id(lane)
        if delta is None:
            delta = float(self.rng.uniform(*p.delta_range)) if p.randomize_delta else p.delta
        row = veh.add(lane_id, s, speed, controlled=controlled, platoon=platoon, member=member,
                      length=length, width=width, target_speed=target_speed, delta=delta,
                      lane_change_delay=p.lane_change_delay, lane_change_timer=lane_change_timer)
        veh.set_route(row, route)
        # Closest lane among the candidates of the spawn lane, as highway-env's constructor does.
        kinematics.relocate(veh, np.array([row]))
        veh.target_lane[row] = veh.lane[row]
        self._new_cache()
        return row

    def despawn(self, row: int) -> None:
        """Remove the vehicle in `row`; the row becomes free."""
        if self.vehicles.remove(row):
            self._new_cache()

    # ---------------------------------------------------------- event hooks
    def set_accel_override(self, row: int, value: float) -> None:
        """Force the acceleration of `row` (NaN clears it); used by scripted events."""
        self.vehicles.set_accel_override(row, value)

    def force_lane_change(self, row: int, target_lane: LaneIndex | int) -> None:
        """Make `row` change to `target_lane` now; it is not aborted and MOBIL waits until done."""
        lane_id = int(target_lane) if isinstance(target_lane, (int, np.integer)) \
            else self.table.lane_id(target_lane)
        self.vehicles.target_lane[row] = lane_id
        self.vehicles.lane_change_forced[row] = lane_id != self.vehicles.lane[row]

    def set_pose(self, row: int, x: float, y: float, heading: float,
                 speed: float | None = None) -> None:
        """Move `row` to a world pose; its lane becomes the closest of all lanes (highway-env's rule)."""
        veh = self.vehicles
        veh.x[row], veh.y[row], veh.heading[row] = x, y, heading
        if speed is not None:
            veh.speed[row] = speed
        kinematics.relocate_everywhere(veh, np.array([row]))
        self._new_cache()

    # ---------------------------------------------------------- snapshots
    def snapshot(self) -> snapshots.Snapshot:
        """An immutable copy of the World's state; `restore` returns to it bit for bit (snapshot.py)."""
        return snapshots.take(self)

    def restore(self, state: snapshots.Snapshot) -> None:
        """Return to the state of `snapshot()`; the same actions then give the same frames."""
        snapshots.restore(self, state)

    # ---------------------------------------------------------- frame cache
    def frame_cache(self) -> FrameCache:
        """The per-frame caches of the current poses (frame_cache.py)."""
        return self._cache

    def _new_cache(self, candidates: Candidates | None = None) -> None:
        """Replace the frame cache: rows or poses changed (`candidates`: already computed)."""
        self._cache = FrameCache(self.vehicles, self.lane_key_base, self.connected, candidates)

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
        """Decide, act, move, re-assign lanes, depart, collide (module docstring's frame order)."""
        p, veh = self.params, self.vehicles
        dt = 1.0 / p.simulation_frequency
        hi = veh.hi
        cache = self._cache
        traffic_mask = veh.active[:hi] & ~veh.is_controlled[:hi]
        rows = (traffic_mask & ~veh.crashed[:hi]).nonzero()[0]
        # 1. traffic decides
        if len(rows):
            behaviour.decide(self, rows, cache.index)
        # 2. controlled rows act; overrides replace accelerations
        if len(ctrl_rows):
            ok = veh.active[ctrl_rows]
            if np.count_nonzero(ok) == len(ok):
                veh.accel[ctrl_rows] = acts[:, 0]
                veh.steering[ctrl_rows] = acts[:, 1]
            else:
                veh.accel[ctrl_rows[ok]] = acts[ok, 0]
                veh.steering[ctrl_rows[ok]] = acts[ok, 1]
        if veh.n_overrides:
            ov = veh.accel_override[:hi]
            m = ~np.isnan(ov)
            veh.accel[:hi][m] = ov[m]
        # 3. everyone moves
        kinematics.integrate(veh, hi, dt, p.max_speed, p.min_speed)
        timer = veh.lane_change_timer[:hi]
        np.add(timer, dt, out=timer, where=traffic_mask)
        # 4. lanes re-picked; the new poses' cache comes with it
        old_lane = veh.lane[:hi].copy() if veh.n_routes else None
        self._new_cache(kinematics.relocate(veh, np.arange(hi)))
        self.time += dt
        self.frame_count += 1
        # 5. departures, collisions
        self._departures(hi, old_lane)
        if p.check_collisions:
            self._collide()

    def _departures(self, hi: int, old_lane: np.ndarray | None) -> None:
        """Remove vehicles past the end of a road without successor or at the end of their route."""
        veh, tab = self.vehicles, self.table
        act = veh.active[:hi]
        lane = veh.lane[:hi]
        gone = act & (veh.s[:hi] > tab.exit_at[lane])
        if old_lane is not None:
            last = veh.route_last_road[:hi]
            dest = act & (last >= 0) & (tab.road[old_lane] == last) & (tab.road[lane] != last) \
                & (veh.route_pos[:hi] >= veh.route_len[:hi] - 1)
            out = (gone | dest).nonzero()[0]
            dest_out = dest[out]
        else:
            out = gone.nonzero()[0]
            dest_out = False
        if len(out) == 0:
            return
        last = veh.route_last_road[out]
        reached = dest_out | ((last >= 0) & (tab.road[lane[out]] == last))
        for row, done in zip(out, reached):
            reason = "destination" if done else "end_of_road"
            self.departed.append(Departure(int(row), int(veh.vid[row]), self.time, reason))
            self.despawn(int(row))

    def _collide(self) -> None:
        cache = self._cache
        pairs, onset = self.contacts.detect(*cache.trig())
        if not len(pairs):
            return
        for i, j in onset:
            self.collisions.append(Collision(int(i), int(j), self.time))
        if not self.params.crashed_stay:
            for row in np.unique(pairs.ravel()):
                self.departed.append(Departure(int(row), int(self.vehicles.vid[row]), self.time, "crashed"))
                self.despawn(int(row))

    # ------------------------------------------------------------- queries
    def neighbours(self, rows: np.ndarray, lanes: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """(front, rear) rows (−1 = none) of `rows` on `lanes` (default: their own lanes)."""
        veh = self.vehicles
        rows = np.asarray(rows, dtype=np.intp)
        index = self._cache.index
        if lanes is None:
            lanes, s = veh.lane[rows], veh.s[rows]
        else:
            lanes = np.asarray(lanes, dtype=np.intp)
            s = self.table.longitudinal(lanes, veh.x[rows], veh.y[rows])
        return index.query(rows, lanes, s)

    def lane_keeping_steering(self, rows: np.ndarray, target_lane: np.ndarray | int | None = None
                              ) -> np.ndarray:
        """Steering [rad] of highway-env's lane-keeping controller for `rows` towards `target_lane`.

        `target_lane` (lane ids, one per row, or one id for all) defaults to each row's
        `target_lane`.
        """
        rows = np.asarray(rows, dtype=np.intp)
        tgt = self.vehicles.target_lane[rows] if target_lane is None else np.broadcast_to(
            np.asarray(target_lane, dtype=np.intp), rows.shape)
        return kinematics.steering_towards(self.vehicles, rows, tgt)

    # -------------------------------------------------------------- traffic entry
    def populate(self, density: float, speed_range: tuple[float, float],
                 rng: np.random.Generator | None = None) -> list[int]:
        """Place traffic along every lane at about `density` vehicles/km/lane (entry.py); returns the rows."""
        return self.entry.populate(self, density, speed_range, self.rng if rng is None else rng)

    def fill_to_density(self, density: float, speed_range: tuple[float, float],
                        rng: np.random.Generator | None = None) -> list[int]:
        """Spawn traffic at the start of entry lanes to hold `density` vehicles/km/lane (entry.py).

        Call once per policy step or frame; returns the new rows.
        """
        return self.entry.fill_to_density(self, density, speed_range, self.rng if rng is None else rng)


def _delegate(name: str) -> property:
    # attrgetter runs in C: as cheap as a plain attribute read on the hot observation path.
    return property(operator.attrgetter(f"vehicles.{name}"), doc=f"`vehicles.{name}` (per-row array)")


for _name in STATE_FIELDS:
    setattr(World, _name, _delegate(_name))
del _name
