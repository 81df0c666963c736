"""Traffic behaviour kernels, vectorized over vehicles: IDM, MOBIL gain, lane keeping, neighbours.

Owns the equations of highway-env's `IDMVehicle` (IDM with a projected relative speed,
MOBIL with its route rule) and of `ControlledVehicle.steering_control`, written as numpy
functions over arrays, plus `NeighbourIndex`, the sorted-by-lane leader/follower search that
replaces highway-env's O(N) scan per query. The behaviour modules (behaviour.py,
idm_mobil.py, right_of_way.py) decide which vehicles ask what; these functions only compute.

The front/rear rule reproduced by `NeighbourIndex` is highway-env's `Road.neighbour_vehicles`:
a vehicle belongs to a lane when its centre is on the lane with a 1 m lateral margin
(`on_lane(margin=1)`), wherever its own lane index points; the front vehicle is the member
with the smallest s ≥ the query s, the rear the member with the largest s < the query s,
never the querying vehicle itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from diffplatoon.geometry import wrap_angle

# highway-env ControlledVehicle constants: characteristic times [s] and the steering limit [rad].
TAU_HEADING = 0.2
TAU_LATERAL = 0.6
TAU_PURSUIT = 0.5 * TAU_HEADING
KP_HEADING = 1 / TAU_HEADING
KP_LATERAL = 1 / TAU_LATERAL
MAX_STEERING_ANGLE = np.pi / 3

_NOT_ZERO_EPS = 1e-2  # highway-env utils.not_zero
_F64 = np.dtype(np.float64)  # an identity test is cheaper than dtype equality on the hot path


@dataclass(frozen=True)
class IDMConstants:
    """The IDM parameters one acceleration evaluation needs (highway-env's class constants)."""

    comfort_acc_max: float = 3.0  # [m/s2]
    comfort_acc_min: float = -5.0  # [m/s2]
    distance_wanted: float = 10.0  # [m] centre-to-centre jam distance (5 m + vehicle length)
    time_wanted: float = 1.5  # [s]


def not_zero(x: np.ndarray, eps: float = _NOT_ZERO_EPS) -> np.ndarray:
    """highway-env's not_zero, elementwise: values within ±eps become ±eps (0 → +eps)."""
    return np.where(np.abs(x) > eps, x, np.where(x >= 0, eps, -eps))


def desired_gap(c: IDMConstants, speed: np.ndarray, dv: np.ndarray) -> np.ndarray:
    """IDM desired gap d* [m] for ego speed and projected closing speed dv [m/s]."""
    ab = -c.comfort_acc_max * c.comfort_acc_min
    return c.distance_wanted + speed * c.time_wanted + speed * dv / (2 * math.sqrt(ab))


def desired_gap_scalar(c: IDMConstants, speed: float, dv: float) -> float:
    """`desired_gap` for one vehicle in Python floats (the same value, without numpy's scalar overhead)."""
    ab = -c.comfort_acc_max * c.comfort_acc_min
    return c.distance_wanted + speed * c.time_wanted + speed * dv / (2 * math.sqrt(ab))


def projected_closing_speed(v_e, cos_e, sin_e, v_f, cos_f, sin_f) -> np.ndarray:
    """(v_ego − v_front) projected on the ego direction, as highway-env's `desired_gap` does."""
    return (v_e * cos_e - v_f * cos_f) * cos_e + (v_e * sin_e - v_f * sin_f) * sin_e


def idm_acceleration(c: IDMConstants, speed: np.ndarray, target_speed: np.ndarray,
                     delta: np.ndarray, has_front: np.ndarray, distance: np.ndarray,
                     dv: np.ndarray) -> np.ndarray:
    """IDM acceleration [m/s2]: free-road term minus the interaction term where a front vehicle exists.

    `target_speed` must already be clipped to the ego lane's speed limit; `distance` is the
    front vehicle's s minus the ego's s on the ego lane; unclipped (the caller clips to a_max).
    """
    free = c.comfort_acc_max * (
        1 - np.power(np.maximum(speed, 0) / np.abs(not_zero(target_speed)), delta))
    inter = c.comfort_acc_max * np.power(desired_gap(c, speed, dv) / not_zero(distance), 2)
    return free - np.where(has_front, inter, 0.0)


def idm_acceleration_f64(c: IDMConstants, speed: np.ndarray, target_speed: np.ndarray,
                         delta: np.ndarray, has_front: np.ndarray, distance: np.ndarray,
                         dv: np.ndarray) -> np.ndarray:
    """`idm_acceleration` for float64 arrays, the same values with fewer array operations."""
    # |not_zero(x)| is fmax(|x|, eps); the sign of not_zero(distance) is squared away.
    free = c.comfort_acc_max * (
        1 - np.power(np.maximum(speed, 0) / np.fmax(np.abs(target_speed), _NOT_ZERO_EPS), delta))
    inter = c.comfort_acc_max * np.power(
        desired_gap(c, speed, dv) / np.fmax(np.abs(distance), _NOT_ZERO_EPS), 2)
    return free - np.where(has_front, inter, 0.0)


def lane_keeping_steering(lateral: np.ndarray, future_heading: np.ndarray, heading: np.ndarray,
                          speed: np.ndarray, length: np.ndarray) -> np.ndarray:
    """highway-env's `steering_control`: steering [rad] that brings a vehicle onto a lane centre.

    `lateral` is the vehicle's lateral coordinate on the target lane and `future_heading`
    the lane heading at s + speed·TAU_PURSUIT.
    """
    v = speed  # not_zero leaves float64 speeds away from zero as they are
    if getattr(speed, "dtype", None) is not _F64 or \
            np.count_nonzero(np.abs(speed) > _NOT_ZERO_EPS) != speed.size:
        v = not_zero(speed)
    lateral_speed_command = -KP_LATERAL * lateral
    heading_command = np.arcsin(_clip(lateral_speed_command / v, -1.0, 1.0))
    heading_ref = future_heading + _clip(heading_command, -np.pi / 4, np.pi / 4)
    heading_rate_command = KP_HEADING * wrap_angle(heading_ref - heading)
    slip_angle = np.arcsin(_clip(length / 2 / v * heading_rate_command, -1.0, 1.0))
    steering = np.arctan(2 * np.tan(slip_angle))
    return _clip(steering, -MAX_STEERING_ANGLE, MAX_STEERING_ANGLE)


def _clip(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    # np.clip's Python wrapper costs several µs per call on small arrays; same result.
    return np.minimum(np.maximum(a, lo), hi)


_KEY_SENTINELS = np.array([-np.inf, np.inf, np.inf])
_ID_SENTINELS = np.array([-1, -1, -1], dtype=np.intp)


class NeighbourIndex:
    """Lane memberships sorted by (lane, s), answering front/rear queries by binary search.

    A membership is (row, group, s): vehicle `row` is on lane `group` at longitudinal
    coordinate s (in connected-lane mode, groups are query lanes and s is expressed in the
    query lane's frame). `base[group]` separates groups on one sorted key axis; it must
    exceed the span of s values of the previous group.
    """

    def __init__(self, rows: np.ndarray, groups: np.ndarray, s: np.ndarray, base: np.ndarray):
        self.base = base
        # Sentinels on both ends so that i-1 and i+1 always index valid entries: appended before
        # the sort, which puts the -inf key first and the +inf keys last.
        key = np.concatenate((base[groups] + s, _KEY_SENTINELS))
        order = key.argsort(kind="stable")
        self.key = key[order]
        self.rows = np.concatenate((rows, _ID_SENTINELS), dtype=np.intp)[order]
        self.groups = np.concatenate((groups, _ID_SENTINELS), dtype=np.intp)[order]

    def query(self, rows: np.ndarray, groups: np.ndarray, s: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """(front, rear) rows (−1 when none) of vehicles `rows` at s on lanes `groups`."""
        i = self.key.searchsorted(self.base[groups] + s, side="left")
        f = i + (self.rows[i] == rows)  # skip the querying vehicle's own entry
        b = i - 1
        b = b - (self.rows[b] == rows)
        front = np.where(self.groups[f] == groups, self.rows[f], -1)
        rear = np.where(self.groups[b] == groups, self.rows[b], -1)
        return front, rear
