"""Surrogate safety, platoon and efficiency measures over one episode trace.

Owns the per-step and per-episode measures that the safety report aggregates: car-following
TTC, 2-D constant-velocity TTC, space gap, time gap, time headway, DRAC, MDRAC, PET at
conflict points, TET/TIT, hard-braking events, jerk; platoon gap-keeping error, string
stability and split events; mean speed, progress, merge success, time to destination; and
``episode_summary``, which computes the standard set in one call. Pure numpy functions of
arrays; nothing here knows about the simulator.

Input convention (an episode trace, T steps ``dt`` seconds apart, N vehicles):
- ``x, y`` (T, N) box centre [m]; ``heading`` (T, N) [rad]; ``speed`` (T, N) [m/s], along
  the heading; ``accel`` (T, N) longitudinal acceleration [m/s^2]; ``length, width`` (N,) [m].
  A NaN position marks a vehicle absent at that step (not spawned yet, or removed).
- Car-following measures also take ``leader`` (T, N) int, the index of the vehicle each one
  follows (-1: none), and ``gap`` (T, N) the bumper-to-bumper distance to that leader [m]
  (follower front to leader rear, negative when they overlap), both computed by the caller
  from its lane data. ``gap`` is ignored where ``leader`` is -1.
- Platoon measures take the members' columns in order, leader first: ``gap[:, i]`` is member
  i's gap to member i-1 (column 0, the platoon leader's own gap, is not used).

Conventions follow SUMO's SSM device (docs ``Simulation/Output/SSM_Device.md``) where it has
one: TTC = space gap / closing speed for a closing follower, DRAC = 0.5 * closing speed^2 /
space gap, MDRAC = 0.5 * closing speed / (TTC - PRT), PET = entry time of the second vehicle
- exit time of the first, SGAP = space gap - minGap, TGAP = SGAP / follower speed. SUMO calls
TGAP "time headway"; here it is ``time_gap`` (the clearance-based quantity that a CACC's
constant time gap h is compared with), and ``time_headway`` is the traffic-flow front-to-front
headway (gap + leader length) / follower speed. A measure that is undefined at a step is inf
for TTC/time gaps/space gaps (no conflict) and 0 for DRAC (no deceleration needed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np

from diffplatoon.evaluation.thresholds import Thresholds

# Vehicle-pair entries processed at once by the 2-D TTC (bounds temporary memory).
_TTC2D_CHUNK = 200_000
# Relative speed [m/s] along an axis below which the projection is treated as constant.
_STILL = 1e-12
# Bisection steps that locate a conflict-area entry/exit inside one step (2^-40 of dt).
_BISECT_ITERS = 40


@dataclass(frozen=True)
class EpisodeTrace:
    """One episode's arrays in the module's input convention (see the module docstring)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    speed: np.ndarray
    accel: np.ndarray
    length: np.ndarray
    width: np.ndarray
    dt: float
    leader: np.ndarray | None = None
    gap: np.ndarray | None = None

    def validate(self) -> None:
        """Raise ValueError if shapes or dt do not follow the convention."""
        shape = np.shape(self.x)
        if len(shape) != 2:
            raise ValueError(f"x must be (T, N), got shape {shape}")
        for name in ("y", "heading", "speed", "accel"):
            if np.shape(getattr(self, name)) != shape:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}")
        for name in ("length", "width"):
            if np.shape(getattr(self, name)) != shape[1:]:
                raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, expected {shape[1:]}")
        if (self.leader is None) != (self.gap is None):
            raise ValueError("leader and gap must be given together")
        if self.leader is not None:
            for name in ("leader", "gap"):
                if np.shape(getattr(self, name)) != shape:
                    raise ValueError(f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}")
        if not self.dt > 0:
            raise ValueError(f"dt must be positive, got {self.dt}")


# --------------------------------------------------------------------------------------------
# Car-following measures (per step, (T, N))
# --------------------------------------------------------------------------------------------


