"""Which lanes complete a platoon member's merge: the one rule the evaluation's merge success
(`diffplatoon.evaluation.episode`) and the environments' merge bonus (`diffplatoon.envs.rewards`)
share.

- A member of a routed platoon (a `destination` or a `route`) whose route ends on another road
  than it starts on must reach its route's last road: every lane of that road counts.
- A member of an unrouted platoon whose leader starts on a lane that ends (a dropped lane: its
  road continues onto a lane of another position that a neighbour lane also continues onto) must
  leave that lane and the lanes leading to it: every other lane counts.
- Every other member has no merge task.

`MergeTargets.of(sim)` reads the routes the members were spawned with and the leaders' lanes, so
it must be built at the start of an episode (a member that leaves the road frees its World row,
which traffic may reuse with a route of its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffplatoon.sim.lanes import LaneTable
    from diffplatoon.sim.simulation import Simulation


@dataclass(frozen=True)
class MergeTargets:
    """Target lanes of the M members of one episode (module docstring)."""

    target: np.ndarray  # (M, lanes + 1) bool: lane ids that count for each member; the last column (lane −1) is False
    mergers: np.ndarray  # (M,) bool: members with a merge task

    @classmethod
    def of(cls, sim: Simulation) -> MergeTargets:
        """The targets of `sim`'s members, from their routes and lanes now (call at the episode's start)."""
        w, tab = sim.world, sim.world.table
        rows = sim.controlled
        target = np.zeros((len(rows), tab.n + 1), dtype=bool)
        mergers = np.zeros(len(rows), dtype=bool)
        first = 0
        for platoon in sim.spec.platoons:
            cols = slice(first, first + platoon.size)
            lead = rows[first]
            first += platoon.size
            if platoon.destination is not None or platoon.route is not None:
                n = int(w.route_len[lead])
                if n == 0 or tab.road[w.route[lead, n - 1]] == tab.road[w.route[lead, 0]]:
                    continue
                lanes = np.flatnonzero(tab.road == tab.road[w.route[lead, n - 1]])
            else:
                dropped = dropped_chain(tab, int(w.lane[lead]))
                if not dropped:
                    continue
                lanes = np.setdiff1d(np.arange(tab.n), dropped)
            target[cols, lanes] = True
            mergers[cols] = True
        return cls(target, mergers)

    def reached(self, lanes: np.ndarray) -> np.ndarray:
        """(..., M) bool: whether each member's lane in `lanes` (..., M) is one of its targets
        (negative lane ids, as −1 absent or −2 crashed in traces, are none)."""
        lanes = np.asarray(lanes, dtype=np.intp)
        return self.target[np.arange(self.target.shape[0]), np.where(lanes < 0, -1, lanes)]


def dropped_chain(tab: LaneTable, lane: int) -> list[int]:
    """The lanes from `lane` along `follow_next` up to the first that ends beside a continuing lane
    (empty if none does)."""
    chain: list[int] = []
    while lane >= 0 and lane not in chain:
        chain.append(lane)
        nxt = int(tab.follow_next[lane])
        if nxt < 0:
            return []
        same_road = np.flatnonzero(tab.road == tab.road[lane])
        shared = np.count_nonzero(tab.follow_next[same_road] == nxt) > 1
        if shared and tab.lane_pos[nxt] != tab.lane_pos[lane]:
            return chain
        lane = nxt
    return []


__all__ = ["MergeTargets", "dropped_chain"]
