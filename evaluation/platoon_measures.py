"""Platoon measures over member columns (leader first): spacing errors, gap keeping, string stability, splits.

Part of the measures `diffplatoon.evaluation.measures` re-exports (its docstring gives the
array conventions): ``gap[:, i]`` is member i's gap to member i-1 and column 0 is not used.
The spacing error of a member is its gap minus the constant-time-gap policy's desired gap
(standstill + time_gap * speed); string stability compares norms of those errors (and of
speed oscillations) from one member to the next. Pure numpy.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np


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


def rms_and_max_abs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of (T, N) `values`: RMS and max |value| over the finite entries (NaN where none)."""
    ok = np.isfinite(values)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rms = np.sqrt(np.where(ok, values * values, 0.0).sum(axis=0) / count)
    mx = np.where(ok, np.abs(values), -np.inf).max(axis=0, initial=-np.inf)
    return np.where(count > 0, rms, np.nan), np.where(count > 0, mx, np.nan)


def gap_keeping_error(gap: np.ndarray, speed: np.ndarray, *, time_gap: float = 0.5,
                      standstill: float = 2.0) -> GapError:
    """RMS and max |spacing error| of each follower over the steps where its gap is finite."""
    return GapError(*rms_and_max_abs(spacing_errors(gap, speed, time_gap=time_gap, standstill=standstill)))


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
