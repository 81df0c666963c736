"""The collision evaluator: exact, continuous contact detection between frames, off-road and wrong way.

`CollisionEvaluator` is a frame listener of a `Simulation` (``sim.frame_listeners``): it
snapshots every vehicle's box before each simulation frame and, after it, runs
`geometry.swept_overlapping_pairs` between the two states. Poses are interpolated with enough
sub-steps per candidate pair that no point of one box moves by half the smallest box side
relative to the other between samples, so boxes closing at 60 m/s cannot pass through each
other unseen (a per-frame check at dt = 0.2 s misses a head-on pass at 60 m/s; the tests build
that case). The first-contact time is refined inside the sub-step.

Conventions:
- Overlap is strict (geometry.py): boxes that only touch are no collision.
- A collision is one pair of vehicles (by vehicle id) and is recorded once, at its first
  contact, even when the contact lasts many frames or the pair separates and touches again
  (nuPlan counts a multi-frame collision once).
- Type, from the heading difference α at first contact (SSAM v2 defaults): α < 30° is
  car-following, and then the contact face decides: the boxes first touch front-to-rear
  (smaller penetration along the length axis) → ``rear-end``, side-to-side → ``side-swipe``;
  30° ≤ α ≤ 85° → ``side-swipe`` (SSAM's lane-change class); α > 85° → ``angle`` (SSAM's
  crossing class, head-on included).
- At fault (nuPlan-style, a vehicle name or ``"both"``), the first rule that decides:
  1. a vehicle standing still (< 0.1 m/s) is never at fault: the moving one is (``"unknown"``
     only when both stand, which no trajectory can decide);
  2. nor is a vehicle already crashed in an earlier collision (a wreck still rolling out);
  3. a cutter that cut in (`sim.events`) with a gap below the default ``min_gap`` less than
     3 s before the contact is at fault;
  4. rear-end: the follower, unless the leader was cutting in (moving sideways relative to its
     lane faster than ``lateral_speed``, or a lane change under way for traffic) while the
     follower was not; side-swipe: the lane changer, ``"both"`` if both were changing lanes;
  5. angle collisions and side-swipes without a lane change: the vehicle driving into the other
     (velocity towards the other's centre), ``"both"`` when both drive into each other at
     comparable speeds.
- Relative speed: norm of the velocity difference at first contact [m/s].
- Off-road: a corner of a platoon member's box outside the road's drivable area grown by
  ``offroad_tolerance`` (nuPlan's 0.3 m) and extended past the ends of exit lanes, where
  vehicles leave the road. Wrong way: a member moving against its lane's direction faster than
  ``wrong_way_speed`` for more than ``wrong_way_time`` (1 s). Each is recorded once per member,
  at its first frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import shapely

from diffplatoon import geometry
from diffplatoon.sim import events
from diffplatoon.sim.roads import drivable_area

_STILL = 0.1  # [m/s] below this a vehicle is standing
_EXIT_EXTENSION = 30.0  # [m] drivable area added past exit lane ends (vehicles depart there)


@dataclass
class CollisionRecord:
    """One collision, at its first contact."""

    time: float  # [s]
    a: str
    b: str
    type: str  # rear-end | side-swipe | angle
    at_fault: str  # a vehicle name, "both" or "unknown"
    relative_speed: float  # [m/s]
    heading_difference: float  # [deg]
    substep_only: bool  # the boxes did not overlap at the end of the frame of first contact
    members: int  # how many of a, b are platoon members
    vids: tuple[int, int]  # World vehicle ids of a, b

    def as_dict(self) -> dict[str, Any]:
        """The record's public fields (without the bookkeeping `members`, `vids`)."""
        out = asdict(self)
        del out["members"], out["vids"]
        return out


@dataclass
class _Snapshot:
    time: float
    rows: np.ndarray  # (hi,) bool active
    vid: np.ndarray
    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray
    crashed: np.ndarray  # (hi,) bool, crashed in an earlier collision


