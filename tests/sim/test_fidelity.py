"""Fidelity of the World to highway-env: same initial traffic, stepped by both for 20 s at 15 Hz.

highway-env's own `Road` with `IDMVehicle`s is the reference. Each vehicle's randomised
attributes (IDM exponent, target speed, lane-change timer phase) are copied into our rows, so
any difference comes from the simulation itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from highway_env.road.lane import SineLane, StraightLane
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle

from diffplatoon.sim.world import World, WorldParams

SIM_HZ = 15
FRAMES = 20 * SIM_HZ


def _params(lane_changes: bool) -> WorldParams:
    """WorldParams equal to highway-env's IDMVehicle class constants as they are in this process."""
    c = IDMVehicle
    return WorldParams(
        simulation_frequency=SIM_HZ, policy_frequency=SIM_HZ, a_max=c.ACC_MAX,
        comfort_acc_max=c.COMFORT_ACC_MAX, comfort_acc_min=c.COMFORT_ACC_MIN,
        distance_wanted=c.DISTANCE_WANTED, time_wanted=c.TIME_WANTED,
        politeness=c.POLITENESS, min_acc_gain=c.LANE_CHANGE_MIN_ACC_GAIN,
        max_braking_imposed=c.LANE_CHANGE_MAX_BRAKING_IMPOSED,
        lane_change_delay=c.LANE_CHANGE_DELAY, lane_changes_enabled=lane_changes)


def merge_network(before=300.0, converge=100.0, merge=150.0, after=2000.0) -> RoadNetwork:
    """Two-lane highway a→b→c→d; on-ramp j→k (straight), k→b (SineLane), b→c (acceleration lane)."""
    net = RoadNetwork()
    x_b, x_c = before + converge, before + converge + merge
    for y in (0.0, 4.0):
        net.add_lane("a", "b", StraightLane([0, y], [x_b, y]))
        net.add_lane("b", "c", StraightLane([x_b, y], [x_c, y]))
        net.add_lane("c", "d", StraightLane([x_c, y], [x_c + after, y]))
    amplitude = 3.25
    ramp = StraightLane([0, 14.5], [before, 14.5], forbidden=True)
    bend = SineLane(ramp.position(before, -amplitude), ramp.position(x_b, -amplitude), amplitude,
                    np.pi / converge, np.pi / 2, forbidden=True)
    accel_lane = StraightLane(bend.position(converge, 0), bend.position(converge, 0) + [merge, 0],
                              forbidden=True)
    net.add_lane("j", "k", ramp)
    net.add_lane("k", "b", bend)
    net.add_lane("b", "c", accel_lane)
    return net


def _scene(road_kind: str, lane_changes: bool, seed: int = 0) -> tuple[Road, World]:
    """Build the same traffic in highway-env's Road and in our World (rows in Road.vehicles order)."""
    g = np.random.default_rng(seed)
    if road_kind == "straight":
        net = RoadNetwork.straight_road_network(4, length=10000)
        s_next = {("0", "1", i): g.uniform(0, 20) for i in range(4)}
        lanes, gaps, n = list(s_next), (18, 45), 28
        room = {idx: 10000.0 for idx in lanes}
    else:
        net = merge_network()
        s_next = {("a", "b", 0): g.uniform(0, 15), ("a", "b", 1): g.uniform(0, 15),
                  ("j", "k", 0): g.uniform(0, 15)}
        lanes, gaps, n = list(s_next), (22, 40), 30
        room = {idx: net.get_lane(idx).length - 20.0 for idx in lanes}  # start on the lane itself
    road = Road(network=net, np_random=np.random.RandomState(seed))
    for _ in range(n):
        free = [idx for idx in lanes if s_next[idx] < room[idx]]
        idx = free[int(g.integers(len(free)))]
        s = s_next[idx]
        s_next[idx] += g.uniform(*gaps)
        lane = net.get_lane(idx)
        v = IDMVehicle(road, lane.position(s, 0), lane.heading_at(s), float(g.uniform(18, 28)),
                       enable_lane_change=lane_changes)
        v.target_speed = float(g.uniform(20, 32))
        v.randomize_behavior()
        road.vehicles.append(v)
    world = World(net, _params(lane_changes), np.random.default_rng(seed))
    for v in road.vehicles:
        s, _ = v.lane.local_coordinates(v.position)
        world.spawn(v.lane_index, s, v.speed, target_speed=v.target_speed, delta=v.DELTA,
                    lane_change_timer=v.timer)
    return road, world


def _run(road: Road, world: World) -> dict:
    """Step both FRAMES times; per-frame errors, decision agreement and activity counters."""
    rows = np.arange(len(road.vehicles))
    lane_id = world.table.lane_id
    pos_err, speed_err, agree = [], [], []
    min_accel, decisions = 0.0, 0
    prev_target = [v.target_lane_index for v in road.vehicles]
    for _ in range(FRAMES):
        road.act()
        road.step(1 / SIM_HZ)
        world.step()
        ref_xy = np.array([v.position for v in road.vehicles])
        ref_v = np.array([v.speed for v in road.vehicles])
        pos_err.append(np.max(np.hypot(ref_xy[:, 0] - world.x[rows], ref_xy[:, 1] - world.y[rows])))
        speed_err.append(np.max(np.abs(ref_v - world.speed[rows])))
        target = [v.target_lane_index for v in road.vehicles]
        ref_target = np.array([lane_id(t) for t in target])
        agree.append(np.mean(ref_target == world.target_lane[rows]))
        # Lane-change decisions only: a new target on the same road (not the switch at a lane end).
        decisions += sum(a != b and a[:2] == b[:2] for a, b in zip(prev_target, target))
        prev_target = target
        min_accel = min(min_accel, min(v.action["acceleration"] for v in road.vehicles))
    assert not any(v.crashed for v in road.vehicles), "the reference scene must stay crash-free"
    assert world.n_active == len(rows)
    return dict(pos=max(pos_err), speed=max(speed_err), agree=float(np.mean(agree)),
                min_accel=min_accel, decisions=decisions)


@pytest.mark.parametrize("road_kind", ["straight", "merge"])
def test_trajectories_match_without_lane_changes(road_kind):
    road, world = _scene(road_kind, lane_changes=False)
    r = _run(road, world)
    print(f"\n{road_kind}, no lane changes: max position error {r['pos']:.3g} m, "
          f"max speed error {r['speed']:.3g} m/s, hardest braking {r['min_accel']:.2f} m/s2")
    assert r["min_accel"] < -2.0, "IDM interactions must actually happen in this scene"
    assert r["pos"] <= 0.5
    assert r["speed"] <= 0.2


@pytest.mark.parametrize("road_kind", ["straight", "merge"])
def test_lane_change_decisions_match(road_kind):
    road, world = _scene(road_kind, lane_changes=True)
    r = _run(road, world)
    print(f"\n{road_kind}, lane changes: agreement {100 * r['agree']:.2f} % of vehicle-steps, "
          f"{r['decisions']} lane-change decisions in highway-env, max position error {r['pos']:.3g} m, "
          f"max speed error {r['speed']:.3g} m/s")
    assert r["decisions"] >= 2, "lane changes must actually occur in this scene"
    assert r["agree"] >= 0.95
