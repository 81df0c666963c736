"""World and LaneTable behaviour, checked against highway-env's own objects where it has them."""

from __future__ import annotations

import numpy as np
import pytest
from highway_env.road.lane import CircularLane, SineLane, StraightLane
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.kinematics import Vehicle

from diffplatoon.sim.lanes import LaneTable
from diffplatoon.sim.world import World, WorldParams


def mixed_network() -> RoadNetwork:
    """Two straight segments a→b→c (3 lanes), a curve c→d, and an on-ramp r→s (sine) → b."""
    net = RoadNetwork.straight_road_network(3, start=0, length=200, nodes_str=("a", "b"))
    net = RoadNetwork.straight_road_network(3, start=200, length=300, nodes_str=("b", "c"), net=net)
    for i in range(3):
        net.add_lane("c", "d", CircularLane([500, 200], 200 - 4 * i, -np.pi / 2, 0, clockwise=True))
    net.add_lane("r", "s", SineLane([0, 20], [150, 20], 3.0, np.pi / 150, np.pi / 2, forbidden=True))
    net.add_lane("s", "b", StraightLane([150, 17], [200, 12]))
    net.add_lane("x", "y", CircularLane([100, -60], 30, 2.5, 0.5, clockwise=False))
    return net


def test_lane_table_reproduces_highway_env_lane_geometry():
    net = mixed_network()
    table = LaneTable(net)
    rng = np.random.default_rng(0)
    n = 400
    ids = rng.integers(table.n, size=n)
    s = rng.uniform(-10, table.length[ids] + 10)
    r = rng.uniform(-5, 5, size=n)
    x, y = table.position(ids, s, r)
    ls, lr = table.local_coordinates(ids, x, y)
    h = table.heading_at(ids, s)
    heading = rng.uniform(-np.pi, np.pi, size=n)
    dist = table.distance_with_heading(ids, ls, lr, heading)
    for k in range(n):
        lane = table.lanes[ids[k]]
        np.testing.assert_allclose([x[k], y[k]], lane.position(s[k], r[k]), atol=1e-9)
        np.testing.assert_allclose([ls[k], lr[k]], lane.local_coordinates(np.array([x[k], y[k]])),
                                   atol=1e-9)
        assert h[k] == pytest.approx(lane.heading_at(s[k]), abs=1e-12)
        assert dist[k] == pytest.approx(lane.distance_with_heading(np.array([x[k], y[k]]), heading[k]),
                                        abs=1e-9)
    closest = table.closest_lane(x, y, heading)
    expected = [table.lane_id(net.get_closest_lane_index(np.array([x[k], y[k]]), heading[k]))
                for k in range(n)]
    assert np.array_equal(closest, expected)
    # Topology: the ramp's straight end feeds the three b→c lanes; the entry lanes have no predecessor.
    ramp_end = table.lane_id(("s", "b", 0))
    assert set(table.successors[ramp_end]) == {table.lane_id(("b", "c", i)) for i in range(3)}
    entries = {table.lane_index(k) for k in table.entry_lanes}
    assert entries == {("a", "b", i) for i in range(3)} | {("r", "s", 0), ("x", "y", 0)}


def test_lone_vehicle_follows_highway_env_bicycle_model():
    net = RoadNetwork.straight_road_network(3, length=2000)
    world = World(net, WorldParams(check_collisions=False), np.random.default_rng(0))
    row = world.spawn(("0", "1", 1), 50.0, 20.0, controlled=True, platoon=0, member=0)
    ref = Vehicle(Road(network=net), net.get_lane(("0", "1", 1)).position(50.0, 0), 0.0, 20.0)
    rng = np.random.default_rng(1)
    dt = 1 / world.params.simulation_frequency
    for _ in range(30):
        action = np.array([[rng.uniform(-4, 3), rng.uniform(-0.2, 0.2)]])
        ref.act({"acceleration": action[0, 0], "steering": action[0, 1]})
        for _ in range(world.params.frames_per_step):
            ref.step(dt)
        world.step(action)
        np.testing.assert_allclose([world.x[row], world.y[row]], ref.position, rtol=0, atol=1e-9)
        assert world.heading[row] == pytest.approx(ref.heading, abs=1e-12)
        assert world.speed[row] == pytest.approx(ref.speed, abs=1e-12)
    assert world.table.lane_index(world.lane[row]) == ref.lane_index
    # Hand-checkable: 20 m/s with no input for 2 s covers 40 m.
    other = world.spawn(("0", "1", 0), 0.0, 20.0, controlled=True, platoon=1, member=0)
    x0 = world.x[other]
    for _ in range(10):
        world.step(np.zeros((2, 2)))
    assert world.x[other] - x0 == pytest.approx(40.0, abs=1e-9)


