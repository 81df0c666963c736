"""The World's closest-lane search: candidate lanes plus a box bound for vehicles off the road."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.scenarios.roads import IntersectionRoad, OnrampMergeRoad, RoundaboutRoad
from diffplatoon.sim.roads import build_network
from diffplatoon.sim.lanes import LaneTable
from diffplatoon.sim.world import World, WorldParams

ROADS = [OnrampMergeRoad(), RoundaboutRoad(), IntersectionRoad()]
IDS = ["onramp_merge", "roundabout", "intersection"]


def _points(table: LaneTable, rng: np.random.Generator, n: int, margin: float) -> tuple[np.ndarray, ...]:
    finite = np.isfinite(table.search.box[: table.n, :4]).all(axis=1)
    box = table.search.box[: table.n][finite]
    x = rng.uniform(box[:, 0].min() - margin, box[:, 1].max() + margin, n)
    y = rng.uniform(box[:, 2].min() - margin, box[:, 3].max() + margin, n)
    return x, y, rng.uniform(-np.pi, np.pi, n)


@pytest.mark.parametrize("road", ROADS, ids=IDS)
def test_lane_boxes_bound_the_lane_distance_from_below(road):
    table = LaneTable(build_network(road))
    x, y, h = _points(table, np.random.default_rng(0), 3000, 60.0)
    lanes = np.broadcast_to(np.arange(table.n)[None, :], (len(x), table.n))
    xs, ys = np.broadcast_to(x[:, None], lanes.shape), np.broadcast_to(y[:, None], lanes.shape)
    s, r = table.local_coordinates(lanes, np.ascontiguousarray(xs), np.ascontiguousarray(ys))
    dist = table.distance_with_heading(lanes, s, r, np.broadcast_to(h[:, None], lanes.shape))
    box = table.search.box[lanes]
    dx = np.maximum(np.maximum(box[..., 0] - xs, xs - box[..., 1]), 0.0)
    dy = np.maximum(np.maximum(box[..., 2] - ys, ys - box[..., 3]), 0.0)
    assert np.all(np.hypot(dx, dy) - box[..., 4] <= dist + 1e-9)


@pytest.mark.parametrize("road", ROADS, ids=IDS)
def test_vehicles_off_the_road_get_the_closest_of_all_lanes(road):
    """Members steering at random leave the road; their lane is highway-env's closest lane."""
    world = World(build_network(road), WorldParams(), np.random.default_rng(1))
    table = world.table
    rng = np.random.default_rng(2)
    entries = table.entry_lanes
    rows = [world.spawn(int(e), 10.0, 8.0, controlled=True, platoon=0, member=k) for k, e in enumerate(entries)]
    far = 0
    for _ in range(300):
        live = world.controlled_rows()
        if len(live) == 0:
            break
        actions = np.stack([rng.uniform(-1, 2, len(live)), rng.uniform(-0.3, 0.3, len(live))], axis=1)
        world.frame(actions)
        live = world.controlled_rows()
        expected = table.closest_lane(world.x[live], world.y[live], world.heading[live])
        assert np.array_equal(world.lane[live], expected)
        s, r = table.local_coordinates(expected, world.x[live], world.y[live])
        far += int(np.count_nonzero(np.abs(r) > table.search.near_trust))
    assert len(rows) >= 3 and far > 50  # the test did cover vehicles well off the road
