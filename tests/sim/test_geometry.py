"""Tests for diffplatoon.geometry against highway-env's SAT, shapely and closed-form cases."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from highway_env import utils as hw_utils

from diffplatoon import geometry

ZERO = np.zeros(2)


def hw_polygon(corners: np.ndarray) -> np.ndarray:
    """highway-env's polygon layout: the 4 corners followed by the first one again."""
    return np.vstack([corners, corners[:1]])


def hw_overlap(ca: np.ndarray, cb: np.ndarray) -> bool:
    """Reference answer from highway-env's own separating-axis test (no motion)."""
    return bool(hw_utils.are_polygons_intersecting(hw_polygon(ca), hw_polygon(cb), ZERO, ZERO)[0])


def brute_force_pairs(corners: np.ndarray, active: np.ndarray | None = None) -> np.ndarray:
    """All i < j whose boxes intersect per highway-env, by a plain double loop."""
    rows = list(range(len(corners)) if active is None else np.flatnonzero(active))
    out = [(i, j) for a, i in enumerate(rows) for j in rows[a + 1:] if hw_overlap(corners[i], corners[j])]
    return np.array(out, dtype=np.intp).reshape(-1, 2)


def random_scene(rng: np.random.Generator, n: int, extent_x: float, extent_y: float,
                 rotated_share: float = 0.5):
    """n boxes in a rectangle; a share of them get arbitrary headings, the rest near-aligned."""
    x = rng.uniform(0.0, extent_x, n)
    y = rng.uniform(0.0, extent_y, n)
    heading = rng.normal(0.0, 0.1, n)
    rotated = rng.random(n) < rotated_share
    heading[rotated] = rng.uniform(-np.pi, np.pi, rotated.sum())
    length = rng.uniform(3.5, 12.0, n)
    width = rng.uniform(1.6, 2.6, n)
    return x, y, heading, length, width


# --- corners -----------------------------------------------------------------------------


def test_corners_axis_aligned_exact():
    corners = geometry.box_corners(1.0, 2.0, 0.0, 4.0, 2.0)
    expected = np.array([[3.0, 1.0], [3.0, 3.0], [-1.0, 3.0], [-1.0, 1.0]])
    assert corners.shape == (4, 2)  # scalar inputs give a single box
    np.testing.assert_array_equal(corners, expected)


@pytest.mark.parametrize(
    "heading, expected",
    [
        # 90 degrees: the front points to +y, so the front-right corner lies at +x.
        (np.pi / 2, [[1.0, 2.0], [-1.0, 2.0], [-1.0, -2.0], [1.0, -2.0]]),
        (np.pi, [[-2.0, 1.0], [-2.0, -1.0], [2.0, -1.0], [2.0, 1.0]]),
        (np.pi / 4, [[np.sqrt(2) * 1.5, np.sqrt(2) * 0.5], [np.sqrt(2) * 0.5, np.sqrt(2) * 1.5],
                     [-np.sqrt(2) * 1.5, -np.sqrt(2) * 0.5], [-np.sqrt(2) * 0.5, -np.sqrt(2) * 1.5]]),
    ],
)
def test_corners_rotated(heading, expected):
    corners = geometry.box_corners(np.array([0.0]), np.array([0.0]), np.array([heading]), 4.0, 2.0)
    assert corners.shape == (1, 4, 2)
    np.testing.assert_allclose(corners[0], np.array(expected), rtol=0, atol=1e-14)


def test_corners_counter_clockwise_and_match_highway_env():
    rng = np.random.default_rng(0)
    x, y, heading, length, width = random_scene(rng, 64, 100.0, 100.0, rotated_share=1.0)
    corners = geometry.box_corners(x, y, heading, length, width)
    nxt = np.roll(corners, -1, axis=1)
    signed_area = 0.5 * np.sum(corners[..., 0] * nxt[..., 1] - nxt[..., 0] * corners[..., 1], axis=1)
    np.testing.assert_allclose(signed_area, length * width, rtol=1e-12)
    # Same point set as highway-env's RoadObject.polygon() for the same pose.
    for k in range(8):
        c, s = np.cos(heading[k]), np.sin(heading[k])
        local = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1]]) * [length[k] / 2, width[k] / 2]
        ref = local @ np.array([[c, s], [-s, c]]) + [x[k], y[k]]
        ours = {tuple(np.round(p, 9)) for p in corners[k]}
        assert ours == {tuple(np.round(p, 9)) for p in ref}