class CollisionEvaluator:
    """Frame listener that records collisions, off-road and wrong-way driving of an episode."""

    def __init__(self, *, rear_end_angle: float = 30.0, crossing_angle: float = 85.0,
                 lateral_speed: float = 0.3, offroad_tolerance: float = 0.3,
                 wrong_way_speed: float = 0.5, wrong_way_time: float = 1.0) -> None:
        self.rear_end_angle = rear_end_angle
        self.crossing_angle = crossing_angle
        self.lateral_speed = lateral_speed
        self.offroad_tolerance = offroad_tolerance
        self.wrong_way_speed = wrong_way_speed
        self.wrong_way_time = wrong_way_time
        self.sim = None

    # -- wiring ------------------------------------------------------------------------------
    def attach(self, sim) -> "CollisionEvaluator":
        """Register on `sim` and reset all records; returns self."""
        self.sim = sim
        self.collisions: list[CollisionRecord] = []
        self.offroad: dict[str, float] = {}  # member -> first time
        self.wrong_way: dict[str, float] = {}
        self.frames = 0
        self.last_swept = geometry.SweptContacts(np.empty((0, 2), dtype=np.intp), np.empty(0))
        self.last_end_overlap = np.empty((0, 2), dtype=np.intp)  # pairs overlapping at the frame end
        # pairs that touched inside the last frame but neither at its start nor at its end: only
        # the sub-stepped check sees them
        self.last_substep_only = np.empty((0, 2), dtype=np.intp)
        self.substep_only_contacts = 0  # such frame contacts over the episode
        self._seen: set[tuple[int, int]] = set()
        self._against = np.zeros(len(sim.controlled))
        self._area = self._drivable_area(sim)
        self._snap: _Snapshot | None = None
        sim.frame_listeners.append(self)
        return self

    def _drivable_area(self, sim) -> shapely.Geometry:
        road, tab = sim.road, sim.world.table
        parts = [drivable_area(road)]
        for idx in road.exit_lanes():
            lane = tab.lanes[tab.lane_id(idx)]
            end = lane.position(lane.length, 0.0)
            ahead = lane.position(lane.length + _EXIT_EXTENSION, 0.0)
            parts.append(shapely.buffer(shapely.LineString([end, ahead]), lane.width_at(lane.length) / 2,
                                        cap_style="flat"))
        area = shapely.union_all(parts)
        if self.offroad_tolerance > 0:
            area = shapely.buffer(area, self.offroad_tolerance)
        shapely.prepare(area)
        return area

    def _snapshot(self, sim) -> _Snapshot:
        w = sim.world
        rows = w.active_rows()
        hi = int(rows[-1]) + 1 if len(rows) else 0
        return _Snapshot(float(w.time), w.active[:hi].copy(), w.vid[:hi].copy(), w.x[:hi].copy(),
                         w.y[:hi].copy(), w.heading[:hi].copy(), w.length[:hi].copy(), w.width[:hi].copy(),
                         w.crashed[:hi].copy())

    # -- frame hooks -------------------------------------------------------------------------
    def before_frame(self, sim) -> None:
        self._snap = self._snapshot(sim)

    def after_frame(self, sim) -> None:
        prev, curr = self._snap, self._snapshot(sim)
        self.frames += 1
        n = min(len(prev.vid), len(curr.vid))
        same = prev.rows[:n] & curr.rows[:n] & (prev.vid[:n] == curr.vid[:n])  # rows kept their vehicle
        box_prev = geometry.Boxes(prev.x[:n], prev.y[:n], prev.heading[:n], prev.length[:n], prev.width[:n])
        box_curr = geometry.Boxes(curr.x[:n], curr.y[:n], curr.heading[:n], curr.length[:n], curr.width[:n])
        swept = geometry.swept_overlapping_pairs(box_prev, box_curr, active=same)
        self.last_swept = swept
        if len(swept.pairs):
            c = geometry.box_corners(*box_curr)
            end = geometry.boxes_overlap(c[swept.pairs[:, 0]], c[swept.pairs[:, 1]])
            self.last_end_overlap = swept.pairs[end]
            self.last_substep_only = swept.pairs[~end & (swept.fraction > 0)]
            self.substep_only_contacts += len(self.last_substep_only)
            for (i, j), frac, at_end in zip(swept.pairs, swept.fraction, end):
                key = (int(min(curr.vid[i], curr.vid[j])), int(max(curr.vid[i], curr.vid[j])))
                if key not in self._seen:
                    self._seen.add(key)
                    self.collisions.append(self._classify(sim, prev, curr, int(i), int(j), float(frac), bool(at_end)))
        else:
            self.last_end_overlap = self.last_substep_only = swept.pairs
        self._member_checks(sim, curr.time - prev.time)

    # -- classification ----------------------------------------------------------------------
    def _lateral_speed(self, sim, row: int) -> float:
        """Speed [m/s] sideways relative to the vehicle's current lane (positive to the right)."""
        w = sim.world
        lane_heading = w.table.heading_at(np.array([w.lane[row]]), np.array([w.s[row]]))[0]
        return float(w.speed[row] * np.sin(w.heading[row] - lane_heading))

    def _changing_lane(self, sim, row: int) -> bool:
        w = sim.world
        lat = abs(self._lateral_speed(sim, row)) > self.lateral_speed
        return bool(lat or (not w.is_controlled[row] and w.target_lane[row] != w.lane[row]))

    def _classify(self, sim, prev: _Snapshot, curr: _Snapshot, i: int, j: int, frac: float,
                  at_end: bool) -> CollisionRecord:
        w = sim.world
        # Pose at first contact (linear interpolation, as the swept check).
        def at(arr_prev, arr_curr, k):
            return arr_prev[k] + frac * (arr_curr[k] - arr_prev[k])

        xi, yi, xj, yj = at(prev.x, curr.x, i), at(prev.y, curr.y, i), at(prev.x, curr.x, j), at(prev.y, curr.y, j)
        hi = prev.heading[i] + frac * geometry.wrap_angle(curr.heading[i] - prev.heading[i])
        hj = prev.heading[j] + frac * geometry.wrap_angle(curr.heading[j] - prev.heading[j])
        vi = w.speed[i] * np.array([np.cos(w.heading[i]), np.sin(w.heading[i])])
        vj = w.speed[j] * np.array([np.cos(w.heading[j]), np.sin(w.heading[j])])
        rel_speed = float(np.linalg.norm(vi - vj))
        alpha = float(np.degrees(abs(geometry.wrap_angle(hi - hj))))
        name_i, name_j = sim.name_of(i), sim.name_of(j)
        ds = 0.0
        if alpha < self.rear_end_angle:
            c, s = np.cos(hi), np.sin(hi)
            ds = c * (xj - xi) + s * (yj - yi)  # j's centre along i's heading
            dr = -s * (xj - xi) + c * (yj - yi)
            pen_long = 0.5 * (w.length[i] + w.length[j]) - abs(ds)
            pen_lat = 0.5 * (w.width[i] + w.width[j]) - abs(dr)
            kind = "rear-end" if pen_long <= pen_lat else "side-swipe"
        elif alpha <= self.crossing_angle:
            kind = "side-swipe"
        else:
            kind = "angle"

        at_fault = self._fault(sim, prev, i, j, kind, ds, xj - xi, yj - yi, vi, vj)
        members = int(w.is_controlled[i]) + int(w.is_controlled[j])
        return CollisionRecord(prev.time + frac * (curr.time - prev.time), name_i, name_j, kind, at_fault,
                               rel_speed, alpha, not at_end, members, (int(w.vid[i]), int(w.vid[j])))

    def _fault(self, sim, prev: _Snapshot, i: int, j: int, kind: str, ds: float, dx: float, dy: float,
               vi: np.ndarray, vj: np.ndarray) -> str:
        """Who is at fault (module docstring, in the order of its rules)."""
        w = sim.world
        name_i, name_j = sim.name_of(i), sim.name_of(j)
        still_i, still_j = w.speed[i] < _STILL, w.speed[j] < _STILL
        wreck_i, wreck_j = bool(prev.crashed[i]), bool(prev.crashed[j])
        if still_i and still_j:
            return "unknown"  # nobody moved: no trajectory says who
        if still_i != still_j:  # a standing vehicle is never at fault
            return name_j if still_i else name_i
        if wreck_i != wreck_j:  # nor is a wreck still rolling out
            return name_j if wreck_i else name_i
        cut_i = events.aggressive_cutter(sim.event_state, name_i, float(w.time))
        cut_j = events.aggressive_cutter(sim.event_state, name_j, float(w.time))
        if cut_i != cut_j:
            return name_i if cut_i else name_j
        if kind == "rear-end":
            follower, leader = (i, j) if ds > 0 else (j, i)
            cutting_in = self._changing_lane(sim, leader) and not self._changing_lane(sim, follower)
            return sim.name_of(leader if cutting_in else follower)
        if kind == "side-swipe":
            ci, cj = self._changing_lane(sim, i), self._changing_lane(sim, j)
            if ci or cj:
                return "both" if ci and cj else name_i if ci else name_j
        # angle collisions, and side-swipes without a lane change: the one driving into the other
        d = np.array([dx, dy])
        d = d / max(float(np.linalg.norm(d)), 1e-9)
        toward_i, toward_j = float(vi @ d), float(-(vj @ d))  # speed of each towards the other
        if min(toward_i, toward_j) > max(0.5 * max(toward_i, toward_j), _STILL):
            return "both"
        return name_i if toward_i >= toward_j else name_j

    # -- off-road and wrong way ----------------------------------------------------------------
    def _member_checks(self, sim, dt: float) -> None:
        w = sim.world
        live = sim.live_members()
        rows = sim.controlled[live]
        if len(rows) == 0:
            return
        names = [n for n, ok in zip(sim.agent_names, live) if ok]
        corners = geometry.box_corners(w.x[rows], w.y[rows], w.heading[rows], w.length[rows], w.width[rows])
        inside = shapely.contains_xy(self._area, corners[..., 0], corners[..., 1])  # (n, 4)
        for name, ok in zip(names, inside.all(axis=1)):
            if not ok and name not in self.offroad:
                self.offroad[name] = float(w.time)
        lane_heading = w.table.heading_at(w.lane[rows], w.s[rows])
        along = w.speed[rows] * np.cos(w.heading[rows] - lane_heading)
        idx = np.flatnonzero(live)
        self._against[idx] = np.where(along < -self.wrong_way_speed, self._against[idx] + dt, 0.0)
        for k, name in zip(idx, names):
            if self._against[k] > self.wrong_way_time and name not in self.wrong_way:
                self.wrong_way[name] = float(w.time)

    # -- results -----------------------------------------------------------------------------
    def member_collisions(self) -> list[CollisionRecord]:
        """Collisions with at least one platoon member."""
        return [c for c in self.collisions if c.members > 0]

    def at_fault_count(self) -> int:
        """Member collisions where a member (or both parties) is at fault."""
        members = set(self.sim.agent_names)
        return sum(1 for c in self.member_collisions()
                   if c.at_fault in members or (c.at_fault == "both" and (c.a in members or c.b in members)))
