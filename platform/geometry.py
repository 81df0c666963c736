"""Exact oriented-box collision geometry shared by the simulator and the safety evaluator.

Owns box corners, the broad phase (sort-and-sweep on bounding circles), the strict
separating-axis test, the continuous (sub-stepped) check between two states, and a shapely
cross-check. Pure numpy, vectorized over boxes and pairs; no Python loop over pairs.

Conventions:
- A box is (x, y, heading, length, width): centre [m], heading of the length axis [rad],
  sizes [m]. ``length`` and ``width`` may be scalars or per-row arrays.
- Pair arrays are (P, 2) integer arrays of original row indices with i < j, sorted
  lexicographically, so results from different paths compare with ``np.array_equal``.
- Overlap is strict: boxes that only touch (a shared edge or corner) do not overlap.
  highway-env's ``are_polygons_intersecting`` and shapely's ``intersects`` count touching as
  intersecting; the conventions differ only on poses of measure zero.
- Rows that are inactive (``active[i]`` False) or have a non-finite coordinate are ignored.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely

# Body size of a vehicle when none is given [m]: highway-env's `Vehicle.LENGTH`/`WIDTH` (also its
# `AbstractLane.VEHICLE_LENGTH`, the margin of `on_lane` and `after_end`); a test holds them equal.
VEHICLE_LENGTH = 5.0
VEHICLE_WIDTH = 2.0

# Below this many active rows an all-pairs circle test is faster than sort-and-sweep
# (measured with benchmarks/collision_cost.py's layouts on a 2-core machine).
_DENSE_MAX_N = 40

# A sub-step may move any point of one box relative to the other by less than this fraction
# of the smallest side of the two boxes, so no box can pass through another between samples.
_SUBSTEP_FRACTION_OF_SIDE = 0.5

# The first-contact time inside the first overlapping sub-step is refined by multisection:
# each round samples the bracket at this many points, so two rounds give 1/1024 of a sub-step
# in two vectorized calls.
_REFINE_ROUNDS = 2
_REFINE_SAMPLES = 32

# Local corner signs (length axis, width axis): front-right, front-left, rear-left,
# rear-right, which is counter-clockwise.
_CORNER_SIGN_L = np.array([1.0, 1.0, -1.0, -1.0])
_CORNER_SIGN_W = np.array([-1.0, 1.0, 1.0, -1.0])


class Boxes(NamedTuple):
    """A set of N oriented boxes; every field is broadcast to shape (N,)."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray
    length: np.ndarray
    width: np.ndarray


class SweptContacts(NamedTuple):
    """Result of a continuous check over one interval.

    pairs: (P, 2) pairs that overlap at some time in the interval (i < j, sorted).
    fraction: (P,) earliest found overlap time as a fraction of the interval in [0, 1];
        0 means the pair already overlaps at the start.
    """

    pairs: np.ndarray
    fraction: np.ndarray


def as_boxes(boxes: Boxes | tuple) -> Boxes:
    """Convert a (x, y, heading, length, width) tuple to float64 Boxes of equal 1-D shape."""
    fields = np.broadcast_arrays(*(np.asarray(f, dtype=np.float64) for f in boxes))
    fields = [np.atleast_1d(f).ravel() for f in fields]
    return Boxes(*fields)


def box_corners(x, y, heading, length, width) -> np.ndarray:
    """Corners (..., 4, 2) of boxes centred at (x, y), counter-clockwise from front-right."""
    x, y, heading, length, width = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (x, y, heading, length, width))
    )
    c, s = np.cos(heading)[..., None], np.sin(heading)[..., None]
    dl = 0.5 * length[..., None] * _CORNER_SIGN_L  # (..., 4) offsets along the length axis
    dw = 0.5 * width[..., None] * _CORNER_SIGN_W  # (..., 4) offsets along the width axis
    cx = x[..., None] + c * dl - s * dw
    cy = y[..., None] + s * dl + c * dw
    return np.stack([cx, cy], axis=-1)


def boxes_overlap(corners_a: np.ndarray, corners_b: np.ndarray) -> np.ndarray:
    """Strict separating-axis test between paired rectangles (..., 4, 2) -> (...,) bool."""
    a = np.asarray(corners_a, dtype=np.float64)
    b = np.asarray(corners_b, dtype=np.float64)
    # In a rectangle consecutive edges are perpendicular, so the two edge directions of each box
    # are also its two edge normals; the candidate separating axes need no normalisation because
    # only the sign of the overlap is used.
    axes = np.stack(
        [a[..., 1, :] - a[..., 0, :], a[..., 2, :] - a[..., 1, :],
         b[..., 1, :] - b[..., 0, :], b[..., 2, :] - b[..., 1, :]],
        axis=-2,
    )  # (..., 4 axes, 2)
    ax, ay = axes[..., None, :, 0], axes[..., None, :, 1]  # (..., 1, 4)
    proj_a = a[..., :, None, 0] * ax + a[..., :, None, 1] * ay  # (..., 4 corners, 4 axes)
    proj_b = b[..., :, None, 0] * ax + b[..., :, None, 1] * ay
    overlap = np.minimum(proj_a.max(axis=-2), proj_b.max(axis=-2)) - np.maximum(
        proj_a.min(axis=-2), proj_b.min(axis=-2)
    )  # (..., 4 axes)
    return np.all(overlap > 0.0, axis=-1)


