"""IDM and MOBIL of idm_mobil.py against highway-env's scalar `IDMVehicle` on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle

from diffplatoon.sim import idm_mobil
from diffplatoon.sim.world import World, WorldParams

# (ego s, ego speed, ego target speed, front s (None: no front), front speed, lane speed limit)
CASES = [
    (100.0, 20.0, 30.0, None, 0.0, None),  # free road, below the desired speed
    (100.0, 32.0, 30.0, None, 0.0, None),  # free road, above it
    (100.0, 25.0, 30.0, 130.0, 20.0, None),  # closing in on a slower leader
    (100.0, 10.0, 30.0, 112.0, 15.0, None),  # close leader pulling away
    (100.0, 0.0, 25.0, 140.0, 0.0, None),  # standing start behind a stopped vehicle
    (100.0, 28.0, 35.0, 160.0, 28.0, 22.0),  # desired speed clipped to the lane's limit
]


def _pair(case, delta: float):
    """The same two vehicles in highway-env and in a World: (hw ego, hw front, world, ego, front)."""
    s_e, v_e, vt_e, s_f, v_f, limit = case
    net = RoadNetwork.straight_road_network(1, length=1000, speed_limit=limit)
    road = Road(net)
    lane = net.get_lane(("0", "1", 0))
    hw_ego = IDMVehicle(road, lane.position(s_e, 0), lane.heading_at(s_e), v_e, target_speed=vt_e)
    hw_ego.DELTA = delta
    road.vehicles.append(hw_ego)
    world = World(net, WorldParams(randomize_delta=False, delta=delta))
    ego = world.spawn(0, s_e, v_e, target_speed=vt_e)
    hw_front, front = None, -1
    if s_f is not None:
        hw_front = IDMVehicle(road, lane.position(s_f, 0), lane.heading_at(s_f), v_f)
        road.vehicles.append(hw_front)
        front = world.spawn(0, s_f, v_f)
    return hw_ego, hw_front, world, ego, front


@pytest.mark.parametrize("case", CASES)
def test_idm_matches_highway_env_acceleration(case):
    hw_ego, hw_front, world, ego, front = _pair(case, delta=4.0)
    expected = hw_ego.acceleration(hw_ego, hw_front)
    cos, sin = world.frame_cache().trig()
    got = idm_mobil.idm_behind(world.vehicles, world.idm, cos, sin, np.array([ego]),
                               np.array([front]), np.array([4.0]))
    assert got[0] == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_named_roles_equal_each_role_evaluated_alone():
    world = World(RoadNetwork.straight_road_network(2, length=1000), WorldParams(randomize_delta=False))
    rows = np.array([world.spawn(k % 2, 50.0 + 17.0 * k, 15.0 + k, target_speed=30.0) for k in range(8)])
    cos, sin = world.frame_cache().trig()
    roles = {"a": (rows[:4], rows[4:], rows[:4]),
             "b": (np.array([rows[5], -1]), np.array([-1, rows[2]]), rows[:2]),
             "c": (rows[6:], rows[:2], rows[6:])}
    together = idm_mobil.idm_roles(world.vehicles, world.idm, cos, sin, roles)
    for name, (ego, front, delta_of) in roles.items():
        alone = idm_mobil.idm_behind(world.vehicles, world.idm, cos, sin, ego, front,
                                     world.delta[delta_of])
        assert np.array_equal(together[name], alone), name
    assert together["b"][0] != 0.0 and together["b"][1] == 0.0  # a missing ego (−1) gets 0


def test_mobil_safety_and_incentive_criteria():
    z = np.zeros(4)
    a = idm_mobil.MobilAccelerations(
        me_before=np.array([0.0, 0.0, 0.0, -1.0]),
        me_after=np.array([1.0, 0.1, 1.0, 0.0]),
        new_follower_before=z, new_follower_after=np.array([0.0, 0.0, -2.5, -0.4]),
        old_follower_before=np.array([0.0, 0.0, 0.0, -0.2]), old_follower_after=z)
    safe, worth = idm_mobil.mobil(a, politeness=0.5, min_acc_gain=0.2, max_braking_imposed=2.0)
    # 1: gain 1.0; 2: gain 0.1 < 0.2; 3: the new follower would brake at 2.5 > 2.0, and
    # politeness counts it: 1.0 + 0.5·(−2.5) < 0.2; 4: 1.0 + 0.5·(−0.4 + 0.2) = 0.9.
    assert safe.tolist() == [True, True, False, True]
    assert worth.tolist() == [True, False, False, True]


def test_stop_accel_is_idm_behind_a_stopped_vehicle_at_the_line():
    world = World(RoadNetwork.straight_road_network(1, length=1000), WorldParams(randomize_delta=False))
    ego = world.spawn(0, 100.0, 12.0, target_speed=20.0)
    obstacle = world.spawn(0, 100.0 + 30.0 + world.params.distance_wanted - 1.0, 0.0)
    cos, sin = world.frame_cache().trig()
    behind = idm_mobil.idm_behind(world.vehicles, world.idm, cos, sin, np.array([ego]),
                                  np.array([obstacle]), np.array([4.0]))
    # A line 30 m ahead with a 1 m stop gap: the virtual vehicle's jam distance ends at 29 m.
    line = idm_mobil.stop_accel(world.vehicles, world.idm, np.array([ego]), np.array([30.0]), 1.0, 6.0)
    assert line[0] == pytest.approx(max(behind[0], -6.0), rel=1e-12)
