"""Surrogate safety, platoon and efficiency measures on hand-built traces with closed-form values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffplatoon.evaluation import measures as m
from diffplatoon import geometry

L, W = geometry.VEHICLE_LENGTH, geometry.VEHICLE_WIDTH  # 5 m x 2 m


def _following_pair(v_f: float, v_l: float, gap0: float, dt: float, steps: int):
    """Follower (col 0) behind leader (col 1) on y = 0, both at constant speed.

    Returns (x, y, heading, speed, leader, gap) with the gap computed from the box geometry.
    """
    t = np.arange(steps) * dt
    x_f = v_f * t
    x_l = gap0 + L + v_l * t  # centres: gap = x_l - x_f - L
    x = np.stack([x_f, x_l], axis=1)
    zeros = np.zeros_like(x)
    speed = np.stack([np.full(steps, v_f), np.full(steps, v_l)], axis=1)
    leader = np.tile([1, -1], (steps, 1))
    gap = np.stack([x_l - x_f - L, np.full(steps, np.nan)], axis=1)
    return x, zeros, zeros.copy(), speed, leader, gap


# --------------------------------------------------------------------------------------------
# Car-following measures
# --------------------------------------------------------------------------------------------


def test_ttc_drac_mdrac_constant_speed_approach():
    """Follower 30 m/s, leader 20 m/s, gap 50 m at t = 0, dt = 0.1 s.

    gap(t) = 50 - 10 t, so TTC(t) = gap / 10 = 5 - t exactly, DRAC = 0.5 * 10^2 / gap
    = 50 / gap, MDRAC = 0.5 * 10 / (TTC - 1) with PRT 1 s (inf once TTC <= 1).
    The leader has no leader: TTC inf, DRAC 0.
    """
    dt, steps = 0.1, 50
    x, y, h, speed, leader, gap = _following_pair(30.0, 20.0, 50.0, dt, steps)
    t = np.arange(steps) * dt
    ttc = m.ttc_1d(gap, speed, leader)
    np.testing.assert_allclose(ttc[:, 0], 5.0 - t, rtol=1e-12)
    assert np.all(np.isinf(ttc[:, 1]))
    d = m.drac(gap, speed, leader)
    np.testing.assert_allclose(d[:, 0], 50.0 / (50.0 - 10.0 * t), rtol=1e-12)
    assert np.all(d[:, 1] == 0.0)
    md = m.mdrac(gap, speed, leader, prt=1.0)
    margin = (5.0 - t) - 1.0
    expected = np.where(margin > 1e-9, 5.0 / np.where(margin > 1e-9, margin, 1.0), np.inf)
    finite = margin > 1e-9
    np.testing.assert_allclose(md[finite, 0], expected[finite], rtol=1e-9)
    assert np.all(np.isinf(md[margin < -1e-9, 0]))
    assert m.minimum_gap(gap, leader)[0] == pytest.approx(50.0 - 10.0 * t[-1])
    assert np.isinf(m.minimum_gap(gap, leader)[1])


def test_ttc_opening_gap_and_contact():
    """Leader faster: never closing, TTC inf and DRAC 0. Overlapping boxes: TTC 0, DRAC inf."""
    x, y, h, speed, leader, gap = _following_pair(20.0, 25.0, 10.0, 0.1, 20)
    assert np.all(np.isinf(m.ttc_1d(gap, speed, leader)))
    assert np.all(m.drac(gap, speed, leader) == 0.0)
    gap_c = gap.copy()
    gap_c[5:, 0] = -0.3
    speed_c = np.tile([25.0, 20.0], (20, 1))
    assert np.all(m.ttc_1d(gap_c, speed_c, leader)[5:, 0] == 0.0)
    assert np.all(np.isinf(m.drac(gap_c, speed_c, leader)[5:, 0]))


def test_touching_is_not_contact():
    """Strict convention: bumpers touching (gap 0) at equal speed, or two cars side by side with
    sides touching, have no TTC (inf) in 1-D and 2-D; closing at gap 0 is TTC 0."""
    gap = np.array([[0.0, np.nan]])
    leader = np.array([[1, -1]])
    assert np.isinf(m.ttc_1d(gap, np.array([[20.0, 20.0]]), leader)[0, 0])
    assert m.drac(gap, np.array([[20.0, 20.0]]), leader)[0, 0] == 0.0
    assert m.ttc_1d(gap, np.array([[21.0, 20.0]]), leader)[0, 0] == 0.0
    x = np.array([[0.0, L]])  # rear bumper of 1 touches front bumper of 0
    zeros = np.zeros((1, 2))
    lw = np.array([L, L]), np.array([W, W])
    assert np.all(np.isinf(m.ttc_2d(x, zeros, zeros, np.full((1, 2), 20.0), *lw)))
    side = m.ttc_2d(np.zeros((1, 2)), np.array([[0.0, W]]), zeros, np.full((1, 2), 20.0), *lw)
    assert np.all(np.isinf(side))
    assert np.all(m.ttc_2d(x, zeros, zeros, np.array([[21.0, 20.0]]), *lw) == 0.0)
    # Crossing where A leaves the conflict slab (|x_A| < 3.5 until t = 4.0) exactly when B
    # enters it (y_B = -23.5 + 5 t reaches -3.5 at t = 4.0): the corners touch at one instant.
    _, xc, yc, hc, vc = _crossing(-23.5)
    assert np.isinf(m.ttc_2d_pairs(xc[:1], yc[:1], hc[:1], vc[:1], *lw, np.array([[0, 1]]))[0, 0])


def test_tet_tit_match_hand_count():
    """Same approach (TTC = 5 - t, t = 0, 0.1, ..., 4.9), threshold 3 s.

    TTC < 3 s exactly for t > 2, i.e. steps k = 21..49 (at k = 20 TTC is 3.0, not < 3), so
    TET = 29 * 0.1 = 2.9 s. TIT = 0.1 * sum_{k=21}^{49} (3 - (5 - 0.1 k)) = 0.1 * (0.1 * 1015 - 2 * 29)
    = 4.35 s^2 (sum of k from 21 to 49 is (21 + 49) * 29 / 2 = 1015).
    """
    dt = 0.1
    t = np.arange(50) * dt
    ttc = (5.0 - t)[:, None]
    # Keep the boundary step away from round-off: step 20 is exactly 3.0 by construction.
    ttc[20, 0] = 3.0
    assert m.time_exposed_ttc(ttc, dt, threshold=3.0)[0] == pytest.approx(2.9)
    assert m.time_integrated_ttc(ttc, dt, threshold=3.0)[0] == pytest.approx(0.1 * (0.1 * 1015 - 2 * 29))
    # TTC from the real trace gives the same exposure up to the boundary step.
    x, y, h, speed, leader, gap = _following_pair(30.0, 20.0, 50.0, dt, 50)
    tet = m.time_exposed_ttc(m.ttc_1d(gap, speed, leader), dt, threshold=3.0)
    assert tet[0] in (pytest.approx(2.9), pytest.approx(3.0))
    assert tet[1] == 0.0


def test_time_gap_headway_space_gap():
    """Follower at 20 m/s, 30 m behind a 4.5 m leader: SGAP is the plain bumper-to-bumper 30 m
    (SUMO's SGAP subtracts no minGap), time gap 30/20 = 1.5 s; front-to-front headway
    (30 + 4.5)/20 = 1.725 s. A stopped follower or no leader gives inf."""
    gap = np.array([[30.0, np.nan], [30.0, np.nan]])
    speed = np.array([[20.0, 20.0], [0.0, 20.0]])
    leader = np.array([[1, -1], [1, -1]])
    length = np.array([5.0, 4.5])
    tg = m.time_gap(gap, speed, leader)
    assert tg[0, 0] == pytest.approx(1.5)
    assert m.time_headway(gap, speed, leader, length)[0, 0] == pytest.approx(1.725)
    assert np.isinf(tg[1, 0]) and np.all(np.isinf(tg[:, 1]))
    sg = m.space_gap(gap, leader)
    assert sg[0, 0] == 30.0 and np.all(np.isinf(sg[:, 1]))


def test_time_gap_and_ttc_at_overlap_and_standstill():
    """The values that used to blow up: an overlapping pair (gap -0.4 m) with the follower at
    ~1e-11 m/s had time gap -0.4 / 1e-11 = -4e10 s. Overlap is a collision: time gap 0, TTC 0,
    DRAC and MDRAC inf, whatever the speeds; the headway is the front-to-front distance 4.6 m
    over the speed. A stopped follower (below 0.1 m/s, SUMO's halting speed) has an infinite
    time gap, headway and TTC, not 3 / 1e-11 = 3e11 s; no value is ever huge or negative."""
    leader = np.tile([1, -1], (5, 1))
    gap = np.array([[-0.4], [-0.4], [0.0], [3.0], [3.0]]) * [1.0, np.nan]
    speed = np.array([[1e-11, 0.0], [25.0, 20.0], [1e-11, 0.0], [1e-11, 0.0], [0.05, 0.5]])
    length = np.array([L, L])
    tg = m.time_gap(gap, speed, leader)[:, 0]
    th = m.time_headway(gap, speed, leader, length)[:, 0]
    ttc = m.ttc_1d(gap, speed, leader)[:, 0]
    np.testing.assert_array_equal(tg, [0.0, 0.0, np.inf, np.inf, np.inf])
    np.testing.assert_array_equal(th, [np.inf, (L - 0.4) / 25.0, np.inf, np.inf, np.inf])
    beyond = m.time_headway(np.array([[-6.0, np.nan]]), np.array([[25.0, 20.0]]), leader[:1], length)
    assert beyond[0, 0] == 0.0  # the follower's front is past the leader's: no negative headway
    # Standing still, touching or behind a 3 m gap, is no conflict (TTC inf), nor is creeping
    # at 0.05 m/s behind a faster leader.
    np.testing.assert_array_equal(ttc, [0.0, 0.0, np.inf, np.inf, np.inf])
    assert np.all(np.isinf(m.drac(gap, speed, leader)[:2, 0]))
    assert np.all(np.isinf(m.mdrac(gap, speed, leader)[:2, 0]))
    assert np.all(tg >= 0) and np.all(th >= 0) and np.all(ttc >= 0)
    # A follower just above the halting speed gets an ordinary, finite time gap.
    assert m.time_gap(np.array([[3.0, np.nan]]), np.array([[0.1, 0.0]]), leader[:1])[0, 0] == pytest.approx(30.0)


def test_episode_summary_time_gap_never_negative_at_overlap():
    """The summary's minimum time gap over a trace with an overlap at a crawl is 0, not -4e10."""
    trace, _, _ = _summary_trace()
    gap, speed = trace.gap.copy(), trace.speed.copy()
    gap[10, 1], speed[10, 1] = -0.4, 1e-11
    s = m.episode_summary(m.EpisodeTrace(**{**trace.__dict__, "gap": gap, "speed": speed}),
                          subjects=[0, 1, 2, 3])
    assert s["min_time_gap"] == 0.0 and s["min_gap"] == pytest.approx(-0.4)


def test_near_miss_needs_gap_below_threshold_and_no_collision():
    """Near miss: a subject's gap fell below min_gap (the scenario's safety.min_gap) at some
    step and the episode had no collision; a collision episode counts as a collision instead."""
    trace, _, _ = _summary_trace()
    least = float(np.nanmin(np.where(trace.leader[:, :4] >= 0, trace.gap[:, :4], np.nan)))
    below = m.Thresholds(min_gap=least + 0.01)
    above = m.Thresholds(min_gap=least - 0.01)
    subjects = [0, 1, 2, 3]
    assert m.episode_summary(trace, subjects=subjects, thresholds=below)["near_miss"] == 1.0
    assert m.episode_summary(trace, subjects=subjects, thresholds=above)["near_miss"] == 0.0
    assert m.episode_summary(trace, subjects=subjects, thresholds=below, collided=True)["near_miss"] == 0.0
    np.testing.assert_array_equal(m.near_miss(trace.gap, trace.leader, least + 0.01)[:4],
                                  m.minimum_gap(trace.gap, trace.leader)[:4] < least + 0.01)


def test_drac_with_the_vehicle_two_ahead():
    """Three cars in a lane, 5 m long: A (col 2) at 10 m/s, B (col 1) 20 m behind A at 10 m/s,
    C (col 0) 15 m behind B at 30 m/s. The chain
    gives C's second vehicle ahead A at gap 15 + 5 + 20 = 40 m; DRAC with B is 0.5 * 20^2 / 15,
    with A 0.5 * 20^2 / 40. When B instead pulls away at 35 m/s, the direct-leader DRAC is 0
    and only the two-ahead measure sees C closing on A (SUMO counts every vehicle in range)."""
    length = np.full(3, L)
    leader = np.array([[1, 2, -1]])
    gap = np.array([[15.0, 20.0, np.nan]])
    (l1, g1), (l2, g2) = m.vehicles_ahead(leader, gap, length, depth=2)
    np.testing.assert_array_equal(l2, [[2, -1, -1]])
    assert g2[0, 0] == 40.0 and np.isnan(g2[0, 1]) and np.isnan(g2[0, 2])
    speed = np.array([[30.0, 10.0, 10.0]])
    assert m.drac_ahead(gap, speed, leader, length)[0, 0] == pytest.approx(0.5 * 400 / 15)
    assert m.ttc_ahead(gap, speed, leader, length)[0, 0] == pytest.approx(15 / 20)
    pulling_away = np.array([[30.0, 35.0, 10.0]])
    assert m.drac(gap, pulling_away, leader)[0, 0] == 0.0
    assert m.drac_ahead(gap, pulling_away, leader, length)[0, 0] == pytest.approx(0.5 * 400 / 40)
    assert m.ttc_ahead(gap, pulling_away, leader, length)[0, 0] == pytest.approx(40 / 20)
    # depth 1 is the direct leader alone.
    np.testing.assert_array_equal(m.drac_ahead(gap, pulling_away, leader, length, depth=1),
                                  m.drac(gap, pulling_away, leader))


def test_leader_values_per_step_and_per_vehicle():
    """leader_values picks the leader's column per step and NaN without a leader."""
    values = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    leader = np.array([[2, -1, 0], [-1, 0, 1]])
    out = m.leader_values(values, leader)
    np.testing.assert_array_equal(out, [[3.0, np.nan, 1.0], [np.nan, 4.0, 5.0]])
    np.testing.assert_array_equal(m.leader_values(np.array([7.0, 8.0, 9.0]), leader),
                                  [[9.0, np.nan, 7.0], [np.nan, 7.0, 8.0]])


# --------------------------------------------------------------------------------------------
# 2-D TTC
# --------------------------------------------------------------------------------------------


def _crossing(b_start: float, dt: float = 0.1, steps: int = 60):
    """A drives east on y = 0 at 10 m/s from x = -36.5; B drives north on x = 0 at 5 m/s from y = b_start."""
    t = np.arange(steps) * dt
    x = np.stack([-36.5 + 10.0 * t, np.zeros(steps)], axis=1)
    y = np.stack([np.zeros(steps), b_start + 5.0 * t], axis=1)
    heading = np.stack([np.zeros(steps), np.full(steps, np.pi / 2)], axis=1)
    speed = np.tile([10.0, 5.0], (steps, 1))
    return t, x, y, heading, speed


def test_ttc_2d_perpendicular_crossing():
    """Both 5 x 2 m boxes are axis-aligned, so they overlap iff |x_A| < 2.5 + 1 and |y_B| < 3.5.

    A: -36.5 + 10 t in (-3.5, 3.5) for t in (3.3, 4.0). B from y = -18.5: -18.5 + 5 t in
    (-3.5, 3.5) for t in (3.0, 4.4). First overlap at 3.3 s, so at time t0 < 3.3 TTC = 3.3 - t0,
    and 0 during the overlap. B from y = -24 enters at 4.1 s after A has left (4.0 s): a near
    miss, TTC inf. With a 3 s horizon the first step (TTC 3.3) is inf.
    """
    t, x, y, heading, speed = _crossing(-18.5)
    lw = np.array([L, L]), np.array([W, W])
    ttc = m.ttc_2d_pairs(x, y, heading, speed, *lw, np.array([[0, 1]]), horizon=5.0)[:, 0]
    before = t < 3.3 - 1e-9
    np.testing.assert_allclose(ttc[before], 3.3 - t[before], atol=1e-9)
    during = (t > 3.3 + 1e-9) & (t < 4.0 - 1e-9)
    assert np.all(ttc[during] == 0.0)
    assert np.all(np.isinf(ttc[t > 4.0 + 1e-9]))
    per_vehicle = m.ttc_2d(x, y, heading, speed, *lw, horizon=5.0)
    np.testing.assert_array_equal(per_vehicle[:, 0], ttc)
    np.testing.assert_array_equal(per_vehicle[:, 1], ttc)
    assert np.isinf(m.ttc_2d_pairs(x, y, heading, speed, *lw, np.array([[0, 1]]), horizon=3.0)[0, 0])

    t, x, y, heading, speed = _crossing(-24.0)
    assert np.all(np.isinf(m.ttc_2d(x, y, heading, speed, *lw)))


def test_ttc_2d_equals_ttc_1d_for_aligned_following():
    """For two aligned cars in one lane the 2-D TTC is the car-following TTC (within the horizon)."""
    dt = 0.1
    x, y, h, speed, leader, gap = _following_pair(30.0, 20.0, 50.0, dt, 50)
    ttc2 = m.ttc_2d(x, y, h, speed, np.array([L, L]), np.array([W, W]), horizon=5.0)
    ttc1 = m.ttc_1d(gap, speed, leader)[:, 0]
    within = ttc1 <= 5.0
    np.testing.assert_allclose(ttc2[within, 0], ttc1[within], atol=1e-9)
    np.testing.assert_array_equal(ttc2[:, 0], ttc2[:, 1])


def test_ttc_2d_subjects_and_absent_vehicles():
    """Non-subject columns are inf; a NaN (absent) vehicle never produces a TTC."""
    t, x, y, heading, speed = _crossing(-18.5)
    lw = np.array([L, L]), np.array([W, W])
    only0 = m.ttc_2d(x, y, heading, speed, *lw, subjects=[0])
    assert np.isfinite(only0[0, 0]) and np.all(np.isinf(only0[:, 1]))
    x = x.copy()
    x[:, 1] = np.nan
    assert np.all(np.isinf(m.ttc_2d(x, y, heading, speed, *lw)))


def test_ttc_2d_agrees_with_sampled_geometry_sat():
    """Random oriented pairs: the analytic time of first overlap matches the first overlapping
    sample of the simulator's own SAT test (diffplatoon.geometry) on a 2 ms grid, i.e.
    exact <= sampled <= exact + 2 ms. Contacts shorter than one sample (grazes) are the only
    allowed misses, and each must really overlap just after the exact time."""
    rng = np.random.default_rng(7)
    p = 400
    x0 = rng.uniform(-15, 15, (1, 2 * p))
    y0 = rng.uniform(-15, 15, (1, 2 * p))
    heading = rng.uniform(-np.pi, np.pi, (1, 2 * p))
    speed = rng.uniform(0, 20, (1, 2 * p))
    length = rng.uniform(3.5, 6.0, 2 * p)
    width = rng.uniform(1.6, 2.2, 2 * p)
    pairs = np.stack([np.arange(0, 2 * p, 2), np.arange(1, 2 * p, 2)], axis=1)
    horizon = 3.0
    exact = m.ttc_2d_pairs(x0, y0, heading, speed, length, width, pairs, horizon=horizon)[0]

    tau = np.arange(0.0, horizon + 1e-9, 2e-3)[:, None]  # (S, 1)
    vx, vy = speed[0] * np.cos(heading[0]), speed[0] * np.sin(heading[0])
    corners = geometry.box_corners(x0[0] + vx * tau, y0[0] + vy * tau, heading[0], length, width)
    hit = geometry.boxes_overlap(corners[:, pairs[:, 0]], corners[:, pairs[:, 1]])  # (S, P)
    sampled = np.where(hit.any(axis=0), tau[np.argmax(hit, axis=0), 0], np.inf)

    # The layout must exercise contacts that lie ahead, not only pairs overlapping at t = 0.
    assert int((np.isfinite(exact) & (exact > 0)).sum()) > 25
    both = np.isfinite(exact) & np.isfinite(sampled)
    assert np.all(sampled[both] >= exact[both] - 1e-9)
    assert np.all(sampled[both] <= exact[both] + 2e-3 + 1e-9)
    assert not np.any(np.isinf(exact) & np.isfinite(sampled))
    for k in np.flatnonzero(np.isfinite(exact) & np.isinf(sampled)):
        s = exact[k] + 1e-7
        i, j = pairs[k]
        ci = geometry.box_corners(x0[0, i] + vx[i] * s, y0[0, i] + vy[i] * s, heading[0, i], length[i], width[i])
        cj = geometry.box_corners(x0[0, j] + vx[j] * s, y0[0, j] + vy[j] * s, heading[0, j], length[j], width[j])
        assert geometry.boxes_overlap(ci, cj)


# --------------------------------------------------------------------------------------------
# PET
# --------------------------------------------------------------------------------------------


def test_pet_two_crossing_vehicles():
    """A: east on y = 0 at 10 m/s from x = -50; B: north on x = 0 at 10 m/s from y = -80;
    both 5 m long, conflict point (0, 0), dt = 0.1 s.

    A's box covers the point while |x_A| <= 2.5: t in [4.75, 5.25]. B's: |y_B| <= 2.5:
    t in [7.75, 8.25]. PET = 7.75 - 5.25 = 2.5 s. With a 1 m conflict radius the
    windows widen by 0.1 s each side: A [4.65, 5.35], B [7.65, 8.35], PET = 2.3 s.
    """
    dt = 0.1
    t = np.arange(120) * dt
    a = (-50.0 + 10.0 * t, np.zeros_like(t), np.zeros_like(t))
    b = (np.zeros_like(t), -80.0 + 10.0 * t, np.full_like(t, np.pi / 2))
    occ_a = m.conflict_occupancy(*a, L, W, (0.0, 0.0), dt)
    occ_b = m.conflict_occupancy(*b, L, W, (0.0, 0.0), dt)
    assert occ_a == pytest.approx((4.75, 5.25)) and occ_b == pytest.approx((7.75, 8.25))
    assert m.post_encroachment_time(occ_a, occ_b) == pytest.approx(2.5)
    assert m.post_encroachment_time(occ_b, occ_a) == pytest.approx(2.5)
    occ_a1 = m.conflict_occupancy(*a, L, W, (0.0, 0.0), dt, radius=1.0)
    occ_b1 = m.conflict_occupancy(*b, L, W, (0.0, 0.0), dt, radius=1.0)
    assert m.post_encroachment_time(occ_a1, occ_b1) == pytest.approx(2.3)


def test_pet_undefined_when_both_inside_or_one_never_arrives():
    """Overlapping occupancy (a collision course) and a vehicle that never reaches the point give NaN."""
    assert math.isnan(m.post_encroachment_time((1.0, 3.0), (2.0, 4.0)))
    assert math.isnan(m.post_encroachment_time((1.0, 3.0), (np.nan, np.nan)))
    t = np.arange(50) * 0.1
    never = m.conflict_occupancy(10.0 * t, np.full_like(t, 20.0), np.zeros_like(t), L, W, (0.0, 0.0), 0.1)
    assert math.isnan(never.enter) and math.isnan(never.leave)


# --------------------------------------------------------------------------------------------
# Braking and jerk
# --------------------------------------------------------------------------------------------


def test_hard_braking_counts_events_not_steps():
    """Two 1 s brakes at -6 m/s^2 (10 steps each) and one at -3 m/s^2: 2 events at the
    4.05 m/s^2 threshold, 3 at 2.5; a vehicle braking hard from step 0 counts once."""
    accel = np.zeros((100, 2))
    accel[10:20, 0] = -6.0
    accel[40:50, 0] = -6.0
    accel[70:80, 0] = -3.0
    accel[:30, 1] = -8.0
    np.testing.assert_array_equal(m.hard_braking_events(accel), [2, 1])
    np.testing.assert_array_equal(m.hard_braking_events(accel, threshold=2.5), [3, 1])


def test_jerk_of_sinusoidal_speed():
    """v = 20 + A sin(w t) gives a = A w cos(w t) and jerk -A w^2 sin(w t): amplitude A w^2,
    RMS A w^2 / sqrt(2) over whole periods. The forward difference of sampled accel is
    exactly -A w (2/dt) sin(w dt/2) sin(w (t + dt/2)), so its RMS over whole periods is that
    amplitude / sqrt(2), within (w dt)^2/24 of A w^2 / sqrt(2).
    """
    amp, w, dt = 2.0, 2 * np.pi / 4.0, 0.05
    t = np.arange(161) * dt  # 160 differences = 8 s = 2 periods
    accel = (amp * w * np.cos(w * t))[:, None]
    stats = m.jerk_stats(accel, dt)
    exact_amp = amp * w * (2 / dt) * np.sin(w * dt / 2)
    assert stats.rms[0] == pytest.approx(exact_amp / np.sqrt(2), rel=1e-12)
    assert stats.rms[0] == pytest.approx(amp * w ** 2 / np.sqrt(2), rel=1e-3)
    assert exact_amp * np.cos(w * dt / 2) <= stats.max_abs[0] <= exact_amp + 1e-12
    np.testing.assert_allclose(m.jerk(accel, dt)[:, 0],
                               -exact_amp * np.sin(w * (t[:-1] + dt / 2)), atol=1e-9)


# --------------------------------------------------------------------------------------------
# Platoon measures
# --------------------------------------------------------------------------------------------


def _platoon(scales: list[float], steps: int = 200, dt: float = 0.1, h: float = 0.6, r: float = 2.0):
    """Four members at 25 m/s whose followers' spacing errors are base * cumulative scales.

    Follower 1 has e_1 = 1.5 sin(0.5 t) exp(-0.1 t); follower k+1 has e_{k+1} = scales[k-1] * e_k.
    Speeds oscillate with the same member-to-member scaling around 25 m/s.
    """
    t = np.arange(steps) * dt
    base = 1.5 * np.sin(0.5 * t) * np.exp(-0.1 * t)
    factors = np.cumprod([1.0] + scales)  # per follower
    speed = np.empty((steps, 4))
    speed[:, 0] = 25.0 + 0.5 * np.sin(0.3 * t)
    for k in range(1, 4):
        speed[:, k] = 25.0 + 0.5 * np.sin(0.3 * t) * factors[k - 1] * 0.9
    e = base[:, None] * factors[None, :]
    gap = np.full((steps, 4), np.nan)
    gap[:, 1:] = r + h * speed[:, 1:] + e
    return t, gap, speed, e, factors


def test_string_stability_ratios_unstable():
    """Errors scaled by 0.8 then 1.2 member to member: error ratios exactly [0.8, 1.2] in both
    the L2 and the peak norm, so the platoon is not string stable."""
    _, gap, speed, e, _ = _platoon([0.8, 1.2])
    for norm in ("l2", "linf"):
        ss = m.string_stability(gap, speed, time_gap=0.6, standstill=2.0, norm=norm)
        np.testing.assert_allclose(ss.error_ratios, [0.8, 1.2], rtol=1e-9)
        assert ss.stable is False
    ss = m.string_stability(gap, speed, time_gap=0.6, standstill=2.0)
    np.testing.assert_allclose(ss.error_norms, np.sqrt((e ** 2).sum(axis=0)), rtol=1e-12)
    # Speed deviations from each member's mean: follower 1 is 0.9 x leader, then 0.8 and 1.2.
    np.testing.assert_allclose(ss.speed_ratios, [0.9, 0.8, 1.2], rtol=1e-9)


def test_string_stability_stable_and_window():
    """Ratios 0.8 and 0.9 are stable. Junk errors before the disturbance step are excluded by start."""
    _, gap, speed, _, _ = _platoon([0.8, 0.9])
    ss = m.string_stability(gap, speed, time_gap=0.6, standstill=2.0)
    np.testing.assert_allclose(ss.error_ratios, [0.8, 0.9], rtol=1e-9)
    assert ss.stable is True
    gap2 = gap.copy()
    gap2[:20, 3] += 50.0  # a huge error on the last follower before step 20
    assert m.string_stability(gap2, speed, time_gap=0.6, standstill=2.0).stable is False
    windowed = m.string_stability(gap2, speed, time_gap=0.6, standstill=2.0, start=20)
    assert windowed.stable is True
    # Exactly-1 ratios pass within the tolerance; 0/0 (no error at all) counts as 0.
    flat = m.string_stability(np.tile([np.nan, 17.0, 17.0, 17.0], (10, 1)), np.full((10, 4), 25.0),
                              time_gap=0.6, standstill=2.0)
    np.testing.assert_array_equal(flat.error_ratios, [0.0, 0.0])
    assert flat.stable is True


def test_gap_keeping_error():
    """RMS and max |e| per follower equal those of the constructed errors."""
    _, gap, speed, e, factors = _platoon([0.8, 1.2])
    ge = m.gap_keeping_error(gap, speed, time_gap=0.6, standstill=2.0)
    np.testing.assert_allclose(ge.rms, np.sqrt((e ** 2).mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(ge.max_abs, np.abs(e).max(axis=0), rtol=1e-12)
    np.testing.assert_allclose(m.spacing_errors(gap, speed, time_gap=0.6, standstill=2.0), e, atol=1e-12)


def test_platoon_split_events():
    """Follower 1's gap goes 20 -> 80 -> 20 -> 90 m: two splits at 60 m. Follower 2 loses its
    predecessor (NaN) once: one split. Follower 3 starts split: one event."""
    gap = np.full((10, 4), 20.0)
    gap[:, 0] = np.nan
    gap[2:4, 1] = 80.0
    gap[7:, 1] = 90.0
    gap[5, 2] = np.nan
    gap[:3, 3] = 100.0
    np.testing.assert_array_equal(m.platoon_split_events(gap, threshold=60.0), [2, 1, 1])


# --------------------------------------------------------------------------------------------
# Efficiency
# --------------------------------------------------------------------------------------------


def test_mean_speed_progress_on_line_and_circle():
    """Straight line at 15 m/s for 10 s: progress 150 m. A circle of radius 20 m sampled at
    N + 1 points over a full turn: progress is N chords of 2 R sin(pi/N)."""
    dt, n = 0.1, 100
    t = np.arange(n + 1) * dt
    theta = 2 * np.pi * np.arange(n + 1) / n
    x = np.stack([15.0 * t, 20.0 * np.cos(theta)], axis=1)
    y = np.stack([np.zeros_like(t), 20.0 * np.sin(theta)], axis=1)
    np.testing.assert_allclose(m.progress(x, y), [150.0, n * 2 * 20.0 * np.sin(np.pi / n)], rtol=1e-12)
    speed = np.stack([np.full_like(t, 15.0), np.linspace(10.0, 20.0, n + 1)], axis=1)
    speed[:50, 1] = np.nan  # absent for the first half
    np.testing.assert_allclose(m.mean_speed(speed), [15.0, np.mean(np.linspace(10.0, 20.0, n + 1)[50:])])


def test_merge_success_and_step():
    """Vehicle 0 merges from the ramp lane 'j' into 'b' at step 3 and stays; vehicle 1 never
    leaves the ramp; vehicle 2 enters 'b' at step 1 then returns to 'j'."""
    lanes = np.array([["j", "j", "j"], ["j", "j", "b"], ["j", "j", "b"], ["b", "j", "j"], ["b", "j", "j"]])
    np.testing.assert_array_equal(m.merge_success(lanes, ["b", "c"]), [True, False, False])
    np.testing.assert_array_equal(m.merge_step(lanes, ["b", "c"]), [3, -1, 1])
    ints = np.array([[0, 1], [2, 1]])
    np.testing.assert_array_equal(m.merge_success(ints, [2]), [True, False])


def test_time_to_destination():
    """x = 10 t (dt = 0.5), goal (100, 0), radius 5 m: first within reach at x = 95, t = 9.5 s.
    A vehicle driving away never arrives (NaN)."""
    dt = 0.5
    t = np.arange(40) * dt
    x = np.stack([10.0 * t, -10.0 * t], axis=1)
    y = np.zeros_like(x)
    ttd = m.time_to_destination(x, y, np.array([100.0, 0.0]), dt, radius=5.0)
    assert ttd[0] == pytest.approx(9.5) and math.isnan(ttd[1])


# --------------------------------------------------------------------------------------------
# Episode summary
# --------------------------------------------------------------------------------------------


def _summary_trace():
    """Columns 0-3 a platoon (leader first, errors scaled 0.8 then 1.2), column 4 a car closing
    at 10 m/s on column 5 from 50 m, both in a lane 50 m to the side."""
    dt = 0.1
    t, gap_p, speed_p, _, _ = _platoon([0.8, 1.2], steps=40, dt=dt)
    steps = len(t)
    xp = np.zeros((steps, 4))
    xp[:, 0] = 200.0 + np.cumsum(speed_p[:, 0]) * dt
    for k in range(1, 4):
        xp[:, k] = xp[:, k - 1] - L - gap_p[:, k]
    xf, _, _, speed_f, _, gap_f = _following_pair(30.0, 20.0, 50.0, dt, steps)
    x = np.concatenate([xp, xf], axis=1)
    y = np.concatenate([np.zeros((steps, 4)), np.full((steps, 2), 50.0)], axis=1)
    speed = np.concatenate([speed_p, speed_f], axis=1)
    accel = np.gradient(speed, dt, axis=0)
    leader = np.tile([-1, 0, 1, 2, 5, -1], (steps, 1))
    gap = np.concatenate([gap_p, gap_f], axis=1)
    trace = m.EpisodeTrace(x=x, y=y, heading=np.zeros_like(x), speed=speed, accel=accel,
                           length=np.full(6, L), width=np.full(6, W), dt=dt, leader=leader, gap=gap)
    return trace, gap_p, speed_p


def test_episode_summary_matches_component_measures():
    """Every summary figure equals the corresponding component function on the same trace."""
    trace, gap_p, speed_p = _summary_trace()
    th = m.Thresholds(time_gap=0.6, standstill=2.0, ttc_horizon=5.0)
    s = m.episode_summary(trace, platoons=[[0, 1, 2, 3]], thresholds=th,
                          goal=np.array([1e4, 0.0]))
    ttc = m.ttc_1d(trace.gap, trace.speed, trace.leader)
    assert s["min_ttc"] == pytest.approx(min(ttc.min(), 5.0))
    assert s["min_ttc"] == pytest.approx(5.0 - 3.9)  # the closing pair at the last step
    assert s["tet"] == pytest.approx(m.time_exposed_ttc(ttc, trace.dt, threshold=3.0).sum())
    assert s["max_drac"] == pytest.approx(m.drac(trace.gap, trace.speed, trace.leader).max())
    assert s["min_gap"] == pytest.approx(np.nanmin(np.where(trace.leader >= 0, trace.gap, np.nan)))
    assert s["min_ttc_2d"] == pytest.approx(s["min_ttc"], abs=1e-9)
    assert s["string_error_ratio_max"] == pytest.approx(1.2)
    assert s["string_stable"] == 0.0
    e = m.spacing_errors(gap_p, speed_p, time_gap=0.6, standstill=2.0)
    assert s["gap_error_rms"] == pytest.approx(np.sqrt(np.mean(e ** 2)))
    assert s["platoon_splits"] == 0.0
    assert s["mean_speed"] == pytest.approx(np.mean(trace.speed))
    assert s["reached_goal"] == 0.0 and math.isnan(s["time_to_destination"])
    assert all(isinstance(v, float) for v in s.values())


def test_episode_summary_without_leaders_or_platoons_is_nan():
    """No leader/gap arrays and no platoons: car-following and platoon figures are NaN."""
    trace, _, _ = _summary_trace()
    bare = m.EpisodeTrace(x=trace.x, y=trace.y, heading=trace.heading, speed=trace.speed,
                          accel=trace.accel, length=trace.length, width=trace.width, dt=trace.dt)
    s = m.episode_summary(bare, subjects=[4, 5])
    for key in ("min_ttc", "tet", "min_gap", "max_drac", "gap_error_rms", "string_stable"):
        assert math.isnan(s[key]), key
    assert s["min_ttc_2d"] == pytest.approx(5.0 - 3.9)


def test_trace_validate_rejects_bad_shapes():
    """Mismatched shapes and a leader without a gap are refused."""
    trace, _, _ = _summary_trace()
    with pytest.raises(ValueError):
        m.EpisodeTrace(**{**trace.__dict__, "length": np.ones(5)}).validate()
    with pytest.raises(ValueError):
        m.EpisodeTrace(**{**trace.__dict__, "gap": None}).validate()
    with pytest.raises(ValueError):
        m.EpisodeTrace(**{**trace.__dict__, "dt": 0.0}).validate()
