"""Car-following surrogate measures per step: TTC, DRAC, MDRAC, space gap, time gap, headway, near misses.

Part of the measures `diffplatoon.evaluation.measures` re-exports (its docstring gives the
array conventions): every function takes the follower's ``gap`` (T, N) to the vehicle it
follows, ``leader`` (T, N) that vehicle's column (-1: none) and the speeds. Pure numpy.

Definitions (SUMO's SSM device, ``Simulation/Output/SSM_Device.md``, checked against SUMO 1.28
to its 6-decimal output by ``tests/evaluation/test_sumo_ssm.py``):
- SGAP, the space gap, is the plain bumper-to-bumper gap, follower front to leader rear (SUMO
  subtracts no minGap from it);
- TGAP, the time gap, is SGAP / follower speed;
- TTC = SGAP / closing speed while closing; DRAC = 0.5 * closing speed^2 / SGAP;
- MDRAC = 0.5 * closing speed / (TTC - PRT).

Where the formulas break down the measures are defined, never a division by ~0:
- overlap (SGAP < 0, a collision): TTC 0, time gap 0, DRAC inf, MDRAC inf (the front-to-front
  time headway stays the front-to-front distance over the speed, 0 once that is negative);
- a stopped follower (speed below `STANDSTILL_SPEED`, SUMO's halting speed 0.1 m/s): time gap,
  headway and TTC inf, MDRAC 0 (a standing queue is no conflict in time; the gap itself still
  counts for the minimum gap and near misses). SUMO divides by the crawl speed there, so the
  cross-check compares only moving followers;
- no leader: TTC, gaps and time gaps inf (no conflict), DRAC and MDRAC 0;
- MDRAC with TTC <= PRT is inf: even braking at any rate after the reaction time cannot avoid
  the crash. SUMO's formula divides by the negative TTC - PRT there and reports a negative
  MDRAC, which reads as "no deceleration needed" at the most critical moment; ours is the
  sensible value, and the SUMO cross-check compares only where TTC > PRT.

SUMO's device traces every vehicle within its range, so a follower also gets a TTC/DRAC with
the car two ahead (through the car between them); the per-step measures here take one
``leader`` column. `vehicles_ahead` chains the leaders into the k-th vehicle ahead and its
gap, and `ttc_ahead` / `drac_ahead` take the worst over the first ``depth`` vehicles ahead,
which is SUMO's per-follower view of a single lane.
"""

from __future__ import annotations

import numpy as np

# Follower speed [m/s] below which it counts as stopped for time gaps: SUMO's halting speed.
STANDSTILL_SPEED = 0.1


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

    Overlapping boxes (gap < 0) give 0 whatever the speeds (they have collided); touching
    boxes (gap = 0) give 0 only while closing, matching the strict overlap convention of the
    collision check (touching is no contact). A stopped follower (below `STANDSTILL_SPEED`)
    is not closing: it creeps into nothing at a speed that would make gap / speed ~1e11 s.
    """
    gap = np.asarray(gap, dtype=np.float64)
    dv = closing_speed(speed, leader)
    has = np.asarray(leader) >= 0
    out = np.full(gap.shape, np.inf)
    closing = has & (dv > 0) & np.isfinite(gap) & (np.asarray(speed, dtype=np.float64) >= STANDSTILL_SPEED)
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

    0 when not closing; inf when TTC <= prt (the reaction time alone is too long; SUMO reports
    a negative value there, see the module docstring).
    """
    ttc = ttc_1d(gap, speed, leader)
    dv = closing_speed(speed, leader)
    out = np.zeros(ttc.shape)
    closing = np.isfinite(ttc)
    margin = ttc[closing] - prt
    with np.errstate(divide="ignore"):
        out[closing] = np.where(margin > 0, 0.5 * dv[closing] / np.maximum(margin, 1e-300), np.inf)
    return out


