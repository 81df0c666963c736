"""Which lanes a vehicle's closest-lane search must look at: `near` candidates and far-lane bounds.

Owns `LaneSearch` (`LaneTable.search`), built once per network:

- `near` (n, K), −1 padded, sorted: for each lane, the lanes whose band (|r| ≤ width/2 + 1 m,
  s within one vehicle length of the ends, i.e. highway-env's `on_lane(margin=1)` region)
  touches its own band. It is the candidate set of the closest-lane search and of the lane
  memberships of the simulator (`near_ids`: padded with lane 0; `near_pad`: the padding).
- `near_trust`: no lane is further than this from a band point of a lane it touches, so a
  closest-lane distance above it may have missed a lane outside the candidates.
- `all_lanes`: on networks with at most `_ALL_LANES_SLACK` lanes beyond the candidate sets, lane
  re-assignment projects every vehicle on every lane and masks the non-candidates (`near_masked`).
- `far_lanes_may_be_closer`: for vehicles off the road, bounds highway-env's lane distance
  from below by the distance to a box around each other lane's centre line (minus a SineLane's
  amplitude, `box` column 4) and so tells when the search over all lanes can be skipped with
  the same result.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from diffplatoon.geometry import VEHICLE_LENGTH

if TYPE_CHECKING:
    from diffplatoon.sim.lanes import LaneTable

ON_LANE_MARGIN = 1.0  # [m] lateral margin highway-env's neighbour search adds to half the width

# Sampling used once at build time to find which lane bands touch: step along s [m], and
# extra slack [m] on the band so that sampling cannot miss a touching pair.
_NEAR_STEP = 1.0
_NEAR_SLACK = 0.5
_NEAR_MAX_SAMPLES = 20000
_ALL_LANES_SLACK = 2  # a network with at most this many lanes beyond its candidate sets projects on all lanes
_SMALL_QUERY = 16  # up to this many (point, far lane) pairs, the bound is evaluated in Python floats


class LaneSearch:
    """Candidate lanes and far-lane boxes of one `LaneTable` (module docstring)."""

    def __init__(self, table: LaneTable):
        self.near = _near_lanes(table)
        self.near_ids = np.where(self.near >= 0, self.near, 0)  # `near` with padding on lane 0
        self.near_pad = self.near < 0
        self.near_trust = float(np.min(table.width) / 2 + ON_LANE_MARGIN)
        n = table.n
        # Networks with few lanes outside the candidate sets project every vehicle on every lane (no
        # gathers by candidate, and the closest of all lanes is at hand for the far-lane fallback);
        # `near_masked` (n, n) is then lane j in column j where j is a candidate of lane k, else −1.
        self.all_lanes = n - self.near.shape[1] <= _ALL_LANES_SLACK
        if self.all_lanes:
            member = np.zeros((n, n), dtype=bool)
            for k in range(n):
                member[k, self.near[k][self.near[k] >= 0]] = True
            self.all_ids = np.arange(n)[None, :]
            self.near_masked = np.where(member, self.all_ids, -1)
        self.box = _lane_boxes(table)  # (n + 1, 5): x0, x1, y0, y1, slack; row n is empty
        far = [np.setdiff1d(np.arange(n), self.near[k][self.near[k] >= 0]) for k in range(n)]
        width = max(len(f) for f in far)
        self.far = np.full((n, width), n, dtype=np.intp)  # lanes outside `near`, padded with n
        for k, ids in enumerate(far):
            self.far[k, : len(ids)] = ids
        # The boxes of each lane's far lanes, gathered once: (n, F, 2) lower and upper (x, y)
        # corners and (n, F) slacks, so that a query indexes three arrays by lane.
        far_box = self.box[self.far]
        self._far_lo = np.ascontiguousarray(far_box[..., [0, 2]])
        self._far_hi = np.ascontiguousarray(far_box[..., [1, 3]])
        self._far_slack = np.ascontiguousarray(far_box[..., 4])
        # The same boxes as Python tuples (x0, x1, y0, y1, slack) per lane, padding left out, for
        # the few points a frame usually asks about (numpy's per-call overhead dominates there).
        self._far_tuples = [[tuple(float(v) for v in self.box[j]) for j in self.far[k] if j < n] for k in range(n)]

    def far_lanes_may_be_closer(self, lanes: np.ndarray, x: np.ndarray, y: np.ndarray,
                                best: np.ndarray) -> np.ndarray:
        """Whether a lane outside `near[lanes]` may be within `best` (highway-env's lane distance)
        of the points (x, y): where False, the closest lane among the `near` ones is the closest."""
        if self.far.shape[1] == 0:
            return np.zeros(len(lanes), dtype=bool)
        if len(lanes) * self.far.shape[1] <= _SMALL_QUERY:
            return self._far_lanes_small(lanes, x, y, best)
        p = np.empty((len(lanes), 1, 2))
        p[:, 0, 0] = x
        p[:, 0, 1] = y
        # per axis: how far the point lies outside each box (0 inside), (m, F, 2)
        d = np.maximum(np.maximum(self._far_lo[lanes] - p, p - self._far_hi[lanes]), 0.0)
        need = np.hypot(d[..., 0], d[..., 1]) - self._far_slack[lanes] <= best[:, None] + 1e-6
        if not np.count_nonzero(need):
            return np.zeros(len(lanes), dtype=bool)
        return need.any(axis=1)

    def _far_lanes_small(self, lanes: np.ndarray, x: np.ndarray, y: np.ndarray, best: np.ndarray) -> np.ndarray:
        """`far_lanes_may_be_closer` point by point in Python floats (the same bound)."""
        out = []
        boxes = self._far_tuples
        for lane, px, py, b in zip(lanes.tolist(), x.tolist(), y.tolist(), best.tolist()):
            limit = b + 1e-6
            need = False
            for x0, x1, y0, y1, slack in boxes[lane]:
                dx = max(x0 - px, px - x1, 0.0)
                dy = max(y0 - py, py - y1, 0.0)
                if math.hypot(dx, dy) - slack <= limit:
                    need = True
                    break
            out.append(need)
        return np.array(out, dtype=bool)


def _near_lanes(t: LaneTable) -> np.ndarray:
    """(n, K) lane ids, −1 padded, sorted: lanes whose on-lane band touches each lane's band."""
    near: list[list[int]] = []
    for k in range(t.n):
        lo, hi = -VEHICLE_LENGTH - 3.0, t.length[k] + VEHICLE_LENGTH + 3.0
        n_s = int(min(_NEAR_MAX_SAMPLES, np.ceil((hi - lo) / _NEAR_STEP) + 1))
        half = t.width[k] / 2 + ON_LANE_MARGIN + _NEAR_SLACK
        s, r = np.meshgrid(np.linspace(lo, hi, n_s), np.linspace(-half, half, 9))
        s, r = s.ravel(), r.ravel()
        px, py = t.position(np.full(s.shape, k), s, r)
        found = {k}
        found.update(int(m) for m in t.successors[k])
        found.update(int(m) for m in t.predecessors[k])
        found.update(int(m) for m in (t.left[k], t.right[k]) if m >= 0)
        for m in range(t.n):
            if m in found:
                continue
            ids = np.full(px.shape, m)
            sm, rm = t.local_coordinates(ids, px, py)
            band = (np.abs(rm) <= t.width[m] / 2 + ON_LANE_MARGIN + _NEAR_SLACK) & (
                sm >= -VEHICLE_LENGTH - 3.0) & (sm <= t.length[m] + VEHICLE_LENGTH + 3.0)
            if np.count_nonzero(band):
                found.add(m)
        near.append(sorted(found))
    width = max(len(x) for x in near)
    out = np.full((t.n, width), -1, dtype=np.intp)
    for k, ids in enumerate(near):
        out[k, : len(ids)] = ids
    return out


def _lane_boxes(t: LaneTable) -> np.ndarray:
    """(n + 1, 5) per lane an axis-aligned box x0, x1, y0, y1 around its centre line and a slack
    such that distance(point, box) − slack ≤ `distance_with_heading` of the point on that lane
    (the point at the clamped s lies on the centre line, or for a SineLane within the amplitude
    of its chord); lanes of unknown shape get an infinite box, row n an empty one (padding)."""
    from diffplatoon.sim.lanes import CIRCULAR, OTHER, SINE  # lanes.py imports this module

    n = t.n
    box = np.empty((n + 1, 4))
    box[n] = (np.inf, -np.inf, np.inf, -np.inf)
    slack = np.zeros(n + 1)
    for k in range(n):
        if t.kind[k] == OTHER:
            box[k] = (-np.inf, np.inf, -np.inf, np.inf)
            continue
        if t.kind[k] == CIRCULAR:
            n_s = 512
            s = np.linspace(0.0, t.length[k], n_s)
            step = t.length[k] / (n_s - 1) / t.radius[k]
            pad = t.radius[k] * (1 - np.cos(step / 2)) + 1e-6  # sagitta between samples
        else:
            s = np.array([0.0, t.length[k]])
            pad = 1e-6
            slack[k] = abs(t.amplitude[k])
        ids = np.full(len(s), k)
        if t.kind[k] == SINE:  # the chord, not the curve
            px = t.start_x[k] + s * t.dir_x[k]
            py = t.start_y[k] + s * t.dir_y[k]
        else:
            px, py = t.position(ids, s, np.zeros(len(s)))
        box[k] = (px.min() - pad, px.max() + pad, py.min() - pad, py.max() + pad)
    return np.concatenate((box, slack[:, None]), axis=1)