def leader_values(values: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """Value of each vehicle's leader: values (T, N) or per-vehicle (N,) -> (T, N), NaN if none."""
    values = np.asarray(values, dtype=np.float64)
    leader = np.asarray(leader)
    has = leader >= 0
    idx = np.where(has, leader, 0)
    picked = values[idx] if values.ndim == 1 else np.take_along_axis(values, idx, axis=-1)
    return np.where(has, picked, np.nan)


def closing_speed(speed: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """Follower speed minus leader speed [m/s] (positive when closing), NaN without a leader."""
    return np.asarray(speed, dtype=np.float64) - leader_values(speed, leader)


def ttc_1d(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """Car-following time to collision [s] (SUMO): gap / closing speed while closing, else inf.

    Overlapping boxes (gap < 0) give 0; touching boxes (gap = 0) give 0 only while closing,
    matching the strict overlap convention of the collision check (touching is no contact).
    """
    gap = np.asarray(gap, dtype=np.float64)
    dv = closing_speed(speed, leader)
    has = np.asarray(leader) >= 0
    out = np.full(gap.shape, np.inf)
    closing = has & (dv > 0) & np.isfinite(gap)
    out[closing] = np.maximum(gap[closing], 0.0) / dv[closing]
    out[has & (gap < 0)] = 0.0
    return out


def drac(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """Deceleration rate to avoid a crash [m/s^2] (SUMO): 0.5 * closing speed^2 / gap.

    0 when not closing or without a leader; inf when closing at gap 0 or when the boxes overlap.
    """
    gap = np.asarray(gap, dtype=np.float64)
    dv = closing_speed(speed, leader)
    has = np.asarray(leader) >= 0
    out = np.zeros(gap.shape)
    closing = has & (dv > 0) & np.isfinite(gap)
    with np.errstate(divide="ignore"):
        out[closing] = np.where(gap[closing] > 0, 0.5 * dv[closing] ** 2 / np.maximum(gap[closing], 1e-300), np.inf)
    out[has & (gap < 0)] = np.inf
    return out


def mdrac(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray, *, prt: float = 1.0) -> np.ndarray:
    """Modified DRAC [m/s^2] (SUMO): 0.5 * closing speed / (TTC - prt), prt in s (default 1 s).

    0 when not closing; inf when TTC <= prt (the reaction time alone is too long).
    """
    ttc = ttc_1d(gap, speed, leader)
    dv = closing_speed(speed, leader)
    out = np.zeros(ttc.shape)
    closing = np.isfinite(ttc)
    margin = ttc[closing] - prt
    with np.errstate(divide="ignore"):
        out[closing] = np.where(margin > 0, 0.5 * dv[closing] / np.maximum(margin, 1e-300), np.inf)
    return out


def space_gap(gap: np.ndarray, leader: np.ndarray, *, min_gap: float = 0.0) -> np.ndarray:
    """Spacing SGAP [m] (SUMO): bumper-to-bumper gap minus ``min_gap``; inf without a leader."""
    gap = np.asarray(gap, dtype=np.float64)
    return np.where(np.asarray(leader) >= 0, gap - min_gap, np.inf)


def time_gap(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray, *,
             min_gap: float = 0.0) -> np.ndarray:
    """Time gap [s]: (gap - min_gap) / follower speed, SUMO's TGAP; inf if stopped or no leader."""
    sgap = space_gap(gap, leader, min_gap=min_gap)
    speed = np.asarray(speed, dtype=np.float64)
    out = np.full(sgap.shape, np.inf)
    moving = np.isfinite(sgap) & (speed > 0)
    out[moving] = sgap[moving] / speed[moving]
    return out


def time_headway(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray,
                 length: np.ndarray) -> np.ndarray:
    """Front-to-front time headway [s]: (gap + leader length) / follower speed; inf if stopped."""
    spacing = np.asarray(gap, dtype=np.float64) + leader_values(length, leader)
    speed = np.asarray(speed, dtype=np.float64)
    out = np.full(spacing.shape, np.inf)
    moving = np.isfinite(spacing) & (speed > 0)
    out[moving] = spacing[moving] / speed[moving]
    return out


def minimum_gap(gap: np.ndarray, leader: np.ndarray, *, min_gap: float = 0.0) -> np.ndarray:
    """Smallest space gap [m] of each vehicle over the episode, (N,); inf if it never followed."""
    return np.min(space_gap(gap, leader, min_gap=min_gap), axis=0, initial=np.inf)


# --------------------------------------------------------------------------------------------
# 2-D constant-velocity TTC
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Exposure, PET, braking, jerk
# --------------------------------------------------------------------------------------------


def time_exposed_ttc(ttc: np.ndarray, dt: float, *, threshold: float = 3.0) -> np.ndarray:
    """TET [s] per vehicle (N,): time with TTC < threshold (Minderhoud & Bovy 2001; SUMO's 3 s)."""
    return dt * np.sum(np.asarray(ttc) < threshold, axis=0, dtype=np.float64)


def time_integrated_ttc(ttc: np.ndarray, dt: float, *, threshold: float = 3.0) -> np.ndarray:
    """TIT [s^2] per vehicle (N,): sum over steps of (threshold - TTC) * dt where TTC < threshold."""
    ttc = np.asarray(ttc, dtype=np.float64)
    return dt * np.sum(np.where(ttc < threshold, threshold - ttc, 0.0), axis=0)


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


def hard_braking_events(accel: np.ndarray, *, threshold: float = 4.05) -> np.ndarray:
    """Hard-braking events per vehicle (N,) int: runs of steps with accel < -threshold [m/s^2].

    A run counts once (its first step), so a 2 s brake is one event, not 2/dt.
    """
    hard = np.asarray(accel, dtype=np.float64) < -threshold  # (T, N)
    starts = hard.copy()
    starts[1:] &= ~hard[:-1]
    return starts.sum(axis=0)


def jerk(accel: np.ndarray, dt: float) -> np.ndarray:
    """Longitudinal jerk [m/s^3] (T-1, N): forward difference of acceleration."""
    return np.diff(np.asarray(accel, dtype=np.float64), axis=0) / dt


class JerkStats(NamedTuple):
    """Per-vehicle jerk statistics [m/s^3], (N,) each; NaN where no finite sample exists."""

    rms: np.ndarray
    max_abs: np.ndarray


def jerk_stats(accel: np.ndarray, dt: float) -> JerkStats:
    """RMS and maximum absolute jerk per vehicle (nuPlan's comfort bound is |jerk| <= 4.13)."""
    j = jerk(accel, dt)
    ok = np.isfinite(j)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.where(ok, j * j, 0.0).sum(axis=0) / count)
    mx = np.where(ok, np.abs(j), -np.inf).max(axis=0, initial=-np.inf)
    return JerkStats(np.where(count > 0, rms, np.nan), np.where(count > 0, mx, np.nan))


# --------------------------------------------------------------------------------------------
# Platoon measures (member columns, leader first)
# --------------------------------------------------------------------------------------------


def spacing_errors(gap: np.ndarray, speed: np.ndarray, *, time_gap: float = 0.5,
                   standstill: float = 2.0) -> np.ndarray:
    """Spacing errors [m] (T, M-1) of followers 1..M-1: e_i = gap_i - (standstill + h * v_i).

    Constant time-gap spacing policy (safety.md section 3); positive means too far behind.
    """
    gap = np.asarray(gap, dtype=np.float64)
    speed = np.asarray(speed, dtype=np.float64)
    return gap[:, 1:] - (standstill + time_gap * speed[:, 1:])


class GapError(NamedTuple):
    """Gap-keeping error per follower [m], (M-1,) each."""

    rms: np.ndarray
    max_abs: np.ndarray


def gap_keeping_error(gap: np.ndarray, speed: np.ndarray, *, time_gap: float = 0.5,
                      standstill: float = 2.0) -> GapError:
    """RMS and max |spacing error| of each follower over the steps where its gap is finite."""
    e = spacing_errors(gap, speed, time_gap=time_gap, standstill=standstill)
    ok = np.isfinite(e)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.where(ok, e * e, 0.0).sum(axis=0) / count)
    mx = np.where(ok, np.abs(e), -np.inf).max(axis=0, initial=-np.inf)
    return GapError(np.where(count > 0, rms, np.nan), np.where(count > 0, mx, np.nan))


class StringStability(NamedTuple):
    """String-stability result for one platoon.

    error_norms: (M-1,) spacing-error norm of followers 1..M-1 [m].
    error_ratios: (M-2,) ||e_{i+1}|| / ||e_i|| for followers i = 1..M-2.
    speed_norms: (M,) norm of v_i minus its window mean [m/s].
    speed_ratios: (M-1,) ||v_{i+1} - mean|| / ||v_i - mean|| for members i = 0..M-2.
    stable: every ratio of the chosen criterion <= 1 + tol.
    """

    error_norms: np.ndarray
    error_ratios: np.ndarray
    speed_norms: np.ndarray
    speed_ratios: np.ndarray
    stable: bool


def _norm(v: np.ndarray, kind: str) -> np.ndarray:
    """Column norms ignoring NaN: 'l2' = sqrt(sum v^2), 'linf' = max |v|."""
    v = np.where(np.isfinite(v), v, 0.0)
    if kind == "l2":
        return np.sqrt(np.sum(v * v, axis=0))
    if kind == "linf":
        return np.max(np.abs(v), axis=0, initial=0.0)
    raise ValueError(f"norm must be 'l2' or 'linf', got {kind!r}")


def _ratios(norms: np.ndarray, rel: float = 1e-3, eps: float = 1e-9) -> np.ndarray:
    """Successive ratios norms[k+1] / norms[k].

    A norm below ``rel`` × the largest norm is "no error": a ratio from such a norm to another
    negligible one is 0 (nothing amplified); from a negligible norm to a real one it is
    undefined (NaN) — that error did not come from the predecessor (e.g. a cut-in in between),
    and dividing by numerical noise would report absurd amplifications.
    """
    num, den = norms[1:], norms[:-1]
    floor = max(eps, rel * float(np.nanmax(norms))) if len(norms) else eps
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den > floor, r, np.where(num > floor, np.nan, 0.0))


def string_stability(gap: np.ndarray, speed: np.ndarray, *, time_gap: float = 0.5,
                     standstill: float = 2.0, start: int = 0, stop: int | None = None,
                     norm: Literal["l2", "linf"] = "l2", tol: float = 0.01,
                     criterion: Literal["spacing", "speed", "both"] = "spacing") -> StringStability:
    """Amplification of spacing errors and speed oscillations from member to member.

    Over steps [start, stop) (start at the leader disturbance), ratios of the L2 norms (or peak
    norms with ``norm='linf'``, the collision-relevant one per Vegamoor et al.) of successive
    followers' spacing errors, and of successive members' speed deviations from their own
    window mean. ``stable`` is True when every defined ratio of ``criterion`` is <= 1 + tol (no
    ratio to check counts as stable). See `_ratios` for negligible norms (0 or NaN).
    """
    sl = slice(start, stop)
    e = spacing_errors(gap, speed, time_gap=time_gap, standstill=standstill)[sl]
    v = np.asarray(speed, dtype=np.float64)[sl]
    with np.errstate(invalid="ignore"):
        dev = v - np.nanmean(np.where(np.isfinite(v), v, np.nan), axis=0) if len(v) else v
    error_norms, speed_norms = _norm(e, norm), _norm(dev, norm)
    error_ratios, speed_ratios = _ratios(error_norms), _ratios(speed_norms)
    checked = {"spacing": [error_ratios], "speed": [speed_ratios],
               "both": [error_ratios, speed_ratios]}[criterion]
    stable = all(bool(np.all(r[np.isfinite(r)] <= 1.0 + tol)) for r in checked)
    return StringStability(error_norms, error_ratios, speed_norms, speed_ratios, stable)


def platoon_split_events(gap: np.ndarray, *, threshold: float = 60.0) -> np.ndarray:
    """Split events per follower (M-1,) int: transitions of the predecessor gap to > threshold m.

    A NaN gap (predecessor lost, e.g. after a cut-in or lane change) counts as split. A
    follower already split at the first step counts one event.
    """
    g = np.asarray(gap, dtype=np.float64)[:, 1:]
    split = ~(g <= threshold)
    starts = split.copy()
    starts[1:] &= ~split[:-1]
    return starts.sum(axis=0)


# --------------------------------------------------------------------------------------------
# Efficiency
# --------------------------------------------------------------------------------------------


def mean_speed(speed: np.ndarray) -> np.ndarray:
    """Mean speed [m/s] of each vehicle over the steps where it is present, (N,)."""
    s = np.asarray(speed, dtype=np.float64)
    ok = np.isfinite(s)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, s, 0.0).sum(axis=0) / ok.sum(axis=0)


