"""The yielding rule of the World on real road builders: no crashes at junctions, stop and go at
yield lines, nothing changed where no lane has priority over another."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.scenarios.loader import load_scenario
from diffplatoon.scenarios.roads import HighwayRoad, IntersectionRoad, LaneGraphRoad, RoundaboutRoad
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.world import World, WorldParams

SECONDS = 60.0


def _junction_run(road, yielding: bool, seed: int, density: float, speed: float,
                  headway: float) -> tuple[int, dict[str, int], int]:
    """Populate `road`, then keep feeding every entry with routed traffic to a random other arm.

    Returns (traffic–traffic collisions, vehicles that reached their destination per entry
    arm, vehicles that entered).
    """
    rng = np.random.default_rng(1000 + seed)
    world = World(build_network(road), WorldParams(yielding=yielding), np.random.default_rng(seed))
    world.populate(density, (0.8 * speed, 1.1 * speed))
    entries, arms = road.entry_lanes(), road.destinations()
    next_entry = {e: rng.uniform(0.0, headway) for e in entries}
    origin: dict[int, str] = {}
    arrived = {e[0]: 0 for e in entries}
    collisions = entered = 0
    for _ in range(int(SECONDS * world.params.policy_frequency)):
        for e in entries:
            if world.time < next_entry[e]:
                continue
            next_entry[e] += headway * rng.uniform(0.5, 1.5)
            lane = world.table.lane_id(e)
            hi = world.vehicles.hi
            if np.any(world.active[:hi] & (world.lane[:hi] == lane) & (world.s[:hi] < 15.0)):
                continue  # the entry is still occupied: skip this arrival
            dest = [a for a in arms if a != e[0]][int(rng.integers(len(arms) - 1))]
            row = world.spawn(e, 0.0, speed, route=road.route(e, dest))
            origin[int(world.vid[row])] = e[0]
            entered += 1
        world.step()
        assert not world.is_controlled.any()
        collisions += len(world.collisions)
        for d in world.departed:
            if d.reason == "destination" and d.vid in origin:
                arrived[origin[d.vid]] += 1
    return collisions, arrived, entered


@pytest.mark.parametrize("road, speed", [(IntersectionRoad(), 9.0), (RoundaboutRoad(), 8.0)],
                         ids=["intersection", "roundabout"])
def test_populated_junction_has_no_traffic_collisions_when_yielding(road, speed):
    with_rule, without_rule = 0, 0
    for seed in range(3):
        collisions, arrived, entered = _junction_run(road, True, seed, 10.0, speed, 10.0)
        with_rule += collisions
        assert entered >= 15
        # Traffic gets through: a trip takes about 25 s, so about a third of it arrives.
        assert sum(arrived.values()) >= 5, arrived
        without_rule += _junction_run(road, False, seed, 10.0, speed, 10.0)[0]
    assert with_rule == 0
    assert without_rule > 0  # the same traffic without the rule crashes: the test can fail


def _crossing(yielding: bool, priority_start: float) -> tuple[World, list[dict], int, int]:
    """A minor-road vehicle going south→north, a major-road vehicle west→east, 15 s at 15 Hz."""
    road = IntersectionRoad()
    world = World(build_network(road), WorldParams(yielding=yielding), np.random.default_rng(0))
    south, west = road.resolve_lane("south_in"), road.resolve_lane("west_in")
    ego = world.spawn(south, 50.0, 9.0, route=road.route(south, "north"))
    major = world.spawn(west, priority_start, 9.0, route=road.route(west, "east"))
    ego_conn = world.table.lane_id(("south_in", "north_out", 0))
    major_conn = world.table.lane_id(("west_in", "east_out", 0))
    trace = []
    for _ in range(15 * 15):
        world.frame()
        s_ego, _ = world.table.local_coordinates(np.array([ego_conn]), world.x[[ego]], world.y[[ego]])
        s_major, _ = world.table.local_coordinates(np.array([major_conn]), world.x[[major]], world.y[[major]])
        trace.append(dict(t=world.time, ego_s=float(s_ego[0]), ego_v=float(world.speed[ego]),
                          yielding=bool(world.is_yielding[ego]), major_s=float(s_major[0]),
                          major_v=float(world.speed[major]), ego_live=bool(world.active[ego]),
                          major_live=bool(world.active[major]), collided=bool(world.collisions)))
        if not (world.active[ego] or world.active[major]):
            break
    return world, trace, ego_conn, major_conn


def test_minor_vehicle_stops_at_the_yield_line_and_goes_once_the_major_vehicle_passed():
    world, trace, ego_conn, major_conn = _crossing(True, 40.0)
    tab, p = world.table, world.params
    assert not any(f["collided"] for f in trace)
    live = [f for f in trace if f["ego_live"] and f["major_live"]]
    stop = min(live, key=lambda f: f["ego_v"])
    line = tab.conflicts.zone_start[ego_conn] - p.yield_stop_gap
    assert stop["ego_v"] < 0.1 and stop["yielding"]
    assert line - 1.0 <= stop["ego_s"] <= tab.conflicts.zone_start[ego_conn]  # stopped at the line, not in the zone
    # The major vehicle is not disturbed, and is still to pass the crossing when the ego stops.
    assert min(f["major_v"] for f in trace if f["major_live"]) > 8.9
    crossing = tab.conflicts.other_zone[
        (tab.conflicts.lane == ego_conn) & (tab.conflicts.other == major_conn)][0]
    assert stop["major_s"] < crossing[1]
    # The ego enters its zone only after the major vehicle has left the crossing.
    enter = next(f for f in trace if f["ego_s"] >= tab.conflicts.zone_start[ego_conn])
    assert enter["t"] > stop["t"]
    assert enter["major_s"] > crossing[1]
    assert not enter["yielding"]
    # ... and then carries on through the intersection.
    assert not trace[-1]["ego_live"] or trace[-1]["ego_s"] > tab.conflicts.zone_end[ego_conn]


def test_crossing_that_collides_without_the_rule_is_safe_with_it():
    _, trace, _, _ = _crossing(False, 50.0)
    assert any(f["collided"] for f in trace)
    _, trace, _, _ = _crossing(True, 50.0)
    assert not any(f["collided"] for f in trace)


def test_onramp_traffic_merges_without_collisions():
    road = load_scenario("onramp_merge").road
    names = road.named_lanes()
    merged_total = 0
    for seed in range(3):
        world = World(build_network(road), WorldParams(), np.random.default_rng(seed))
        tab = world.table
        ramp = {tab.lane_id(names[n]) for n in ("ramp", "ramp_bend", "accel")}
        after = {tab.lane_id(names[n]) for n in ("after_0", "after_1")}
        world.populate(8.0, (20.0, 26.0))
        on_ramp, merged, collisions = set(), set(), 0
        for _ in range(int(SECONDS * world.params.policy_frequency)):
            world.step()
            world.fill_to_density(8.0, (20.0, 26.0))
            collisions += len(world.collisions)
            rows = world.active_rows()
            vids, lanes = world.vid[rows], world.lane[rows]
            on_ramp.update(int(v) for v, ln in zip(vids, lanes) if ln in ramp)
            merged.update(int(v) for v, ln in zip(vids, lanes) if ln in after and int(v) in on_ramp)
        assert collisions == 0
        assert len(on_ramp) >= 10
        merged_total += len(merged)
        assert len(merged) >= 3
    assert merged_total >= 12


def _trajectory(road, yielding: bool) -> np.ndarray:
    world = World(build_network(road), WorldParams(yielding=yielding), np.random.default_rng(5))
    world.populate(30.0, (20.0, 28.0))
    lane = road.resolve_lane(0)
    for k in range(3):
        world.spawn(lane, 150.0 - 20.0 * k, 22.0, controlled=True, platoon=0, member=k)
    out = []
    rows = world.controlled_rows()
    for _ in range(20 * world.params.policy_frequency):
        acts = np.stack([np.full(len(rows), 0.5), world.lane_keeping_steering(rows)], axis=1)
        world.step(acts)
        world.fill_to_density(30.0, (20.0, 28.0))
        hi = world.vehicles.hi
        out.append(np.concatenate([world.x[:hi], world.y[:hi], world.speed[:hi], world.lane[:hi]]))
    return np.concatenate(out)


MERGE_WITHOUT_PRIORITIES = LaneGraphRoad(
    nodes={"a": (0, 0), "b": (300, 0), "c": (500, 0), "r": (0, 12), "k": (200, 12), "m": (300, 4)},
    lanes=[{"from": "a", "to": "b", "count": 1}, {"from": "r", "to": "k"},
           {"from": "k", "to": "m", "kind": "sine", "amplitude": 4.0}, {"from": "m", "to": "c"},
           {"from": "b", "to": "c"}],
)


@pytest.mark.parametrize("road", [HighwayRoad(lanes=4, length=2000.0), MERGE_WITHOUT_PRIORITIES],
                         ids=["highway", "merge-equal-priorities"])
def test_roads_without_priorities_are_bit_identical_with_and_without_the_rule(road):
    assert World(build_network(road)).table.conflicts.n == 0
    np.testing.assert_array_equal(_trajectory(road, True), _trajectory(road, False))
