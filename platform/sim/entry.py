"""Traffic entry: filling the road at a density (`populate`) and feeding entry lanes (`fill_to_density`).

Owns `TrafficEntry`, which places traffic through the World's `spawn` and keeps, per entry
lane, the spacing and speed drawn for its next vehicle, and `insertion_speed`, the one
insertion check both use (collision-free by construction, as SUMO's and highway-env's
insertion are): a place is refused when any vehicle's footprint reaches into the new
vehicle's lane corridor within the jam distance (lane-changing vehicles by their lateral
position and by the lane they steer to, vehicles on the lanes before and after it across lane
joints, crossing vehicles by their body), and the speed is the highest, up to the drawn one and
the lane's speed limit, at which IDM's desired gap to every leader fits the gap, so that IDM
starts no harder than its comfortable deceleration, and no follower needs more than that to
stay behind. Routed traffic at junctions gets its route here (routes.py `random_exit_route`,
one draw from the generator used).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH
from diffplatoon.sim import routes, traffic

if TYPE_CHECKING:
    from diffplatoon.sim.lanes import LaneTable
    from diffplatoon.sim.world import World


_REACH = 200.0  # [m] look-ahead/behind along the lanes: IDM's desired gap at 40 m/s is below it


def insertion_speed(world: World, lane: int, s: float, speed: float, length: float = VEHICLE_LENGTH,
                    width: float = VEHICLE_WIDTH) -> float | None:
    """Highest speed ≤ `speed` and ≤ the lane's limit at which a vehicle fits at (`lane`, `s`) on
    the centre line, or None where the place is taken (module docstring).

    Occupants of the lane corridor are the vehicles whose body reaches into the lane (lateral
    position and heading) or whose target lane it is, on the lane and on the lanes before and
    after it within `_REACH`. A leader at centre distance d with speed v_l allows v when IDM's
    desired gap d*(v, v − v_l) ≤ d; a follower at d with speed v_f needs d*(v_f, v_f − v) ≤ d;
    either closer than the jam distance takes the place, as does any other vehicle whose body
    is within 1 m lengthwise and 0.5 m sideways of the new one.
    """
    veh, tab, c = world.vehicles, world.table, world.idm
    rows = veh.active_rows()
    v_hi = min(float(speed), float(tab.speed_limit[lane]))
    if not len(rows):
        return max(v_hi, 0.0)
    lanes, offsets = _path_lanes(tab, lane)
    k_lanes = np.asarray(lanes)[:, None]
    x, y = veh.x[rows][None, :], veh.y[rows][None, :]
    so, ro = tab.local_coordinates(np.broadcast_to(k_lanes, (len(lanes), len(rows))), x, y)
    half_l = veh.length[rows] / 2
    dh = veh.heading[rows] - tab.heading_at(np.broadcast_to(k_lanes, so.shape), so)
    cos_dh, sin_dh = np.abs(np.cos(dh)), np.abs(np.sin(dh))
    half_w = 0.5 * (veh.width[rows] * cos_dh + veh.length[rows] * sin_dh)
    on_extent = (so >= -half_l) & (so <= tab.length[k_lanes] + half_l)
    corridor = on_extent & ((np.abs(ro) < tab.width[k_lanes] / 2 + half_w)
                            | (veh.target_lane[rows][None, :] == k_lanes))
    d = np.asarray(offsets)[:, None] + so - s  # centre distance along the lanes
    d0 = c.distance_wanted
    if np.any(corridor & (np.abs(d) < d0)):
        return None
    # Crossing vehicles: their body near the new one's, in the insertion lane's frame.
    if np.any((np.abs(ro[0]) < (veh.width[rows] + width) / 2 + 0.5)
              & (np.abs(so[0] - s) < (veh.length[rows] + length) / 2 + 1.0)):
        return None
    v_other = np.broadcast_to(veh.speed[rows] * np.cos(dh), d.shape)
    k = 1.0 / (2.0 * math.sqrt(-c.comfort_acc_max * c.comfort_acc_min))
    ahead = corridor & (d > 0)
    if np.any(ahead):  # k·v² + (T − k·v_l)·v − (d − d0) ≤ 0
        dl, vl = d[ahead], v_other[ahead]
        b = c.time_wanted - k * vl
        v_max = (-b + np.sqrt(b * b + 4 * k * (dl - d0))) / (2 * k)
        v_hi = min(v_hi, float(v_max.min()))
    v_lo = 0.0
    behind = corridor & (d < 0)
    if np.any(behind):  # d0 + v_f·T + k·v_f·(v_f − v) ≤ −d
        df, vf = -d[behind], np.maximum(v_other[behind], 0.0)
        slack = df - d0 - vf * c.time_wanted
        need = np.where(vf > 0, vf - slack / (k * np.maximum(vf, 1e-9)), 0.0)
        v_lo = max(v_lo, float(need.max()))
    if v_hi < v_lo:
        return None
    return max(v_hi, 0.0)


def _path_lanes(tab: LaneTable, lane: int) -> tuple[list[int], list[float]]:
    """`lane` first, then the lanes reachable after and before it within `_REACH`, each with the
    offset [m] of its start from `lane`'s start along the way (first way found)."""
    out, offs = [lane], [0.0]
    for step in (1, -1):
        todo = [(lane, 0.0)]
        while todo:
            cur, off = todo.pop()
            nxt = tab.successors[cur] if step > 0 else tab.predecessors[cur]
            for m in nxt.tolist():
                o = off + tab.length[cur] if step > 0 else off - tab.length[m]
                if m in out or abs(o) > _REACH + tab.length[lane]:
                    continue
                out.append(m)
                offs.append(float(o))
                todo.append((m, o))
    return out, offs