# --- narrow phase --------------------------------------------------------------------------


def test_boxes_overlap_matches_highway_env_on_random_pairs():
    rng = np.random.default_rng(1)
    n = 6000
    a = geometry.box_corners(rng.uniform(-5, 5, n), rng.uniform(-5, 5, n),
                             rng.uniform(-np.pi, np.pi, n), rng.uniform(1, 8, n), rng.uniform(0.5, 3, n))
    b = geometry.box_corners(rng.uniform(-5, 5, n), rng.uniform(-5, 5, n),
                             rng.uniform(-np.pi, np.pi, n), rng.uniform(1, 8, n), rng.uniform(0.5, 3, n))
    ours = geometry.boxes_overlap(a, b)
    ref = np.array([hw_overlap(a[k], b[k]) for k in range(n)])
    assert 0.2 < ref.mean() < 0.8, "the sample should contain plenty of both answers"
    np.testing.assert_array_equal(ours, ref)
    # Symmetric in its arguments.
    np.testing.assert_array_equal(geometry.boxes_overlap(b, a), ours)


def test_touching_is_not_overlap_but_counts_for_highway_env_and_shapely():
    # Shared edge, shared corner, and a 1e-9 m overlap.
    a = geometry.box_corners([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 2.0, 2.0)
    b = geometry.box_corners([2.0, 2.0, 2.0 - 1e-9], [0.0, 2.0, 0.0], [0.0, 0.0, 0.0], 2.0, 2.0)
    np.testing.assert_array_equal(geometry.boxes_overlap(a, b), [False, False, True])
    assert [hw_overlap(a[k], b[k]) for k in range(3)] == [True, True, True]
    assert shapely.intersects(shapely.polygons(a), shapely.polygons(b)).tolist() == [True, True, True]


# --- broad phase ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 10, 40, 41, 150, 600])
def test_candidate_pairs_equal_brute_force_circles(n):
    rng = np.random.default_rng(n)
    x = rng.uniform(0, 8.0 * max(n, 1), n)
    y = rng.uniform(0, 14.0, n)
    r = rng.uniform(0.0, 6.0, n)
    got = geometry.candidate_pairs(x, y, r)
    i, j = np.triu_indices(n, 1)
    keep = np.hypot(x[i] - x[j], y[i] - y[j]) <= r[i] + r[j]
    expected = np.stack([i[keep], j[keep]], axis=1)
    if n >= 40:
        assert len(expected) > 0
    np.testing.assert_array_equal(got.reshape(-1, 2), expected.reshape(-1, 2))


def test_candidate_pairs_vertical_road_ties_and_active():
    rng = np.random.default_rng(7)
    n = 120
    y = np.round(rng.uniform(0, 600, n))  # road along y, many equal coordinates
    x = rng.choice([0.0, 4.0, 8.0], n)
    r = np.full(n, 2.5)  # integer centres 5 m apart give exactly touching circles, which count
    active = rng.random(n) < 0.8
    got = geometry.candidate_pairs(x, y, r, active=active)
    i, j = np.triu_indices(n, 1)
    keep = (np.hypot(x[i] - x[j], y[i] - y[j]) <= r[i] + r[j]) & active[i] & active[j]
    assert keep.sum() > 0
    np.testing.assert_array_equal(got, np.stack([i[keep], j[keep]], axis=1))


def test_candidate_pairs_grow_about_linearly_on_a_road():
    # Vehicles along 4 lanes at constant density: candidate pairs per vehicle stay bounded.
    rng = np.random.default_rng(3)
    per_vehicle = []
    for n in (100, 1000, 4000):
        x = rng.uniform(0, 12.5 * n, n)
        y = rng.integers(0, 4, n) * 4.0
        per_vehicle.append(len(geometry.candidate_pairs(x, y, np.full(n, 2.7))) / n)
    assert max(per_vehicle) < 2.0 * min(per_vehicle) + 0.5


# --- broad + narrow ------------------------------------------------------------------------


@pytest.mark.parametrize("n, extent_x, extent_y", [(20, 40.0, 12.0), (50, 80.0, 16.0), (200, 400.0, 16.0)])
def test_overlapping_pairs_equal_brute_force(n, extent_x, extent_y):
    rng = np.random.default_rng(100 + n)
    scene = random_scene(rng, n, extent_x, extent_y)
    got = geometry.overlapping_pairs(*scene)
    expected = brute_force_pairs(geometry.box_corners(*scene))
    assert len(expected) >= 5
    np.testing.assert_array_equal(got, expected)


def test_overlapping_pairs_vertical_road_and_inactive_rows():
    rng = np.random.default_rng(5)
    x, y, heading, length, width = random_scene(rng, 150, 16.0, 300.0)
    active = rng.random(150) < 0.7
    got = geometry.overlapping_pairs(x, y, heading, length, width, active=active)
    expected = brute_force_pairs(geometry.box_corners(x, y, heading, length, width), active)
    assert len(expected) >= 5
    np.testing.assert_array_equal(got, expected)


def test_inactive_rows_are_ignored_even_with_garbage_values():
    x = np.array([0.0, 3.0, 3.0, 20.0])
    y = np.zeros(4)
    pairs = geometry.overlapping_pairs(x, y, 0.0, 5.0, 2.0)
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [1, 2]])
    active = np.array([True, False, True, True])
    x_bad = x.copy()
    x_bad[1] = np.nan  # a despawned row may hold anything
    np.testing.assert_array_equal(geometry.overlapping_pairs(x_bad, y, 0.0, 5.0, 2.0, active), [[0, 2]])
    np.testing.assert_array_equal(geometry.shapely_overlapping_pairs(x_bad, y, 0.0, 5.0, 2.0, active), [[0, 2]])
    prev = geometry.Boxes(x_bad, y, np.zeros(4), 5.0, 2.0)
    swept = geometry.swept_overlapping_pairs(prev, prev, active=active)
    np.testing.assert_array_equal(swept.pairs, [[0, 2]])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shapely_path_agrees(seed):
    rng = np.random.default_rng(200 + seed)
    scene = random_scene(rng, 300, 600.0, 16.0)
    ours = geometry.overlapping_pairs(*scene)
    ref = geometry.shapely_overlapping_pairs(*scene)
    # shapely counts touching as intersecting; continuous random poses never touch exactly,
    # so the only tolerated differences are pairs whose penetration is at round-off level.
    assert len(ours) >= 10
    only_one = {tuple(p) for p in ours} ^ {tuple(p) for p in ref}
    corners = geometry.box_corners(*scene)
    for i, j in only_one:
        area = shapely.intersection(shapely.polygons(corners[i]), shapely.polygons(corners[j])).area
        assert area < 1e-9, (i, j, area)


