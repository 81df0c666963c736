"""Per-frame values derived from the vehicles' poses, held in one object that is rebuilt, not patched.

Owns `FrameCache`: cos/sin of the headings, the projections of every row on the `near`
candidate lanes of its lane (the lane memberships), and the neighbour index built from them.
The World makes a new one at the end of each frame (from the projections that lane
re-assignment computed anyway) and drops it whenever rows or poses change outside a frame
(spawn, despawn, `set_pose`); a dropped cache is rebuilt from the arrays when next needed, so
no cached value can outlive the state it was computed from.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from diffplatoon.sim.traffic import NeighbourIndex

# (candidate lanes (−1 = padding), s, r), each (hi, K): every row projected on its `near` lanes.
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


class FrameCache:
    """cos/sin of headings, candidate-lane projections and neighbour index of rows [:hi]."""

    __slots__ = ("hi", "cos", "sin", "candidates", "_index", "_build_index")

    def __init__(self, hi: int, heading: np.ndarray, candidates: Candidates,
                 build_index: Callable[[Candidates], NeighbourIndex]):
        self.hi = hi
        self.cos = np.cos(heading[:hi])
        self.sin = np.sin(heading[:hi])
        self.candidates = candidates
        self._index: NeighbourIndex | None = None
        self._build_index = build_index

    @property
    def index(self) -> NeighbourIndex:
        """Lane memberships of all live vehicles, built on first use."""
        if self._index is None:
            self._index = self._build_index(self.candidates)
        return self._index
