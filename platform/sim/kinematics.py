"""Vehicle motion: the kinematic bicycle model and lane re-assignment, over all rows at once.

Owns `integrate` (highway-env's `Vehicle.step`: crashed vehicles brake to a stop, speeds are
held within [min_speed, max_speed]), `relocate` (each vehicle re-picks its closest lane among
the `near` candidates of its lane, searching all lanes only when
`LaneSearch.far_lanes_may_be_closer` says another lane may be as close; leaving a lane end
moves it to the next lane with the excess s, because s is recomputed on the new lane),
`relocate_everywhere` (closest of all lanes, highway-env's rule after a teleport) and the
lane-keeping steering towards given lanes.
"""

from __future__ import annotations

import numpy as np

from diffplatoon.sim import traffic
from diffplatoon.sim.vehicles import Vehicles

_EMPTY_INT = np.empty(0, dtype=np.intp)

# (candidate lanes (−1 = padding), s, r), each (rows, K): rows projected on their lane's `near` lanes
# (on an `all_lanes` network (rows, n lanes), lane j in column j, −1 where it is no candidate).
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


def integrate(veh: Vehicles, hi: int, dt: float, max_speed: float, min_speed: float) -> None:
    """Kinematic bicycle model of highway-env's `Vehicle.step`, all rows [:hi] at once."""
    v = veh.speed[:hi]
    a = veh.accel[:hi]
    delta_f = veh.steering[:hi]
    cr = veh.crashed[:hi]
    if np.count_nonzero(cr):
        delta_f[cr] = 0.0
        a[cr] = -v[cr]
    if hi and np.maximum.reduce(v) > max_speed:
        np.copyto(a, np.minimum(a, max_speed - v), where=v > max_speed)
    if hi and np.minimum.reduce(v) < min_speed:
        np.copyto(a, np.maximum(a, min_speed - v), where=v < min_speed)
    beta = np.arctan(0.5 * np.tan(delta_f))
    hb = veh.heading[:hi] + beta
    veh.x[:hi] += v * np.cos(hb) * dt
    veh.y[:hi] += v * np.sin(hb) * dt
    veh.heading[:hi] += v * np.sin(beta) / veh.half_length[:hi] * dt
    v += a * dt


def relocate(veh: Vehicles, rows: np.ndarray, update_lane: bool = True) -> Candidates:
    """Project `rows` on the `near` candidates of their lane; re-pick the closest lane.

    A vehicle further than `near_trust` from every candidate searches all lanes, unless no
    lane outside the candidates can be as close. Returns the candidate projections (lanes,
    −1 padded; s; r) of `rows`, taken before the lanes were re-picked (on an `all_lanes`
    network, one column per lane, −1 where the lane is no candidate).
    """
    tab, search = veh.table, veh.table.search
    hi = veh.hi
    whole = len(rows) == hi
    old = veh.lane[:hi] if whole else veh.lane[rows]
    if whole:
        x, y, h = veh.x[:hi, None], veh.y[:hi, None], veh.heading[:hi, None]
    else:
        x, y, h = veh.x[rows, None], veh.y[rows, None], veh.heading[rows, None]
    if search.all_lanes:
        return _relocate_all_lanes(veh, rows, old, x, y, h, whole, update_lane)
    cand = search.near_ids[old]  # (n, K), padding on lane 0
    sc, rc = tab.local_coordinates(cand, x, y)
    near = search.near[old]  # before `old`, a view when `whole`, is overwritten
    if update_lane:
        pad = search.near_pad[old]
        dist = tab.distance_with_heading(cand, sc, rc, h)
        np.copyto(dist, np.inf, where=pad)
        n_c = cand.shape[1]
        flat = dist.argmin(axis=1)
        flat += np.arange(0, len(rows) * n_c, n_c)
        best = dist.take(flat)
        far = best > search.near_trust
        if np.count_nonzero(far):
            f = (far & veh.active[rows]).nonzero()[0]
            if len(f):
                f = f[search.far_lanes_may_be_closer(old[f], veh.x[rows[f]], veh.y[rows[f]], best[f])]
        else:
            f = _EMPTY_INT
        at = slice(0, hi) if whole else rows  # a slice writes faster than the same rows by index
        veh.lane[at] = cand.take(flat)
        veh.s[at] = sc.take(flat)
        veh.r[at] = rc.take(flat)
        if len(f):
            relocate_everywhere(veh, rows[f])
    return near, sc, rc


def _relocate_all_lanes(veh: Vehicles, rows: np.ndarray, old: np.ndarray, x: np.ndarray, y: np.ndarray,
                        h: np.ndarray, whole: bool, update_lane: bool) -> Candidates:
    """`relocate` on a network that projects every row on every lane (`LaneSearch.all_lanes`): the
    candidates' values are the same, and a vehicle further than `near_trust` from its candidates
    takes the closest of all lanes, which is what the far-lane bound and `relocate_everywhere`
    give (the bound only ever skips that search where the candidates' closest is the closest)."""
    tab, search = veh.table, veh.table.search
    n = tab.n
    ids = search.all_ids if tab.all_linear else np.broadcast_to(search.all_ids, (len(rows), n))
    sc, rc = tab.local_coordinates(ids, x, y)  # (rows, n)
    cand = search.near_masked[old]  # before `old`, a view when `whole`, is overwritten
    if update_lane:
        dist = tab.distance_with_heading(ids, sc, rc, h)
        pick = np.where(cand < 0, np.inf, dist).argmin(axis=1)
        base = np.arange(0, len(rows) * n, n)
        flat = pick + base
        far = dist.take(flat) > search.near_trust
        at = slice(0, veh.hi) if whole else rows  # a slice reads and writes faster than the same rows by index
        if np.count_nonzero(far):
            f = (far & veh.active[at]).nonzero()[0]
            if len(f):
                pick[f] = dist[f].argmin(axis=1)
                flat = pick + base
        veh.lane[at] = pick
        veh.s[at] = sc.take(flat)
        veh.r[at] = rc.take(flat)
    return cand, sc, rc


def relocate_everywhere(veh: Vehicles, rows: np.ndarray) -> None:
    """Put `rows` on the closest of all lanes (highway-env's rule)."""
    if len(rows) == 0:
        return
    tab = veh.table
    lanes = tab.closest_lane(veh.x[rows], veh.y[rows], veh.heading[rows])
    veh.lane[rows] = lanes
    veh.s[rows], veh.r[rows] = tab.local_coordinates(lanes, veh.x[rows], veh.y[rows])


def steering_towards(veh: Vehicles, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """Steering [rad] of highway-env's lane-keeping controller for `rows` towards `lanes`."""
    st, rt = veh.table.local_coordinates(lanes, veh.x[rows], veh.y[rows])
    v = veh.speed[rows]
    future = veh.table.heading_at(lanes, st + v * traffic.TAU_PURSUIT)
    return traffic.lane_keeping_steering(rt, future, veh.heading[rows], v, veh.length[rows])
