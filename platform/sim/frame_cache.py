"""Per-frame values derived from the vehicles' poses, held in one object that is replaced, not patched.

Owns `FrameCache`: cos/sin of the headings, the projections of every row on the `near`
candidate lanes of its lane (the lane memberships), and the neighbour index built from them.
Each is computed on first use. The World makes a new cache at the end of each frame (handing
it the projections that lane re-assignment computed anyway) and whenever rows or poses change
outside a frame (spawn, despawn, `set_pose`), so no cached value can outlive the state it was
computed from.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from diffplatoon.sim.traffic import NeighbourIndex
from diffplatoon.sim.vehicles import Vehicles

# (candidate lanes (−1 = padding), s, r), each (hi, K): every row projected on its `near` lanes.
Candidates = tuple[np.ndarray, np.ndarray, np.ndarray]


class FrameCache:
    """cos/sin of headings, candidate-lane projections and neighbour index of rows [:hi]."""

    __slots__ = ("hi", "_vehicles", "_cos", "_sin", "_candidates", "_index", "_project", "_build_index")

    def __init__(self, vehicles: Vehicles, project: Callable[[], Candidates],
                 build_index: Callable[[Candidates], NeighbourIndex],
                 candidates: Candidates | None = None):
        self.hi = vehicles.hi
        self._vehicles = vehicles
        self._cos: np.ndarray | None = None
        self._sin: np.ndarray | None = None
        self._candidates = candidates
        self._index: NeighbourIndex | None = None
        self._project = project
        self._build_index = build_index

    def trig(self) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin) of the headings of rows [:hi]."""
        if self._cos is None:
            heading = self._vehicles.heading[: self.hi]
            self._cos = np.cos(heading)
            self._sin = np.sin(heading)
        return self._cos, self._sin

    @property
    def candidates(self) -> Candidates:
        """Every row [:hi] projected on the `near` lanes of its lane."""
        if self._candidates is None:
            self._candidates = self._project()
        return self._candidates

    @property
    def index(self) -> NeighbourIndex:
        """Lane memberships of all live vehicles."""
        if self._index is None:
            self._index = self._build_index(self.candidates)
        return self._index