def test_lane_transition_at_lane_end_is_continuous():
    net = mixed_network()
    world = World(net, WorldParams(lane_changes_enabled=False), np.random.default_rng(0))
    a_b, b_c, c_d = (world.table.lane_id((f, t, 1)) for f, t in (("a", "b"), ("b", "c"), ("c", "d")))
    row = world.spawn(a_b, 190.0, 20.0)
    dt = 1 / world.params.simulation_frequency
    lanes_seen = [a_b]
    for _ in range(3 * 30):
        x0, y0, v0, lane0 = world.x[row], world.y[row], world.speed[row], world.lane[row]
        world.step()  # 3 frames
        step = np.hypot(world.x[row] - x0, world.y[row] - y0)
        assert step <= v0 * 3 * dt + 3 * 3 * dt**2 * world.params.a_max + 1e-9  # no jump
        if world.lane[row] != lane0:
            lanes_seen.append(int(world.lane[row]))
            # Excess s carried over: the new s is what remains past the old lane's end.
            s_old, _ = world.table.local_coordinates(np.array([lane0]), np.array([world.x[row]]),
                                                     np.array([world.y[row]]))
            assert world.s[row] == pytest.approx(s_old[0] - world.table.length[lane0], abs=0.05)
            assert 0.0 <= world.s[row] <= world.speed[row] * 3 * dt + 0.5
    assert lanes_seen == [a_b, b_c, c_d]
    assert abs(world.r[row]) < 0.5  # lane keeping held it on the curve


def test_lane_switch_happens_exactly_at_the_end_of_a_straight_lane():
    net = mixed_network()
    world = World(net, WorldParams(), np.random.default_rng(0))
    a_b, b_c = world.table.lane_id(("a", "b", 0)), world.table.lane_id(("b", "c", 0))
    row = world.spawn(a_b, 195.0, 10.0, controlled=True, platoon=0, member=0)
    for _ in range(30):
        world.frame(np.zeros((1, 2)))
        x = world.x[row]
        assert world.lane[row] == (b_c if x > 200.0 else a_b)
        assert world.s[row] == (x - 200.0 if x > 200.0 else x)


def _random_scene(net: RoadNetwork, connected: bool, n: int, seed: int) -> tuple[World, Road, list]:
    """The same n vehicles at random poses near lane centres, in a World and in a highway-env Road."""
    world = World(net, WorldParams(connected_lanes=connected), np.random.default_rng(seed))
    road = Road(network=net, neighbour_vehicles_connected_lanes=connected)
    rng = np.random.default_rng(seed)
    tab = world.table
    refs = []
    for _ in range(n):
        lane = int(rng.integers(tab.n))
        s = float(rng.uniform(0, tab.length[lane]))
        r = float(rng.uniform(-3.0, 3.0))
        x, y = tab.position(np.array([lane]), np.array([s]), np.array([r]))
        h = float(tab.heading_at(np.array([lane]), np.array([s]))[0] + rng.normal(0, 0.1))
        row = world.spawn(lane, s, 20.0)
        world.set_pose(row, float(x[0]), float(y[0]), h)
        v = Vehicle(road, np.array([x[0], y[0]]), h, 20.0)
        road.vehicles.append(v)
        refs.append(v)
    return world, road, refs


@pytest.mark.parametrize("connected", [False, True])
def test_leader_search_equals_brute_force(connected):
    net = mixed_network()
    for seed in range(3):
        world, road, refs = _random_scene(net, connected, n=120, seed=seed)
        row_of = {id(v): k for k, v in enumerate(refs)}
        rows = np.arange(len(refs))
        tab = world.table
        assert [tab.lane_index(k) for k in world.lane[rows]] == [v.lane_index for v in refs]
        # Query every vehicle on its own lane and on every lane of its road.
        q_rows, q_lanes = [], []
        for k, v in enumerate(refs):
            for i in range(len(net.graph[v.lane_index[0]][v.lane_index[1]])):
                q_rows.append(k)
                q_lanes.append(tab.lane_id((*v.lane_index[:2], i)))
        front, rear = world.neighbours(np.array(q_rows), np.array(q_lanes))
        for k, lane, f, b in zip(q_rows, q_lanes, front, rear):
            ref_f, ref_b = road.neighbour_vehicles(refs[k], tab.lane_index(lane))
            assert f == (row_of[id(ref_f)] if ref_f is not None else -1)
            assert b == (row_of[id(ref_b)] if ref_b is not None else -1)