def space_gap(gap: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """SGAP [m] (SUMO): the bumper-to-bumper gap (negative when overlapping); inf without a leader."""
    return np.where(np.asarray(leader) >= 0, np.asarray(gap, dtype=np.float64), np.inf)


def _per_speed(distance: np.ndarray, speed: np.ndarray) -> np.ndarray:
    """distance / speed for a moving follower; 0 where the distance is negative (overlap), inf
    where the follower is stopped or the distance undefined."""
    speed = np.asarray(speed, dtype=np.float64)
    out = np.full(distance.shape, np.inf)
    moving = np.isfinite(distance) & (speed >= STANDSTILL_SPEED)
    out[moving] = np.maximum(distance[moving], 0.0) / speed[moving]
    out[np.isfinite(distance) & (distance < 0)] = 0.0
    return out


def time_gap(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """TGAP [s] (SUMO): SGAP / follower speed; 0 at overlap, inf if stopped or without a leader."""
    return _per_speed(space_gap(gap, leader), speed)


def time_headway(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray,
                 length: np.ndarray) -> np.ndarray:
    """Front-to-front time headway [s]: (gap + leader length) / follower speed.

    0 when the front-to-front distance is negative (the follower's front is past the leader's),
    inf if the follower is stopped or has no leader.
    """
    return _per_speed(np.asarray(gap, dtype=np.float64) + leader_values(length, leader), speed)


def minimum_gap(gap: np.ndarray, leader: np.ndarray) -> np.ndarray:
    """Smallest space gap [m] of each vehicle over the episode, (N,); inf if it never followed."""
    return np.min(space_gap(gap, leader), axis=0, initial=np.inf)


def near_miss(gap: np.ndarray, leader: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each vehicle's space gap fell below ``threshold`` [m] at some step, (N,) bool.

    The caller decides what a collision means for the count: the episode's near-miss
    indicator excludes episodes with a collision (`measures.episode_summary`).
    """
    return np.any(space_gap(gap, leader) < threshold, axis=0)


def vehicles_ahead(leader: np.ndarray, gap: np.ndarray, length: np.ndarray,
                   depth: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
    """The k-th vehicle ahead, k = 1..depth, by chaining each leader's own leader: [(leader_k, gap_k)].

    gap_k = gap_{k-1} + length of vehicle k-1 ahead + that vehicle's own gap, all at the same
    step; leader_k is -1 (and gap_k NaN) where the chain is not known (a vehicle ahead whose
    own leader was not recorded).
    """
    leader = np.asarray(leader)
    gap = np.asarray(gap, dtype=np.float64)
    out = [(leader, np.where(leader >= 0, gap, np.nan))]
    for _ in range(depth - 1):
        prev, prev_gap = out[-1]
        nxt = np.where(prev >= 0, leader_values(leader, prev), np.nan)
        has = np.isfinite(nxt) & (nxt >= 0)
        nxt_gap = prev_gap + leader_values(length, prev) + leader_values(gap, prev)
        out.append((np.where(has, nxt, -1).astype(leader.dtype), np.where(has, nxt_gap, np.nan)))
    return out


def ttc_ahead(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray, length: np.ndarray, *,
              depth: int = 2) -> np.ndarray:
    """Smallest `ttc_1d` [s] (T, N) over the first ``depth`` vehicles ahead (`vehicles_ahead`)."""
    return np.min([ttc_1d(g, speed, lead) for lead, g in vehicles_ahead(leader, gap, length, depth)], axis=0)


def drac_ahead(gap: np.ndarray, speed: np.ndarray, leader: np.ndarray, length: np.ndarray, *,
               depth: int = 2) -> np.ndarray:
    """Largest `drac` [m/s^2] (T, N) over the first ``depth`` vehicles ahead (`vehicles_ahead`).

    A follower closing fast on the car two ahead while its direct leader pulls away has a
    DRAC conflict that `drac` with the direct leader alone misses.
    """
    return np.max([drac(g, speed, lead) for lead, g in vehicles_ahead(leader, gap, length, depth)], axis=0)
