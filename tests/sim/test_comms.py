"""V2V layer: topology edges, range/activity-driven link graph, latency, drops, outages, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffplatoon.sim import comms
from diffplatoon.sim.comms import MESSAGE_FIELDS, Channel, CommGraph, PlatoonLinks, topology_edges

X = MESSAGE_FIELDS.index("x")


def full_adjacency(m: int) -> np.ndarray:
    return ~np.eye(m, dtype=bool)


def step_payload(channel: Channel, step: int) -> np.ndarray:
    """Payload whose x field encodes the send step and whose y field encodes the sender id."""
    payload = np.zeros((channel.num_vehicles, channel.message_dim))
    payload[:, X] = step
    payload[:, MESSAGE_FIELDS.index("y")] = np.arange(channel.num_vehicles)
    return payload


# -- topology ---------------------------------------------------------------------------------

EXPECTED_EDGES = {
    ("predecessor_follower", 1): [],
    ("predecessor_follower", 2): [(0, 1)],
    ("predecessor_follower", 4): [(0, 1), (1, 2), (2, 3)],
    ("leader_follower", 1): [],
    ("leader_follower", 2): [(0, 1)],
    ("leader_follower", 4): [(0, 1), (0, 2), (0, 3)],
    ("predecessor_leader", 1): [],
    ("predecessor_leader", 2): [(0, 1)],
    ("predecessor_leader", 4): [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)],
    ("bidirectional", 1): [],
    ("bidirectional", 2): [(0, 1), (1, 0)],
    ("bidirectional", 4): [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)],
    ("all_to_all", 1): [],
    ("all_to_all", 2): [(0, 1), (1, 0)],
    ("all_to_all", 4): [(i, j) for i in range(4) for j in range(4) if i != j],
}


@pytest.mark.parametrize(("topology", "size"), sorted(EXPECTED_EDGES))
def test_topology_edges_match_definition(topology: str, size: int) -> None:
    assert topology_edges(topology, size) == EXPECTED_EDGES[(topology, size)]


def test_explicit_edges_are_kept_and_validated() -> None:
    assert topology_edges([[2, 0], [0, 1], [2, 0]], 3) == [(0, 1), (2, 0)]
    with pytest.raises(ValueError, match=r"\[1, 3\]"):
        topology_edges([[0, 1], [1, 3]], 3)
    with pytest.raises(ValueError, match=r"\[-1, 0\]"):
        topology_edges([[-1, 0]], 3)
    with pytest.raises(ValueError, match="self-loop"):
        topology_edges([[1, 1]], 3)
    with pytest.raises(ValueError, match="pair"):
        topology_edges([[0, 1, 2]], 3)
    with pytest.raises(ValueError, match="unknown topology"):
        topology_edges("ring", 3)


def test_graph_maps_members_to_comm_ids_and_validates_ids() -> None:
    graph = CommGraph([PlatoonLinks([3, 0, 4], "predecessor_follower"), ([1, 2], [[1, 0]])])
    assert sorted(graph.graph.edges) == [(0, 4), (2, 1), (3, 0)]
    assert graph.graph.nodes[4] == {"platoon": 0, "member": 2}
    assert graph.graph.nodes[2] == {"platoon": 1, "member": 1}
    adjacency = graph.adjacency()
    assert adjacency[0, 3] and adjacency[4, 0] and adjacency[1, 2] and adjacency.sum() == 3
    assert graph.max_in_degree() == 1
    with pytest.raises(ValueError, match="exactly once"):
        CommGraph([([0, 1], "all_to_all"), ([1, 2], "all_to_all")])
    with pytest.raises(ValueError, match="exactly once"):
        CommGraph([([0, 2], "all_to_all")])


# -- link graph: range, activity, inter-platoon -------------------------------------------------


def test_range_cutoff_removes_and_restores_edges() -> None:
    graph = CommGraph([([0, 1, 2], "predecessor_leader")], range_m=30.0)
    on, quiet = np.ones(3, dtype=bool), np.zeros(3, dtype=bool)
    close = np.array([[40.0, 0.0], [30.0, 0.0], [20.0, 0.0]])
    assert graph.update(close, on, quiet) is False  # all topology links were already live
    assert sorted(graph.graph.edges) == [(0, 1), (0, 2), (1, 2)]

    # Member 2 drops back: 10 m behind 1 still in range; 30.5 m behind the leader is not.
    apart = close.copy()
    apart[2] = [9.5, 0.0]
    assert graph.update(apart, on, quiet) is True
    assert sorted(graph.graph.edges) == [(0, 1), (1, 2)]
    np.testing.assert_array_equal(graph.platoon_mask(0), [[1, 0, 0], [1, 1, 0], [0, 1, 1]])
    assert graph.update(apart, on, quiet) is False

    exactly_at_range = close.copy()
    exactly_at_range[2] = [10.0, 0.0]
    graph.update(exactly_at_range, on, quiet)
    assert sorted(graph.graph.edges) == [(0, 1), (0, 2), (1, 2)]

    far = close.copy()
    far[2] = [-100.0, 0.0]
    graph.update(far, on, quiet)
    assert sorted(graph.graph.edges) == [(0, 1)]
    assert graph.update(close, on, quiet) is True
    assert sorted(graph.graph.edges) == [(0, 1), (0, 2), (1, 2)]
    np.testing.assert_array_equal(graph.platoon_mask(0), [[1, 0, 0], [1, 1, 0], [1, 1, 1]])


def test_inactive_or_silenced_vehicles_lose_all_links() -> None:
    graph = CommGraph([([0, 1, 2], "bidirectional")], range_m=100.0)
    positions = np.array([[0.0, 0.0], [-10.0, 0.0], [-20.0, 0.0]])
    graph.update(positions, np.array([True, False, True]), np.zeros(3, dtype=bool))
    assert list(graph.graph.edges) == []
    graph.update(positions, np.ones(3, dtype=bool), np.array([False, False, True]))
    assert sorted(graph.graph.edges) == [(0, 1), (1, 0)]


@pytest.mark.parametrize("inter_platoon", [False, True])
def test_inter_platoon_links_only_when_enabled_and_in_range(inter_platoon: bool) -> None:
    graph = CommGraph(
        [([0, 1], "predecessor_follower"), ([2, 3], "predecessor_follower")], range_m=25.0, inter_platoon=inter_platoon
    )
    # Platoon 1 drives beside platoon 0: 2 is 5 m from 0; 3 is 4 m lateral from 1 and 30 m from 0.
    positions = np.array([[30.0, 0.0], [10.0, 0.0], [30.0, 5.0], [10.0, 4.0]])
    graph.update(positions, np.ones(4, dtype=bool), np.zeros(4, dtype=bool))
    platoon_edges = {(0, 1), (2, 3)}
    if not inter_platoon:
        assert set(graph.graph.edges) == platoon_edges
        return
    # Cross pairs within 25 m: 0-2 (5 m), 1-3 (4 m), 1-2 (20.6 m), 0-3 (20.4 m); none are out of range here.
    cross = {(0, 2), (2, 0), (1, 3), (3, 1), (1, 2), (2, 1), (0, 3), (3, 0)}
    assert set(graph.graph.edges) == platoon_edges | cross
    positions[[2, 3]] = [[80.0, 5.0], [62.0, 4.0]]  # platoon 1 pulls ahead: every cross pair is > 25 m
    graph.update(positions, np.ones(4, dtype=bool), np.zeros(4, dtype=bool))
    assert set(graph.graph.edges) == platoon_edges
    positions[[2, 3]] = [[70.0, 5.0], [50.0, 4.0]]  # 3 is 20.4 m from 0; 0-2 40 m, 1-3 40.2 m, 1-2 60 m
    graph.update(positions, np.ones(4, dtype=bool), np.zeros(4, dtype=bool))
    assert set(graph.graph.edges) == platoon_edges | {(0, 3), (3, 0)}
    # Masks stay per platoon: inter-platoon links never show up in them.
    np.testing.assert_array_equal(graph.platoon_mask(1), [[1, 0], [1, 1]])


# -- channel: drops, latency, outages, inbox ---------------------------------------------------


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_drop_rate_within_three_sigma(p: float) -> None:
    # 1 leader heard by 10 followers, 1000 steps -> 10,000 messages; max_age 0 shows only this step's arrivals.
    m, steps = 11, 1000
    channel = Channel(m, latency=0, drop_probability=p, max_age=0, rng=np.random.default_rng(7))
    adjacency = np.zeros((m, m), dtype=bool)
    adjacency[1:, 0] = True
    delivered = 0
    for step in range(steps):
        channel.send(step, step_payload(channel, step), adjacency)
        inbox = channel.receive(step)
        assert set(inbox.sender[inbox.mask].tolist()) <= {0}
        delivered += int(inbox.mask.sum())
    n = steps * (m - 1)
    measured = 1.0 - delivered / n
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(measured - p) <= 3 * sigma, (measured, p, sigma)
    assert channel.sent_count == n and channel.dropped_count == n - delivered


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_drop_extremes(p: float) -> None:
    channel = Channel(3, drop_probability=p, max_age=0, rng=np.random.default_rng(0))
    for step in range(20):
        channel.send(step, step_payload(channel, step), full_adjacency(3))
        assert channel.receive(step).mask.sum() == (6 if p == 0.0 else 0)


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_single_message_arrives_exactly_after_latency(latency: int) -> None:
    m, sent_at, max_age = 2, 5, 4
    channel = Channel(m, latency=latency, max_age=max_age, rng=np.random.default_rng(0))
    adjacency = np.zeros((m, m), dtype=bool)
    adjacency[1, 0] = True  # 1 hears 0
    for step in range(sent_at + latency + max_age + 3):
        channel.send(step, step_payload(channel, step), adjacency if step == sent_at else np.zeros_like(adjacency))
        inbox = channel.receive(step)
        assert not inbox.mask[0].any()
        held = sent_at + latency <= step <= sent_at + max_age
        assert inbox.mask[1, 0] == held, step
        if held:
            assert inbox.sender[1, 0] == 0
            assert inbox.age[1, 0] == step - sent_at
            assert inbox.data[1, 0, X] == sent_at
        else:
            assert inbox.sender[1, 0] == -1 and not inbox.data[1, 0].any()


@pytest.mark.parametrize("latency", [0, 1, 3])
def test_steady_stream_age_equals_latency(latency: int) -> None:
    channel = Channel(3, latency=latency, rng=np.random.default_rng(0))
    for step in range(12):
        channel.send(step, step_payload(channel, step), full_adjacency(3))
        inbox = channel.receive(step)
        if step < latency:
            assert not inbox.mask.any()
            continue
        assert inbox.mask.all()
        np.testing.assert_array_equal(inbox.age, latency)
        np.testing.assert_array_equal(inbox.data[..., X], step - latency)
        # Slots ordered by sender id, never the receiver itself.
        np.testing.assert_array_equal(inbox.sender, [[1, 2], [0, 2], [0, 1]])
        np.testing.assert_array_equal(inbox.data[..., MESSAGE_FIELDS.index("y")], inbox.sender)


def test_outage_silences_exactly_named_vehicles_for_its_duration() -> None:
    m, start, until = 4, 10, 20
    channel = Channel(m, max_age=0, rng=np.random.default_rng(0))
    channel.silence([1, 3], until_step=until, from_step=start)
    for step in range(30):
        out = start <= step < until
        np.testing.assert_array_equal(channel.silenced(step), [False, out, False, out])
        channel.send(step, step_payload(channel, step), full_adjacency(m))
        inbox = channel.receive(step)
        heard = {(r, int(s)) for r in range(m) for s in inbox.sender[r][inbox.mask[r]]}
        up = [0, 2] if out else [0, 1, 2, 3]
        assert heard == {(r, s) for r in up for s in up if r != s}, step


def test_outage_checks_sender_at_send_and_receiver_at_arrival() -> None:
    m, latency = 2, 2
    channel = Channel(m, latency=latency, max_age=latency, rng=np.random.default_rng(0))
    channel.silence([1], until_step=12, from_step=10)
    arrivals = {}
    for step in range(16):
        channel.send(step, step_payload(channel, step), full_adjacency(m))
        inbox = channel.receive(step)
        arrivals[step] = {(r, int(inbox.data[r, 0, X])) for r in range(m) if inbox.mask[r, 0]}
    # 1 is down for steps 10 and 11: what 1 sent at 8 and 9 still arrives at 10 and 11 (it was on the air),
    # what 0 sent at 8 and 9 is lost (1 cannot receive), and nothing 1 sends at 10 or 11 exists.
    assert arrivals[10] == {(0, 8)} and arrivals[11] == {(0, 9)}
    assert arrivals[12] == {(1, 10)} and arrivals[13] == {(1, 11)}
    assert arrivals[14] == {(0, 12), (1, 12)}


def test_outage_before_until_defaults_to_now_and_held_messages_are_lost() -> None:
    channel = Channel(2, max_age=50, rng=np.random.default_rng(0))
    for step in range(5):
        channel.send(step, step_payload(channel, step), full_adjacency(2))
        channel.receive(step)
    channel.silence([0], until_step=8)
    for step in range(5, 8):
        channel.send(step, step_payload(channel, step), full_adjacency(2))
        inbox = channel.receive(step)
        assert not inbox.mask[0].any()
        assert inbox.mask[1, 0] and inbox.data[1, 0, X] == 4 and inbox.age[1, 0] == step - 4  # zero-order hold
    channel.send(8, step_payload(channel, 8), full_adjacency(2))
    inbox = channel.receive(8)
    assert inbox.mask.all() and (inbox.age == 0).all()


def test_inbox_keeps_freshest_senders_when_full() -> None:
    m = 4
    channel = Channel(m, inbox_size=2, max_age=10, rng=np.random.default_rng(0))
    assert channel.message_dim == len(MESSAGE_FIELDS) + 8
    # Receiver 0 hears 3 at step 0, then 2 and 1 at step 1.
    for step, senders in enumerate([[3], [1, 2]]):
        adjacency = np.zeros((m, m), dtype=bool)
        adjacency[0, senders] = True
        channel.send(step, step_payload(channel, step), adjacency)
    inbox = channel.receive(1)
    assert inbox.data.shape == (m, 2, channel.message_dim) and inbox.data.dtype == np.float32
    np.testing.assert_array_equal(inbox.sender[0], [1, 2])
    np.testing.assert_array_equal(inbox.age[0], [0, 0])
    assert not inbox.mask[1:].any() and (inbox.sender[1:] == -1).all()


def test_from_graph_inbox_size_and_message_packing() -> None:
    graph = CommGraph([([0, 1, 2, 3], "predecessor_leader"), ([4, 5], "leader_follower")])
    assert Channel.from_graph(graph).inbox_size == 2
    assert Channel.from_graph(graph, inbox_size=5).inbox_size == 5
    graph_inter = CommGraph([([0, 1], "leader_follower"), ([2], "all_to_all")], inter_platoon=True)
    assert Channel.from_graph(graph_inter).inbox_size == 2

    m = 3
    values = [np.arange(m) + 10.0 * f for f in range(len(MESSAGE_FIELDS))]
    payload = comms.pack_messages(*values, plan=np.ones((m, 4)), plan_dim=4)
    assert payload.shape == (m, comms.message_dim(4))
    for name, column in zip(MESSAGE_FIELDS, values):
        np.testing.assert_array_equal(payload[:, comms.FIELD_INDEX[name]], column)
    np.testing.assert_array_equal(payload[:, len(MESSAGE_FIELDS) :], 1.0)
    assert not comms.pack_messages(*values)[:, len(MESSAGE_FIELDS) :].any()


def test_invalid_channel_arguments() -> None:
    with pytest.raises(ValueError, match="latency"):
        Channel(2, latency=-1)
    with pytest.raises(ValueError, match="latency"):
        Channel(2, latency=1.5)
    with pytest.raises(ValueError, match="max_age"):
        Channel(2, latency=3, max_age=2)
    with pytest.raises(ValueError, match="drop_probability"):
        Channel(2, drop_probability=1.2)
    with pytest.raises(RuntimeError, match="reset"):
        Channel(2).send(0, np.zeros((2, comms.message_dim())), full_adjacency(2))
    with pytest.raises(ValueError, match="payload"):
        Channel(2, rng=np.random.default_rng(0)).send(0, np.zeros((2, 3)), full_adjacency(2))


# -- determinism ---------------------------------------------------------------------------------


def run_episode(seed: int, channel: Channel, graph: CommGraph, steps: int = 200) -> list[comms.Inbox]:
    """Platoons driving with a varying spread so links come and go; one outage in the middle."""
    channel.reset(np.random.default_rng(seed))
    graph.reset()
    m = graph.num_vehicles
    channel.silence([2], until_step=90, from_step=60)
    inboxes = []
    for step in range(steps):
        spread = 10.0 + 15.0 * math.sin(step / 20.0) ** 2
        positions = np.stack([100.0 - spread * np.arange(m), np.zeros(m)], axis=1)
        silenced = channel.silenced(step)
        graph.update(positions, np.ones(m, dtype=bool), silenced)
        payload = step_payload(channel, step)
        payload[:, MESSAGE_FIELDS.index("speed")] = positions[:, 0] / 10.0
        channel.send(step, payload, graph.adjacency())
        inboxes.append(channel.receive(step))
    return inboxes


def test_same_seed_reproduces_inboxes_and_different_seed_differs() -> None:
    graph = CommGraph([([0, 1, 2, 3], "predecessor_leader"), ([4, 5], "bidirectional")], range_m=60.0)
    channel = Channel.from_graph(graph, latency=1, drop_probability=0.3, max_age=3)
    first = run_episode(11, channel, graph)
    second = run_episode(11, channel, graph)  # same channel object, reset in between
    other = run_episode(12, Channel.from_graph(graph, latency=1, drop_probability=0.3, max_age=3), graph)
    fields = ("data", "sender", "age", "mask")
    for a, b in zip(first, second):
        for name in fields:
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert sum(int(a.mask.sum()) for a in first) > 0
    assert any(not np.array_equal(a.age, c.age) or not np.array_equal(a.mask, c.mask) for a, c in zip(first, other))
