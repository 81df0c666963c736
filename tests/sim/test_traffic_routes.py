"""Background traffic at junctions: routes to random exits, drawn from the World's generator."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from diffplatoon.scenarios.roads import HighwayRoad, IntersectionRoad, RoundaboutRoad
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.world import World, WorldParams

SECONDS = 60.0
DENSITY = 12.0  # vehicles/km/lane
SPEEDS = (7.0, 10.0)


def _loop_lanes(world: World) -> np.ndarray:
    """(lanes,) bool: lanes on a road that lies on a cycle of the road graph (a roundabout ring)."""
    tab = world.table
    graph = nx.DiGraph([(r, m) for r, nxt in enumerate(tab.road_graph.next) for m in nxt])
    ring = {r for comp in nx.strongly_connected_components(graph) if len(comp) > 1 for r in comp}
    return np.isin(tab.road, sorted(ring))


def _run(road, seed: int) -> dict:
    """Populate the road, keep its entries fed for SECONDS, record trips of the vehicles that entered."""
    world = World(build_network(road), WorldParams(), np.random.default_rng(seed))
    tab = world.table
    world.populate(DENSITY, SPEEDS)
    on_loop = _loop_lanes(world)
    entry_heading: dict[int, float] = {}
    trips: list[tuple[float, float]] = []  # (entry heading, exit heading) of vehicles that entered and left
    collisions, most_on_loop, counts = 0, 0, []
    for _ in range(int(SECONDS * world.params.policy_frequency)):
        rows = world.active_rows()
        lanes = world.lane[rows]
        exit_heading = dict(zip(rows.tolist(), tab.heading_at(lanes, tab.length[lanes]).tolist()))
        world.step()
        assert not world.is_controlled.any()
        collisions += len(world.collisions)
        for d in world.departed:
            if d.vid in entry_heading:
                assert d.reason == "destination"
                trips.append((entry_heading.pop(d.vid), exit_heading[d.row]))
        for row in world.fill_to_density(DENSITY, SPEEDS):
            entry_heading[int(world.vid[row])] = float(tab.heading0[world.lane[row]])
        rows = world.active_rows()
        counts.append(len(rows))
        most_on_loop = max(most_on_loop, int(np.count_nonzero(on_loop[world.lane[rows]])))
    turns = [abs((b - a + np.pi) % (2 * np.pi) - np.pi) for a, b in trips]
    exits = {round(float(np.degrees(b))) % 360 for _, b in trips}
    return dict(collisions=collisions, trips=len(trips), exits=exits, turns=turns, counts=counts,
                most_on_loop=most_on_loop)


@pytest.mark.parametrize("road", [RoundaboutRoad(), IntersectionRoad()], ids=["roundabout", "intersection"])
def test_junction_traffic_leaves_at_several_exits_without_collisions(road):
    trips, exits, turns = 0, set(), []
    for seed in (0, 1, 2):
        out = _run(road, seed)
        assert out["collisions"] == 0
        # The road does not fill up: the vehicle count levels off, the ring keeps room.
        half = len(out["counts"]) // 2
        assert max(out["counts"][half:]) <= max(out["counts"][:half]) + 6
        assert out["most_on_loop"] <= 12
        trips, exits, turns = trips + out["trips"], exits | out["exits"], turns + out["turns"]
    # Vehicles that entered during the runs leave again, through every arm (each arm's outgoing
    # lane points another way), and some leave in another direction than they came in.
    assert trips >= 12, trips
    assert len(exits) == 4, exits
    assert max(turns) > np.pi / 4


def test_intersection_traffic_turns_left_right_and_goes_straight():
    turns = []
    for seed in (0, 1):
        turns += _run(IntersectionRoad(), seed)["turns"]
    turns = np.degrees(turns)
    assert np.any(turns < 10) and np.any(np.abs(turns - 90) < 10)  # straight and quarter turns
    assert np.count_nonzero(np.abs(turns - 90) < 10) >= 3


def test_routes_come_from_the_world_generator():
    def routes(seed: int) -> tuple[np.ndarray, np.ndarray]:
        world = World(build_network(RoundaboutRoad()), WorldParams(), np.random.default_rng(seed))
        world.populate(DENSITY, SPEEDS)
        for _ in range(50):
            world.step()
            world.fill_to_density(DENSITY, SPEEDS)
        return world.route[: world.vehicles.hi].copy(), world.x[: world.vehicles.hi].copy()

    (r0, x0), (r1, x1), (r2, _) = routes(5), routes(5), routes(6)
    assert np.array_equal(r0, r1) and np.array_equal(x0, x1)
    assert r0.shape != r2.shape or not np.array_equal(r0, r2)
    assert np.any(r0 >= 0)


def test_straight_highway_traffic_keeps_no_route():
    world = World(build_network(HighwayRoad(lanes=3, length=1000.0)), WorldParams(), np.random.default_rng(0))
    assert not world.table.road_graph.has_junctions
    world.populate(20.0, (20.0, 25.0))
    for _ in range(25):
        world.step()
        world.fill_to_density(20.0, (20.0, 25.0))
    rows = world.active_rows()
    assert len(rows) > 10
    assert np.all(world.route_len[rows] == 0)
