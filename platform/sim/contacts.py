"""Collision detection of the World: a broad phase over live rows, geometry.py's exact test, flags.

Owns `Contacts`: which pairs touched in the last frame (so a collision is recorded once, when
the overlap begins), the sweep axis of the broad phase (the road network's longer extent) and
`detect`, which flags both vehicles of each overlapping pair `crashed` and returns the pairs
whose overlap began this frame.
"""

from __future__ import annotations

import numpy as np

from diffplatoon import geometry
from diffplatoon.sim.lanes import LaneTable
from diffplatoon.sim.vehicles import Vehicles


_NO_PAIRS = np.empty((0, 2), dtype=np.intp)


class Contacts:
    """Collision broad phase and onset tracking for one World's vehicles."""

    def __init__(self, veh: Vehicles, table: LaneTable):
        self.veh = veh
        self._touching = np.empty(0, dtype=np.int64)  # pair codes overlapping in the last frame
        box = table.search.box[: table.n][np.isfinite(table.search.box[: table.n, :4]).all(axis=1)]
        # The broad phase sweeps along the road network's longer extent.
        self._sweep_x = len(box) == 0 or np.ptp(box[:, :2]) >= np.ptp(box[:, 2:4])

    def detect(self, cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(all pairs overlapping now, those whose overlap began this frame), each (P, 2) rows;
        flags every overlapping row `crashed`. `cos`, `sin`: of the rows' headings."""
        veh = self.veh
        hi = veh.hi
        near = self._candidates(hi, cos, sin)
        if near is None:
            self._touching = np.empty(0, dtype=np.int64)
            return _NO_PAIRS, _NO_PAIRS
        pairs = geometry.overlapping_pairs(veh.x[:hi], veh.y[:hi], veh.heading[:hi],
                                           veh.length[:hi], veh.width[:hi], near)
        if len(pairs) == 0:
            self._touching = np.empty(0, dtype=np.int64)
            return pairs, pairs
        codes = pairs[:, 0].astype(np.int64) * veh.capacity + pairs[:, 1]
        onset = ~np.isin(codes, self._touching)
        self._touching = codes
        veh.crashed[pairs.ravel()] = True
        return pairs, pairs[onset]

    def _candidates(self, hi: int, cos: np.ndarray, sin: np.ndarray) -> np.ndarray | None:
        """Mask of rows that may overlap another row, or None (the common case).

        A cheap necessary test so that the exact test of geometry.py runs only when two
        vehicles are close: pairs within reach along the sweep axis (sort and window), then box
        i against the bounding circle of box j in i's own frame, which separates vehicles
        driving side by side in adjacent lanes.
        """
        veh = self.veh
        rows = veh.active[:hi].nonzero()[0]
        m = len(rows)
        if m < 2:
            return None
        xs, ys = veh.x[rows], veh.y[rows]
        rad = veh.body_radius[rows]
        # Any axis gives a superset of the overlapping rows; the road's longer one prunes most.
        along = xs if self._sweep_x else ys
        order = along.argsort()
        a_sorted = along[order]
        end = a_sorted.searchsorted(a_sorted + 2 * np.maximum.reduce(rad), side="right")
        first = np.arange(m)
        w = int(np.maximum.reduce(end - first)) - 1
        if w <= 0:
            return None
        if w == 1:  # the usual case: each row's one later neighbour in sweep order, by slicing
            return self._adjacent_pairs(hi, rows, order, a_sorted, xs, ys, rad, end, first, cos, sin)
        half_l, half_w = veh.half_length[rows], veh.half_width[rows]
        j = first[:, None] + np.arange(1, w + 1)[None, :]  # (m, w) later neighbours in order
        oj = order[np.minimum(j, m - 1)]
        oi = order[:, None]
        ro = rows[order]
        c, s = cos[ro][:, None], sin[ro][:, None]
        dx, dy = xs[oj] - xs[oi], ys[oj] - ys[oi]
        hit = (j < end[:, None]) & (np.abs(dx * c + dy * s) <= half_l[oi] + rad[oj]) & (
            np.abs(dy * c - dx * s) <= half_w[oi] + rad[oj])
        if not np.count_nonzero(hit):
            return None
        ii, jj = hit.nonzero()
        mask = np.zeros(hi, dtype=bool)
        mask[rows[oi[ii, 0]]] = True
        mask[rows[oj[ii, jj]]] = True
        return mask

    def _adjacent_pairs(self, hi: int, rows: np.ndarray, order: np.ndarray, a_sorted: np.ndarray, xs: np.ndarray,
                        ys: np.ndarray, rad: np.ndarray, end: np.ndarray, first: np.ndarray, cos: np.ndarray,
                        sin: np.ndarray) -> np.ndarray | None:
        """`_candidates`' test for a window of one: pairs (k, k + 1) of the rows in sweep order."""
        veh = self.veh
        ro = rows[order]
        xo = a_sorted if self._sweep_x else xs[order]
        yo = ys[order] if self._sweep_x else a_sorted
        c, s = cos[ro][:-1], sin[ro][:-1]
        dx, dy = xo[1:] - xo[:-1], yo[1:] - yo[:-1]
        rad_j = rad[order][1:]
        hit = (first[1:] < end[:-1]) & (np.abs(dx * c + dy * s) <= veh.half_length[ro][:-1] + rad_j) & (
            np.abs(dy * c - dx * s) <= veh.half_width[ro][:-1] + rad_j)
        if not np.count_nonzero(hit):
            return None
        k = hit.nonzero()[0]
        mask = np.zeros(hi, dtype=bool)
        mask[ro[k]] = True
        mask[ro[k + 1]] = True
        return mask