def test_crashed_vehicles_stop_and_stay_as_obstacles():
    net = RoadNetwork.straight_road_network(2, length=3000)
    world = World(net, WorldParams(lane_changes_enabled=False), np.random.default_rng(0))
    rear = world.spawn(("0", "1", 0), 500.0, 30.0, controlled=True, platoon=0, member=1)
    front = world.spawn(("0", "1", 0), 510.0, 5.0, controlled=True, platoon=0, member=0)
    follower = world.spawn(("0", "1", 0), 300.0, 25.0)
    collisions = []
    for _ in range(5 * 20):
        world.step(np.zeros((2, 2)))
        collisions += world.collisions
    assert world.crashed[rear] and world.crashed[front] and not world.crashed[follower]
    assert [(c.i, c.j) for c in collisions] == [(min(rear, front), max(rear, front))]
    assert world.active[rear] and world.active[front]
    assert world.speed[rear] < 1e-3 and world.speed[front] < 1e-3
    x_wreck = world.x[rear]
    world.step(np.zeros((2, 2)))
    assert world.x[rear] == pytest.approx(x_wreck, abs=1e-3)
    # IDM traffic treats the wreck as a stopped leader and halts behind it.
    assert world.speed[follower] < 0.5
    assert world.x[follower] < x_wreck - 5.0

    gone = World(net, WorldParams(crashed_stay=False), np.random.default_rng(0))
    a = gone.spawn(("0", "1", 0), 500.0, 30.0, controlled=True, platoon=0, member=1)
    b = gone.spawn(("0", "1", 0), 506.0, 5.0, controlled=True, platoon=0, member=0)
    gone.step(np.zeros((2, 2)))
    assert not gone.active[a] and not gone.active[b]
    assert sorted((d.row, d.reason) for d in gone.departed) == [(a, "crashed"), (b, "crashed")]


def test_vehicles_depart_at_the_end_of_the_road_and_of_their_route():
    net = RoadNetwork.straight_road_network(2, start=0, length=300, nodes_str=("a", "b"))
    net = RoadNetwork.straight_road_network(2, start=300, length=300, nodes_str=("b", "c"), net=net)
    world = World(net, WorldParams(), np.random.default_rng(0))
    end_row = world.spawn(("b", "c", 0), 250.0, 20.0)
    route_row = world.spawn(("a", "b", 1), 200.0, 20.0, route=[("a", "b", 1)])
    vid = world.vid[end_row]
    departed = []
    for _ in range(40):
        world.step()
        departed += world.departed
    assert not world.active[end_row] and not world.active[route_row]
    by_row = {d.row: d for d in departed}
    assert by_row[end_row].reason == "end_of_road"
    assert by_row[route_row].reason == "destination"
    # The route ended at node b: the vehicle left when it crossed x = 300 (within one frame).
    assert 100.0 / 20.0 <= by_row[route_row].time <= 100.0 / 20.0 + 1 / 15 + 1e-9
    assert 50.0 / 20.0 <= by_row[end_row].time <= 50.0 / 20.0 + 1 / 15 + 1e-9
    again = world.spawn(("a", "b", 0), 10.0, 20.0)
    assert again in (end_row, route_row) and world.vid[again] != vid


def _run_highway(seed: int, steps: int) -> World:
    net = RoadNetwork.straight_road_network(3, length=2000)
    world = World(net, WorldParams(), np.random.default_rng(seed))
    world.populate(20.0, (20.0, 30.0))
    for k in range(3):
        world.spawn(("0", "1", 1), 150.0 - 20.0 * k, 25.0, controlled=True, platoon=0, member=k)
    for t in range(steps):
        rows = world.controlled_rows()
        acts = np.stack([np.full(len(rows), 0.5 * np.sin(0.1 * t)),
                         world.lane_keeping_steering(rows)], axis=1)
        world.step(acts)
        world.fill_to_density(20.0, (20.0, 30.0))
    return world


