"""Road-level topology of a `LaneTable` for traffic routes: next roads, exits, junctions.

Owns `RoadGraph` (`LaneTable.road_graph`), built once per network. Roads are the table's road
ids (`LaneTable.roads`, `LaneTable.road`):

- `next[r]`: roads reachable from road r (U-turns excluded, as for `LaneTable.successors`);
- `length[r]`: length of road r's first lane;
- `exits`: roads with no successor; `has_junctions`: some road leads to more than one road;
- `exit_paths(r)`: shortest road sequences (by length) from r to every exit reachable from it;
- `exit_lane[r, m]`: the lane position to drive on along road r before road m where m has
  another lane count (the outer ring lane before a roundabout exit), −1 elsewhere
  (highway-env keeps the lane number between roads with equal lane counts).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from diffplatoon.sim.lanes import LaneTable


class RoadGraph:
    """Next roads, exits and exit paths of one `LaneTable` (module docstring)."""

    def __init__(self, table: LaneTable):
        t = table
        n_roads = len(t.roads)
        nxt: list[set[int]] = [set() for _ in range(n_roads)]
        for k in range(t.n):
            nxt[t.road[k]].update(int(t.road[m]) for m in t.successors[k])
        self.next = [sorted(s) for s in nxt]
        self.length = t.length[t.road_first]
        self.exits = [r for r in range(n_roads) if not nxt[r]]
        self.has_junctions = any(len(s) > 1 for s in nxt)
        self._exit_paths: dict[int, list[list[int]]] = {}
        self.exit_lane = self._exit_lanes(t)

    def exit_paths(self, road: int) -> list[list[int]]:
        """Shortest road sequences (by length) from `road` to every exit road reachable from it,
        `road` first, ordered by exit road id."""
        if road not in self._exit_paths:
            dist, prev, todo = {road: 0.0}, {road: -1}, [(0.0, road)]
            while todo:
                d, r = heapq.heappop(todo)
                if d > dist[r]:
                    continue
                for m in self.next[r]:
                    dm = d + float(self.length[m])
                    if dm < dist.get(m, np.inf):
                        dist[m], prev[m] = dm, r
                        heapq.heappush(todo, (dm, m))
            paths = []
            for e in self.exits:
                if e in prev:
                    path = [e]
                    while prev[path[-1]] >= 0:
                        path.append(prev[path[-1]])
                    paths.append(path[::-1])
            self._exit_paths[road] = paths
        return self._exit_paths[road]

    def _exit_lanes(self, t: LaneTable) -> np.ndarray:
        """(roads, roads) `exit_lane`: the lane of road r ending nearest m's first lane."""
        n_roads = len(t.roads)
        out = np.full((n_roads, n_roads), -1, dtype=np.intp)
        for r in range(n_roads):
            first = t.road_first[r]
            lanes = np.arange(first, first + t.road_size[first])
            xe, ye = t.position(lanes, t.length[lanes], np.zeros(len(lanes)))
            for m in self.next[r]:
                nxt = t.road_first[m]
                if t.road_size[nxt] != len(lanes):
                    x0, y0 = t.position(np.array([nxt]), np.zeros(1), np.zeros(1))
                    out[r, m] = int(np.argmin(np.hypot(xe - x0[0], ye - y0[0])))
        return out
