"""Zipper courtesy for platoon members (behaviour.member_courtesy): a member standing near the end
of an acceleration lane is let in by the main-lane traffic when its follower can stop comfortably."""

from __future__ import annotations

import numpy as np

from diffplatoon.scenarios import load_scenario
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.world import World, WorldParams


def _standing_member_and_follower(follower_s: float) -> tuple[World, int, int, int]:
    world = World(build_network(load_scenario("onramp_merge").road), WorldParams(), np.random.default_rng(0))
    tab = world.table
    accel = tab.lane_id(("merge_begin", "merge_end", 2))
    main = tab.lane_id(("merge_begin", "merge_end", 1))
    member = world.spawn(accel, 100.0, 0.0, controlled=True, platoon=0, member=0)
    follower = world.spawn(main, follower_s, 12.0, target_speed=12.0)
    return world, member, follower, main


def test_a_follower_that_can_stop_comfortably_lets_a_standing_member_in():
    world, member, follower, main = _standing_member_and_follower(40.0)  # 55 m back at 12 m/s
    world.step(np.zeros((1, 2)))
    assert world.vehicles.is_merging[member] and world.vehicles.target_lane[member] == main
    veh = world.vehicles
    for _ in range(8 * world.params.policy_frequency):
        world.step(np.zeros((1, 2)))
        assert not world.collisions
        # it makes room: never drives past the member's place on the main lane (it stops behind
        # it or, as MOBIL finds the standing "leader" worth overtaking, leaves for the next lane)
        assert veh.lane[follower] != main or veh.s[follower] < 100.0 - 5.0
    assert veh.lane[follower] != main or veh.speed[follower] < 0.5


def test_no_courtesy_asked_of_a_follower_too_close_to_stop_comfortably():
    world, member, follower, _ = _standing_member_and_follower(88.0)  # 7 m back at 12 m/s
    world.step(np.zeros((1, 2)))
    assert not world.vehicles.is_merging[member]
    assert world.vehicles.speed[follower] > 10.0


def _standing_member_beside(ahead_s: float) -> tuple[World, int]:
    """A standing member on the acceleration lane at s=100 m, a standing car on the main lane at
    ``ahead_s`` and a follower far enough back to stop comfortably."""
    world, member, _, main = _standing_member_and_follower(20.0)
    world.spawn(main, ahead_s, 0.0, target_speed=0.0)
    return world, member


def test_a_car_right_ahead_on_the_main_lane_does_not_block_the_courtesy():
    # bumper gap 3 m: the member will follow it in once the follower has made room
    world, member = _standing_member_beside(108.0)
    world.step(np.zeros((1, 2)))
    assert world.vehicles.is_merging[member]


def test_a_car_alongside_blocks_the_courtesy():
    world, member = _standing_member_beside(103.0)  # overlaps the member's length
    world.step(np.zeros((1, 2)))
    assert not world.vehicles.is_merging[member]