# --- continuous check ----------------------------------------------------------------------


def _substep_bound(rel_displacement: float, min_side: float) -> float:
    """Largest sub-step (as a fraction of the interval) the contract allows."""
    return 0.5 * min_side / rel_displacement


def test_head_on_tunnelling_is_caught_by_swept_test():
    # Two 5 m cars in one lane, 30 m/s each (closing at 60 m/s), one 0.2 s policy step:
    # centres 6 m apart before and after, on opposite sides, so neither end overlaps.
    dt, v, length, width = 0.2, 30.0, 5.0, 2.0
    x0 = np.array([-3.0, 3.0])
    heading = np.array([0.0, np.pi])
    x1 = x0 + np.array([v, -v]) * dt
    y = np.zeros(2)
    prev = geometry.Boxes(x0, y, heading, length, width)
    curr = geometry.Boxes(x1, y, heading, length, width)
    assert len(geometry.overlapping_pairs(*prev)) == 0
    assert len(geometry.overlapping_pairs(*curr)) == 0

    swept = geometry.swept_overlapping_pairs(prev, curr)
    np.testing.assert_array_equal(swept.pairs, [[0, 1]])
    # Closed form: bumpers meet when the centre gap shrinks from 6 m to one car length.
    t_contact = (abs(x0[1] - x0[0]) - length) / (2 * v * dt)
    assert t_contact <= swept.fraction[0] + 1e-12
    assert swept.fraction[0] - t_contact <= _substep_bound(2 * v * dt, width)

    # Refinement inside the first overlapping sub-step pins the contact time down further.
    assert swept.fraction[0] - t_contact < 1e-3
    # With a single sample per end the same motion goes unseen: the sub-steps matter.
    assert len(geometry.swept_overlapping_pairs(prev, curr, substeps=1).pairs) == 0


