"""Surrogate measures of 2-D conflicts: constant-velocity 2-D TTC between boxes and PET at conflict areas.

Part of the measures `diffplatoon.evaluation.measures` re-exports (its docstring gives the
array conventions): ``ttc_2d_pairs``/``ttc_2d`` extrapolate every pair of oriented boxes at
constant velocity and return the first time their boxes touch, within a horizon; PET is the
time between one vehicle leaving a conflict area and the next one entering it, from
`conflict_occupancy` intervals refined by bisection inside a step. Pure numpy.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

# Vehicle-pair entries processed at once by the 2-D TTC (bounds temporary memory).
_TTC2D_CHUNK = 200_000
# Relative speed [m/s] along an axis below which the projection is treated as constant.
_STILL = 1e-12
# Bisection steps that locate a conflict-area entry/exit inside one step (2^-40 of dt).
_BISECT_ITERS = 40


def ttc_2d_pairs(x: np.ndarray, y: np.ndarray, heading: np.ndarray, speed: np.ndarray,
                 length: np.ndarray, width: np.ndarray, pairs: np.ndarray, *,
                 horizon: float = 5.0) -> np.ndarray:
    """2-D TTC [s] of vehicle pairs (P, 2) at every step -> (T, P); inf if no contact in horizon.

    Both boxes are extrapolated at constant speed along a constant heading (nuPlan's TTC
    assumption); the TTC is the first time they overlap strictly (touching is no contact),
    0 if they already overlap. With fixed headings the relative motion is a pure translation,
    so the time of first overlap is solved exactly per separating axis (entry/exit interval of
    the projections on each box's two axes, intersected) instead of sampling at 0.1 s as
    nuPlan does; a sampled TTC is this value rounded up to the sample grid.
    """
    x, y, heading, speed = (np.atleast_2d(np.asarray(a, dtype=np.float64)) for a in (x, y, heading, speed))
    length = np.asarray(length, dtype=np.float64)
    width = np.asarray(width, dtype=np.float64)
    pairs = np.asarray(pairs, dtype=np.intp).reshape(-1, 2)
    t_steps, p = x.shape[0], len(pairs)
    out = np.full((t_steps, p), np.inf)
    if p == 0 or t_steps == 0:
        return out
    i, j = pairs[:, 0], pairs[:, 1]
    half_diag = 0.5 * np.hypot(length, width)

    # Broad phase per (step, pair): only pairs that can close the distance within the horizon.
    vx, vy = speed * np.cos(heading), speed * np.sin(heading)  # (T, N)
    dx, dy = x[:, j] - x[:, i], y[:, j] - y[:, i]  # (T, P)
    wx, wy = vx[:, j] - vx[:, i], vy[:, j] - vy[:, i]
    reach = half_diag[i] + half_diag[j] + np.hypot(wx, wy) * horizon
    cand_t, cand_p = np.nonzero(np.hypot(dx, dy) <= reach)  # NaN positions drop out here

    for start in range(0, len(cand_t), _TTC2D_CHUNK):
        ct, cp = cand_t[start:start + _TTC2D_CHUNK], cand_p[start:start + _TTC2D_CHUNK]
        ci, cj = i[cp], j[cp]
        hi, hj = heading[ct, ci], heading[ct, cj]
        ui = np.stack([np.cos(hi), np.sin(hi)], axis=-1)  # (k, 2) length axis of box i
        uj = np.stack([np.cos(hj), np.sin(hj)], axis=-1)
        ni, nj = ui[:, ::-1] * [-1.0, 1.0], uj[:, ::-1] * [-1.0, 1.0]  # width axes
        axes = np.stack([ui, ni, uj, nj], axis=1)  # (k, 4, 2)
        half = np.stack([0.5 * length[ci], 0.5 * width[ci], 0.5 * length[cj], 0.5 * width[cj]],
                        axis=-1)  # (k, 4) half-extent along each of those axes
        # Sum of both boxes' projection radii on each candidate axis: (k, 4).
        radius = np.einsum("kab,kb->ka", np.abs(axes @ axes.transpose(0, 2, 1)), half)
        s0 = axes[..., 0] * dx[ct, cp, None] + axes[..., 1] * dy[ct, cp, None]  # (k, 4) separation
        sv = axes[..., 0] * wx[ct, cp, None] + axes[..., 1] * wy[ct, cp, None]  # (k, 4) its rate
        # On each axis the projections overlap while |s0 + sv * t| < radius: an open interval.
        moving = np.abs(sv) > _STILL
        safe_sv = np.where(moving, sv, 1.0)
        t1, t2 = (-radius - s0) / safe_sv, (radius - s0) / safe_sv
        inside = np.abs(s0) < radius
        enter = np.where(moving, np.minimum(t1, t2), np.where(inside, -np.inf, np.inf))
        leave = np.where(moving, np.maximum(t1, t2), np.where(inside, np.inf, -np.inf))
        first, last = enter.max(axis=1), leave.min(axis=1)
        hit = (first < last) & (last > 0) & (first <= horizon)
        out[ct[hit], cp[hit]] = np.maximum(first[hit], 0.0)
    return out


def ttc_2d(x: np.ndarray, y: np.ndarray, heading: np.ndarray, speed: np.ndarray,
           length: np.ndarray, width: np.ndarray, *, subjects: Sequence[int] | None = None,
           horizon: float = 5.0) -> np.ndarray:
    """Per-vehicle 2-D TTC [s] (T, N): min of ``ttc_2d_pairs`` over all other vehicles.

    Only pairs with at least one vehicle in ``subjects`` (default all) are evaluated; columns of
    vehicles outside ``subjects`` are inf.
    """
    n = np.shape(x)[-1]
    subj = np.zeros(n, dtype=bool)
    subj[np.arange(n) if subjects is None else np.asarray(subjects, dtype=np.intp)] = True
    a, b = np.triu_indices(n, 1)
    keep = subj[a] | subj[b]
    pairs = np.stack([a[keep], b[keep]], axis=1)
    per_pair = ttc_2d_pairs(x, y, heading, speed, length, width, pairs, horizon=horizon)
    out = np.full((np.shape(x)[0], n), np.inf)
    for col in (0, 1):
        owner = pairs[:, col]
        use = subj[owner]
        np.minimum.at(out.T, owner[use], per_pair[:, use].T)
    return out


class Occupancy(NamedTuple):
    """Interval during which a vehicle occupies a conflict area [s]; NaN if it never does."""

    enter: float
    leave: float


def conflict_occupancy(x: np.ndarray, y: np.ndarray, heading: np.ndarray, length: float,
                       width: float, point: Sequence[float], dt: float, *,
                       radius: float = 0.0) -> Occupancy:
    """When one vehicle's box (trace over T steps) is within ``radius`` m of a conflict point.

    Entry and exit are refined inside the step where they happen by bisection on the point's
    box-frame coordinates interpolated linearly between the two samples, which is exact for a
    vehicle that does not rotate during that step. A vehicle still inside at the last step has
    leave = inf; one inside at the first step has enter = 0.
    """
    x, y, heading = (np.asarray(a, dtype=np.float64).ravel() for a in (x, y, heading))
    px, py = float(point[0]), float(point[1])
    # The conflict point in each step's box frame: (T,) each.
    lx = np.cos(heading) * (px - x) + np.sin(heading) * (py - y)
    ly = -np.sin(heading) * (px - x) + np.cos(heading) * (py - y)

    def inside(ax: np.ndarray | float, ay: np.ndarray | float) -> np.ndarray:
        return np.hypot(np.maximum(np.abs(ax) - 0.5 * length, 0.0),
                        np.maximum(np.abs(ay) - 0.5 * width, 0.0)) <= radius  # NaN -> False

    def crossing(k: int) -> float:
        """Fraction in [0, 1] of step k -> k+1 where the inside test changes value."""
        if not (np.isfinite(lx[k]) and np.isfinite(lx[k + 1])):
            return 0.0 if inside(lx[k], ly[k]) else 1.0
        was = bool(inside(lx[k], ly[k]))
        lo, hi = 0.0, 1.0
        for _ in range(_BISECT_ITERS):
            mid = 0.5 * (lo + hi)
            if bool(inside(lx[k] + mid * (lx[k + 1] - lx[k]), ly[k] + mid * (ly[k + 1] - ly[k]))) == was:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    occupied = inside(lx, ly)
    if not occupied.any():
        return Occupancy(float("nan"), float("nan"))
    k_in = int(np.argmax(occupied))
    enter = 0.0 if k_in == 0 else dt * (k_in - 1 + crossing(k_in - 1))
    after = ~occupied[k_in:]
    if not after.any():
        return Occupancy(enter, float("inf"))
    k_out = k_in + int(np.argmax(after))
    return Occupancy(enter, dt * (k_out - 1 + crossing(k_out - 1)))


def post_encroachment_time(first: Occupancy | tuple[float, float],
                           second: Occupancy | tuple[float, float]) -> float:
    """PET [s] at one conflict area: entry of the later vehicle - exit of the earlier (Allen 1978).

    The earlier vehicle is the one that enters first. NaN if either never occupies the area or
    both occupy it at once (that is a collision or a near one, not an encroachment). SUMO's PET
    conflict threshold is PET < 2.0 s.
    """
    (ea, la), (eb, lb) = first, second
    if not all(np.isfinite(v) for v in (ea, eb)) or np.isnan(la) or np.isnan(lb):
        return float("nan")
    (e1, l1), (e2, _) = sorted([(ea, la), (eb, lb)])
    if e2 < l1:
        return float("nan")
    return float(e2 - l1)