class TrafficEntry:
    """Traffic placement state of one World (see `populate` and `fill_to_density`)."""

    def __init__(self) -> None:
        self._state: dict[int, tuple[float, float]] = {}  # entry lane -> (spacing needed, speed)
        self._succ: np.ndarray | None = None  # (entry lanes, lanes): successors of each entry
        self._any_succ = False  # whether any entry lane has a successor (set with _succ)

    def populate(self, world: World, density: float, speed_range: tuple[float, float],
                 rng: np.random.Generator) -> list[int]:
        """Place traffic along every lane at about `density` vehicles/km/lane; returns the rows.

        Vehicles are placed back to front with spacing 1000/density × U(0.75, 1.25); a place
        `insertion_speed` refuses is skipped, and a speed drawn from `speed_range` is lowered
        to the one it allows. With the yielding rule on, no vehicle starts inside a conflict
        zone (it would be committed against crossing traffic), and speeds are lowered so that a
        vehicle can stop before the next zone at half the comfortable deceleration.
        """
        if density <= 0:
            return []
        veh, p, tab = world.vehicles, world.params, world.table
        cf = tab.conflicts
        spacing = 1000.0 / density
        placed: list[int] = []
        zones = p.yielding and cf.n > 0
        for lane_id in range(tab.n):
            nxt = tab.follow_next[lane_id]
            line_next = tab.length[lane_id] + (cf.zone_start[nxt] if nxt >= 0 else np.inf)
            s = tab.length[lane_id] - VEHICLE_LENGTH - spacing * rng.uniform(0.0, 1.0)
            while s > VEHICLE_LENGTH:
                speed = float(rng.uniform(*speed_range))
                in_zone = zones and cf.zone_start[lane_id] - p.yield_stop_gap <= s <= cf.zone_end[lane_id]
                fit = None if in_zone else insertion_speed(world, lane_id, float(s), speed)
                if fit is not None:
                    speed = fit
                    if zones:
                        line = cf.zone_start[lane_id] if s < cf.zone_start[lane_id] else line_next
                        room = max(0.0, line - p.yield_stop_gap - s)
                        speed = min(speed, float(np.sqrt(-p.comfort_acc_min * room)))
                    placed.append(world.spawn(lane_id, float(s), speed))
                    if tab.road_graph.has_junctions:
                        routes.random_exit_route(veh, placed[-1], rng)
                s -= spacing * rng.uniform(0.75, 1.25)
        return placed

    def fill_to_density(self, world: World, density: float, speed_range: tuple[float, float],
                        rng: np.random.Generator) -> list[int]:
        """Spawn traffic at the start of entry lanes to hold `density` vehicles/km/lane.

        On each entry lane a vehicle enters once the last vehicle that entered is further from
        the lane start than a drawn spacing 1000/density × U(0.75, 1.25) and than the IDM
        desired gap for the drawn entry speed; it is placed exactly that far behind it (so the
        density does not depend on how often this is called), at the speed `insertion_speed`
        allows there, or waits while that place is taken. Densities above what the IDM gap
        allows at the drawn speeds saturate at that gap. Returns the new rows.
        """
        if density <= 0:
            return []
        tab = world.table
        spacing = 1000.0 / density
        new: list[int] = []
        gaps, leader_speeds = self._gaps(world)
        for k, e in enumerate(tab.entry_lanes.tolist()):
            if e not in self._state:
                self._state[e] = (spacing * float(rng.uniform(0.75, 1.25)), float(rng.uniform(*speed_range)))
            need, speed = self._state[e]
            s_new = 0.0
            gap = gaps[k]
            if gap < np.inf:
                v_f = leader_speeds[k]
                dstar = traffic.desired_gap_scalar(world.idm, speed, speed - v_f)
                want = max(need, dstar)
                if gap < want:
                    continue
                # Enter where the spacing was reached during the step, not further back.
                s_new = min(gap - want, max(tab.length[e] - VEHICLE_LENGTH, 0.0))
            fit = insertion_speed(world, e, s_new, speed)
            if fit is None:
                continue
            new.append(world.spawn(e, s_new, fit))
            if tab.road_graph.has_junctions:
                routes.random_exit_route(world.vehicles, new[-1], rng)
            gaps, leader_speeds = self._gaps(world)  # the new vehicle leads now
            self._state[e] = (spacing * float(rng.uniform(0.75, 1.25)), float(rng.uniform(*speed_range)))
        return new

    def _gaps(self, world: World) -> tuple[list[float], list[float]]:
        """Per entry lane: distance from its start to the nearest vehicle on it or on one of its
        successors (inf if none) and that vehicle's speed; ties go to the lowest row on the
        entry lane, then the lowest row on a successor."""
        veh, tab = world.vehicles, world.table
        hi = veh.hi
        entries = tab.entry_lanes
        if self._succ is None:
            self._succ = np.zeros((len(entries), tab.n), dtype=bool)
            for k, e in enumerate(entries):
                self._succ[k, tab.successors[e]] = True
            self._any_succ = bool(np.count_nonzero(self._succ))
        lane, act, s = veh.lane[:hi], veh.active[:hi], veh.s[:hi]
        on_entry = np.where((lane == entries[:, None]) & act, s, np.inf)
        if self._any_succ:
            dist = np.concatenate(
                (on_entry, np.where(self._succ[:, lane] & act, tab.length[entries][:, None] + s, np.inf)), axis=1)
        else:  # entry lanes without successors (one-road networks): the second half would be all inf
            dist = on_entry
        k = dist.argmin(axis=1) if hi else np.zeros(len(entries), dtype=np.intp)
        gaps = dist[np.arange(len(entries)), k] if hi else np.full(len(entries), np.inf)
        return gaps.tolist(), veh.speed[k % max(hi, 1)].tolist()
