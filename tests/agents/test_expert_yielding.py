"""The IDM and CACC experts at junctions: they yield by the traffic's rule, read from the
observation's ``right_of_way`` features (a priority vehicle arriving or inside the conflict: the
member waits at its yield line; none: it goes), take the route's branch at forks, and a ramp
merge waits for its gap."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import RIGHT_OF_WAY_FEATURES, Observer
from diffplatoon.sim.simulation import Simulation

W = {name: k for k, name in enumerate(RIGHT_OF_WAY_FEATURES)}
SECONDS = 12.0


def _spec(road: dict, platoon: dict, vehicles: list[dict]) -> ScenarioSpec:
    return ScenarioSpec.model_validate(dict(
        name="junction", seed=3, duration=SECONDS, road=road, traffic=dict(count=0), vehicles=vehicles,
        platoons=[dict(id="p0", size=2, speed=8, **platoon)]))


def _roundabout(vehicles: list[dict]) -> ScenarioSpec:
    return _spec(dict(type="roundabout", radius=20, lanes=2),
                 dict(lane="south_entry", start=40, destination="north"), vehicles)


def _intersection(vehicles: list[dict]) -> ScenarioSpec:
    return _spec(dict(type="intersection"), dict(lane="south_in", start=60, destination="north"), vehicles)


def _drive(spec: ScenarioSpec, policy: str, seconds: float = SECONDS) -> dict[str, np.ndarray]:
    """Run `policy` for `seconds` (or until the leader leaves); per step the leader's right_of_way
    features, speed and lane index, and the number of collisions."""
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    expert = make_policy(policy, spec)
    info = SimInfo.from_spec(spec, 0)
    expert.reset(info)
    leader = sim.controlled[0]
    rows, speed, lanes = [], [], []
    collisions = 0
    for _ in range(int(round(seconds / info.dt))):
        obs = observer.observe()
        if not obs.alive[0]:
            break
        rows.append(obs.right_of_way[0].copy())
        speed.append(float(obs.ego[0, 0]))
        lanes.append(sim.world.table.indices[int(sim.world.lane[leader])])
        sim.step(expert.act(obs))
        collisions += len(sim.world.collisions)
    return dict(row=np.array(rows), speed=np.array(speed), lanes=lanes, collisions=collisions)


PARKED = {
    "roundabout": (_roundabout, dict(id="ring", lane=["ring_south_out", "ring_south_in", 1], start=15, speed=0.0)),
    "intersection": (_intersection, dict(id="cross", lane=["west_in", "east_out", 0], start=13, speed=0.0)),
}
ARRIVING = {
    "roundabout": (_roundabout, dict(id="ring", lane=["ring_west_in", "ring_south_out", 1], start=2, speed=8.0)),
    "intersection": (_intersection, dict(id="cross", lane=["west", "west_in", 0], start=60, speed=9.0)),
}


@pytest.mark.parametrize("policy", ["idm", "cacc"])
@pytest.mark.parametrize("road", ["roundabout", "intersection"])
def test_member_waits_at_the_yield_line_while_a_priority_vehicle_is_in_the_conflict(road, policy):
    build, vehicle = PARKED[road]
    run = _drive(build([vehicle]), policy)
    row = run["row"]
    assert run["collisions"] == 0
    assert row[-1, W["must_yield"]] == 1 and row[-1, W["lane_yields"]] == 1
    assert row[-1, W["priority_arrival"]] == 0.0  # the priority vehicle is inside its zone
    # stopped short of the line, and never past it
    assert run["speed"][-1] < 1.0
    assert row[:, W["yield_line_distance"]].min() > -0.5


@pytest.mark.parametrize("policy", ["idm", "cacc"])
@pytest.mark.parametrize("road", ["roundabout", "intersection"])
def test_member_lets_an_arriving_priority_vehicle_pass_then_goes(road, policy):
    build, vehicle = ARRIVING[road]
    waits = _drive(build([vehicle]), policy, 25.0)
    free = _drive(build([]), policy, 25.0)
    assert waits["collisions"] == free["collisions"] == 0
    told = waits["row"][:, W["must_yield"]] == 1
    assert told.any()  # the rule saw the priority vehicle coming
    arrival = waits["row"][told, W["priority_arrival"]]
    assert (arrival < 60.0).all()
    # with the priority vehicle the member slows down for it; without one it never has to
    assert not (free["row"][:, W["must_yield"]] == 1).any()
    assert waits["speed"].min() < free["speed"].min() - 2.0
    # and it still gets through the junction by its route's branch, leaving by the north arm
    # (at a fork the lane bands overlap, so a lane label may flicker to the other branch)
    for run in (waits, free):
        assert run["lanes"][-1][:2] in {("north_leave", "north"), ("north_out", "north")}, run["lanes"][-1]


def _ramp(vehicles: list[dict]) -> ScenarioSpec:
    return ScenarioSpec.model_validate(dict(
        name="ramp", seed=3, duration=30, traffic=dict(count=0), vehicles=vehicles,
        road=dict(type="onramp_merge", main_lanes=2, main_length=900, ramp_length=200, converge_length=80,
                  accel_length=120),
        platoons=[dict(id="p0", size=1, lane="ramp", start=150, speed=18, destination="main_out")]))


def _merge(spec: ScenarioSpec) -> dict:
    """CACC on the ramp for 25 s: the step its lane change starts, its smallest gap to a vehicle in
    the target lane then, the lane it ends on, the collisions and the steps a vehicle was level with it."""
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    expert = make_policy("cacc", spec)
    info = SimInfo.from_spec(spec, 0)
    expert.reset(info)
    start, clearance, collisions, beside = -1, np.nan, 0, 0
    for k in range(int(round(25.0 / info.dt))):
        obs = observer.observe()
        alongside = obs.side_lane[0, 0] > 0.5 and obs.side[0, 0, 1, 3] > 0.5 and obs.side[0, 0, 1, 0] < 0.0
        beside += int(alongside and expert.lc_dir[0] == 0)
        sim.step(expert.act(obs))
        collisions += len(sim.world.collisions)
        if start < 0 and expert.lc_dir[0] != 0:
            gaps = [float(obs.side[0, 0, j, 0]) for j in (0, 1) if obs.side[0, 0, j, 3] > 0.5]
            start, clearance = k, min(gaps, default=np.inf)
    lane = sim.world.table.indices[int(sim.world.lane[sim.controlled[0]])]
    return dict(start=start, clearance=clearance, collisions=collisions, lane=lane, beside=beside)


def test_cacc_ramp_merge_waits_for_its_gap():
    """A main-road car drives level with the member along the acceleration lane: the member does not
    change lanes into its side, it finds a gap (speeding up past it) and merges cleanly."""
    free = _merge(_ramp([]))
    busy = _merge(_ramp([dict(id="main", lane=["main_in", "merge_begin", 1], start=150, speed=18.0)]))
    for run in (free, busy):
        assert run["collisions"] == 0 and run["start"] >= 0
        assert run["lane"][:2] in {("merge_end", "main_out"), ("merge_begin", "merge_end")}
    assert busy["beside"] > 0  # the car was level with it on the acceleration lane ...
    assert busy["start"] > free["start"]  # ... so it waited for its gap
    assert np.isfinite(busy["clearance"]) and busy["clearance"] > 2.0  # and changed lanes clear of the car