def _rows(n: int, active: np.ndarray | None, *coords: np.ndarray) -> np.ndarray:
    """Indices of rows that are active and have finite coordinates."""
    ok = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool).copy()
    if ok.shape != (n,):
        raise ValueError(f"active has shape {ok.shape}, expected ({n},)")
    for c in coords:
        ok &= np.isfinite(c)
    return np.flatnonzero(ok)


def _sorted_pairs(i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """(P, 2) int pairs with i < j in lexicographic order."""
    pairs = np.stack([np.minimum(i, j), np.maximum(i, j)], axis=1).astype(np.intp, copy=False)
    if len(pairs) > 1:
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
    return pairs


def candidate_pairs(x, y, radius, active: np.ndarray | None = None) -> np.ndarray:
    """Pairs (P, 2), i < j, whose bounding circles overlap or touch (sort-and-sweep)."""
    x, y, radius = (
        np.atleast_1d(f).ravel()
        for f in np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x, y, radius)))
    )
    idx = _rows(len(x), active, x, y, radius)
    m = len(idx)
    if m < 2:
        return np.empty((0, 2), dtype=np.intp)
    xs, ys, rs = x[idx], y[idx], radius[idx]
    if m <= _DENSE_MAX_N:
        first, second = np.triu_indices(m, 1)
    else:
        # Sweep along the axis with the larger spread (the road direction for straight roads):
        # after sorting intervals by their lower end, interval k overlaps the later intervals
        # whose lower end does not exceed its upper end, a contiguous run found by searchsorted.
        along = xs if np.ptp(xs) >= np.ptp(ys) else ys
        lo, hi = along - rs, along + rs
        order = np.argsort(lo, kind="stable")
        lo_sorted, hi_sorted = lo[order], hi[order]
        end = np.searchsorted(lo_sorted, hi_sorted, side="right")
        counts = end - np.arange(m) - 1
        starts = np.cumsum(counts) - counts
        k = np.repeat(np.arange(m), counts)
        offset = np.arange(len(k)) - np.repeat(starts, counts)
        first, second = order[k], order[k + 1 + offset]
    keep = (xs[first] - xs[second]) ** 2 + (ys[first] - ys[second]) ** 2 <= (
        rs[first] + rs[second]
    ) ** 2
    return _sorted_pairs(idx[first[keep]], idx[second[keep]])


def overlapping_pairs(x, y, heading, length, width, active: np.ndarray | None = None) -> np.ndarray:
    """Pairs (P, 2), i < j, of boxes that overlap (strictly), via broad phase + SAT."""
    b = as_boxes((x, y, heading, length, width))
    radius = 0.5 * np.hypot(b.length, b.width)
    cand = candidate_pairs(b.x, b.y, radius, _active_mask(len(b.x), active, b.heading, radius))
    if len(cand) == 0:
        return cand
    corners = box_corners(*b)
    hit = boxes_overlap(corners[cand[:, 0]], corners[cand[:, 1]])
    return cand[hit]