def progress(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Distance travelled [m] per vehicle (N,): length of the sampled path (NaN steps skipped)."""
    step = np.hypot(np.diff(np.asarray(x, dtype=np.float64), axis=0),
                    np.diff(np.asarray(y, dtype=np.float64), axis=0))
    return np.where(np.isfinite(step), step, 0.0).sum(axis=0)


def merge_success(lane: np.ndarray, target_lanes: Sequence) -> np.ndarray:
    """Whether each vehicle ends the episode in one of ``target_lanes`` (N,) bool.

    ``lane`` (T, N) holds any lane identifiers (ints, strings, tuples encoded as strings).
    """
    return np.isin(np.asarray(lane)[-1], np.asarray(list(target_lanes), dtype=np.asarray(lane).dtype))


def merge_step(lane: np.ndarray, target_lanes: Sequence) -> np.ndarray:
    """First step each vehicle is in a target lane (N,) int; -1 if never."""
    lane = np.asarray(lane)
    inside = np.isin(lane, np.asarray(list(target_lanes), dtype=lane.dtype))
    return np.where(inside.any(axis=0), np.argmax(inside, axis=0), -1)


def time_to_destination(x: np.ndarray, y: np.ndarray, goal: np.ndarray, dt: float, *,
                        radius: float = 5.0) -> np.ndarray:
    """Time [s] from the first step until each vehicle is within ``radius`` m of its goal; NaN if never.

    ``goal`` is one point (2,) for all vehicles or one per vehicle (N, 2).
    """
    goal = np.broadcast_to(np.asarray(goal, dtype=np.float64), (np.shape(x)[1], 2))
    d = np.hypot(np.asarray(x, dtype=np.float64) - goal[:, 0], np.asarray(y, dtype=np.float64) - goal[:, 1])
    arrived = d <= radius
    return np.where(arrived.any(axis=0), dt * np.argmax(arrived, axis=0), np.nan)


# --------------------------------------------------------------------------------------------
# Episode summary
# --------------------------------------------------------------------------------------------


def _min_or_nan(a: np.ndarray) -> float:
    """Smallest finite value, NaN if there is none."""
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.min()) if a.size else float("nan")


def _max_or_nan(a: np.ndarray) -> float:
    """Largest non-NaN value (inf allowed), NaN if there is none."""
    a = np.asarray(a, dtype=np.float64)
    a = a[~np.isnan(a)]
    return float(a.max()) if a.size else float("nan")


def episode_summary(trace: EpisodeTrace, *, subjects: Sequence[int] | None = None,
                    platoons: Sequence[Sequence[int]] = (),
                    thresholds: Thresholds = Thresholds(),
                    lane: np.ndarray | None = None, target_lanes: Sequence | None = None,
                    mergers: Sequence[int] | None = None,
                    goal: np.ndarray | None = None) -> dict[str, float]:
    """The standard per-episode measures in one call, as a flat dict of floats.

    ``subjects`` are the evaluated (controlled) vehicles, default all; ``platoons`` lists each
    platoon's member indices, leader first; ``lane``/``target_lanes``/``mergers`` give merge
    success (the fraction of ``mergers``, default subjects, ending in a target lane); ``goal``
    ((2,) or (N, 2)) gives time to destination. TTCs are capped at ``thresholds.ttc_horizon``;
    a measure that cannot be computed (no leader ever, no platoon, ...) is NaN.
    """
    trace.validate()
    th = thresholds
    n = np.shape(trace.x)[1]
    subj = np.arange(n) if subjects is None else np.asarray(subjects, dtype=np.intp)
    dt = float(trace.dt)
    out: dict[str, float] = {"steps": float(np.shape(trace.x)[0]),
                             "duration": float(np.shape(trace.x)[0] * dt)}

    if trace.leader is not None:
        gap, speed, leader = trace.gap, trace.speed, trace.leader
        ttc = ttc_1d(gap, speed, leader)[:, subj]
        out["min_ttc"] = float(min(np.min(ttc, initial=np.inf), th.ttc_horizon))
        out["tet"] = float(time_exposed_ttc(ttc, dt, threshold=th.ttc).sum())
        out["tit"] = float(time_integrated_ttc(ttc, dt, threshold=th.ttc).sum())
        out["min_gap"] = _min_or_nan(space_gap(gap, leader, min_gap=th.min_gap)[:, subj])
        out["min_time_gap"] = _min_or_nan(time_gap(gap, speed, leader, min_gap=th.min_gap)[:, subj])
        out["min_time_headway"] = _min_or_nan(time_headway(gap, speed, leader, trace.length)[:, subj])
        d = drac(gap, speed, leader)[:, subj]
        out["max_drac"] = _max_or_nan(d)
        out["drac_exposure"] = float(dt * np.sum(d > th.drac))
        out["max_mdrac"] = _max_or_nan(mdrac(gap, speed, leader, prt=th.mdrac_prt)[:, subj])
    else:
        for key in ("min_ttc", "tet", "tit", "min_gap", "min_time_gap", "min_time_headway",
                    "max_drac", "drac_exposure", "max_mdrac"):
            out[key] = float("nan")

    ttc2 = ttc_2d(trace.x, trace.y, trace.heading, trace.speed, trace.length, trace.width,
                  subjects=subj, horizon=th.ttc_horizon)[:, subj]
    out["min_ttc_2d"] = float(min(np.min(ttc2, initial=np.inf), th.ttc_horizon))
    out["tet_2d"] = float(time_exposed_ttc(ttc2, dt, threshold=th.ttc).sum())

    accel = np.asarray(trace.accel, dtype=np.float64)[:, subj]
    out["hard_brakes"] = float(hard_braking_events(accel, threshold=th.hard_brake).sum())
    out["max_decel"] = _max_or_nan(-accel)
    j = jerk(accel, dt)
    jf = j[np.isfinite(j)]
    out["rms_jerk"] = float(np.sqrt(np.mean(jf * jf))) if jf.size else float("nan")
    out["max_jerk"] = float(np.abs(jf).max()) if jf.size else float("nan")
    out["mean_speed"] = float(np.nanmean(mean_speed(trace.speed)[subj])) if subj.size else float("nan")
    out["progress"] = float(np.mean(progress(trace.x, trace.y)[subj])) if subj.size else float("nan")

    _platoon_summary(out, trace, platoons, th)

    if lane is not None and target_lanes is not None:
        who = subj if mergers is None else np.asarray(mergers, dtype=np.intp)
        out["merge_success"] = float(np.mean(merge_success(lane, target_lanes)[who])) if who.size else float("nan")
    if goal is not None:
        ttd = time_to_destination(trace.x, trace.y, goal, dt, radius=th.goal_radius)[subj]
        out["reached_goal"] = float(np.mean(np.isfinite(ttd))) if subj.size else float("nan")
        out["time_to_destination"] = float(np.nanmean(ttd)) if np.isfinite(ttd).any() else float("nan")
    return out


def _platoon_summary(out: dict[str, float], trace: EpisodeTrace,
                     platoons: Sequence[Sequence[int]], th: Thresholds) -> None:
    """Add gap error, string-stability and split figures over all platoons to ``out``."""
    keys = ("gap_error_rms", "gap_error_max", "string_error_ratio_max", "string_speed_ratio_max",
            "string_stable", "platoon_splits")
    platoons = [np.asarray(p, dtype=np.intp) for p in platoons if len(p) >= 2]
    if not platoons or trace.gap is None:
        out.update({k: float("nan") for k in keys})
        return
    sq_sum, count, err_max, e_ratio, v_ratio, splits = 0.0, 0, -np.inf, [], [], 0
    stable = True
    for members, ss in zip(platoons, platoon_string_stability(trace, platoons, th)):
        gap = np.asarray(trace.gap, dtype=np.float64)[:, members]
        speed = np.asarray(trace.speed, dtype=np.float64)[:, members]
        e = spacing_errors(gap, speed, time_gap=th.time_gap, standstill=th.standstill)
        ef = e[np.isfinite(e)]
        sq_sum += float(np.sum(ef * ef))
        count += ef.size
        if ef.size:
            err_max = max(err_max, float(np.abs(ef).max()))
        e_ratio.extend(r for r in ss.error_ratios.tolist() if np.isfinite(r))
        v_ratio.extend(r for r in ss.speed_ratios.tolist() if np.isfinite(r))
        stable &= ss.stable
        splits += int(platoon_split_events(gap, threshold=th.split_gap).sum())
    out["gap_error_rms"] = float(np.sqrt(sq_sum / count)) if count else float("nan")
    out["gap_error_max"] = err_max if count else float("nan")
    out["string_error_ratio_max"] = max(e_ratio) if e_ratio else float("nan")
    out["string_speed_ratio_max"] = max(v_ratio) if v_ratio else float("nan")
    out["string_stable"] = float(stable)
    out["platoon_splits"] = float(splits)


def platoon_string_stability(trace: EpisodeTrace, platoons: Sequence[Sequence[int]],
                             thresholds: Thresholds = Thresholds()) -> list[StringStability]:
    """`string_stability` of each platoon's members (columns leader first) over one trace.

    Uses the thresholds' time gap, standstill gap, window start and tolerance; the trace must
    carry ``gap``.
    """
    th = thresholds
    out = []
    for members in platoons:
        cols = np.asarray(members, dtype=np.intp)
        out.append(string_stability(np.asarray(trace.gap, dtype=np.float64)[:, cols],
                                    np.asarray(trace.speed, dtype=np.float64)[:, cols],
                                    time_gap=th.time_gap, standstill=th.standstill,
                                    start=th.disturbance_step, tol=th.string_tol))
    return out