@pytest.mark.parametrize("lateral_gap, collides", [(0.5, False), (0.05, False), (-0.1, True)])
def test_head_on_in_adjacent_lane(lateral_gap, collides):
    width = 2.0
    y = np.array([0.0, width + lateral_gap])
    heading = np.array([0.0, np.pi])
    prev = geometry.Boxes(np.array([-3.0, 3.0]), y, heading, 5.0, width)
    curr = geometry.Boxes(np.array([3.0, -3.0]), y, heading, 5.0, width)
    swept = geometry.swept_overlapping_pairs(prev, curr)
    assert (len(swept.pairs) == 1) == collides


def test_short_overlap_window_is_sampled():
    # Relative motion across both boxes' narrow sides: each pair overlaps only while 1.6 m of
    # its 12 m relative path is covered. B sits at many offsets (one pair per row, rows 10 m
    # apart), so whatever the sampling phase, a sub-step of 1.6 m or more misses some pair.
    offsets = np.linspace(-4.0, 4.0, 41)
    m = len(offsets)
    rows = np.repeat(np.arange(m) * 10.0, 2)
    heading = np.full(2 * m, np.pi / 2)
    x_prev = np.ravel(np.column_stack([np.full(m, -6.0), offsets]))
    x_curr = np.ravel(np.column_stack([np.full(m, 6.0), offsets]))
    prev = geometry.Boxes(x_prev, rows, heading, 2.2, 0.8)
    curr = geometry.Boxes(x_curr, rows, heading, 2.2, 0.8)
    swept = geometry.swept_overlapping_pairs(prev, curr)
    np.testing.assert_array_equal(swept.pairs, np.column_stack([2 * np.arange(m), 2 * np.arange(m) + 1]))
    window_start = (offsets + 6.0 - 0.8) / 12.0
    assert np.all(swept.fraction >= window_start - 1e-12)
    assert np.all(swept.fraction < window_start + 1.6 / 12.0)
    # Six sub-steps (2 m each) step over some of the windows.
    assert len(geometry.swept_overlapping_pairs(prev, curr, substeps=6).pairs) < m


def test_crossing_vehicle_is_caught():
    # A crosses B's path at 30 m/s in 0.4 s, perpendicular; B creeps forward.
    prev = geometry.Boxes(np.array([-6.0, 0.0]), np.array([0.0, -0.5]), np.array([0.0, np.pi / 2]), 4.5, 1.8)
    curr = geometry.Boxes(np.array([6.0, 0.0]), np.array([0.0, 0.5]), np.array([0.0, np.pi / 2]), 4.5, 1.8)
    assert len(geometry.overlapping_pairs(*prev)) == 0
    assert len(geometry.overlapping_pairs(*curr)) == 0
    swept = geometry.swept_overlapping_pairs(prev, curr)
    np.testing.assert_array_equal(swept.pairs, [[0, 1]])
    # Contact when A's front (x + 2.25) reaches B's side at x = -0.9; B's y-extent covers A then.
    t_contact = (-0.9 - 2.25 + 6.0) / 12.0
    assert t_contact <= swept.fraction[0] + 1e-12
    assert swept.fraction[0] - t_contact <= _substep_bound(np.hypot(12.0, 1.0), 1.8)