def _active_mask(n: int, active: np.ndarray | None, *coords: np.ndarray) -> np.ndarray:
    """Boolean mask of rows that are active and have finite values in coords."""
    mask = np.zeros(n, dtype=bool)
    mask[_rows(n, active, *coords)] = True
    return mask


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles [rad] to [-pi, pi); the one definition every module uses."""
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def _overlap_at(prev: Boxes, curr: Boxes, dheading: np.ndarray, i: np.ndarray, j: np.ndarray,
                t: np.ndarray) -> np.ndarray:
    """Whether boxes i and j overlap at interval fractions t (linear pose, shortest-arc heading)."""
    rows, tt = np.concatenate([i, j]), np.concatenate([t, t])

    def lerp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a[rows] + tt * (b[rows] - a[rows])

    corners = box_corners(
        lerp(prev.x, curr.x),
        lerp(prev.y, curr.y),
        prev.heading[rows] + tt * dheading[rows],
        lerp(prev.length, curr.length),
        lerp(prev.width, curr.width),
    )
    return boxes_overlap(corners[: len(i)], corners[len(i):])


def swept_overlapping_pairs(
    prev: Boxes | tuple,
    curr: Boxes | tuple,
    substeps: int | None = None,
    active: np.ndarray | None = None,
) -> SweptContacts:
    """Pairs that overlap at any time between two states, with the earliest overlap fraction.

    Poses are interpolated linearly (heading on the shortest arc). With ``substeps=None`` each
    candidate pair gets k sub-steps such that no point of one box moves relative to the other by
    half the smallest side of the two boxes or more per sub-step, so a box cannot pass through
    another unseen; an integer fixes k for every pair. The contact time is then refined inside
    the first overlapping sub-step to 1/1024 of a sub-step. A graze that starts and ends within
    one sub-step can still be missed.
    """
    p, c = as_boxes(prev), as_boxes(curr)
    n = len(p.x)
    if len(c.x) != n:
        raise ValueError(f"prev has {n} boxes, curr has {len(c.x)}")
    dx, dy = c.x - p.x, c.y - p.y
    dheading = wrap_angle(c.heading - p.heading)
    half_diag = 0.5 * np.maximum(np.hypot(p.length, p.width), np.hypot(c.length, c.width))
    min_side = np.minimum.reduce([p.length, p.width, c.length, c.width])

    # Broad phase: a circle centred at the midpoint of the motion that holds the box at every
    # interpolated pose (centre within half the displacement, box within its half diagonal).
    radius = 0.5 * np.hypot(dx, dy) + half_diag
    # Boxes with a zero side have no interior, so they overlap nothing (and need no sub-steps).
    has_area = np.where(min_side > 0.0, 1.0, np.nan)
    mask = _active_mask(n, active, p.x, p.y, p.heading, c.x, c.y, c.heading, radius, has_area)
    cand = candidate_pairs(p.x + 0.5 * dx, p.y + 0.5 * dy, radius, mask)
    if len(cand) == 0:
        return SweptContacts(cand, np.empty(0))
    i, j = cand[:, 0], cand[:, 1]

    # Sub-step counts: bound the relative motion of any point (translation + rotation).
    if substeps is None:
        rel = (np.hypot(dx[i] - dx[j], dy[i] - dy[j])
               + np.abs(dheading[i]) * half_diag[i] + np.abs(dheading[j]) * half_diag[j])
        step = _SUBSTEP_FRACTION_OF_SIDE * np.minimum(min_side[i], min_side[j])
        k = np.floor(rel / step).astype(np.intp) + 1
    else:
        if int(substeps) < 1:
            raise ValueError(f"substeps must be >= 1, got {substeps}")
        k = np.full(len(cand), int(substeps), dtype=np.intp)

    # Narrow phase on every sample t = s / k, s = 0..k, of every candidate pair.
    n_samples = k + 1
    starts = np.cumsum(n_samples) - n_samples
    pair = np.repeat(np.arange(len(cand)), n_samples)
    t = (np.arange(n_samples.sum()) - starts[pair]) / k[pair]
    hit = _overlap_at(p, c, dheading, i[pair], j[pair], t)
    first = np.minimum.reduceat(np.where(hit, t, np.inf), starts)
    found = np.isfinite(first)
    cand, first, k = cand[found], first[found], k[found]

    # Refine contacts that begin inside the interval. Invariant: the pair does not overlap at
    # `hi - width` (a previous sample) and overlaps at `hi`; each round moves `hi` to the first
    # overlapping point of a finer grid inside that bracket.
    inner = np.flatnonzero(first > 0.0)
    if len(inner):
        hi = first[inner]
        width = 1.0 / k[inner]
        ri = np.repeat(cand[inner, 0], _REFINE_SAMPLES)
        rj = np.repeat(cand[inner, 1], _REFINE_SAMPLES)
        grid = np.arange(_REFINE_SAMPLES - 1, -1, -1) / _REFINE_SAMPLES  # (M,) from 1-1/M to 0
        for _ in range(_REFINE_ROUNDS):
            tt = hi[:, None] - width[:, None] * grid  # (Q, M), the last column is hi itself
            ov = _overlap_at(p, c, dheading, ri, rj, tt.ravel()).reshape(tt.shape)
            ov[:, -1] = True
            hi = tt[np.arange(len(hi)), ov.argmax(axis=1)]
            width = width / _REFINE_SAMPLES
        first[inner] = hi
    return SweptContacts(cand, first)


def shapely_overlapping_pairs(x, y, heading, length, width,
                              active: np.ndarray | None = None) -> np.ndarray:
    """Pairs (P, 2), i < j, whose boxes intersect per shapely (touching counts), via STRtree."""
    b = as_boxes((x, y, heading, length, width))
    idx = _rows(len(b.x), active, *b)
    if len(idx) < 2:
        return np.empty((0, 2), dtype=np.intp)
    polys = shapely.polygons(box_corners(*(f[idx] for f in b)))
    qa, qb = shapely.STRtree(polys).query(polys, predicate="intersects")
    keep = qa < qb
    return _sorted_pairs(idx[qa[keep]], idx[qb[keep]])