def test_same_seed_gives_bit_identical_trajectories():
    a, b, c = _run_highway(7, 300), _run_highway(7, 300), _run_highway(8, 300)
    for name in ("x", "y", "heading", "speed", "accel", "steering", "lane", "target_lane", "s", "r",
                 "active", "crashed", "delta", "lane_change_timer", "vid"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.time == b.time and a.frame_count == b.frame_count == 900
    assert not np.array_equal(a.x, c.x)


def test_fill_to_density_holds_density_on_a_highway():
    lanes, length_km, density = 3, 1.0, 20.0
    net = RoadNetwork.straight_road_network(lanes, length=1000 * length_km)
    world = World(net, WorldParams(), np.random.default_rng(3))
    world.populate(density, (22.0, 28.0))
    measured = []
    for _ in range(60 * world.params.policy_frequency):
        world.fill_to_density(density, (22.0, 28.0))
        world.step()
        measured.append(world.n_active / (lanes * length_km))
    measured = np.array(measured)
    print(f"\ndensity over 60 s: min {measured.min():.1f}, mean {measured.mean():.1f}, "
          f"max {measured.max():.1f} veh/km/lane (target {density})")
    assert np.all(np.abs(measured - density) <= 0.2 * density)
    assert not world.crashed.any()


def test_event_hooks_override_acceleration_and_force_lane_changes():
    net = RoadNetwork.straight_road_network(3, length=2000)
    world = World(net, WorldParams(), np.random.default_rng(0))
    braking = world.spawn(("0", "1", 0), 100.0, 25.0)
    mover = world.spawn(("0", "1", 2), 100.0, 25.0)
    world.set_accel_override(braking, -4.0)
    world.force_lane_change(mover, ("0", "1", 1))
    world.step()
    assert world.speed[braking] == pytest.approx(25.0 - 4.0 * 0.2, abs=1e-9)
    world.set_accel_override(braking, np.nan)
    for _ in range(25):
        world.step()
    assert world.table.lane_index(world.lane[mover]) == ("0", "1", 1)
    assert abs(world.r[mover]) < 0.3
    assert world.speed[braking] > 24.2 - 1e-9  # IDM took over again


def test_frame_cache_is_replaced_whenever_rows_or_poses_change():
    net = RoadNetwork.straight_road_network(2, length=1000)
    world = World(net, WorldParams(lane_changes_enabled=False), np.random.default_rng(0))
    a = world.spawn(0, 100.0, 20.0)
    b = world.spawn(0, 150.0, 20.0)
    cache = world.frame_cache()
    assert world.neighbours(np.array([a]))[0].tolist() == [b]
    assert world.frame_cache() is cache  # queries reuse it
    c = world.spawn(0, 120.0, 20.0)
    assert world.frame_cache() is not cache
    assert world.neighbours(np.array([a]))[0].tolist() == [c]
    cache = world.frame_cache()
    world.set_pose(c, *net.get_lane(("0", "1", 1)).position(120.0, 0.0), 0.0)
    assert world.frame_cache() is not cache and world.lane[c] == 1
    assert world.neighbours(np.array([a]))[0].tolist() == [b]  # c moved to the other lane
    assert world.neighbours(np.array([a]), np.array([1]))[0].tolist() == [c]
    cache = world.frame_cache()
    world.despawn(b)
    assert world.frame_cache() is not cache
    assert world.neighbours(np.array([a]))[0].tolist() == [-1]
    cache = world.frame_cache()
    world.step()
    fresh = world.frame_cache()
    assert fresh is not cache
    cos, sin = fresh.trig()
    rows = world.active_rows()
    assert np.array_equal(cos[rows], np.cos(world.heading[rows]))
    assert np.array_equal(sin[rows], np.sin(world.heading[rows]))


def test_vehicle_rows_are_reused_ids_are_not_and_growth_keeps_state():
    net = RoadNetwork.straight_road_network(1, length=2000)
    world = World(net, WorldParams(randomize_delta=False), capacity=2)
    rows = [world.spawn(0, 100.0 + 20.0 * k, 10.0 + k) for k in range(5)]  # grows 2 → 4 → 8
    assert rows == [0, 1, 2, 3, 4] and world.capacity == 8
    assert world.speed[:5].tolist() == [10.0, 11.0, 12.0, 13.0, 14.0]
    assert world.s[:5].tolist() == pytest.approx([100.0, 120.0, 140.0, 160.0, 180.0])
    world.despawn(1)
    assert world.n_active == 4 and world.active_rows().tolist() == [0, 2, 3, 4]
    again = world.spawn(0, 500.0, 7.0)
    assert again == 1 and world.vid[again] == 5 and len(set(world.vid[:5])) == 5
    world.despawn(4)
    world.despawn(4)  # a free row: nothing happens
    assert world.n_active == 4
    ctrl = [world.spawn(0, 800.0 - 20.0 * m, 20.0, controlled=True, platoon=p, member=m)
            for p, m in ((1, 1), (0, 0), (1, 0))]
    assert world.controlled_rows().tolist() == [ctrl[1], ctrl[2], ctrl[0]]
