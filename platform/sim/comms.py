"""V2V communication: who hears whom (topology + range) and how messages travel (latency, drops, outages).

Only connected vehicles (platoon members) talk. They are numbered 0..M-1 ("comm ids"); the World maps
them to its own vehicle rows. Each belongs to a platoon ``p`` and has a member index ``k`` inside it
(0 = leader, then front to back).

Parts:
- ``topology_edges`` and ``CommGraph`` (in `comm_graph`, re-exported here): one platoon's directed links
  and the live link graph of all platoons, recomputed from positions, range and activity.
- ``Channel``: delivery of fixed-size messages with latency, independent drops and outages, read out
  as a fixed-size ``Inbox`` per receiver (newest message of each sender, zero-order hold).

Per simulation step the expected call order is::

    silenced = channel.silenced(step)
    graph.update(positions, active, silenced)
    channel.send(step, payload, graph.adjacency())
    inbox = channel.receive(step)

Silencing is checked at both ends: the sender at send time and the receiver at arrival time (the
graph also removes links to receivers silenced at send time).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The link graph lives in comm_graph; its names stay importable from here.
from diffplatoon.sim.comm_graph import TOPOLOGIES, CommGraph, PlatoonLinks, Topology, TopologyName, topology_edges

__all__ = ["MESSAGE_FIELDS", "DEFAULT_PLAN_DIM", "FIELD_INDEX", "message_dim", "pack_messages", "Inbox", "Channel",
           "CommGraph", "PlatoonLinks", "Topology", "TopologyName", "TOPOLOGIES", "topology_edges"]

MESSAGE_FIELDS: tuple[str, ...] = ("x", "y", "heading", "speed", "acceleration", "length")
"""Leading fields of every message, in this order; units m, m, rad, m/s, m/s², m."""

DEFAULT_PLAN_DIM = 8
"""Floats reserved after ``MESSAGE_FIELDS`` for a planner's intent (zero until a planner fills it)."""

FIELD_INDEX: dict[str, int] = {name: i for i, name in enumerate(MESSAGE_FIELDS)}


def message_dim(plan_dim: int = DEFAULT_PLAN_DIM) -> int:
    """Length D of one message vector: the named fields followed by ``plan_dim`` plan floats."""
    return len(MESSAGE_FIELDS) + plan_dim


def pack_messages(
    x: np.ndarray,
    y: np.ndarray,
    heading: np.ndarray,
    speed: np.ndarray,
    acceleration: np.ndarray,
    length: np.ndarray,
    plan: np.ndarray | None = None,
    plan_dim: int = DEFAULT_PLAN_DIM,
) -> np.ndarray:
    """Stack per-vehicle (M,) state arrays and an optional (M, plan_dim) plan into an (M, D) payload."""
    columns = (x, y, heading, speed, acceleration, length)
    m = np.shape(x)[0]
    if plan is not None:
        plan = np.asarray(plan, dtype=np.float64)
        if plan.shape != (m, plan_dim):
            raise ValueError(f"plan must have shape ({m}, {plan_dim}), got {plan.shape}")
    out = np.empty((m, len(columns) + plan_dim))  # filled column by column: no stack temporaries
    for k, column in enumerate(columns):
        out[:, k] = column
    out[:, len(columns):] = 0.0 if plan is None else plan
    return out


@dataclass(frozen=True, slots=True)
class Inbox:
    """What every receiver holds at one step; K slots per receiver, ordered by sender comm id.

    Attributes:
        data: (M, K, D) float32 message vectors, zero in empty slots.
        sender: (M, K) int64 comm id of the sender, -1 in empty slots.
        age: (M, K) int64 steps since the message was sent, 0 in empty slots.
        mask: (M, K) bool, True where a slot holds a message.
    """

    data: np.ndarray
    sender: np.ndarray
    age: np.ndarray
    mask: np.ndarray


