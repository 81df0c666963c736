"""V2V link graph: which connected vehicle hears which (platoon topologies, radio range, activity).

Connected vehicles are numbered 0..M-1 ("comm ids"); each belongs to a platoon with members in order
(0 = leader, then front to back). ``topology_edges`` gives one platoon's directed links, ``CommGraph``
the live graph of all platoons, recomputed from positions, range, activity and silencing. Message
delivery over those links (latency, drops, outages) is `diffplatoon.sim.comms.Channel`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import networkx as nx
import numpy as np

TopologyName = Literal[
    "predecessor_follower", "leader_follower", "predecessor_leader", "bidirectional", "all_to_all"
]
Topology = TopologyName | Sequence[Sequence[int]]

TOPOLOGIES: tuple[str, ...] = (
    "predecessor_follower",
    "leader_follower",
    "predecessor_leader",
    "bidirectional",
    "all_to_all",
)


def topology_edges(topology: Topology, size: int) -> list[tuple[int, int]]:
    """Directed (sender_member, receiver_member) links of one platoon of ``size`` members.

    Member 0 is the leader, then front to back. Edges come back sorted and without duplicates.

    =======================  ===========================================================
    topology                 edges (sender → receiver)
    =======================  ===========================================================
    ``predecessor_follower``  k-1 → k for k = 1..size-1
    ``leader_follower``       0 → k for k = 1..size-1
    ``predecessor_leader``    union of the two above (the usual CACC setup)
    ``bidirectional``         k-1 → k and k → k-1 for k = 1..size-1
    ``all_to_all``            i → j for every ordered pair i ≠ j
    list of ``[i, j]``        exactly those pairs (0 ≤ i, j < size, i ≠ j)
    =======================  ===========================================================
    """
    if size < 0:
        raise ValueError(f"platoon size must be >= 0, got {size}")
    if isinstance(topology, str):
        followers = range(1, size)
        if topology == "predecessor_follower":
            edges = {(k - 1, k) for k in followers}
        elif topology == "leader_follower":
            edges = {(0, k) for k in followers}
        elif topology == "predecessor_leader":
            edges = {(k - 1, k) for k in followers} | {(0, k) for k in followers}
        elif topology == "bidirectional":
            edges = {(k - 1, k) for k in followers} | {(k, k - 1) for k in followers}
        elif topology == "all_to_all":
            edges = {(i, j) for i in range(size) for j in range(size) if i != j}
        else:
            raise ValueError(f"unknown topology {topology!r}; expected one of {TOPOLOGIES} or a list of [i, j] pairs")
        return sorted(edges)

    edges = set()
    for pair in topology:
        try:
            i, j = (int(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"explicit edge {pair!r} is not a pair of integers") from None
        if not (0 <= i < size and 0 <= j < size):
            raise ValueError(f"explicit edge {[i, j]} is out of range for a platoon of {size} members")
        if i == j:
            raise ValueError(f"explicit edge {[i, j]} is a self-loop")
        edges.add((i, j))
    return sorted(edges)


class PlatoonLinks(NamedTuple):
    """One platoon for ``CommGraph``: comm ids of its members in order (leader first) and its topology."""

    members: Sequence[int]
    topology: Topology


class CommGraph:
    """Who hears whom among the M connected vehicles.

    Edge j → i in ``graph`` (and ``adjacency()[i, j]``) means i hears j. A topology link is live when
    both ends are active and not silenced and they are at most ``range_m`` apart. With
    ``inter_platoon`` any two vehicles of different platoons within range also hear each other.
    Before the first ``update`` every topology link is live.
    """

    def __init__(
        self,
        platoons: Sequence[PlatoonLinks | tuple[Sequence[int], Topology]],
        range_m: float = float("inf"),
        inter_platoon: bool = False,
    ) -> None:
        if range_m < 0:
            raise ValueError(f"range_m must be >= 0, got {range_m}")
        self.range_m = float(range_m)
        self.inter_platoon = bool(inter_platoon)

        ids = [int(c) for members, _ in platoons for c in members]
        m = len(ids)
        if sorted(ids) != list(range(m)):
            raise ValueError(f"platoon members must use each comm id 0..{m - 1} exactly once, got {sorted(ids)}")
        self.num_vehicles = m
        self.platoon_members: list[np.ndarray] = [np.asarray(members, dtype=np.int64) for members, _ in platoons]
        self.platoon_of = np.empty(m, dtype=np.int64)  # (M,)
        self.member_of = np.empty(m, dtype=np.int64)  # (M,)

        self._topology = np.zeros((m, m), dtype=bool)  # (M, M) receiver i hears sender j
        for p, (members, topology) in enumerate(platoons):
            members = self.platoon_members[p]
            self.platoon_of[members] = p
            self.member_of[members] = np.arange(len(members))
            for s, r in topology_edges(topology, len(members)):
                self._topology[members[r], members[s]] = True
        self._foreign = self.platoon_of[:, None] != self.platoon_of[None, :]  # (M, M)
        self._candidates = self._topology | self._foreign if self.inter_platoon else self._topology
        self._off_diagonal = ~np.eye(m, dtype=bool)

        self._graph = nx.DiGraph()
        self._graph.add_nodes_from(
            (c, {"platoon": int(self.platoon_of[c]), "member": int(self.member_of[c])}) for c in range(m)
        )
        self._topology_graph = self._graph.copy()
        self._topology_graph.add_edges_from(_edges_of(self._topology))
        self._adjacency = np.zeros((m, m), dtype=bool)
        self.reset()

    def reset(self) -> None:
        """Back to the initial state: every topology link live."""
        self._set_adjacency(self._topology.copy())

    def update(self, positions: np.ndarray, active: np.ndarray, silenced: np.ndarray) -> bool:
        """Recompute live links from (M, 2) positions and (M,) masks; return True if the edge set changed."""
        m = self.num_vehicles
        positions = np.asarray(positions, dtype=np.float64)
        active = np.asarray(active, dtype=bool)
        silenced = np.asarray(silenced, dtype=bool)
        if positions.shape != (m, 2) or active.shape != (m,) or silenced.shape != (m,):
            raise ValueError(
                f"expected positions ({m}, 2), active ({m},), silenced ({m},); "
                f"got {positions.shape}, {active.shape}, {silenced.shape}"
            )
        px, py = positions[:, 0], positions[:, 1]
        dx, dy = px[:, None] - px[None, :], py[:, None] - py[None, :]  # (M, M)
        in_range = dx * dx + dy * dy <= self.range_m**2  # (M, M)
        up = active & ~silenced  # (M,)
        live = self._candidates & in_range & up[:, None] & up[None, :]
        live &= self._off_diagonal
        if not np.count_nonzero(live != self._adjacency):
            return False
        self._set_adjacency(live)
        return True

    @property
    def graph(self) -> nx.DiGraph:
        """The live links; edge j → i means i hears j. Nodes carry ``platoon`` and ``member``."""
        return self._graph

    @property
    def topology_graph(self) -> nx.DiGraph:
        """All topology links regardless of range and activity (no inter-platoon links)."""
        return self._topology_graph

    def adjacency(self) -> np.ndarray:
        """(M, M) bool, A[i, j] = i hears j (a copy)."""
        return self._adjacency.copy()

    def topology_adjacency(self) -> np.ndarray:
        """(M, M) bool of the topology links alone, A[i, j] = i is meant to hear j (a copy)."""
        return self._topology.copy()

    def platoon_mask(self, platoon: int) -> np.ndarray:
        """(n, n) bool of live links inside one platoon in member order; the diagonal is True."""
        members = self.platoon_members[platoon]
        mask = self._adjacency[np.ix_(members, members)]
        np.fill_diagonal(mask, True)
        return mask

    def max_in_degree(self) -> int:
        """Largest number of topology senders any vehicle is meant to hear."""
        return int(self._topology.sum(axis=1).max(initial=0))

    def _set_adjacency(self, adjacency: np.ndarray) -> None:
        self._adjacency = adjacency
        self._graph.clear_edges()
        self._graph.add_edges_from(_edges_of(adjacency))


def _edges_of(adjacency: np.ndarray) -> list[tuple[int, int]]:
    """Directed (sender, receiver) edges of an A[receiver, sender] matrix."""
    receivers, senders = np.nonzero(adjacency)
    return list(zip(senders.tolist(), receivers.tolist()))
