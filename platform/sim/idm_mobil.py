"""IDM accelerations and MOBIL lane-change verdicts of traffic, as highway-env's `IDMVehicle` has them.

Owns the per-role evaluations the traffic decision (behaviour.py) asks for:

- `idm_behind`: IDM acceleration of ego rows behind front rows (highway-env's
  `IDMVehicle.acceleration(ego, front)`): the free-road term
  ``a·(1 − (v / v0)^δ)`` minus, with a front vehicle, ``a·(d*(v, Δv) / d)²``, where v0 is the
  desired speed clipped to the ego lane's speed limit, d the front's s minus the ego's on the
  ego lane and Δv the closing speed projected on the ego heading (`traffic.py` kernels).
- `idm_roles`: several named (ego, front) roles evaluated in one vectorized call and handed back
  by name, so that one frame costs one IDM evaluation however many roles ask.
- `MobilAccelerations` and `mobil`: highway-env's `IDMVehicle.mobil`: a candidate lane is safe
  when the new follower would not brake harder than `max_braking_imposed` (relaxed with waiting
  time by `accepted_braking`), and worth it when
  ``me_after − me_before + politeness·(new_follower_after − new_follower_before +
  old_follower_after − old_follower_before)`` reaches `min_acc_gain`.
- `gap_and_desired`: distance to another vehicle along the ego lane and the desired gap to it.
- `stop_accel`: IDM behind a stopped virtual vehicle (a yield line).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from diffplatoon.sim import traffic
from diffplatoon.sim.vehicles import Vehicles


def desired_speed(veh: Vehicles, rows: np.ndarray, lanes: np.ndarray) -> np.ndarray:
    """IDM desired speed v0 [m/s] of `rows`: their target speed clipped to [0, limit] of `lanes`."""
    tab = veh.table
    if tab.speed_bounds is not None:  # one limit for all lanes (the same values)
        lo, hi = tab.speed_bounds
        return np.minimum(np.maximum(veh.target_speed[rows], lo), hi)
    return np.minimum(np.maximum(veh.target_speed[rows], tab.speed_floor[lanes]), tab.speed_limit[lanes])


def idm_behind(veh: Vehicles, c: traffic.IDMConstants, cos: np.ndarray, sin: np.ndarray,
               ego: np.ndarray, front: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """IDM acceleration of rows `ego` behind rows `front` (−1: none); ego −1 gives 0.

    `cos`, `sin` are those of the rows' headings; the result is not clipped to a_max.
    """
    all_ego = np.minimum.reduce(ego) >= 0  # only MOBIL's followers may be missing
    e = ego if all_ego else np.maximum(ego, 0)  # ego is −1 or a row
    has_front = front >= 0
    f = np.where(has_front, front, e)
    lane_e = veh.lane[e]
    gap = veh.table.longitudinal(lane_e, veh.x[f], veh.y[f]) - veh.s[e]
    v_e, v_f = veh.speed[e], veh.speed[f]
    closing = traffic.projected_closing_speed(v_e, cos[e], sin[e], v_f, cos[f], sin[f])
    v0 = desired_speed(veh, e, lane_e)
    acc = traffic.idm_acceleration_f64(c, v_e, v0, delta, has_front, gap, closing)
    return acc if all_ego else np.where(ego >= 0, acc, 0.0)


def idm_roles(veh: Vehicles, c: traffic.IDMConstants, cos: np.ndarray, sin: np.ndarray,
              roles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """IDM acceleration of named roles, each (ego rows, front rows, rows whose exponent δ applies),
    evaluated in one vectorized call; returned by name (views into one result array)."""
    if len(roles) == 1:
        (name, (ego, front, delta_of)), = roles.items()
        return {name: idm_behind(veh, c, cos, sin, ego, front, veh.delta[delta_of])}
    egos, fronts, delta_ofs = zip(*roles.values())
    acc = idm_behind(veh, c, cos, sin, np.concatenate(egos), np.concatenate(fronts),
                     veh.delta[np.concatenate(delta_ofs)])
    out, k = {}, 0
    for name, e in zip(roles, egos):
        n = len(e)
        out[name] = acc[k: k + n]
        k += n
    return out


class MobilAccelerations(NamedTuple):
    """IDM accelerations [m/s2] of the vehicles a lane change affects, before and after it.

    One entry per (deciding vehicle, candidate lane) pair; a missing follower has 0.
    """

    me_before: np.ndarray
    me_after: np.ndarray  # behind the new leader on the candidate lane
    new_follower_before: np.ndarray  # behind the new leader
    new_follower_after: np.ndarray  # behind me
    old_follower_before: np.ndarray  # behind me
    old_follower_after: np.ndarray  # behind my current leader


def accepted_braking(veh: Vehicles, rows: np.ndarray, max_braking_imposed: float, comfort_acc_min: float,
                     patience: float) -> np.ndarray:
    """Braking [m/s2, > 0] a lane change of `rows` may impose on its new follower: MOBIL's
    `max_braking_imposed`, relaxed linearly with the time a vehicle has been waiting up to the
    comfortable deceleration −`comfort_acc_min` after `patience` seconds (zipper merging)."""
    if patience > 0:
        wait = veh.wait_time[rows]
        if not np.count_nonzero(wait):  # nobody waiting (the usual case): the bound unrelaxed
            out = np.empty(len(wait))
            out.fill(max_braking_imposed)
            return out
        relax = np.minimum(wait / patience, 1.0)
    else:
        relax = 1.0
    return max_braking_imposed + max(-comfort_acc_min - max_braking_imposed, 0.0) * relax


def mobil(a: MobilAccelerations, politeness: float, min_acc_gain: float,
          max_braking_imposed: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(safe, worth it) per pair: highway-env's MOBIL safety and incentive criteria
    (`max_braking_imposed` may be one bound per pair, `accepted_braking`)."""
    safe = ~(a.new_follower_after < -max_braking_imposed)
    gain = a.me_after - a.me_before + politeness * (
        a.new_follower_after - a.new_follower_before + a.old_follower_after - a.old_follower_before)
    return safe, ~(gain < min_acc_gain)


def gap_and_desired(veh: Vehicles, c: traffic.IDMConstants, ego: np.ndarray, other: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distance along the ego lane to `other` and the ego's IDM desired gap to it."""
    so, _ = veh.table.local_coordinates(veh.lane[ego], veh.x[other], veh.y[other])
    d = so - veh.s[ego]
    dv = traffic.projected_closing_speed(
        veh.speed[ego], np.cos(veh.heading[ego]), np.sin(veh.heading[ego]),
        veh.speed[other], np.cos(veh.heading[other]), np.sin(veh.heading[other]))
    return d, traffic.desired_gap(c, veh.speed[ego], dv)


def stop_accel(veh: Vehicles, c: traffic.IDMConstants, rows: np.ndarray, dist: np.ndarray,
               stop_gap: float, a_max: float) -> np.ndarray:
    """IDM acceleration behind a stopped virtual vehicle whose jam distance ends `stop_gap`
    before a point `dist` ahead (floored at −a_max)."""
    gap = dist - stop_gap + c.distance_wanted
    v0 = desired_speed(veh, rows, veh.lane[rows])
    acc = traffic.idm_acceleration_f64(c, veh.speed[rows], v0, veh.delta[rows],
                                       np.ones(len(rows), dtype=bool), gap, veh.speed[rows])
    return np.maximum(acc, -a_max)
