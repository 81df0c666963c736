"""Yielding at merges, intersections and roundabouts (`WorldParams.yielding`, on by default).

It acts only where lanes of different highway-env `priority` merge or cross (the conflicts of
conflicts.py); on a road whose lanes all share one priority, such as a highway or highway-env's
own merge scene, nothing changes (highway-env's plain `Road`). The rule: a traffic vehicle
follows its path lane (the lane it steers to). Before the first conflict zone of that lane, or
of the lane it takes next (its route's, else `follow_next`), within max(`yield_lookahead`, its
IDM desired gap to a stopped vehicle) of the zone, and while it can still stop before the zone
at `a_max`, it checks every conflict of that lane at once. Where its lane has the lower
priority it waits if a vehicle on the other lane (or on lanes leading into it, up to three
upstream, or just past its end) is inside the other side's zone, or will reach it
(accelerating comfortably up to its lane's speed) before the waiting vehicle, accelerating
comfortably from its speed, has cleared its own zone plus `yield_gap` seconds. Where its lane
has the higher priority it waits only while a lower-priority vehicle is inside the other side's
zone (that one has committed). Waiting is IDM behind a stopped virtual vehicle whose jam
distance ends `yield_stop_gap` before the first zone, so the vehicle brakes comfortably and
stops at the yield line; past the line it never yields, and a vehicle never stops between two
zones of one lane, so the rule cannot deadlock by itself. Platoon members are not held by it
(their policies decide, from the observation), but every vehicle is watched.

`RightOfWay.assess` is the rule's view of any rows (the next zone on the path, its distance,
the verdict, and for observations the earliest priority arrival and the clearing time):
`apply` acts on it for traffic, the `Observer` reports it for platoon members (observation
``right_of_way``), whose expert policies stop at the yield line by the same verdict;
`current_path` gives every row's path lane for it outside the traffic decision.

Supporting behaviours on such roads: near a lane end traffic also follows the last vehicle on
its next lane (`_follow_across`); a lane that yields at its end and has a neighbour (an
acceleration or dropped lane) looks to MOBIL as if stopped at its yield line, so traffic leaves
it by changing lanes early (highway-env's merge scene puts an obstacle there).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from diffplatoon.sim import idm_mobil, traffic
from diffplatoon.sim.traffic import IDMConstants, NeighbourIndex
from diffplatoon.sim.vehicles import Vehicles


class PathState(NamedTuple):
    """Where every row [:hi] drives this frame, for the yielding rule and MOBIL across joints."""

    on_lane: NeighbourIndex  # every vehicle on its path lane
    approach: NeighbourIndex  # also on the lane it takes next, at s minus its lane's length
    lane: np.ndarray  # (hi,) path lane
    s: np.ndarray  # (hi,) s on the path lane


def travel_time(v0: np.ndarray, a: float, v_max: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Time [s] to cover distance d [m] from speed v0 accelerating at a up to v_max (0 if d ≤ 0)."""
    v_max = np.maximum(v_max, np.maximum(v0, 0.1))
    t_acc = (v_max - v0) / a
    d_acc = 0.5 * (v0 + v_max) * t_acc
    dd = np.maximum(d, 0.0)
    t = np.where(dd <= d_acc, (np.sqrt(v0 * v0 + 2 * a * dd) - v0) / a, t_acc + (dd - d_acc) / v_max)
    return np.where(d > 0, t, 0.0)