def test_heading_is_interpolated_on_the_shortest_arc():
    # A turns from 3.1 rad to -3.1 rad: 0.083 rad through pi, not 6.2 rad through pi/2.
    # Through pi/2 its 6 m length would sweep up into B, which sits 2.5 m above A's centre.
    prev = geometry.Boxes(np.array([0.0, 0.0]), np.array([0.0, 2.6]), np.array([3.1, 0.0]), 6.0, 2.0)
    curr = geometry.Boxes(np.array([0.0, 0.0]), np.array([0.0, 2.6]), np.array([-3.1, 0.0]), 6.0, 2.0)
    assert len(geometry.swept_overlapping_pairs(prev, curr).pairs) == 0
    # The same box really turning through pi/2 (3.1 -> 0.0) is caught.
    turned = geometry.Boxes(curr.x, curr.y, np.array([0.0, 0.0]), 6.0, 2.0)
    assert len(geometry.swept_overlapping_pairs(prev, turned).pairs) == 1


def test_swept_contains_both_ends_and_reports_true_contacts():
    rng = np.random.default_rng(11)
    n, dt = 120, 0.2
    x, y, heading, length, width = random_scene(rng, n, 500.0, 16.0, rotated_share=0.2)
    speed = rng.uniform(-35.0, 35.0, n)
    dheading = rng.normal(0.0, 0.3, n)
    prev = geometry.Boxes(x, y, heading, length, width)
    curr = geometry.Boxes(x + speed * np.cos(heading) * dt, y + speed * np.sin(heading) * dt,
                          np.mod(heading + dheading + np.pi, 2 * np.pi) - np.pi, length, width)
    swept = geometry.swept_overlapping_pairs(prev, curr)
    found = {tuple(p): f for p, f in zip(swept.pairs, swept.fraction)}
    at_start = {tuple(p) for p in geometry.overlapping_pairs(*prev)}
    at_end = {tuple(p) for p in geometry.overlapping_pairs(*curr)}
    assert len(at_start) > 0 and len(set(found) - at_start - at_end) > 0
    assert at_start | at_end <= set(found)
    assert all(found[p] == 0.0 for p in at_start)
    assert all(0.0 < found[p] <= 1.0 for p in set(found) - at_start)
    # Each reported time is a real overlap per highway-env, using the test's own interpolation.
    for (i, j), f in found.items():
        poses = []
        for k in (i, j):
            turn = np.angle(np.exp(1j * (curr.heading[k] - heading[k])))
            poses.append(geometry.box_corners(x[k] + f * (curr.x[k] - x[k]), y[k] + f * (curr.y[k] - y[k]),
                                              heading[k] + f * turn, length[k], width[k]))
        assert hw_overlap(*poses), (i, j, f)


def test_swept_without_motion_equals_discrete():
    rng = np.random.default_rng(12)
    scene = random_scene(rng, 100, 200.0, 16.0)
    swept = geometry.swept_overlapping_pairs(scene, scene)
    np.testing.assert_array_equal(swept.pairs, geometry.overlapping_pairs(*scene))
    assert np.all(swept.fraction == 0.0)


def test_vehicle_size_and_angle_wrap_are_highway_envs():
    """The one vehicle-size constant is highway-env's, and wrap_angle lands in [-pi, pi)."""
    from highway_env.road.lane import AbstractLane
    from highway_env.vehicle.kinematics import Vehicle

    assert geometry.VEHICLE_LENGTH == Vehicle.LENGTH == AbstractLane.VEHICLE_LENGTH
    assert geometry.VEHICLE_WIDTH == Vehicle.WIDTH
    a = np.array([-7.0, -np.pi, 0.0, np.pi, 3 * np.pi + 0.1, 100.0])
    w = geometry.wrap_angle(a)
    assert np.all((w >= -np.pi) & (w < np.pi))
    np.testing.assert_allclose(np.cos(w), np.cos(a), atol=1e-12)
    np.testing.assert_allclose(np.sin(w), np.sin(a), atol=1e-12)
