"""Observer: hand-checkable leader gaps, side lanes, neighbours, routes, V2V fields and masks; the
observation contract: the flat layout and its inverse, validate() and immutability."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import numpy as np
import pytest
import torch

from diffplatoon.scenarios import ScenarioSpec, load_scenario
from diffplatoon.sim.comms import MESSAGE_FIELDS
from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH
from diffplatoon.sim.observation import (
    EGO_FEATURES,
    LEADER_FEATURES,
    NEIGHBOUR_FEATURES,
    RIGHT_OF_WAY_FEATURES,
    ROUTE_FEATURES,
    SIDE_FEATURES,
    Observation,
    Observer,
    flat_layout,
)
from diffplatoon.sim.simulation import Simulation

EGO = {name: i for i, name in enumerate(EGO_FEATURES)}
LEAD = {name: i for i, name in enumerate(LEADER_FEATURES)}
SIDE = {name: i for i, name in enumerate(SIDE_FEATURES)}
NB = {name: i for i, name in enumerate(NEIGHBOUR_FEATURES)}
ROUTE = {name: i for i, name in enumerate(ROUTE_FEATURES)}
LEFT, RIGHT, FRONT, REAR = 0, 1, 0, 1


def highway_spec(vehicles: list[dict], *, size: int = 2, start: float = 200.0, speed: float = 25.0,
                 length: float = 1000.0, **extra) -> ScenarioSpec:
    """Empty 3-lane highway (lanes 4 m apart, y = 0, 4, 8), a platoon on lane 1, hand-placed vehicles."""
    data = {
        "name": "obs_test",
        "road": {"type": "highway", "lanes": 3, "length": length},
        "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": size, "lane": 1, "start": start, "speed": speed, "spacing": 15.0}],
        "vehicles": vehicles,
        **extra,
    }
    return ScenarioSpec.model_validate(data)


def observe(spec: ScenarioSpec):
    sim = Simulation(spec, 0)
    return sim, Observer(sim).observe()


def test_vehicle_30m_ahead_in_lane_is_the_leader_25m_bumper_to_bumper() -> None:
    sim, obs = observe(highway_spec([{"id": "a", "lane": 1, "start": 230.0, "speed": 20.0}]))
    leader = obs.leader[0]
    assert leader[LEAD["gap"]] == pytest.approx(25.0, abs=1e-4)
    assert leader[LEAD["speed"]] == pytest.approx(20.0)
    assert leader[LEAD["closing_speed"]] == pytest.approx(5.0)  # 25 − 20: the gap shrinks
    assert leader[LEAD["present"]] == 1.0
    # member 1 (15 m behind the leader, bumper to bumper) follows member 0
    assert obs.leader[1, LEAD["gap"]] == pytest.approx(15.0, abs=1e-4)
    assert obs.leader[1, LEAD["speed"]] == pytest.approx(25.0)
    assert obs.ego[0, EGO["is_leader"]] == 1.0 and obs.ego[1, EGO["is_leader"]] == 0.0
    assert obs.ego[1, EGO["member_index"]] == 1.0
    assert obs.ego[0, EGO["speed"]] == pytest.approx(25.0)
    assert obs.ego[0, EGO["lane_width"]] == pytest.approx(4.0)
    assert obs.ego[0, EGO["distance_to_lane_end"]] == pytest.approx(800.0)
    assert obs.ego[0, EGO["speed_limit"]] == pytest.approx(30.0)


def test_no_leader_within_range_reports_range_and_absent() -> None:
    spec = highway_spec([{"id": "far", "lane": 1, "start": 400.0, "speed": 25.0}])
    _, obs = observe(spec)
    assert obs.leader[0].tolist() == [spec.observation.range, 0.0, 0.0, 0.0]


def test_side_lane_neighbours_front_and_rear() -> None:
    vehicles = [
        {"id": "l_front", "lane": 0, "start": 212.0, "speed": 27.0},  # left lane, 12 m ahead
        {"id": "r_rear", "lane": 2, "start": 160.0, "speed": 30.0},  # right lane, 40 m behind
    ]
    _, obs = observe(highway_spec(vehicles))
    side = obs.side[0]
    assert side[LEFT, FRONT, SIDE["gap"]] == pytest.approx(7.0, abs=1e-4)
    assert side[LEFT, FRONT, SIDE["speed"]] == pytest.approx(27.0)
    assert side[LEFT, FRONT, SIDE["closing_speed"]] == pytest.approx(-2.0)  # it pulls away
    assert side[LEFT, FRONT, SIDE["present"]] == 1.0
    assert side[LEFT, REAR, SIDE["present"]] == 0.0
    assert side[RIGHT, REAR, SIDE["gap"]] == pytest.approx(35.0, abs=1e-4)
    assert side[RIGHT, REAR, SIDE["closing_speed"]] == pytest.approx(5.0)  # 30 − 25: it closes in
    assert side[RIGHT, FRONT, SIDE["present"]] == 0.0
    assert obs.side_lane[0].tolist() == [1.0, 1.0]
    # the left-lane vehicle is not the in-lane leader
    assert obs.leader[0, LEAD["present"]] == 0.0


def test_outer_lane_has_no_side_lane() -> None:
    spec = ScenarioSpec.model_validate({
        "name": "edge", "road": {"type": "highway", "lanes": 2, "length": 800}, "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": 1, "lane": 0, "start": 100}],
    })
    _, obs = observe(spec)
    assert obs.side_lane[0].tolist() == [0.0, 1.0]
    assert np.all(obs.side[0, LEFT, :, SIDE["present"]] == 0.0)


def test_neighbours_in_ego_frame_with_same_platoon_flag() -> None:
    vehicles = [{"id": "l_front", "lane": 0, "start": 210.0, "speed": 25.0}]
    sim, obs = observe(highway_spec(vehicles))
    k = obs.neighbour_mask.shape[1]
    assert obs.neighbour_mask[0].sum() == 2 and obs.neighbour_mask[0, 2:].sum() == 0
    nb = obs.neighbours[0]
    # nearest first: the left-lane car (10 m ahead, 4 m to the left = −y), then member 1 (20 m behind)
    assert nb[0, NB["dx"]] == pytest.approx(10.0, abs=1e-4)
    assert nb[0, NB["dy"]] == pytest.approx(-4.0, abs=1e-4)
    assert nb[0, NB["same_platoon"]] == 0.0
    assert nb[1, NB["dx"]] == pytest.approx(-20.0, abs=1e-4)
    assert nb[1, NB["same_platoon"]] == 1.0
    assert nb[1, NB["dvx"]] == pytest.approx(0.0, abs=1e-5)
    assert nb[1, NB["cos_dheading"]] == pytest.approx(1.0)
    assert nb[1, NB["length"]] == pytest.approx(VEHICLE_LENGTH) and nb[1, NB["width"]] == pytest.approx(VEHICLE_WIDTH)
    assert np.all(obs.neighbours[0, 2:] == 0.0)
    assert obs.neighbours.shape == (2, k, len(NEIGHBOUR_FEATURES))


def test_lane_points_ahead_on_a_straight_lane() -> None:
    spec = highway_spec([])
    _, obs = observe(spec)
    p, spacing = spec.observation.lane_points, spec.observation.lane_point_spacing
    expected = np.stack([spacing * np.arange(1, p + 1), np.zeros(p)], axis=1)
    np.testing.assert_allclose(obs.lane_ahead[0], expected, atol=1e-4)


def test_predecessor_message_is_what_the_predecessor_broadcast() -> None:
    spec = highway_spec([], size=3, comms={"topology": "predecessor_follower", "latency": 0})
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    rng = np.random.default_rng(0)
    for _ in range(3):
        sim.step(np.column_stack([rng.uniform(-2, 2, 3), np.zeros(3)]))
    obs = observer.observe()
    w = sim.world
    assert obs.predecessor_mask.tolist() == [False, True, True]
    assert np.all(obs.predecessor_message[0] == 0.0)
    for k in (1, 2):
        pred = sim.controlled[k - 1]
        sent = [w.x[pred], w.y[pred], w.heading[pred], w.speed[pred], w.accel[pred], w.length[pred]]
        np.testing.assert_allclose(obs.predecessor_message[k, : len(MESSAGE_FIELDS)], sent, rtol=1e-6)
    # the inbox is passed through unchanged
    np.testing.assert_array_equal(obs.inbox, sim.inbox.data)
    np.testing.assert_array_equal(obs.inbox_mask, sim.inbox.mask)


def test_departed_member_is_zero_and_masked_and_the_next_one_leads() -> None:
    # 25 m/s = 1.67 m per frame: the leader passes the road end (200 m) in the step's last frame
    spec = highway_spec([], size=2, start=196.0, length=200.0)
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    result = sim.step(np.zeros((2, 2)))
    assert result.departed == ["p0.0"]
    obs = observer.observe()
    assert obs.alive.tolist() == [False, True]
    for field in ("ego", "leader", "side", "side_lane", "neighbours", "lane_ahead", "route", "inbox",
                  "inbox_age", "predecessor_message"):
        assert np.all(getattr(obs, field)[0] == 0), field
    assert not obs.neighbour_mask[0].any() and not obs.inbox_mask[0].any() and not obs.predecessor_mask[0]
    assert obs.ego[1, EGO["is_leader"]] == 1.0
    # the channel holds the leader's last message (sent a step ago) until it expires
    assert obs.predecessor_mask[1] and obs.predecessor_age[1] == 1.0
    assert np.isfinite(obs.flat()).all()


def test_crashed_member_is_zero_and_masked() -> None:
    spec = highway_spec([{"id": "wall", "lane": 1, "start": 207.0, "speed": 0.0}])
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    sim.step(np.zeros((2, 2)))
    assert sim.world.crashed[sim.controlled[0]]
    obs = observer.observe()
    assert obs.alive.tolist() == [False, True]
    assert np.all(obs.ego[0] == 0) and not obs.neighbour_mask[0].any()
    # the crashed leader is still an obstacle that member 1 sees ahead
    assert obs.leader[1, LEAD["present"]] == 1.0


def test_onramp_route_asks_for_one_lane_left_before_the_acceleration_lane_ends() -> None:
    spec = load_scenario("onramp_merge")
    road = spec.road
    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    end_of_accel = road.ramp_length + road.converge_length + road.accel_length
    start = spec.platoons[0].start
    assert obs.route[0, ROUTE["lane_changes_needed"]] == -1.0
    assert obs.route[0, ROUTE["distance_to_do_it"]] == pytest.approx(end_of_accel - start, abs=1e-3)
    assert 0.0 < obs.route[0, ROUTE["progress"]] < 1.0
    assert obs.route[1, ROUTE["progress"]] < obs.route[0, ROUTE["progress"]]  # member 1 is behind
    assert obs.side_lane[0].tolist() == [0.0, 0.0]  # single-lane ramp


def test_acceleration_lane_sees_main_road_but_main_road_cannot_enter_it() -> None:
    spec = ScenarioSpec.model_validate({
        "name": "merge_sides",
        "road": {"type": "onramp_merge", "main_lanes": 2, "main_length": 600},
        "traffic": {"count": 0},
        "platoons": [
            {"id": "ramp", "size": 1, "lane": "accel", "start": 40.0, "speed": 20.0, "destination": "main_out"},
            {"id": "main", "size": 1, "lane": [ "merge_begin", "merge_end", 1], "start": 60.0, "speed": 20.0},
        ],
    })
    _, obs = observe(spec)
    assert obs.side_lane[0].tolist() == [1.0, 0.0]  # accel lane: left = main lane 1
    assert obs.side_lane[1].tolist() == [1.0, 0.0]  # main lane 1: right = accel lane, forbidden
    # the main-road member is 20 m ahead in the left lane of the accel-lane member
    assert obs.side[0, LEFT, FRONT, SIDE["gap"]] == pytest.approx(15.0, abs=1e-3)
    assert obs.side[1, RIGHT, REAR, SIDE["present"]] == 0.0
    road = spec.road
    assert obs.route[0, ROUTE["lane_changes_needed"]] == -1.0
    assert obs.route[0, ROUTE["distance_to_do_it"]] == pytest.approx(road.accel_length - 40.0, abs=1e-3)
    assert obs.ego[0, EGO["distance_to_lane_end"]] == pytest.approx(road.accel_length - 40.0, abs=1e-3)


def test_leader_is_found_across_a_lane_boundary() -> None:
    spec = ScenarioSpec.model_validate({
        "name": "boundary",
        "road": {"type": "onramp_merge", "main_lanes": 2, "main_length": 600},
        "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": 1, "lane": "main_0", "start": 220.0, "speed": 20.0}],
        "vehicles": [{"id": "a", "lane": ["merge_begin", "merge_end", 0], "start": 10.0, "speed": 20.0}],
    })
    _, obs = observe(spec)
    boundary = spec.road.ramp_length + spec.road.converge_length  # where main_0 hands over
    assert obs.leader[0, LEAD["present"]] == 1.0
    assert obs.leader[0, LEAD["gap"]] == pytest.approx(boundary + 10.0 - 220.0 - VEHICLE_LENGTH, abs=1e-3)


def test_lane_drop_without_route_asks_to_leave_the_dropped_lane() -> None:
    spec = load_scenario("lane_drop")
    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    p0, p1 = spec.platoons
    drop = spec.road.drop_position
    assert obs.route[0, ROUTE["lane_changes_needed"]] == -1.0
    assert obs.route[0, ROUTE["distance_to_do_it"]] == pytest.approx(drop - p0.start, abs=1e-3)
    assert obs.route[p0.size, ROUTE["lane_changes_needed"]] == 0.0


def _catalogue_observations():
    """(name, observation) after three zero-action steps of every catalogue scenario."""
    from diffplatoon.scenarios import catalogue_names

    for name in catalogue_names():
        spec = load_scenario(name)
        sim = Simulation(spec, 0)
        observer = Observer(sim)
        for _ in range(3):
            sim.step(np.zeros((len(sim.controlled), 2)))
        yield name, spec, sim, observer.observe()


def test_flat_round_trip_on_every_catalogue_scenario() -> None:
    for name, spec, sim, obs in _catalogue_observations():
        m, k, p = len(sim.controlled), spec.observation.neighbours, spec.observation.lane_points
        kc, d = sim.inbox.data.shape[1:]
        dim = len(EGO_FEATURES) + len(LEADER_FEATURES) + 4 * len(SIDE_FEATURES) + 2 \
            + k * (len(NEIGHBOUR_FEATURES) + 1) + 2 * p + len(RIGHT_OF_WAY_FEATURES) + len(ROUTE_FEATURES) + kc * (d + 2)
        layout = obs.layout
        assert layout is flat_layout(k, p, kc, d) and layout.size == dim, name
        obs.validate()
        flat = obs.flat()
        assert flat.shape == (m, dim) and flat.dtype == np.float32, name
        assert obs.ego.dtype == np.float32 and obs.neighbour_mask.dtype == bool
        assert obs.alive.all(), name
        # the slices tile the columns in field order
        assert [sl.start for sl in layout.slices.values()] == [0] + [sl.stop for sl in layout.slices.values()][:-1]

        # numpy: views of the flat array, equal to the fields (masks as 0/1)
        parts = layout.unflatten(flat)
        assert list(parts) == [f.name for f in layout.fields]
        for f in layout.fields:
            np.testing.assert_array_equal(parts[f.name], getattr(obs, f.name).astype(np.float32), err_msg=name)
            assert np.shares_memory(parts[f.name], flat), (name, f.name)
        back = Observation.from_flat(flat, layout, alive=obs.alive, pose=obs.pose, inbox_sender=obs.inbox_sender,
                                     predecessor_message=obs.predecessor_message,
                                     predecessor_mask=obs.predecessor_mask, predecessor_age=obs.predecessor_age)
        back.validate(layout)
        assert back.flat().tobytes() == flat.tobytes(), name
        for f in layout.fields + layout.extras:
            value = getattr(back, f.name)
            assert value.dtype == getattr(obs, f.name).dtype, (name, f.name)
            np.testing.assert_array_equal(value, getattr(obs, f.name), err_msg=f"{name} {f.name}")

        # batched numpy and torch: any leading dims, the inverse of flatten
        batch = np.stack([flat, 2.0 * flat, -flat]).reshape(3, 1, m, dim)
        for array in (batch, torch.from_numpy(batch)):
            parts = layout.unflatten(array)
            for f in layout.fields:
                assert tuple(parts[f.name].shape) == (3, 1, m) + f.shape, (name, f.name)
            again = layout.flatten(parts)
            assert type(again) is type(array) and tuple(again.shape) == batch.shape
            np.testing.assert_array_equal(np.asarray(again), batch)
        t = torch.from_numpy(batch)
        side = layout.unflatten(t)["side"]
        assert side.untyped_storage().data_ptr() == t.untyped_storage().data_ptr()  # a view, no copy


def test_unflatten_refuses_a_vector_of_another_width() -> None:
    layout = flat_layout(4, 3, 2, 5)
    with pytest.raises(ValueError, match=f"{layout.size + 1} columns"):
        layout.unflatten(np.zeros((2, layout.size + 1), np.float32))


def test_layout_is_cached_and_pickles() -> None:
    layout = flat_layout(4, 3, 2, 5)
    assert flat_layout(4, 3, 2, 5) is layout
    back = pickle.loads(pickle.dumps(layout))  # RLlib modules holding a layout are pickled to workers
    assert back == layout and back.size == layout.size and back.slices == layout.slices


def _one_observation() -> Observation:
    return observe(highway_spec([{"id": "a", "lane": 1, "start": 230.0, "speed": 20.0}]))[1]


@pytest.mark.parametrize("field, value, message", [
    ("neighbours", lambda o: o.neighbours[:, :-1], r"Observation\.neighbour_mask: shape"),
    ("side", lambda o: o.side.reshape(len(o), 4, 4), r"Observation\.side: shape \(2, 4, 4\), expected \(2, 2, 2, 4\)"),
    ("ego", lambda o: o.ego.astype(np.float64), r"Observation\.ego: dtype float64, expected float32"),
    ("neighbour_mask", lambda o: o.neighbour_mask.astype(np.float32), r"Observation\.neighbour_mask: dtype float32"),
    ("route", lambda o: np.where(np.arange(len(ROUTE_FEATURES)) == 1, np.nan, o.route).astype(np.float32),
     r"Observation\.route: non-finite value nan at \(0, 1\)"),
    ("inbox", lambda o: np.full_like(o.inbox, np.inf), r"Observation\.inbox: non-finite value inf"),
    ("pose", lambda o: o.pose[:1], r"Observation\.pose: shape \(1, 3\), expected \(2, 3\)"),
    ("inbox_sender", lambda o: o.inbox_sender.astype(np.int32), r"Observation\.inbox_sender: dtype int32"),
])
def test_validate_names_the_broken_field(field, value, message) -> None:
    obs = _one_observation()
    obs.validate()
    broken = dataclasses.replace(obs, **{field: value(obs)})
    with pytest.raises(ValueError, match=message):
        broken.validate()


def test_validate_against_another_layout_names_the_first_field_that_differs() -> None:
    obs = _one_observation()
    k, p, kc, d = obs.neighbours.shape[1], obs.lane_ahead.shape[1], *obs.inbox.shape[1:]
    obs.validate(flat_layout(k, p, kc, d))
    with pytest.raises(ValueError, match=r"Observation\.lane_ahead: shape"):
        obs.validate(flat_layout(k, p + 1, kc, d))


def test_observation_is_frozen_and_its_arrays_read_only() -> None:
    obs = _one_observation()
    ego = obs.ego.copy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        obs.ego = np.zeros_like(ego)
    for f in obs.layout.fields + obs.layout.extras:
        with pytest.raises(ValueError, match="read-only"):
            getattr(obs, f.name)[...] = 0
    np.testing.assert_array_equal(obs.ego, ego)
    # a changed copy is a new observation; the original stays as it was
    faster = ego.copy()
    faster[:, EGO["speed"]] += 1.0
    changed = dataclasses.replace(obs, ego=faster)
    assert changed.ego[0, EGO["speed"]] == ego[0, EGO["speed"]] + 1.0
    np.testing.assert_array_equal(obs.ego, ego)
    assert not changed.ego.flags.writeable and changed.neighbours is obs.neighbours
    # select, astype32, copies and pickles are read-only observations too
    assert not obs.select(np.array([1])).ego.flags.writeable and len(obs.select(np.array([1]))) == 1
    for other in (obs.astype32(), copy.deepcopy(obs), pickle.loads(pickle.dumps(obs))):
        assert not other.inbox.flags.writeable
        assert other.flat().tobytes() == obs.flat().tobytes()


def test_all_absent_observation_is_valid_zeros_with_empty_senders() -> None:
    layout = flat_layout(3, 2, 4, 5)
    obs = Observation.zeros(layout, 2)
    obs.validate(layout)
    assert not obs.flat().any() and obs.flat().shape == (2, layout.size)
    np.testing.assert_array_equal(obs.inbox_sender, -1)
    assert not obs.alive.any() and obs.alive.dtype == bool


def _roundabout_obs(vehicles: list[dict], start: float) -> tuple[Simulation, Observation]:
    spec = ScenarioSpec.model_validate(dict(
        name="row", road=dict(type="roundabout", radius=20, lanes=2), traffic=dict(count=0), vehicles=vehicles,
        platoons=[dict(id="p0", size=1, lane="south_entry", start=start, speed=8, destination="north")]))
    return observe(spec)


def test_right_of_way_features_at_a_roundabout_entry() -> None:
    """The entry lane yields to the ring: distance to the yield line (zone start − the World's
    yield_stop_gap), the priority vehicle's arrival, the rule's verdict; nothing on a highway."""
    ROW = {name: i for i, name in enumerate(RIGHT_OF_WAY_FEATURES)}
    parked = dict(id="ring", lane=["ring_south_out", "ring_south_in", 1], start=15, speed=0.0)
    sim, obs = _roundabout_obs([parked], start=60.0)
    world = sim.world
    cf, lane = world.table.conflicts, int(world.lane[sim.controlled[0]])
    row = obs.right_of_way[0]
    # the member is on the approach (south → south_yield, 80 m): its zone is on the next lane
    nxt = world.table.follow_next[lane]
    expected = world.table.length[lane] - 60.0 + cf.zone_start[nxt] - world.params.yield_stop_gap
    assert row[ROW["yield_line_distance"]] == pytest.approx(expected, abs=1e-3)
    assert row[ROW["lane_yields"]] == 1.0
    assert row[ROW["priority_arrival"]] == 0.0  # the ring car stands inside its zone
    assert row[ROW["must_yield"]] == 1.0 and row[ROW["clear_time"]] > 0.0
    _, free = _roundabout_obs([], start=60.0)
    assert free.right_of_way[0, ROW["must_yield"]] == 0.0 and free.right_of_way[0, ROW["priority_arrival"]] == 60.0
    assert free.right_of_way[0, ROW["yield_line_distance"]] == pytest.approx(expected, abs=1e-3)
    # a zone on the next lane is seen from the rule's look-ahead (max(yield_lookahead, IDM gap)) on
    _, far = _roundabout_obs([parked], start=5.0)
    assert far.right_of_way[0].tolist() == [1000.0, 0.0, 60.0, 0.0, 0.0]
    _, hw = observe(highway_spec([]))
    assert hw.right_of_way.tolist() == [[1000.0, 0.0, 60.0, 0.0, 0.0]] * 2


def test_path_offsets_follow_the_route_branch_at_a_fork() -> None:
    """Before the last half length of a lane the path lane is the current lane; past it, the route's
    next lane (highway-env's target lane), which at a roundabout exit is the exit, not the ring."""
    R = {name: i for i, name in enumerate(ROUTE_FEATURES)}
    sim, obs = _roundabout_obs([], start=60.0)
    assert obs.route[0, R["path_lateral_offset"]] == pytest.approx(obs.ego[0, EGO["lateral_offset"]])
    assert obs.route[0, R["path_heading_error"]] == pytest.approx(obs.ego[0, EGO["heading_error"]])
    world, tab = sim.world, sim.world.table
    row = sim.controlled[0]
    ring = tab.lane_id(("ring_north_out", "ring_north_in", 1))
    exit_lane = tab.lane_id(("ring_north_out", "north_leave", 0))
    # place the member on the ring 1 m before the fork to the north exit
    world.vehicles.lane[row] = tab.lane_id(("ring_east_in", "ring_north_out", 1))
    s = tab.length[world.vehicles.lane[row]] - 1.0
    x, y = tab.position(np.array([world.vehicles.lane[row]]), np.array([s]), np.zeros(1))
    world.vehicles.x[row], world.vehicles.y[row], world.vehicles.s[row], world.vehicles.r[row] = x[0], y[0], s, 0.0
    world.vehicles.heading[row] = tab.heading_at(np.array([world.vehicles.lane[row]]), np.array([s]))[0]
    observer = Observer(sim)
    obs = observer.observe()
    sx, rx = tab.local_coordinates(np.array([exit_lane]), x, y)
    assert obs.route[0, R["path_lateral_offset"]] == pytest.approx(rx[0], abs=1e-4)
    assert ring != exit_lane and observer._path.lane[0] == exit_lane
