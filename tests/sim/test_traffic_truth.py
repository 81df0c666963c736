"""Traffic that cannot crash into itself: insertion, lane changes and lane-end merges, on real
highway-env roads and vehicles, plus the driving-truth evidence script at small size."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
from highway_env.road.road import RoadNetwork

from diffplatoon.evaluation import runner
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim import idm_mobil, traffic
from diffplatoon.sim.entry import insertion_speed
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.world import World, WorldParams

ROOT = Path(__file__).resolve().parents[2]


def _highway(lanes: int = 3, length: float = 1000.0, seed: int = 0) -> World:
    return World(RoadNetwork.straight_road_network(lanes, length=length), WorldParams(), np.random.default_rng(seed))


def _onramp_world(seed: int = 0) -> World:
    return World(build_network(load_scenario("onramp_merge").road), WorldParams(), np.random.default_rng(seed))


def _mid_lane_change(world: World, lane: int, s: float, toward: int, offset: float) -> int:
    """A vehicle on `lane` at `s`, `offset` m of the way sideways to lane `toward`, steering there."""
    row = world.spawn(lane, s, 25.0)
    tab = world.table
    x, y = tab.position(np.array([toward]), np.array([s]), np.array([0.0]))
    x0, y0 = world.x[row], world.y[row]
    d = np.hypot(x[0] - x0, y[0] - y0)
    world.set_pose(row, x0 + (x[0] - x0) * offset / d, y0 + (y[0] - y0) * offset / d, world.heading[row] + 0.1)
    world.vehicles.target_lane[row] = toward
    return row


def test_no_insertion_onto_a_lane_changing_vehicle():
    world = _highway()
    lane = world.table.lane_id
    # Half-way from lane 1 to lane 2: its body reaches into lane 2 though its lane is still 1.
    row = _mid_lane_change(world, lane(("0", "1", 1)), 100.0, lane(("0", "1", 2)), 1.8)
    assert world.lane[row] == lane(("0", "1", 1))
    assert insertion_speed(world, lane(("0", "1", 2)), 100.0, 25.0) is None
    assert insertion_speed(world, lane(("0", "1", 2)), 95.0, 25.0) is None
    assert insertion_speed(world, lane(("0", "1", 0)), 100.0, 25.0) is not None  # the other side is free
    # Changing into lane 2 at its very start: the entry waits instead of spawning into it.
    _mid_lane_change(world, lane(("0", "1", 1)), 6.0, lane(("0", "1", 2)), 0.5)
    new = world.fill_to_density(20.0, (24.0, 26.0))
    assert lane(("0", "1", 2)) not in {int(world.target_lane[r]) for r in new}
    for _ in range(10 * world.params.policy_frequency):
        world.step()
        assert not world.collisions


def test_ramp_insertion_respects_the_leader_and_the_lane_limit():
    world = _onramp_world()
    tab = world.table
    ramp_in, bend = tab.lane_id(("ramp_in", "ramp_bend", 0)), tab.lane_id(("ramp_bend", "merge_begin", 0))
    assert tab.speed_limit[ramp_in] == 20.0
    leader = world.spawn(bend, 3.0, 11.0)
    end = float(tab.length[ramp_in])
    # The reported case: 24.2 m/s about 5 m (bumper to bumper) behind a vehicle at 11 m/s,
    # across the joint of two ramp lanes.
    assert insertion_speed(world, ramp_in, end + 3.0 - 9.5, 24.2) is None
    assert insertion_speed(world, ramp_in, end + 3.0 - 10.5, 24.2) < 5.0  # just past the jam distance
    for back in (15.0, 30.0, 60.0, 150.0):
        s = end + 3.0 - back
        v = insertion_speed(world, ramp_in, s, 24.2)
        assert v is not None and 0.0 <= v <= 20.0
        d_star = traffic.desired_gap_scalar(world.idm, v, v - world.speed[leader])
        assert d_star <= back + 1e-9  # IDM starts no harder than its comfortable deceleration
    assert insertion_speed(world, ramp_in, 20.0, 24.2) == 20.0  # far behind: the lane limit
    # A whole road populated with speeds drawn above the ramp's limit stays collision-free.
    world = _onramp_world(seed=4)
    rows = world.populate(35.0, (24.0, 26.0))
    ramp = [r for r in rows if world.table.speed_limit[world.lane[r]] == 20.0]
    assert ramp and max(world.speed[r] for r in ramp) <= 20.0
    for _ in range(30 * world.params.policy_frequency):
        world.fill_to_density(35.0, (24.0, 26.0))
        world.step()
        assert not world.collisions


def test_standing_queue_at_the_end_of_an_acceleration_lane_clears():
    world = _onramp_world()
    tab = world.table
    accel = tab.lane_id(("merge_begin", "merge_end", 2))
    main = tab.lane_id(("main_in", "merge_begin", 1))
    queue = [world.spawn(accel, s, 0.0, target_speed=20.0) for s in (112.0, 100.0, 88.0, 76.0)]
    vids = {int(world.vid[r]) for r in queue}
    # A steady main lane next to it: every 30 m at 12 m/s.
    for s in np.arange(10.0, 270.0, 30.0):
        world.spawn(main, float(s), 12.0, target_speed=12.0)
    for s in np.arange(10.0, 110.0, 30.0):
        world.spawn(tab.lane_id(("merge_begin", "merge_end", 1)), float(s), 12.0, target_speed=12.0)
    left_accel = set()
    for _ in range(60 * world.params.policy_frequency):
        world.step()
        assert not world.collisions
        rows = world.active_rows()
        for r in rows:
            if int(world.vid[r]) in vids and world.lane[r] != accel:
                left_accel.add(int(world.vid[r]))
        for d in world.departed:
            left_accel.add(d.vid) if d.vid in vids else None
    assert left_accel == vids, f"{len(vids - left_accel)} of {len(vids)} queued vehicles never merged"


def _follower_accel(snap: dict, world: World, row: int, lane: int) -> float | None:
    """IDM acceleration, in the pre-frame state `snap`, of the vehicle behind `row` on `lane`
    (membership by highway-env's lane band), with `row`'s exponent as MOBIL uses; None if none."""
    tab = world.table
    live = snap["active"].nonzero()[0]
    s, r = tab.local_coordinates(np.full(len(live), lane), snap["x"][live], snap["y"][live])
    me = int(np.flatnonzero(live == row)[0])
    on = tab.on_lane(np.full(len(live), lane), s, r) & (live != row) & (s < s[me])
    if not on.any():
        return None
    k = np.flatnonzero(on)[np.argmax(s[on])]
    f = live[k]
    hf, hm = snap["heading"][f], snap["heading"][row]
    closing = traffic.projected_closing_speed(snap["speed"][f], math.cos(hf), math.sin(hf),
                                              snap["speed"][row], math.cos(hm), math.sin(hm))
    lane_f = np.array([snap["lane"][f]])
    v0 = min(max(world.target_speed[f], tab.speed_floor[lane_f][0]), tab.speed_limit[lane_f][0])
    gap = tab.longitudinal(lane_f, snap["x"][row: row + 1], snap["y"][row: row + 1])[0] - snap["s"][f]
    acc = traffic.idm_acceleration_f64(world.idm, np.array([snap["speed"][f]]), np.array([v0]),
                                       np.array([world.delta[row]]), np.ones(1, dtype=bool),
                                       np.array([gap]), np.array([closing]))
    return float(acc[0])


def test_mobil_never_accepts_a_change_that_breaks_its_safety_criterion():
    world = _highway(lanes=4, length=3000.0, seed=2)
    world.populate(15.0, (15.0, 33.0))
    world.target_speed[world.active_rows()] = world.rng.uniform(15.0, 35.0, size=world.n_active)
    p, checked = world.params, 0
    fields = ("x", "y", "heading", "speed", "lane", "s", "active", "target_lane", "wait_time")
    for _ in range(40 * p.simulation_frequency):
        snap = {f: getattr(world, f).copy() for f in fields}
        world.frame()
        hi = min(len(snap["active"]), world.vehicles.hi)
        new = (snap["active"][:hi] & world.active[:hi] & (world.target_lane[:hi] != snap["target_lane"][:hi])
               & (world.table.road[world.target_lane[:hi]] == world.table.road[snap["target_lane"][:hi]])
               & (snap["target_lane"][:hi] == snap["lane"][:hi]))
        for row in new.nonzero()[0]:
            acc = _follower_accel(snap, world, int(row), int(world.target_lane[row]))
            bound = idm_mobil.accepted_braking(world.vehicles, np.array([row]), p.max_braking_imposed,
                                               p.comfort_acc_min, p.patience)
            if acc is not None:
                checked += 1
                assert acc >= -float(bound[0]) - 1e-9, f"row {row}: new follower at {acc:.2f} m/s2"
        assert not world.collisions
    assert checked >= 10, "lane changes with a new follower must actually occur"


def test_driving_truth_table_matches_the_records(tmp_path):
    spec = importlib.util.spec_from_file_location("driving_truth", ROOT / "experiments" / "driving_truth.py")
    truth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(truth)
    rows = truth.main(["--episodes", "2", "--scenarios", "hard_brake", "roundabout", "--out", str(tmp_path),
                       "--num-workers", "1", "--no-progress"])
    records = runner.load_records(tmp_path)
    assert {(r["scenario"], r["policy"]) for r in rows} == {(s, p) for s in ("hard_brake", "roundabout")
                                                            for p in ("cacc", "idm")}
    for row in rows:
        recs = [r for r in records if (r["scenario"], r["policy"]) == (row["scenario"], row["policy"])]
        assert row["episodes"] == len(recs) == 2
        assert row["traffic_collisions"] == sum(r["traffic_collisions"] for r in recs)
        assert row["traffic_episodes"]["k"] == sum(r["traffic_collisions"] > 0 for r in recs)
        assert row["at_fault_collisions"] == sum(r["at_fault_collisions"] for r in recs)
        wrong = sum(list((r["departed"] or {}).values()).count("end_of_road") for r in recs
                    if r["reached_goal"] is not None)
        assert row["wrong_exits"] == wrong
        merge = [r["merge_success"] for r in recs if r.get("merge_success") is not None]
        assert row["merge_success_mean"] == (sum(merge) / len(merge) if merge else None)
    assert rows[0]["scenario"] == "hard_brake" and rows[-1]["scenario"] == "roundabout"
    saved = json.loads((tmp_path / "driving_truth.json").read_text())
    assert len(saved["rows"]) == 4
    assert "### roundabout" in (tmp_path / "driving_truth.md").read_text()
