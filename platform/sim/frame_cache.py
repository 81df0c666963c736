"""Per-frame values derived from the vehicles' poses, held in one object that is replaced, not patched.

Owns `FrameCache`: cos/sin of the headings, the projections of every row on the `near`
candidate lanes of its lane (the lane memberships), and the neighbour index built from them.
Each is computed on first use. The World makes a new cache at the end of each frame (handing
it the projections that lane re-assignment computed anyway) and whenever rows or poses change
outside a frame (spawn, despawn, `set_pose`), so no cached value can outlive the state it was
computed from.
"""

from __future__ import annotations

import numpy as np

from diffplatoon.sim import kinematics
from diffplatoon.sim.kinematics import Candidates
from diffplatoon.sim.neighbours import ConnectedLanes, membership_index
from diffplatoon.sim.traffic import NeighbourIndex
from diffplatoon.sim.vehicles import Vehicles


class FrameCache:
    """cos/sin of headings, candidate-lane projections and neighbour index of rows [:hi]."""

    __slots__ = ("hi", "_vehicles", "_base", "_connected", "_cos", "_sin", "_candidates", "_index")

    def __init__(self, vehicles: Vehicles, lane_key_base: np.ndarray, connected: ConnectedLanes | None,
                 candidates: Candidates | None = None):
        self.hi = vehicles.hi
        self._vehicles = vehicles
        self._base = lane_key_base
        self._connected = connected
        self._cos: np.ndarray | None = None
        self._sin: np.ndarray | None = None
        self._candidates = candidates
        self._index: NeighbourIndex | None = None

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
            self._candidates = kinematics.relocate(self._vehicles, np.arange(self.hi), update_lane=False)
        return self._candidates

    @property
    def index(self) -> NeighbourIndex:
        """Lane memberships of all live vehicles."""
        if self._index is None:
            veh = self._vehicles
            merging = None
            if np.count_nonzero(veh.is_merging[: self.hi]):  # zipper merges under way (rare)
                rows = (veh.is_merging[: self.hi] & veh.active[: self.hi]).nonzero()[0]
                if len(rows):
                    tgt = veh.target_lane[rows]
                    merging = (rows, tgt, veh.table.longitudinal(tgt, veh.x[rows], veh.y[rows]))
            self._index = membership_index(veh.table, self.candidates, veh.active[: self.hi],
                                           self._base, self._connected, merging)
        return self._index
