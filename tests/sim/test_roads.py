"""Road specs and their builder: lane shapes built into real highway-env lanes, lane graph, routing,
validation, drivable area (`diffplatoon.scenarios.roads` and `diffplatoon.sim.roads`)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import shapely
from highway_env.road.lane import CircularLane, SineLane, StraightLane
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.behavior import IDMVehicle
from pydantic import TypeAdapter, ValidationError

from diffplatoon.scenarios.roads import (
    HighwayRoad,
    IntersectionRoad,
    LaneDropRoad,
    LaneGraphRoad,
    OnrampMergeRoad,
    RoadSpec,
    RoundaboutRoad,
)
from diffplatoon.geometry import wrap_angle
from diffplatoon.sim.roads import build_network, drivable_area

ARMS = ("south", "west", "north", "east")

BUILT_INS = [
    HighwayRoad(),
    HighwayRoad(lanes=1, length=200.0),
    OnrampMergeRoad(),
    OnrampMergeRoad(main_lanes=3, ramp_offset=8.0),
    LaneDropRoad(),
    LaneDropRoad(lanes=2, drop_side="left", length=400.0, drop_position=100.0),
    IntersectionRoad(),
    IntersectionRoad(lanes=2, arm_length=40.0),
    RoundaboutRoad(),
    RoundaboutRoad(lanes=1, radius=15.0, entry_radius=10.0),
    RoundaboutRoad(lanes=3),
]


def _id(road) -> str:
    return f"{road.type}-{len(build_network(road).lanes_list())}"


def _custom_road(**extra) -> LaneGraphRoad:
    """Straight, then a quarter arc turning right (clockwise, y down), then an S-shaped sine shift, 2 lanes."""
    data = {
        "type": "lane_graph",
        "nodes": {"a": (0.0, 0.0), "b": (100.0, 0.0), "c": (130.0, 30.0), "d": (130.0, 130.0)},
        "lanes": [
            {"from": "a", "to": "b", "count": 2, "name": "in"},
            {"from": "b", "to": "c", "kind": "arc", "count": 2, "center": (100.0, 30.0), "radius": 30.0,
             "start_phase": -math.pi / 2, "end_phase": 0.0, "clockwise": True},
            {"from": "c", "to": "d", "kind": "sine", "count": 2, "amplitude": 0.0, "name": "out"},
        ],
    }
    data.update(extra)
    return TypeAdapter(RoadSpec).validate_python(data)


# --- building --------------------------------------------------------------------------------


@pytest.mark.parametrize("road", BUILT_INS, ids=_id)
def test_builds_highway_env_network(road):
    net = build_network(road)
    assert isinstance(net, RoadNetwork)
    lanes = net.lanes_list()
    assert lanes and all(isinstance(lane, (StraightLane, SineLane, CircularLane)) for lane in lanes)
    assert all(lane.length > 0 for lane in lanes)
    assert build_network(road) is net  # cached
    assert road.lane_graph() is road.lane_graph()
    assert set(road.lane_graph().nodes) == set(net.lanes_dict())


def test_road_types_use_their_lane_shapes():
    kinds = lambda road: {type(lane) for lane in build_network(road).lanes_list()}  # noqa: E731
    assert SineLane in kinds(OnrampMergeRoad())
    assert CircularLane in kinds(IntersectionRoad()) and StraightLane in kinds(IntersectionRoad())
    assert CircularLane in kinds(RoundaboutRoad())
    assert kinds(HighwayRoad()) == {StraightLane}


@pytest.mark.parametrize("road", BUILT_INS, ids=_id)
def test_next_edges_join_exactly_and_lateral_edges_are_parallel(road):
    graph, lanes = road.lane_graph(), build_network(road).lanes_dict()
    n_next = 0
    for u, v, kind in graph.edges(data="kind"):
        a, b = lanes[u], lanes[v]
        if kind == "next":
            n_next += 1
            assert u[1] == v[0]
            assert np.linalg.norm(a.position(a.length, 0) - b.position(0, 0)) < 1e-6
            assert abs(wrap_angle(a.heading_at(a.length) - b.heading_at(0))) < 1e-6
        else:
            assert kind in ("left", "right") and u[:2] == v[:2] and abs(u[2] - v[2]) == 1
            _, lateral = a.local_coordinates(b.position(0, 0))
            assert lateral == pytest.approx(a.width if kind == "right" else -a.width)
            assert not b.forbidden
    # Every lane but the exits and dead ends has a successor; every non-entry a predecessor.
    no_successor = set(road.exit_lanes()) | set(road.dead_end_lanes())
    assert n_next >= len(lanes) - len(no_successor)
    for idx in lanes:
        has_next = any(k == "next" for _, _, k in graph.out_edges(idx, data="kind"))
        assert has_next != (idx in no_successor)


@pytest.mark.parametrize("road", BUILT_INS, ids=_id)
def test_built_in_roads_have_no_problems(road):
    assert road.problems() == []
    assert road.entry_lanes() and road.exit_lanes()
    assert all(idx[1] in road.destinations() for idx in road.exit_lanes())


def test_specs_are_plain_data_and_products_are_shared_by_equal_specs():
    road = RoundaboutRoad()
    network, area = build_network(road), drivable_area(road)
    assert road == RoundaboutRoad() and hash(road) == hash(RoundaboutRoad())
    assert not road.__pydantic_private__  # nothing derived is stored on the spec
    copy = pickle.loads(pickle.dumps(road))
    assert copy == road and copy.problems() == []
    assert build_network(copy) is network and drivable_area(copy) is area and copy.lane_graph() is road.lane_graph()
    assert build_network(RoundaboutRoad(lanes=1)) is not network


def test_model_copy_with_update_does_not_reuse_the_original_network():
    road = HighwayRoad(lanes=3)
    assert len(build_network(road).lanes_list()) == 3
    narrower = road.model_copy(update={"lanes": 2})
    assert len(build_network(narrower).lanes_list()) == 2 and len(narrower.lane_shapes()) == 2
    assert len(build_network(road).lanes_list()) == 3


@pytest.mark.parametrize("road", BUILT_INS + [_custom_road()], ids=_id)
def test_lane_shapes_match_the_highway_env_lanes_built_from_them(road):
    shapes, lanes = road.lane_shapes(), build_network(road).lanes_dict()
    assert list(shapes) == list(lanes)  # same indices, same order
    kinds = {StraightLane: "straight", SineLane: "sine", CircularLane: "arc"}
    for idx, shape in shapes.items():
        lane = lanes[idx]
        assert shape.kind == kinds[type(lane)]
        assert shape.length == lane.length  # closed form, bit for bit
        assert road.lane_length(idx) == lane.length == road.lane_graph().nodes[idx]["length"]
        assert (shape.width, shape.speed_limit, shape.priority, shape.forbidden) == \
            (lane.width, lane.speed_limit, lane.priority, lane.forbidden)
        for s in (0.0, lane.length / 3, lane.length):
            for r in (0.0, 1.5):
                np.testing.assert_allclose(shape.position(s, r), lane.position(s, r), atol=1e-9)
            assert abs(wrap_angle(shape.heading_at(s) - lane.heading_at(s))) < 1e-9
            point = lane.position(s, -1.0)
            np.testing.assert_allclose(shape.local_coordinates(point), lane.local_coordinates(point), atol=1e-9)


def test_lane_shape_of_an_unknown_lane_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"expected an existing lane \(\[start, end, 0\]"):
        HighwayRoad().lane_shape(("start", "end", 7))


# --- lane drop and merge ----------------------------------------------------------------------


@pytest.mark.parametrize("side, escape", [("right", "left"), ("left", "right")])
def test_dropped_lane_ends_and_is_left_by_changing_lanes(side, escape):
    road = LaneDropRoad(lanes=3, drop_side=side)
    dropped = road.named_lanes()["dropped"]
    assert road.dead_end_lanes() == [dropped]
    assert dropped not in road.exit_lanes()
    graph = road.lane_graph()
    assert [k for _, _, k in graph.out_edges(dropped, data="kind")] == [escape]
    route = road.route(dropped, "end")
    assert graph.edges[route[0], route[1]]["kind"] == escape
    assert route[-1][:2] == ("drop", "end")
    assert len(build_network(road).graph["drop"]["end"]) == 2


def test_onramp_acceleration_lane_ends_and_merges_left():
    road = OnrampMergeRoad(main_lanes=2)
    names, graph = road.named_lanes(), road.lane_graph()
    accel = names["accel"]
    assert road.dead_end_lanes() == [accel]
    assert accel[:2] == ("merge_begin", "merge_end") and accel[2] == 2  # same road as the main lanes
    assert graph.has_edge(accel, ("merge_begin", "merge_end", 1))
    assert graph.edges[accel, ("merge_begin", "merge_end", 1)]["kind"] == "left"
    assert not graph.has_edge(("merge_begin", "merge_end", 1), accel)  # main traffic may not move onto it
    route = road.route(names["ramp"], "main_out")
    assert route[:3] == [names["ramp"], names["ramp_bend"], accel]
    assert route[-1] == ("merge_end", "main_out", 1)
    lanes = build_network(road).lanes_dict()
    ramp_start = lanes[names["ramp"]].position(0, 0)
    assert ramp_start[1] - lanes[accel].position(0, 0)[1] == pytest.approx(road.ramp_offset)


@pytest.mark.parametrize("make, fragment", [
    (lambda: OnrampMergeRoad(main_length=300.0), "main_length >= "),
    (lambda: OnrampMergeRoad(ramp_offset=2.0), "ramp_offset >= lane_width"),
    (lambda: LaneDropRoad(length=400.0, drop_position=400.0), "drop_position < length"),
    (lambda: RoundaboutRoad(entry_radius=60.0), "entry_radius small enough"),
    (lambda: HighwayRoad(lanes=9), "less than or equal to 8"),
])
def test_built_in_roads_reject_geometry_that_does_not_fit(make, fragment):
    with pytest.raises(ValidationError, match=fragment):
        make()


# --- routes -----------------------------------------------------------------------------------


def _assert_chain(road, route, start, destination):
    graph = road.lane_graph()
    assert route[0] == start and route[-1][1] == destination
    for u, v in zip(route, route[1:]):
        assert graph.has_edge(u, v), (u, v)


@pytest.mark.parametrize("lanes", [1, 2])
def test_intersection_routes_from_every_arm_to_every_other(lanes):
    road = IntersectionRoad(lanes=lanes)
    names, net = road.named_lanes(), build_network(road)
    for a in ARMS:
        for b in ARMS:
            if a == b:
                continue
            start = names[f"{a}_in"]
            route = road.route(start, b)
            _assert_chain(road, route, start, b)
            assert len(route) == 3
            last = net.get_lane(route[-1])
            assert np.linalg.norm(last.position(last.length, 0)) > np.linalg.norm(last.position(0, 0))  # leaves the box
    # Turn geometry: from the south arm (heading north, -y) right goes east (+x), left goes west.
    right = net.get_lane(road.route(names["south_in"], "east")[1])
    left = net.get_lane(road.route(names["south_in"], "west")[1])
    assert isinstance(right, CircularLane) and isinstance(left, CircularLane)
    assert abs(wrap_angle(right.heading_at(right.length))) < 1e-9
    assert abs(wrap_angle(left.heading_at(left.length) - math.pi)) < 1e-9
    assert right.length < left.length


@pytest.mark.parametrize("ring_lanes", [1, 2])
def test_roundabout_routes_from_every_arm_to_every_arm(ring_lanes):
    road = RoundaboutRoad(lanes=ring_lanes)
    names = road.named_lanes()
    for a in ARMS:
        start = names[f"{a}_entry"]
        costs = {}
        for b in ARMS:
            route = road.route(start, b)
            _assert_chain(road, route, start, b)
            assert route[-1] == names[f"{b}_exit"]
            costs[b] = sum(road.lane_length(idx) for idx in route)
        # Counter-clockwise on screen: the next arm is the one to the right (south -> east -> north -> west).
        order = [ARMS[(ARMS.index(a) - k) % 4] for k in (1, 2, 3, 0)]
        assert [costs[b] for b in order] == sorted(costs.values())


def test_route_rejects_unknown_and_unreachable_destinations():
    road = LaneGraphRoad(
        nodes={"a": (0, 0), "b": (50, 0), "c": (100, 0), "d": (100, 40)},
        lanes=[{"from": "a", "to": "b"}, {"from": "b", "to": "c"},
               {"from": "b", "to": "d", "kind": "sine", "amplitude": -20.0}],
    )
    assert road.problems() == []
    assert road.destinations() == ["c", "d"]
    assert road.route(("a", "b", 0), "d") == [("a", "b", 0), ("b", "d", 0)]
    with pytest.raises(ValueError, match="reachable"):
        road.route(("b", "d", 0), "c")
    with pytest.raises(ValueError, match="c, d"):
        road.route(("a", "b", 0), "nowhere")


@pytest.mark.parametrize("road, start, destination", [
    (IntersectionRoad(), "south_in", "north"),
    (IntersectionRoad(), "east_in", "south"),
    (RoundaboutRoad(), "south_entry", "north"),
    (OnrampMergeRoad(), "ramp", "main_out"),
])
def test_highway_env_vehicle_follows_the_network_to_its_destination(road, start, destination):
    net = build_network(road)
    hw_road = Road(network=net, np_random=np.random.RandomState(0))
    vehicle = IDMVehicle.make_on_lane(hw_road, road.resolve_lane(start), 0.0, speed=8.0)
    vehicle.plan_route_to(destination)
    hw_road.vehicles.append(vehicle)
    area = drivable_area(road)
    dt, last_lane = 1 / 15, None
    for _ in range(int(60 / dt)):
        hw_road.act()
        hw_road.step(dt)
        assert shapely.contains_xy(area, *vehicle.position)
        last_lane = vehicle.lane_index
        if last_lane[1] == destination:
            break
    assert last_lane[1] == destination


# --- lane references --------------------------------------------------------------------------


def test_resolve_lane_accepts_ids_names_and_triples():
    road = IntersectionRoad()
    assert road.resolve_lane(0) == ("south", "south_in", 0)
    assert road.resolve_lane("west_in") == ("west", "west_in", 0)
    assert road.resolve_lane(["north_out", "north", 0]) == ("north_out", "north", 0)
    assert road.resolve_lane(("south_in", "east_out", 0)) == ("south_in", "east_out", 0)
    assert HighwayRoad().resolve_lane(2) == ("start", "end", 2)
    assert OnrampMergeRoad().resolve_lane("accel") == ("merge_begin", "merge_end", 2)
    for road in BUILT_INS:
        for name, idx in road.named_lanes().items():
            assert road.resolve_lane(name) == idx
            assert road.resolve_lane(list(idx)) == idx


@pytest.mark.parametrize("ref, fragment", [
    (3, "[start, end, 2]"),
    ([ "start", "end", 7], "[start, end, 0]"),
    (["start", "nowhere", 0], "valid lanes"),
    ("lane_9", "lane_0, lane_1, lane_2"),
    (True, "int lane id"),
    ([1, 2], "[from, to, id]"),
])
def test_resolve_lane_errors_say_what_was_expected(ref, fragment):
    with pytest.raises(ValueError) as err:
        HighwayRoad().resolve_lane(ref)
    assert fragment in str(err.value)


# --- custom lane graphs -----------------------------------------------------------------------


def test_lane_graph_road_builds_parallel_lanes_through_arc_and_sine():
    road = _custom_road()
    assert road.problems() == []
    lanes = build_network(road).lanes_dict()
    assert isinstance(lanes[("b", "c", 0)], CircularLane) and isinstance(lanes[("c", "d", 1)], SineLane)
    for idx, (frm, to) in {("a", "b", 0): ("a", "b"), ("b", "c", 0): ("b", "c"), ("c", "d", 0): ("c", "d")}.items():
        lane = lanes[idx]
        assert np.allclose(lane.position(0, 0), road.nodes[frm]) and np.allclose(lane.position(lane.length, 0), road.nodes[to])
    # Lane 1 runs 4 m to the right of lane 0 (inside of the clockwise arc).
    assert lanes[("b", "c", 1)].radius == pytest.approx(26.0)
    assert road.route(("a", "b", 0), "d") == [("a", "b", 0), ("b", "c", 0), ("c", "d", 0)]
    assert road.lane_graph().edges[("a", "b", 0), ("a", "b", 1)]["kind"] == "right"
    assert road.named_lanes() == {"in_0": ("a", "b", 0), "in_1": ("a", "b", 1), "out_0": ("c", "d", 0), "out_1": ("c", "d", 1)}
    assert road.resolve_lane(1) == ("a", "b", 1)


def test_sine_lane_meets_its_nodes_with_a_lateral_shift():
    road = LaneGraphRoad(
        nodes={"a": (0, 14.5), "b": (150, 14.5), "c": (230, 8.0), "d": (400, 8.0)},
        lanes=[{"from": "a", "to": "b"}, {"from": "b", "to": "c", "kind": "sine", "amplitude": 3.25},
               {"from": "c", "to": "d"}],
    )
    sine = build_network(road).get_lane(("b", "c", 0))
    assert np.allclose(sine.position(0, 0), (150, 14.5)) and np.allclose(sine.position(sine.length, 0), (230, 8.0))
    assert sine.heading_at(0) == pytest.approx(0.0, abs=1e-9) and sine.heading_at(sine.length) == pytest.approx(0.0, abs=1e-9)
    assert road.problems() == []
    # The same shift to the wrong side bends the lane against its neighbours: a heading jump.
    wrong = road.model_copy(update={"lanes": [road.lanes[0], road.lanes[1].model_copy(update={"amplitude": -3.25}), road.lanes[2]]})
    assert any("heading jumps" in msg for _, msg in wrong.problems())


def test_arc_missing_its_node_is_a_validation_error():
    with pytest.raises(ValidationError) as err:
        _custom_road(nodes={"a": (0.0, 0.0), "b": (100.0, 0.0), "c": (133.0, 30.0), "d": (133.0, 130.0)})
    text = str(err.value)
    assert "lanes.1.end_phase" in text and "'c'" in text and "3.0 m away" in text


@pytest.mark.parametrize("lane, fragment", [
    ({"from": "a", "to": "zz"}, "expected a node name"),
    ({"from": "a", "to": "b", "radius": 5.0}, "no radius on a straight lane"),
    ({"from": "a", "to": "b", "kind": "arc", "radius": 5.0}, "center, start_phase, end_phase"),
    ({"from": "a", "to": "b", "kind": "arc", "center": (0, 0), "radius": 5.0, "start_phase": 1.0, "end_phase": 0.0},
     "end_phase greater"),
    ({"from": "a", "to": "b", "kind": "sine"}, "amplitude"),
    ({"from": "a", "to": "b", "speed": 3}, "Extra inputs"),
])
def test_lane_segment_field_errors(lane, fragment):
    with pytest.raises(ValidationError, match=fragment):
        LaneGraphRoad(nodes={"a": (0, 0), "b": (50, 0)}, lanes=[lane])


def test_dangling_lane_is_reported_with_its_field_path():
    road = LaneGraphRoad(
        nodes={"a": (0, 0), "b": (50, 0), "c": (100, 0), "d": (100, 20)},
        lanes=[{"from": "a", "to": "b"}, {"from": "b", "to": "c"}, {"from": "b", "to": "d", "kind": "sine", "amplitude": -10.0}],
        destinations=["c"],
    )
    problems = road.problems()
    assert [path for path, _ in problems] == ["lanes.2"]
    assert "ends at node 'd'" in problems[0][1]
    assert road.dead_end_lanes() == [("b", "d", 0)]


def test_lanes_meeting_at_a_sharp_corner_are_reported():
    road = LaneGraphRoad(
        nodes={"a": (0, 0), "b": (50, 0), "c": (50, 50)},
        lanes=[{"from": "a", "to": "b"}, {"from": "b", "to": "c"}],
    )
    assert not road.lane_graph().has_edge(("a", "b", 0), ("b", "c", 0))
    problems = road.problems()
    assert any(path == "lanes.0" and "heading jumps by 90 deg" in msg for path, msg in problems)
    assert any(path == "lanes.0" and "ends at node 'b'" in msg for path, msg in problems)


def test_closed_loop_is_a_valid_road_but_an_unfed_loop_beside_a_road_is_not():
    loop_nodes = {"n": (0.0, -50.0), "s": (0.0, 50.0)}
    loop = [
        {"from": "n", "to": "s", "kind": "arc", "center": (0, 0), "radius": 50.0, "start_phase": -math.pi / 2,
         "end_phase": math.pi / 2, "clockwise": True},
        {"from": "s", "to": "n", "kind": "arc", "center": (0, 0), "radius": 50.0, "start_phase": math.pi / 2,
         "end_phase": 3 * math.pi / 2, "clockwise": True},
    ]
    ring = LaneGraphRoad(nodes=loop_nodes, lanes=loop)
    assert ring.problems() == [] and ring.entry_lanes() == [] and ring.destinations() == []
    with pytest.raises(ValueError, match="none on this road"):
        ring.route(("n", "s", 0), "s")
    both = LaneGraphRoad(nodes={**loop_nodes, "a": (200, 0), "b": (300, 0)}, lanes=loop + [{"from": "a", "to": "b"}])
    messages = [msg for _, msg in both.problems()]
    assert sum("reachable from an entry" in m for m in messages) == 2
    assert any("2 separate parts" in m for m in messages)


def test_numeric_node_names_and_road_spec_union():
    road = TypeAdapter(RoadSpec).validate_python(
        {"type": "lane_graph", "nodes": {1: (0, 0), 2: (10, 0)}, "lanes": [{"from": 1, "to": 2}]})
    assert road.resolve_lane([1, 2, 0]) == ("1", "2", 0)
    assert isinstance(TypeAdapter(RoadSpec).validate_python({"type": "roundabout"}), RoundaboutRoad)
    with pytest.raises(ValidationError):
        TypeAdapter(RoadSpec).validate_python({"type": "highway", "lane": 3})
    with pytest.raises(ValidationError):
        TypeAdapter(RoadSpec).validate_python({"type": "motorway"})


# --- drivable area ----------------------------------------------------------------------------


@pytest.mark.parametrize("road", BUILT_INS + [_custom_road()], ids=_id)
def test_drivable_area_covers_lanes_and_excludes_far_points(road):
    area = drivable_area(road)
    inside, outside = [], []
    for lane in build_network(road).lanes_list():
        for s in np.linspace(0, lane.length, 15):
            inside.append(lane.position(s, 0))
            inside.append(lane.position(s, 0.45 * lane.width))
    inside = np.array(inside)
    assert shapely.contains_xy(area, inside[:, 0], inside[:, 1]).all()
    # Points 20 m beyond the road edge, away from every lane.
    minx, miny, maxx, maxy = area.bounds
    probes = np.array([[minx - 20, miny - 20], [maxx + 20, maxy + 20], [(minx + maxx) / 2, maxy + 20],
                       [minx - 20, (miny + maxy) / 2]])
    assert not shapely.contains_xy(area, probes[:, 0], probes[:, 1]).any()
    for lane in build_network(road).lanes_list():
        mid = lane.position(lane.length / 2, lane.width / 2 + 20)
        if shapely.distance(shapely.MultiPoint(inside), shapely.Point(mid)) > 20:
            outside.append(mid)
    if outside:
        outside = np.array(outside)
        assert not shapely.contains_xy(area, outside[:, 0], outside[:, 1]).any()


def test_drivable_area_has_the_expected_size():
    assert drivable_area(HighwayRoad(lanes=3, length=500.0)).area == pytest.approx(3 * 4 * 500.0, rel=1e-3)
    ring = drivable_area(RoundaboutRoad())
    assert not shapely.contains_xy(ring, 0.0, 0.0)  # the central island