def path_state(veh: Vehicles, base: np.ndarray, rows: np.ndarray, tgt: np.ndarray,
               st: np.ndarray) -> PathState:
    """Path lanes of all rows [:hi]: traffic `rows` steer to `tgt` (at `st`), others keep their lane.

    The approach index finds vehicles across lane joints by where they drive, not by
    highway-env's lane bands (which overlap everywhere inside an intersection).
    """
    tab, hi = veh.table, veh.hi
    path_lane, path_s = veh.lane[:hi].copy(), veh.s[:hi].copy()
    path_lane[rows], path_s[rows] = tgt, st
    act = veh.active[:hi].nonzero()[0]
    pl, ps = path_lane[act], path_s[act]
    on_lane = NeighbourIndex(act, pl, ps, base)
    nxt = veh.next_lanes(act, pl)
    has = nxt >= 0
    approach = NeighbourIndex(
        np.concatenate((act, act[has])), np.concatenate((pl, nxt[has])),
        np.concatenate((ps, ps[has] - tab.length[pl[has]])), base)
    return PathState(on_lane, approach, path_lane, path_s)


def current_path(veh: Vehicles) -> tuple[np.ndarray, np.ndarray]:
    """Path lane and s of every row [:hi] now: traffic's target lane, members' own lane."""
    hi = veh.hi
    lane, s = veh.lane[:hi].copy(), veh.s[:hi].copy()
    moving = ((veh.target_lane[:hi] != lane) & veh.active[:hi] & ~veh.is_controlled[:hi]).nonzero()[0]
    if len(moving):
        tgt = veh.target_lane[moving]
        lane[moving] = tgt
        s[moving] = veh.table.local_coordinates(tgt, veh.x[moving], veh.y[moving])[0]
    return lane, s


class Assessment(NamedTuple):
    """The yielding rule's view of n ego rows (`RightOfWay.assess`), (n,) arrays."""

    own: np.ndarray  # before the first zone of its own path lane
    check: np.ndarray  # the lane whose zones it checks (−1: none)
    dist: np.ndarray  # [m] from its centre to the first zone of `check` (inf: none)
    within: np.ndarray  # dist within the look-ahead
    blocked: np.ndarray  # the verdict: it must wait at its yield line
    priority_arrival: np.ndarray  # [s] earliest arrival of a priority vehicle at its zone (inf: none)
    clear_time: np.ndarray  # [s] time to clear its zones accelerating comfortably (inf: not computed)
    near_end: np.ndarray  # indices of egos within the look-ahead of their lane end
    near_next: np.ndarray  # their next lane (−1: none)
    near_u: np.ndarray  # their s in the next lane's frame


