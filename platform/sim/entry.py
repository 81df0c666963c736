"""Traffic entry: filling the road at a density (`populate`) and feeding entry lanes (`fill_to_density`).

Owns `TrafficEntry`, which places traffic through the World's `spawn` and keeps, per entry
lane, the spacing and speed drawn for its next vehicle. Routed traffic at junctions gets its
route here (routes.py `random_exit_route`, one draw from the generator used).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from diffplatoon.sim import routes, traffic
from diffplatoon.geometry import VEHICLE_LENGTH

if TYPE_CHECKING:
    from diffplatoon.sim.world import World


class TrafficEntry:
    """Traffic placement state of one World (see `populate` and `fill_to_density`)."""

    def __init__(self) -> None:
        self._state: dict[int, tuple[float, float]] = {}  # entry lane -> (spacing needed, speed)
        self._succ: np.ndarray | None = None  # (entry lanes, lanes): successors of each entry

    def populate(self, world: World, density: float, speed_range: tuple[float, float],
                 rng: np.random.Generator) -> list[int]:
        """Place traffic along every lane at about `density` vehicles/km/lane; returns the rows.

        Vehicles are placed back to front with spacing 1000/density × U(0.75, 1.25); a place
        within the jam distance of a vehicle already on that lane (e.g. at a lane joint), or
        touching the body of any vehicle (crossing lanes), is skipped, and a speed drawn from
        `speed_range` is lowered so that the gap to the vehicle ahead is at least d0 + v·T.
        With the yielding rule on, no vehicle starts inside a conflict zone (it would be
        committed against crossing traffic), and speeds are lowered so that a vehicle can stop
        before the next zone at half the comfortable deceleration.
        """
        if density <= 0:
            return []
        veh, p, tab = world.vehicles, world.params, world.table
        cf = tab.conflicts
        spacing = 1000.0 / density
        placed: list[int] = []
        zones = p.yielding and cf.n > 0
        for lane_id in range(tab.n):
            ids = np.array([lane_id])
            nxt = tab.follow_next[lane_id]
            line_next = tab.length[lane_id] + (cf.zone_start[nxt] if nxt >= 0 else np.inf)
            half_w = tab.width[lane_id] / 2
            s = tab.length[lane_id] - VEHICLE_LENGTH - spacing * rng.uniform(0.0, 1.0)
            s_ahead = np.inf
            while s > VEHICLE_LENGTH:
                speed = float(rng.uniform(*speed_range))
                rows = veh.active_rows()
                so, ro = tab.local_coordinates(np.broadcast_to(ids, rows.shape), veh.x[rows], veh.y[rows])
                same_lane = (np.abs(ro) < half_w) & (np.abs(so - s) < p.distance_wanted)
                body = (np.abs(ro) < veh.width[rows] + 0.5) & (np.abs(so - s) < veh.length[rows] + 1.0)
                in_zone = zones and cf.zone_start[lane_id] - p.yield_stop_gap <= s <= cf.zone_end[lane_id]
                if not np.any(same_lane | body) and not in_zone:
                    if zones:
                        line = cf.zone_start[lane_id] if s < cf.zone_start[lane_id] else line_next
                        room = max(0.0, line - p.yield_stop_gap - s)
                        speed = min(speed, float(np.sqrt(-p.comfort_acc_min * room)))
                    if np.isfinite(s_ahead):
                        speed = min(speed, max(0.0, (s_ahead - s - p.distance_wanted) / p.time_wanted))
                    placed.append(world.spawn(lane_id, float(s), speed))
                    if tab.road_graph.has_junctions:
                        routes.random_exit_route(veh, placed[-1], rng)
                    s_ahead = s
                s -= spacing * rng.uniform(0.75, 1.25)
        return placed

    def fill_to_density(self, world: World, density: float, speed_range: tuple[float, float],
                        rng: np.random.Generator) -> list[int]:
        """Spawn traffic at the start of entry lanes to hold `density` vehicles/km/lane.

        On each entry lane a vehicle enters once the last vehicle that entered is further from
        the lane start than a drawn spacing 1000/density × U(0.75, 1.25) and than the IDM
        desired gap for the drawn entry speed; it is placed exactly that far behind it (so the
        density does not depend on how often this is called). Densities above what the IDM
        gap allows at the drawn speeds saturate at that gap. Returns the new rows.
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
            new.append(world.spawn(e, s_new, speed))
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
        lane, act, s = veh.lane[:hi], veh.active[:hi], veh.s[:hi]
        dist = np.full((len(entries), 2 * hi), np.inf)
        dist[:, :hi] = np.where((lane == entries[:, None]) & act, s, np.inf)
        dist[:, hi:] = np.where(self._succ[:, lane] & act, tab.length[entries][:, None] + s, np.inf)
        k = dist.argmin(axis=1) if hi else np.zeros(len(entries), dtype=np.intp)
        gaps = dist[np.arange(len(entries)), k] if hi else np.full(len(entries), np.inf)
        return gaps.tolist(), veh.speed[k % max(hi, 1)].tolist()
