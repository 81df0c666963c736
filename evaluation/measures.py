"""Surrogate safety, platoon and efficiency measures over one episode trace.

Owns the per-step and per-episode measures that the safety report aggregates: car-following
TTC, 2-D constant-velocity TTC, space gap, time gap, time headway, DRAC, MDRAC, PET at
conflict points, TET/TIT, hard-braking events, jerk; platoon gap-keeping error, string
stability and split events; mean speed, progress, merge success, time to destination; and
``episode_summary``, which computes the standard set in one call. Pure numpy functions of
arrays; nothing here knows about the simulator. The car-following measures live in
`following_measures`, the 2-D TTC and PET in `conflict_measures`, the platoon measures in
`platoon_measures`, the thresholds in `thresholds`; this module re-exports them, so
``measures.<name>`` reaches every measure.

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

The car-following measures (TTC, DRAC, MDRAC, space gap, time gap, headway, near misses, the
vehicles further ahead) live in `following_measures`, whose docstring defines them and says
how they agree with SUMO's SSM device and where they deliberately differ. A measure that is
undefined at a step is inf for TTC/time gaps/space gaps (no conflict) and 0 for DRAC (no
deceleration needed); none of them divides by a vanishing speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from diffplatoon.evaluation.following_measures import (STANDSTILL_SPEED, closing_speed, drac, drac_ahead,
                                                       leader_values, mdrac, minimum_gap, near_miss, space_gap,
                                                       time_gap, time_headway, ttc_1d, ttc_ahead, vehicles_ahead)
from diffplatoon.evaluation.conflict_measures import (Occupancy, conflict_occupancy, post_encroachment_time,
                                                      ttc_2d, ttc_2d_pairs)
from diffplatoon.evaluation.platoon_measures import (GapError, StringStability, gap_keeping_error, rms_and_max_abs,
                                                     platoon_split_events, spacing_errors, string_stability)
from diffplatoon.evaluation.thresholds import Thresholds

# The one import for every measure: car-following, 2-D conflict and platoon measures live in their own modules.
__all__ = [
    "EpisodeTrace", "Thresholds", "leader_values", "closing_speed", "ttc_1d", "drac", "mdrac", "space_gap",
    "time_gap", "time_headway", "minimum_gap", "near_miss", "vehicles_ahead", "ttc_ahead", "drac_ahead",
    "STANDSTILL_SPEED", "ttc_2d_pairs", "ttc_2d", "time_exposed_ttc",
    "time_integrated_ttc", "Occupancy", "conflict_occupancy", "post_encroachment_time", "hard_braking_events",
    "jerk", "JerkStats", "jerk_stats", "spacing_errors", "GapError", "gap_keeping_error", "StringStability",
    "string_stability", "platoon_split_events", "mean_speed", "progress", "merge_success", "merge_step",
    "time_to_destination", "episode_summary", "platoon_string_stability",
]



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
# Exposure, braking, jerk
# --------------------------------------------------------------------------------------------


def time_exposed_ttc(ttc: np.ndarray, dt: float, *, threshold: float = 3.0) -> np.ndarray:
    """TET [s] per vehicle (N,): time with TTC < threshold (Minderhoud & Bovy 2001; SUMO's 3 s)."""
    return dt * np.sum(np.asarray(ttc) < threshold, axis=0, dtype=np.float64)


def time_integrated_ttc(ttc: np.ndarray, dt: float, *, threshold: float = 3.0) -> np.ndarray:
    """TIT [s^2] per vehicle (N,): sum over steps of (threshold - TTC) * dt where TTC < threshold."""
    ttc = np.asarray(ttc, dtype=np.float64)
    return dt * np.sum(np.where(ttc < threshold, threshold - ttc, 0.0), axis=0)


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
    return JerkStats(*rms_and_max_abs(jerk(accel, dt)))



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
                    goal: np.ndarray | None = None, collided: bool = False) -> dict[str, float]:
    """The standard per-episode measures in one call, as a flat dict of floats.

    ``subjects`` are the evaluated (controlled) vehicles, default all; ``platoons`` lists each
    platoon's member indices, leader first; ``lane``/``target_lanes``/``mergers`` give merge
    success (the fraction of ``mergers``, default subjects, ending in a target lane); ``goal``
    ((2,) or (N, 2)) gives time to destination. TTCs are capped at ``thresholds.ttc_horizon``;
    a measure that cannot be computed (no leader ever, no platoon, ...) is NaN. ``near_miss``
    is 1 when a subject's space gap fell below ``thresholds.min_gap`` and the episode had no
    collision (``collided``, decided by the caller), else 0; ``max_drac_ahead`` is the DRAC
    with the worst of the first two vehicles ahead (`drac_ahead`; where the trace knows the
    leader's own leader).
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
        out["min_gap"] = _min_or_nan(space_gap(gap, leader)[:, subj])
        out["near_miss"] = float(bool(near_miss(gap, leader, th.min_gap)[subj].any()) and not collided)
        out["min_time_gap"] = _min_or_nan(time_gap(gap, speed, leader)[:, subj])
        out["min_time_headway"] = _min_or_nan(time_headway(gap, speed, leader, trace.length)[:, subj])
        d = drac(gap, speed, leader)[:, subj]
        out["max_drac"] = _max_or_nan(d)
        out["max_drac_ahead"] = _max_or_nan(drac_ahead(gap, speed, leader, trace.length)[:, subj])
        out["drac_exposure"] = float(dt * np.sum(d > th.drac))
        out["max_mdrac"] = _max_or_nan(mdrac(gap, speed, leader, prt=th.mdrac_prt)[:, subj])
    else:
        for key in ("min_ttc", "tet", "tit", "min_gap", "near_miss", "min_time_gap", "min_time_headway",
                    "max_drac", "max_drac_ahead", "drac_exposure", "max_mdrac"):
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