class RightOfWay:
    """The yielding rule (module docstring) for one World's vehicles and parameters."""

    def __init__(self, veh: Vehicles, params, idm: IDMConstants):
        self.veh, self.p, self.c = veh, params, idm

    def apply(self, rows: np.ndarray, path: PathState, acc: np.ndarray,
              cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
        """Lower `acc` of traffic `rows` that must wait; set `is_yielding`.

        Returns the accelerations MOBIL compares against (a yielding lane with a neighbour
        looks stopped at its yield line, whether or not a priority vehicle comes).
        """
        veh, tab, cf = self.veh, self.veh.table, self.veh.table.conflicts
        veh.is_yielding[:veh.hi] = False
        ego_lane = path.lane[rows]
        a = self.assess(rows, path.lane, path.s)
        if len(a.near_end):
            self._follow_across(rows, a.near_end, a.near_next, a.near_u, acc, path, cos, sin)
        acc_mobil = acc
        leave = (a.within & a.own & cf.lane_yields[ego_lane]
                 & ((tab.left[ego_lane] >= 0) | (tab.right[ego_lane] >= 0))).nonzero()[0]
        if len(leave):
            acc_mobil = acc.copy()
            acc_mobil[leave] = np.minimum(acc[leave], self._stop(rows[leave], a.dist[leave]))
        b = a.blocked.nonzero()[0]
        if len(b) == 0:
            return acc_mobil
        rb = rows[b]
        acc_y = self._stop(rb, a.dist[b])
        acc[b] = np.minimum(acc[b], acc_y)
        if acc_mobil is not acc:
            acc_mobil[b] = np.minimum(acc_mobil[b], acc_y)
        veh.is_yielding[rb] = True
        return acc_mobil

    def assess(self, rows: np.ndarray, path_lane: np.ndarray, path_s: np.ndarray,
               report: bool = False) -> Assessment:
        """The rule's view of `rows` (traffic or members) on their path lanes (module docstring).

        `path_lane`, `path_s` are every row's [:hi] (`path_state`, `current_path`). With
        `report`, arrival and clearing times are also computed for rows beyond the look-ahead
        (for observations); the verdict `blocked` is the same either way.
        """
        veh, p, c = self.veh, self.p, self.c
        tab, cf = veh.table, veh.table.conflicts
        n = len(rows)
        ego_lane, ego_s = path_lane[rows], path_s[rows]
        # The lane whose zones an ego checks: its own while before its first zone, else the next.
        v = np.maximum(veh.speed[rows], 0.0)
        look = np.maximum(p.yield_lookahead, traffic.desired_gap(c, v, v))
        own = np.isfinite(cf.zone_start[ego_lane]) & (ego_s < cf.zone_start[ego_lane])
        check = np.where(own, ego_lane, -1)
        u = ego_s.copy()
        near_end = (tab.length[ego_lane] - ego_s < look).nonzero()[0]
        nxt = u_next = near_end
        if len(near_end):
            nxt = veh.next_lanes(rows[near_end], ego_lane[near_end])
            u_next = ego_s[near_end] - tab.length[ego_lane[near_end]]
            go_on = ~own[near_end]
            ahead = near_end[go_on]
            check[ahead], u[ahead] = nxt[go_on], u_next[go_on]
        has = check >= 0
        dist = np.where(has, cf.zone_start[np.maximum(check, 0)] - u, np.inf)
        # Within look-ahead and still able to stop before the zone (otherwise it is committed).
        within = (dist > 0) & (dist <= look)
        decide = within & (v * v < 2 * p.a_max * dist)
        out = Assessment(own, check, dist, within, np.zeros(n, dtype=bool), np.full(n, np.inf),
                         np.full(n, np.inf), near_end, nxt, u_next)
        idx = (decide | (report & has & (dist > 0))).nonzero()[0]
        if len(idx) == 0:
            return out
        e_lane = check[idx]
        first = cf.start[e_lane]
        cnt = cf.start[e_lane + 1] - first
        pair_ego = np.repeat(np.arange(len(idx)), cnt)
        pair_c = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(first, cnt)
        needed = np.zeros(cf.n, dtype=bool)
        needed[pair_c] = True
        arrive = self._arrivals(needed, path_lane, path_s)
        r_i = rows[idx]
        v_max = np.maximum(v[idx], np.minimum(veh.target_speed[r_i], tab.speed_limit[e_lane]))
        t_clear = travel_time(v[idx][pair_ego], p.comfort_acc_max, v_max[pair_ego],
                              cf.zone[pair_c, 1] - u[idx][pair_ego])
        a = arrive[pair_c]
        blocked_pair = np.where(cf.yields[pair_c], a < t_clear + p.yield_gap, a <= 0.0)
        out.blocked[idx] = decide[idx] & (np.bincount(pair_ego, weights=blocked_pair, minlength=len(idx)) > 0)
        if report:
            # The nearest priority vehicle: the earliest arrival on a conflict this lane yields at.
            np.minimum.at(out.priority_arrival, idx[pair_ego], np.where(cf.yields[pair_c], a, np.inf))
            out.clear_time[idx] = 0.0
            np.maximum.at(out.clear_time, idx[pair_ego], t_clear)
        return out

    def _stop(self, rows: np.ndarray, dist: np.ndarray) -> np.ndarray:
        """Stop at the yield line, `yield_stop_gap` before a zone `dist` ahead."""
        return idm_mobil.stop_accel(self.veh, self.c, rows, dist, self.p.yield_stop_gap, self.p.a_max)

    def _follow_across(self, rows: np.ndarray, ahead: np.ndarray, nxt: np.ndarray, u: np.ndarray,
                       acc: np.ndarray, path: PathState, cos: np.ndarray, sin: np.ndarray) -> None:
        """IDM behind the last vehicle on the next lane (by path lane), for vehicles near
        their lane end. Vehicles that will enter it from other lanes are left to the rule.

        Queues at yield lines start right after lane joints, where the own-lane leader search
        (highway-env's, without connected lanes) does not see them.
        """
        veh = self.veh
        ok = nxt >= 0
        if not np.count_nonzero(ok):
            return
        a, nl, un = ahead[ok], nxt[ok], u[ok]
        ra = rows[a]
        front, _ = path.on_lane.query(ra, nl, un)
        has = (front >= 0) & (front != ra)
        if not np.count_nonzero(has):
            return
        a, nl, un, ra, f = a[has], nl[has], un[has], ra[has], front[has]
        d = path.s[f] - un
        keep = d > 0
        if not np.count_nonzero(keep):
            return
        a, ra, f, d = a[keep], ra[keep], f[keep], d[keep]
        dv = traffic.projected_closing_speed(veh.speed[ra], cos[ra], sin[ra], veh.speed[f], cos[f], sin[f])
        v0 = idm_mobil.desired_speed(veh, ra, veh.lane[ra])
        acc_f = traffic.idm_acceleration_f64(self.c, veh.speed[ra], v0, veh.delta[ra],
                                             np.ones(len(a), dtype=bool), d, dv)
        acc[a] = np.minimum(acc[a], np.maximum(acc_f, -self.p.a_max))

    def _arrivals(self, needed: np.ndarray, path_lane: np.ndarray, path_s: np.ndarray) -> np.ndarray:
        """(n_conflicts,) earliest time [s] a vehicle reaches the other side's zone of each needed
        conflict: 0 while one is inside it, inf when none comes (only `needed` ones computed).

        Approaching vehicles count only on yielding conflicts; they are assumed to accelerate
        at the comfortable rate up to their lane's speed (a conservative arrival time).
        Crashed vehicles never arrive but do occupy.
        """
        veh, p = self.veh, self.p
        tab, cf = veh.table, veh.table.conflicts
        hi = veh.hi
        arrive = np.full(cf.n, np.inf)
        act = veh.active[:hi].nonzero()[0]
        pl = path_lane[act]
        first = cf.watch_start[pl]
        cnt = cf.watch_start[pl + 1] - first
        vh = np.repeat(act, cnt)
        ent = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(first, cnt)
        c = cf.watch_conflict[ent]
        keep = needed[c]
        vh, ent, c = vh[keep], ent[keep], c[keep]
        if len(vh) == 0:
            return arrive
        u = path_s[vh] + cf.watch_offset[ent]
        o0, o1 = cf.other_zone[c, 0], cf.other_zone[c, 1]
        inside = (u >= o0) & (u <= o1)
        approach = (u < o0) & cf.yields[c] & ~veh.crashed[vh]
        nl = cf.watch_next_lane[ent]
        chk = (approach & (nl >= 0)).nonzero()[0]
        if len(chk):
            vc, nc = vh[chk], nl[chk]
            goes = tab.follow_next[path_lane[vc]] == nc
            if veh.n_routes:
                routed = veh.route_len[vc] > veh.route_pos[vc]
                if np.count_nonzero(routed):
                    rr = routed.nonzero()[0]
                    goes[rr] = veh.route_next_road(vc[rr], path_lane[vc[rr]]) == tab.road[nc[rr]]
            approach[chk] = goes
        w_lane = path_lane[vh]
        v = np.maximum(veh.speed[vh], 0.0)
        v_max = np.maximum(v, np.minimum(np.maximum(veh.target_speed[vh], v), tab.speed_limit[w_lane]))
        t = np.where(inside, 0.0, travel_time(v, p.comfort_acc_max, v_max, o0 - u))
        t = np.where(inside | approach, t, np.inf)
        np.minimum.at(arrive, c, t)
        return arrive