class Channel:
    """Carries (M, D) message payloads between connected vehicles with latency, drops and outages.

    A message sent at step t arrives at step t + ``latency`` (0 = same step, so call ``send`` before
    ``receive``). Each (sender, receiver) message is dropped independently with ``drop_probability``;
    the drop draws are one (M, M) uniform array per ``send`` call, whatever the adjacency, so the
    random stream only depends on the number of steps. A receiver keeps the newest message of each
    sender until it is older than ``max_age`` steps. When more than ``inbox_size`` senders are held,
    the freshest ones fill the slots (ties: lower sender id). A silenced vehicle sends nothing, gets
    nothing delivered and holds an empty inbox; what it held before the outage is lost.
    """

    def __init__(
        self,
        num_vehicles: int,
        latency: int = 0,
        drop_probability: float = 0.0,
        *,
        inbox_size: int | None = None,
        max_age: int = 10,
        plan_dim: int = DEFAULT_PLAN_DIM,
        rng: np.random.Generator | None = None,
    ) -> None:
        if int(latency) != latency or latency < 0:
            raise ValueError(f"latency must be an integer >= 0 (steps), got {latency}")
        if not 0.0 <= drop_probability <= 1.0:
            raise ValueError(f"drop_probability must be in [0, 1], got {drop_probability}")
        if plan_dim < 0 or num_vehicles < 0:
            raise ValueError("num_vehicles and plan_dim must be >= 0")
        if max_age < latency:
            # Every message is at least `latency` steps old on arrival; a smaller budget expires them all.
            raise ValueError(f"max_age ({max_age}) must be >= latency ({latency})")
        self.num_vehicles = int(num_vehicles)
        self.latency = int(latency)
        self.drop_probability = float(drop_probability)
        self.max_age = int(max_age)
        self.plan_dim = int(plan_dim)
        self.message_dim = message_dim(self.plan_dim)
        self.inbox_size = max(1, self.num_vehicles - 1) if inbox_size is None else int(inbox_size)
        if self.inbox_size < 1:
            raise ValueError(f"inbox_size must be >= 1, got {inbox_size}")
        self.reset(rng)

    @classmethod
    def from_graph(cls, graph: CommGraph, **kwargs) -> Channel:
        """A channel for ``graph``'s vehicles; ``inbox_size`` defaults to the topology's max in-degree
        (all other vehicles when inter-platoon links are on)."""
        if kwargs.get("inbox_size") is None:
            m = graph.num_vehicles
            kwargs["inbox_size"] = max(1, m - 1 if graph.inter_platoon else graph.max_in_degree())
        return cls(graph.num_vehicles, **kwargs)

    def reset(self, rng: np.random.Generator | None) -> None:
        """Start a new episode: empty queues and inboxes, no outages, zero counters, this generator."""
        m, d, slots = self.num_vehicles, self.message_dim, self.latency + 1
        self._rng = rng
        # Ring of in-flight sends: slot = sent_step % (latency + 1). A payload is broadcast, so it is
        # stored once per sender; the (receiver, sender) mask says which copies survived.
        self._ring_payload = np.zeros((slots, m, d))  # (L+1, M, D)
        self._ring_links = np.zeros((slots, m, m), dtype=bool)  # (L+1, M, M) receiver, sender
        self._ring_step = [-1] * slots  # (L+1,) sent step, -1 = nothing pending
        # Newest delivered message per (receiver, sender).
        self._held = np.zeros((m, m, d))  # (M, M, D)
        self._held_step = np.full((m, m), -1, dtype=np.int64)  # (M, M) sent step, -1 = empty
        self._outages: list[tuple[np.ndarray, int | None, int]] = []
        self._off_diagonal = ~np.eye(m, dtype=bool)
        self.sent_count = 0  # messages put on the air (after silencing, before drops)
        self.dropped_count = 0

    # -- outages -----------------------------------------------------------------------------

    def silence(self, comm_ids: Sequence[int] | np.ndarray, until_step: int, from_step: int | None = None) -> None:
        """Silence ``comm_ids`` for steps in [from_step, until_step); they are back at ``until_step``.

        Without ``from_step`` the outage covers every step before ``until_step`` (i.e. starts now).
        """
        ids = np.asarray(comm_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_vehicles):
            raise ValueError(f"comm ids {ids.tolist()} out of range 0..{self.num_vehicles - 1}")
        who = np.zeros(self.num_vehicles, dtype=bool)
        who[ids] = True
        self._outages.append((who, from_step, int(until_step)))

    def silenced(self, step: int) -> np.ndarray:
        """(M,) bool, True for vehicles under an outage at ``step``."""
        mask = np.zeros(self.num_vehicles, dtype=bool)
        if not self._outages:
            return mask
        for who, start, until in self._outages:
            if (start is None or start <= step) and step < until:
                mask |= who
        return mask

    # -- messages ----------------------------------------------------------------------------

    def send(self, step: int, payload: np.ndarray, graph_adjacency: np.ndarray) -> None:
        """Queue each sender's (D,) payload row for every receiver that hears it (A[i, j]: i hears j)."""
        if self._rng is None:
            raise RuntimeError("Channel has no random generator; call reset(rng) first")
        m, d = self.num_vehicles, self.message_dim
        payload = np.asarray(payload, dtype=np.float64)
        graph_adjacency = np.asarray(graph_adjacency, dtype=bool)
        if payload.shape != (m, d) or graph_adjacency.shape != (m, m):
            raise ValueError(
                f"expected payload ({m}, {d}) and adjacency ({m}, {m}), got {payload.shape}, {graph_adjacency.shape}"
            )
        # Whatever is still queued from older steps has arrived by now; deliver it before its slot is reused.
        self._deliver(step - 1)
        uniform = self._rng.random((m, m))  # drawn every step, in (receiver, sender) order
        links = graph_adjacency & self._off_diagonal
        if self._outages:
            links &= ~self.silenced(step)[None, :]
        survived = links & (uniform >= self.drop_probability)
        n_links = np.count_nonzero(links)
        self.sent_count += n_links
        self.dropped_count += n_links - np.count_nonzero(survived)

        slot = step % (self.latency + 1)
        self._ring_payload[slot] = payload
        self._ring_links[slot] = survived
        self._ring_step[slot] = int(step)

    def receive(self, step: int) -> Inbox:
        """Deliver what has arrived by ``step`` and return every receiver's inbox."""
        self._deliver(step)
        m, k, d = self.num_vehicles, self.inbox_size, self.message_dim
        if self._outages:
            self._held_step[self.silenced(step)] = -1
        age = step - self._held_step  # (M, M)
        self._held_step[age > self.max_age] = -1
        valid = self._held_step >= 0  # (M, M) receiver, sender

        data = np.zeros((m, k, d), dtype=np.float32)
        sender = np.empty((m, k), dtype=np.int64)  # np.full's Python wrapper costs more than the fill
        sender.fill(-1)
        ages = np.zeros((m, k), dtype=np.int64)
        full_mask = np.zeros((m, k), dtype=bool)
        receivers, senders = valid.nonzero()  # row-major: by receiver, then sender id
        slot = valid.cumsum(axis=1)[receivers, senders] - 1
        if len(slot) == 0 or slot.max() < k:
            # Every receiver holds at most K messages: all of them, by sender id (the rule
            # below reduces to this).
            data[receivers, slot] = self._held[receivers, senders]
            sender[receivers, slot] = senders
            ages[receivers, slot] = age[receivers, senders]
            full_mask[receivers, slot] = True
            return Inbox(data=data, sender=sender, age=ages, mask=full_mask)

        # Pick up to K senders per receiver: freshest first (ties by sender id), then order by sender id.
        senders = np.arange(m)
        rank = np.where(valid, age * m + senders[None, :], np.iinfo(np.int64).max)  # (M, M)
        kk = min(k, m)
        chosen = np.argsort(rank, axis=1, kind="stable")[:, :kk]  # (M, kk)
        chosen_valid = np.take_along_axis(valid, chosen, axis=1)
        chosen = np.sort(np.where(chosen_valid, chosen, m + chosen), axis=1)  # invalid ones sort last
        mask = chosen < m
        sender_idx = np.where(mask, chosen, 0)
        rows = np.arange(m)[:, None]

        data[:, :kk] = np.where(mask[..., None], self._held[rows, sender_idx], 0.0)
        sender[:, :kk] = np.where(mask, sender_idx, -1)
        ages[:, :kk] = np.where(mask, age[rows, sender_idx], 0)
        full_mask[:, :kk] = mask
        return Inbox(data=data, sender=sender, age=ages, mask=full_mask)

    def _deliver(self, step: int) -> None:
        """Move every queued send that has arrived by ``step`` into the receivers' held messages."""
        due = [(sent, slot) for slot, sent in enumerate(self._ring_step) if sent >= 0 and sent + self.latency <= step]
        if len(due) > 1:
            due.sort()
        for sent, slot in due:
            arrived = self._ring_links[slot] & (sent > self._held_step)  # (M, M)
            if self._outages:
                arrived &= ~self.silenced(sent + self.latency)[:, None]
            receivers, senders = arrived.nonzero()
            self._held[receivers, senders] = self._ring_payload[slot][senders]
            self._held_step[receivers, senders] = sent
            self._ring_step[slot] = -1
