"""Safety shield: exact check of the executed plan part, sample fallback, braking fallbacks and counters."""

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion.kinematics import bicycle_rollout
from diffplatoon.agents.diffusion.shield import LEVELS, SafetyShield, ShieldConfig, ShieldScene
from diffplatoon import geometry

DT = 0.2
STEPS = 5
LENGTH, WIDTH = 5.0, 2.0


def rollout(start: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """States (N, H, 4) after each step of actions (N, H, 2) from start (N, 4)."""
    n = len(start)
    return bicycle_rollout(torch.as_tensor(start, dtype=torch.float64), torch.as_tensor(actions, dtype=torch.float64),
                           torch.full((n,), LENGTH, dtype=torch.float64), DT).numpy()


def constant(n: int, acc: float | list, steer: float | list = 0.0, steps: int = STEPS) -> np.ndarray:
    """(N, steps, 2) actions holding each member's acceleration and steering."""
    a = np.zeros((n, steps, 2))
    a[..., 0] = np.asarray(acc, dtype=float).reshape(-1, 1) if np.ndim(acc) else acc
    a[..., 1] = np.asarray(steer, dtype=float).reshape(-1, 1) if np.ndim(steer) else steer
    return a


def scene(start, neighbours=()) -> ShieldScene:
    start = np.asarray(start, dtype=float)
    nb = np.asarray(neighbours, dtype=float).reshape(-1, 5)
    return ShieldScene(start, LENGTH, WIDTH, np.ones(len(start), bool), 8.0, nb, np.ones(len(nb), bool))


def samples(start, *action_sets):
    acts = np.stack(action_sets)
    return acts, np.stack([rollout(np.asarray(start, float), a) for a in acts])


def overlaps_anywhere(start, states, neighbours) -> bool:
    """Independent reference: shapely overlap of members with stationary neighbours at 50 points per step."""
    n, h = states.shape[:2]
    poses = np.concatenate([np.asarray(start, float)[:, None], states], axis=1)  # (N, H+1, 4)
    t = np.linspace(0, 1, 51)
    for k in range(h):
        a, b = poses[:, k, :3], poses[:, k + 1, :3]
        for f in t:
            p = a + f * (b - a)
            nb = np.asarray(neighbours, float).reshape(-1, 5)
            x = np.concatenate([p[:, 0], nb[:, 0]])
            y = np.concatenate([p[:, 1], nb[:, 1]])
            hd = np.concatenate([p[:, 2], nb[:, 2]])
            ln = np.concatenate([np.full(n, LENGTH), nb[:, 4]])
            pairs = geometry.shapely_overlapping_pairs(x, y, hd, ln, WIDTH)
            if len(pairs) and (pairs[:, 0] < n).any():
                return True
    return False


def test_clearly_safe_plan_is_accepted_first():
    start = [[0.0, 0.0, 0.0, 20.0], [-30.0, 0.0, 0.0, 20.0]]
    # a stationary car parked one lane over, and a car well ahead at the platoon's speed
    nbs = [[15.0, 3.6, 0.0, 0.0, 5.0], [80.0, 0.0, 0.0, 20.0, 5.0]]
    acts, states = samples(start, constant(2, 0.0))
    shield = SafetyShield(dt=DT)
    sc = scene(start, nbs)
    assert not shield.collides(sc, states)[0] and not shield.headway_violated(sc, states)[0]
    d = shield.select(sc, acts, states, costs=np.array([0.0]), steps=STEPS)
    assert (d.level, d.sample) == ("accepted_first", 0)
    np.testing.assert_array_equal(d.actions, acts[0])
    assert shield.counts == {"accepted_first": 1, "next_sample": 0, "lane_kept": 0, "comfortable_brake": 0,
                             "emergency_brake": 0}


def test_plan_into_stationary_neighbour_is_rejected_for_the_next_safe_sample():
    start = [[0.0, 0.0, 0.0, 20.0], [-30.0, 0.0, 0.0, 20.0]]
    nbs = [[12.0, 3.5, 0.0, 0.0, 5.0]]  # parked on the adjacent lane, just ahead of the leader
    swerve = constant(2, 0.0, [0.1, 0.0])  # the leader steers into that lane
    straight = constant(2, 0.0)
    acts, states = samples(start, swerve, straight)
    assert overlaps_anywhere(start, states[0], nbs)  # the construction really collides
    assert not overlaps_anywhere(start, states[1], nbs)
    shield = SafetyShield(dt=DT)
    sc = scene(start, nbs)
    np.testing.assert_array_equal(shield.collides(sc, states), [True, False])
    d = shield.select(sc, acts, states, costs=np.array([1.0, 2.0]), steps=STEPS)  # the swerve ranks first
    assert (d.level, d.sample) == ("next_sample", 1)
    np.testing.assert_array_equal(d.actions, straight)


# Distances of the checked profiles from 20 m/s (5 plan steps, then the 15-step emergency stop at 8 m/s², explicit
# Euler as the planner's rollout): cruise then stop 47.04 m, comfortable (3 m/s²) then stop 38.6 m, stop 27.04 m.


def test_no_sample_leaves_a_way_out_then_comfortable_braking():
    start = [[0.0, 0.0, 0.0, 20.0], [-8.0, 0.0, 0.0, 20.0]]
    nbs = [[LENGTH + 42.0, 0.0, 0.0, 0.0, 5.0]]  # a stopped car 42 m ahead (bumper to bumper)
    cruise = constant(2, 0.0)
    rear_end = constant(2, [-3.0, 6.0])  # leader brakes, follower speeds into it: a member-member collision
    acts, states = samples(start, cruise, rear_end)
    shield = SafetyShield(dt=DT)
    sc = scene(start, nbs)
    assert not overlaps_anywhere(start, states[0], nbs)  # cruising 1 s is collision-free by itself ...
    assert overlaps_anywhere(start, shield.with_backup(sc, states[:1])[0], nbs)  # ... but cannot stop in time
    assert overlaps_anywhere(start, states[1], [])  # the members collide with each other
    np.testing.assert_array_equal(shield.collides(sc, states), [False, True])
    np.testing.assert_array_equal(shield.safe(sc, states), [False, False])
    d = shield.select(sc, acts, states, steps=STEPS)
    assert (d.level, d.sample) == ("comfortable_brake", -1)
    np.testing.assert_allclose(d.actions[..., 0], -3.0)
    np.testing.assert_allclose(d.actions[..., 1], 0.0)
    assert not overlaps_anywhere(start, shield.with_backup(sc, d.states[None])[0], nbs)


def test_comfortable_braking_colliding_falls_back_to_emergency_braking():
    start = [[0.0, 0.0, 0.0, 20.0], [-25.0, 0.0, 0.0, 20.0]]
    nbs = [[LENGTH + 33.0, 0.0, 0.0, 0.0, 5.0]]  # 33 m: enough to stop at once, not after 1 s at 3 m/s²
    acts, states = samples(start, constant(2, 0.0))
    shield = SafetyShield(dt=DT)
    sc = scene(start, nbs)
    _, comfortable = shield.braking_plan(sc, 3.0, STEPS)
    assert overlaps_anywhere(start, shield.with_backup(sc, comfortable[None])[0], nbs)
    d = shield.select(sc, acts, states, steps=STEPS)
    assert d.level == "emergency_brake"
    np.testing.assert_allclose(d.actions[..., 0], -8.0)  # the platoon's max_deceleration
    _, full_stop = shield.braking_plan(sc, 8.0, 20)
    assert not overlaps_anywhere(start, full_stop, nbs)


def test_braking_vehicle_ahead_is_predicted_with_its_acceleration():
    start = [[0.0, 0.0, 0.0, 25.0]]
    ahead = [[LENGTH + 12.0, 0.0, 0.0, 25.0, 5.0]]  # 12 m ahead at the same speed
    acts, states = samples(start, constant(1, 0.0))
    shield = SafetyShield(dt=DT)
    assert shield.select(scene(start, ahead), acts, states, steps=STEPS).level == "accepted_first"
    braking = scene(start, ahead)
    braking.neighbour_accel = np.array([-6.0])  # it brakes hard: holding speed would run into it
    pred = shield.predicted_neighbours(braking, 30)
    assert pred[0, -1, 0] == pytest.approx(ahead[0][0] + 25.0**2 / 12.0)  # it stops after v²/2a, never reverses
    assert shield.select(braking, acts, states, steps=STEPS).level in ("comfortable_brake", "emergency_brake")


def test_emergency_braking_never_reverses():
    start = [[0.0, 0.0, 0.0, 3.0]]
    shield = SafetyShield(dt=DT)
    actions, states = shield.braking_plan(scene(start), 8.0, STEPS)
    assert np.all(states[..., 3] >= -1e-12)
    np.testing.assert_allclose(states[0, -1, 3], 0.0, atol=1e-12)
    assert actions[0, 0, 0] == pytest.approx(-8.0) and actions[0, -1, 0] == pytest.approx(0.0)


def test_counts_match_levels_fired():
    shield = SafetyShield(dt=DT)
    start = [[0.0, 0.0, 0.0, 20.0]]
    cases = {
        "accepted_first": [],
        "comfortable_brake": [[LENGTH + 42.0, 0.0, 0.0, 0.0, 5.0]],
        "emergency_brake": [[LENGTH + 33.0, 0.0, 0.0, 0.0, 5.0]],
    }
    acts, states = samples(start, constant(1, 0.0))
    expected = dict.fromkeys(LEVELS, 0)
    for level, nbs in [*cases.items(), ("emergency_brake", cases["emergency_brake"])]:
        assert shield.select(scene(start, nbs), acts, states, steps=STEPS).level == level
        expected[level] += 1
        assert shield.counts == expected
    shield.reset_counts()
    assert shield.counts == dict.fromkeys(LEVELS, 0)


def test_no_tunnelling_between_plan_steps():
    # 40 m/s for one 0.2 s step jumps 8 m: a 1 m long object in between overlaps neither end pose
    start = [[0.0, 0.0, 0.0, 40.0]]
    nbs = [[4.0, 0.0, 0.0, 0.0, 1.0]]
    acts, states = samples(start, constant(1, 0.0, steps=1))
    ends = np.concatenate([np.asarray(start), states[0, :, 0]])
    pairs = geometry.overlapping_pairs(np.r_[ends[:, 0], 4.0], np.r_[ends[:, 1], 0.0], np.r_[ends[:, 2], 0.0],
                                       np.r_[LENGTH, LENGTH, 1.0], WIDTH)
    assert len(pairs) == 0
    assert SafetyShield(dt=DT).collides(scene(start, nbs), states)[0]


def test_headway_floor_rejects_closing_in_and_tolerates_recovery():
    shield = SafetyShield(ShieldConfig(min_time_headway=0.5, standstill_gap=1.0), dt=DT)
    start = [[0.0, 0.0, 0.0, 25.0]]
    # slower car 20 m ahead: cruising 1 s leaves 15 m (floor 1 + 0.5·25 = 13.5 m); accelerating leaves 12 m
    far = [[LENGTH + 20.0, 0.0, 0.0, 20.0, 5.0]]
    acts, states = samples(start, constant(1, 0.0), constant(1, 6.0))
    np.testing.assert_array_equal(shield.headway_violated(scene(start, far), states), [False, True])
    # already under the floor (8 m at 25 m/s): holding speed lets the deficit grow, hard braking shrinks it
    near = [[LENGTH + 8.0, 0.0, 0.0, 22.0, 5.0]]
    acts, states = samples(start, constant(1, 0.0), constant(1, -8.0))
    sc = scene(start, near)
    assert not shield.collides(sc, states).any()
    np.testing.assert_array_equal(shield.headway_violated(sc, states), [True, False])
    assert shield.select(sc, acts, states, steps=STEPS).level == "next_sample"


def test_absent_members_and_rear_traffic_are_ignored():
    shield = SafetyShield(dt=DT)
    start = np.array([[0.0, 0.0, 0.0, 20.0], [0.0, 0.0, 0.0, 20.0]])  # the absent member's row overlaps
    sc = ShieldScene(start, LENGTH, WIDTH, np.array([True, False]), 8.0,
                     np.array([[-7.0, 0.0, 0.0, 30.0, 5.0]]), np.array([True]))  # a fast car right behind
    acts, states = samples(start, constant(2, 0.0))
    assert not shield.collides(sc, states)[0]
    assert shield.select(sc, acts, states, steps=STEPS).level == "accepted_first"


# -- lane corridor -------------------------------------------------------------------------------------
def straight_corridor(n: int, lanes_left: int = 0, lanes_right: int = 0, lane_width: float = 4.0):
    """Members on one straight lane along +x (centre y = 0), with side lanes as given."""
    from diffplatoon.agents.diffusion.corridor import Corridor

    xs = np.arange(0.0, 60.0, 10.0)
    points = np.broadcast_to(np.stack([xs, np.zeros_like(xs)], axis=1), (n, len(xs), 2)).copy()
    bounds = np.tile([-0.5 * lane_width - lane_width * lanes_left, 0.5 * lane_width + lane_width * lanes_right], (n, 1))
    return Corridor(points=points, tangents=np.zeros((n, len(xs))), bounds=bounds)


@pytest.mark.parametrize("name", ["onramp_merge", "roundabout", "intersection"])
def test_corridor_reproduces_the_observed_lane_coordinates(name):
    from diffplatoon.agents.diffusion.corridor import member_corridors
    from diffplatoon.agents.diffusion.features import to_frame
    from diffplatoon.agents.experts import member_lane_keeping
    from diffplatoon.scenarios import load_scenario
    from diffplatoon.sim.observation import EGO_FEATURES, Observer
    from diffplatoon.sim.simulation import Simulation

    e = {f: k for k, f in enumerate(EGO_FEATURES)}
    sim = Simulation(load_scenario(name), 0)
    observer = Observer(sim)
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(40):  # members keeping their lane with a wobble: offsets and heading errors away from 0
        obs = observer.observe()
        alive = obs.alive.astype(bool)
        rows = np.flatnonzero(alive)
        if len(rows):
            frame = obs.pose[rows[0]].astype(np.float64)
            corridor = member_corridors(obs, rows, frame)
            x, y, h = to_frame(obs.pose[rows, 0], obs.pose[rows, 1], obs.pose[rows, 2], frame)
            lateral, heading_error = corridor.locate(np.stack([x, y, h], axis=1)[:, None])
            np.testing.assert_allclose(lateral[:, 0], obs.ego[rows, e["lateral_offset"]], rtol=0.01, atol=0.02)
            np.testing.assert_allclose(heading_error[:, 0], obs.ego[rows, e["heading_error"]], atol=0.01)
            checked += len(rows)
        m = len(obs.ego)
        steer = member_lane_keeping(obs.ego, np.full(m, LENGTH)) + rng.uniform(-0.05, 0.05, m)
        sim.step(np.stack([np.full(m, 0.5), steer], axis=1))
    assert checked > 40


def test_corridor_locates_poses_ahead_on_a_curve_as_the_observation_does_when_it_gets_there():
    """A corridor built now, in the world frame, against the observation 1 s later (members ~8 m further on the
    roundabout's curved entries and ring): the offset of the pose they reach is, to about 0.1 m, the one they then
    observe."""
    from diffplatoon.agents.diffusion.corridor import member_corridors
    from diffplatoon.agents.experts import member_lane_keeping
    from diffplatoon.scenarios import load_scenario
    from diffplatoon.sim.observation import EGO_FEATURES, Observer
    from diffplatoon.sim.simulation import Simulation

    e = {f: k for k, f in enumerate(EGO_FEATURES)}
    sim = Simulation(load_scenario("roundabout"), 0)
    observer = Observer(sim)
    errors, curved = [], 0
    for _ in range(8):
        obs = observer.observe()
        rows = np.flatnonzero(obs.alive.astype(bool))
        corridor = member_corridors(obs, rows)
        for _ in range(5):
            o = observer.observe()
            m = len(o.ego)
            sim.step(np.stack([np.full(m, 0.3), member_lane_keeping(o.ego, np.full(m, LENGTH))], axis=1))
        later = observer.observe()
        same = later.alive.astype(bool)[rows]
        rows_now = rows[same]
        lateral, _ = corridor.locate(later.pose[rows_now, None, :3].astype(np.float64)[None])
        lateral = lateral[0][same, 0] if lateral.ndim == 3 else lateral[same, 0]
        errors.extend(np.abs(lateral - later.ego[rows_now, e["lateral_offset"]]).tolist())
        turn = np.abs(np.diff(corridor.tangents[same], axis=1)).max(axis=1)
        curved += int((turn > 0.05).sum())
    errors = np.array(errors)
    errors = errors[errors < 2.0]  # a member now on another lane than the one its corridor followed
    assert curved > 5 and len(errors) > 20
    # with 10 m chords alone: 90th percentile 0.28 m, largest 0.32 m
    assert np.quantile(errors, 0.9) < 0.12 and errors.max() < 0.2


def test_plan_leaving_the_road_is_rejected_and_a_lane_change_is_not():
    start = [[0.0, 0.0, 0.0, 25.0]]
    shield = SafetyShield(ShieldConfig(), dt=DT)
    acts, states = samples(start, constant(1, 0.0, 0.05), constant(1, 0.0, 0.0))
    off_road = scene(start)
    off_road.corridor = straight_corridor(1)  # no side lane: steering off the lane leaves the road
    assert shield.leaves_road(off_road, states).tolist() == [True, False]
    decision = shield.select(off_road, acts, states, costs=np.array([0.0, 1.0]))
    assert decision.level == "next_sample" and decision.sample == 1

    no_check = scene(start)  # without a corridor the same plans are both fine
    assert shield.leaves_road(no_check, states).tolist() == [False, False]

    # a moderate lane change towards an existing side lane (+y side) stays inside the corridor
    change = np.concatenate([constant(1, 0.0, 0.03, 2), constant(1, 0.0, -0.03, 3)], axis=1)
    _, lc_states = samples(start, change)
    with_lane = scene(start)
    with_lane.corridor = straight_corridor(1, lanes_right=1)
    assert lc_states[0, 0, -1, 1] > 0.3 and not shield.leaves_road(with_lane, lc_states)[0]


def test_turning_across_the_lane_is_rejected_even_inside_the_bounds():
    start = [[0.0, 0.0, 0.0, 10.0]]
    shield = SafetyShield(ShieldConfig(max_heading_error=0.2), dt=DT)
    _, states = samples(start, constant(1, 0.0, [[-0.3]]))
    sc = scene(start)
    sc.corridor = straight_corridor(1, lanes_left=3, lanes_right=3)  # wide: only the heading can fail
    side, heading = sc.corridor.deviation(states[0, :, :, :3], sc.length, sc.width, 0.2)
    assert side.max() == 0.0 and heading.max() > 0.0
    assert shield.leaves_road(sc, states)[0]


def test_member_already_off_the_corridor_may_come_back_but_not_go_further():
    start = [[0.0, 1.8, 0.0, 20.0]]  # body out by 0.8 m on the +y side of a single lane
    shield = SafetyShield(ShieldConfig(), dt=DT)
    _, states = samples(start, constant(1, 0.0, -0.02), constant(1, 0.0, 0.02))
    sc = scene(start)
    sc.corridor = straight_corridor(1)
    assert shield.leaves_road(sc, states).tolist() == [False, True]


def test_emergency_stop_is_predicted_with_the_fallbacks_lane_keeping():
    # a member turned 0.15 rad away from a stopped car in its lane: braking straight on it would pass
    # beside it, but the fallback steers back into the lane and meets it
    start = [[0.0, 0.0, 0.15, 20.0]]
    stopped = [[24.0, 0.0, 0.0, 0.0, 5.0]]
    shield = SafetyShield(ShieldConfig(), dt=DT)
    _, states = samples(start, constant(1, -8.0, 0.0, 1))
    straight = scene(start, stopped)
    assert not shield.collides(straight, shield.with_backup(straight, states))[0]
    lane = scene(start, stopped)
    lane.corridor = straight_corridor(1, lanes_left=1, lanes_right=1)
    backup = shield.with_backup(lane, states)
    assert abs(backup[0, 0, -1, 2]) < 0.05  # heading back along the lane
    assert shield.collides(lane, backup)[0]
    # the braking fallback's predicted states follow the lane too, and its actions carry the steering that
    # drives them there (an executor running them open-loop, as an action chunk, reproduces the states)
    actions, braking = shield.braking_plan(lane, 8.0, 10)
    assert np.abs(braking[0, 1:, 2]).max() < 0.1 and braking[0, -1, 1] < 0.5 * braking[0, 0, 1]
    assert actions[0, 0, 1] < -0.01  # steering back towards the lane, against the 0.15 rad heading
    replay = bicycle_rollout(torch.tensor(start, dtype=torch.float64), torch.as_tensor(actions),
                             torch.full((1,), LENGTH, dtype=torch.float64), DT, 1).numpy()
    np.testing.assert_allclose(replay, braking, atol=1e-9)


def test_samples_steering_off_the_lane_are_driven_in_lane_before_braking():
    start = [[0.0, 0.0, 0.0, 20.0], [-25.0, 0.0, 0.0, 20.0]]
    shield = SafetyShield(ShieldConfig(), dt=DT)
    swerve = constant(2, [0.5, 0.3], [0.06, -0.06])  # keep speed, but both members leave the lane
    acts, states = samples(start, swerve)
    sc = scene(start)
    sc.corridor = straight_corridor(2)
    assert shield.leaves_road(sc, states)[0]
    d = shield.select(sc, acts, states, steps=STEPS)
    assert (d.level, d.sample) == ("lane_kept", 0)
    np.testing.assert_array_equal(d.actions[..., 0], swerve[..., 0])  # the planner's speed plan is kept
    assert np.all(d.actions[..., 1] == 0.0) and np.abs(d.states[..., 1]).max() < 0.01
    assert shield.counts["lane_kept"] == 1
    # without a corridor there is nothing to keep: the same plans are simply accepted
    assert shield.select(scene(start), acts, states, steps=STEPS).level == "accepted_first"


# -- batched checks ------------------------------------------------------------------------------------
def random_scenes(rng: np.random.Generator, count: int, n: int = 3):
    """Platoons on a straight lane (some members absent) with traffic (some masked, some braking or accelerating)
    ahead, beside and behind, near enough that plans collide, graze or close in on their headway; a third of
    the scenes have a lane corridor. Returns scenes and one executed part (count, N, STEPS, 4) per scene."""
    scenes, plans = [], []
    for b in range(count):
        start = np.zeros((n, 4))
        start[:, 0] = -np.arange(n) * rng.uniform(7.0, 14.0) + rng.normal(0.0, 0.5, n)
        start[:, 1] = rng.normal(0.0, 0.3, n)
        start[:, 2] = rng.normal(0.0, 0.03, n)
        start[:, 3] = rng.uniform(5.0, 25.0, n)
        m = int(rng.integers(0, 7))  # neighbour counts differ between scenes
        nb = np.zeros((m, 5))
        nb[:, 0] = rng.uniform(-25.0, 60.0, m)
        nb[:, 1] = rng.choice([-4.0, 0.0, 4.0], m) + rng.normal(0.0, 0.5, m)
        nb[:, 2] = rng.normal(0.0, 0.03, m)
        nb[:, 3] = rng.uniform(0.0, 25.0, m)
        nb[:, 4] = rng.uniform(4.0, 6.0, m)
        sc = ShieldScene(start, LENGTH, WIDTH, rng.random(n) < 0.8, rng.uniform(6.0, 9.0, n), nb, rng.random(m) < 0.8,
                         rng.normal(0.0, 2.0, m) if b % 2 else None)
        if b % 3 == 0:
            sc.corridor = straight_corridor(n, lanes_left=1, lanes_right=int(rng.integers(0, 2)))
        scenes.append(sc)
        plans.append(rollout(start, constant(n, rng.normal(0.0, 2.0, n), rng.normal(0.0, 0.08, n))))
    return scenes, np.stack(plans)


def test_batched_check_equals_the_per_scene_check():
    rng = np.random.default_rng(7)
    scenes, states = random_scenes(rng, 60)
    shield = SafetyShield(dt=DT)
    single = np.array([shield.safe(sc, states[b:b + 1])[0] for b, sc in enumerate(scenes)])
    np.testing.assert_array_equal(shield.safe_scenes(scenes, states), single)
    # every check decides some scenes either way, so each one's batched form is exercised
    crash = np.array([shield.collides(sc, shield.with_backup(sc, states[b:b + 1]))[0] for b, sc in enumerate(scenes)])
    headway = np.array([shield.headway_violated(sc, states[b:b + 1])[0] for b, sc in enumerate(scenes)])
    road = np.array([shield.leaves_road(sc, states[b:b + 1])[0] for b, sc in enumerate(scenes)])
    for failed in (crash, headway & ~crash, road & ~crash & ~headway, single):
        assert 0 < failed.sum() < len(scenes)
    # a scene's result does not depend on the others in its batch
    half = slice(0, len(scenes), 2)
    np.testing.assert_array_equal(shield.safe_scenes(scenes[half], states[half]), single[half])


def test_batched_selection_equals_per_scene_selection():
    rng = np.random.default_rng(11)
    scenes, states = random_scenes(rng, 30)
    actions = np.zeros(states.shape[:-1] + (2,))
    actions[..., 0] = rng.normal(0.0, 2.0, actions.shape[:-1])
    # two samples per scene (the second a slower copy), ranked by random costs
    sample_states = np.stack([states, states * [1.0, 1.0, 1.0, 0.7]], axis=1)
    sample_actions = np.stack([actions, actions - 1.0], axis=1)
    costs = rng.random((len(scenes), 2))
    per_scene, batched = SafetyShield(dt=DT), SafetyShield(dt=DT)
    expected = [per_scene.select(sc, sample_actions[b], sample_states[b], costs[b], steps=3)
                for b, sc in enumerate(scenes)]
    got = batched.select_scenes(scenes, sample_actions, sample_states, costs, steps=3)
    for e, g in zip(expected, got):
        assert (g.level, g.sample) == (e.level, e.sample)
        np.testing.assert_array_equal(g.actions, e.actions)
        np.testing.assert_array_equal(g.states, e.states)
    assert batched.counts == per_scene.counts
    assert sum(v > 0 for v in batched.counts.values()) >= 3  # several levels fired


def test_a_member_in_a_lane_that_ends_must_be_able_to_stop_before_the_end():
    """20 m/s, full braking 8 m/s² (25 m), half a length and the 0.5 m margin: 28 m of room needed now. With the end
    40 m ahead, holding speed for the executed second leaves no room to stop (rejected), braking at 4 m/s² does
    (accepted); one lane over, or with no end, holding speed is fine, but not astride the lane line (part of the
    body still in the ending lane); a member that can no longer stop may not hold speed or brake gently."""
    from dataclasses import replace

    start = [[0.0, 0.0, 0.0, 20.0]]
    shield = SafetyShield(ShieldConfig(), dt=DT)
    acts, states = samples(start, constant(1, 0.0), constant(1, -4.0), constant(1, -8.0))
    sc = scene(start)
    sc.corridor = replace(straight_corridor(1, lanes_left=1), end=np.array([40.0]), lane_width=np.array([4.0]))
    assert shield.leaves_road(sc, states).tolist() == [True, False, False]
    decision = shield.select(sc, acts, states, costs=np.array([0.0, 1.0, 2.0]), steps=STEPS)
    assert decision.level == "next_sample" and decision.sample == 1

    sc.corridor = replace(sc.corridor, end=np.array([np.inf]))
    assert not shield.leaves_road(sc, states).any()

    beside = [[0.0, -4.0, 0.0, 20.0]]  # already one lane over (the corridor's left lane): the end is not its own
    sc = scene(beside)
    sc.corridor = replace(straight_corridor(1, lanes_left=1), end=np.array([40.0]), lane_width=np.array([4.0]))
    _, beside_states = samples(beside, constant(1, 0.0))
    assert not shield.leaves_road(sc, beside_states)[0]
    astride = [[0.0, -2.5, 0.0, 20.0]]  # centre past the line, 0.5 m of the 2 m body still in the ending lane
    sc = scene(astride)
    sc.corridor = replace(straight_corridor(1, lanes_left=1), end=np.array([40.0]), lane_width=np.array([4.0]))
    _, astride_states = samples(astride, constant(1, 0.0))
    assert shield.leaves_road(sc, astride_states)[0]

    sc = scene(start)
    sc.corridor = replace(straight_corridor(1, lanes_left=1), end=np.array([20.0]), lane_width=np.array([4.0]))
    assert shield.leaves_road(sc, states)[:2].tolist() == [True, True]


def test_corridors_end_where_the_route_leaves_the_lane_not_at_the_road_exit():
    from diffplatoon.agents.diffusion.corridor import member_corridors
    from diffplatoon.scenarios import ScenarioSpec
    from diffplatoon.sim.observation import EGO_FEATURES, Observer
    from diffplatoon.sim.simulation import Simulation

    spec = ScenarioSpec.model_validate({
        "name": "corridor_end", "road": {"type": "onramp_merge", "main_lanes": 2, "main_length": 600},
        "traffic": {"count": 0},
        "platoons": [{"id": "accel", "size": 1, "lane": "accel", "start": 40.0, "speed": 20.0,
                      "destination": "main_out"},
                     {"id": "main", "size": 1, "lane": ["merge_begin", "merge_end", 1], "start": 60.0, "speed": 20.0}],
    })
    obs = Observer(Simulation(spec, 0)).observe()
    corridor = member_corridors(obs, np.arange(2))
    to_end = obs.ego[:, EGO_FEATURES.index("distance_to_lane_end")]
    assert corridor.end[0] == pytest.approx(to_end[0]) and corridor.end[0] < 100.0
    assert to_end[1] < 1000.0 and corridor.end[1] == np.inf  # the main road's lane ends at the exit only
    np.testing.assert_allclose(corridor.lane_width, obs.ego[:, EGO_FEATURES.index("lane_width")])


def test_braking_fallback_is_hard_when_comfortable_braking_would_pass_the_lane_end():
    """A car 12 m ahead at 17 m/s: holding 20 m/s (or speeding up) breaks the headway floor, so the shield falls
    back to braking. Without a lane end it brakes comfortably (3 m/s² clears the car); with the lane ending 35 m
    ahead comfortable braking (67 m to stop) would carry the member past the end, so it brakes at its limit."""
    from dataclasses import replace

    start = [[0.0, 0.0, 0.0, 20.0]]
    shield = SafetyShield(ShieldConfig(), dt=DT)
    acts, states = samples(start, constant(1, 0.0), constant(1, 1.0))
    sc = scene(start, [[17.0, 0.0, 0.0, 17.0, 5.0]])
    sc.corridor = replace(straight_corridor(1), end=np.array([np.inf]), lane_width=np.array([4.0]))
    assert shield.select(sc, acts, states, steps=STEPS).level == "comfortable_brake"
    sc.corridor = replace(sc.corridor, end=np.array([35.0]))
    decision = shield.select(sc, acts, states, steps=STEPS)
    assert decision.level == "emergency_brake"
    assert decision.actions[0, 0, 0] == pytest.approx(-8.0)


def test_road_margin_steps_in_before_a_drifting_member_reaches_the_lane_edge():
    """A member 0.85 m off-centre (its side 0.15 m inside the 4 m lane) drifting outwards by ~0.1 m in the executed
    second: without a margin the plan stays inside the bounds and passes; with the default 0.25 m margin it is
    rejected, and holding its line (no drift) passes either way."""
    start = [[0.0, 0.85, 0.0, 20.0]]
    acts, states = samples(start, constant(1, 0.0, 0.002), constant(1, 0.0, 0.0))
    assert 0.9 < states[0, 0, -1, 1] < 0.98
    sc = scene(start)
    sc.corridor = straight_corridor(1)
    assert SafetyShield(ShieldConfig(road_margin=0.0), dt=DT).leaves_road(sc, states).tolist() == [False, False]
    assert SafetyShield(ShieldConfig(), dt=DT).leaves_road(sc, states).tolist() == [True, False]


@pytest.mark.parametrize("with_corridor", [True, False])
def test_a_member_cutting_in_keeps_the_vehicle_behind_in_the_check(with_corridor):
    """A vehicle right behind in the member's lane is left out of the collision check only while the member keeps
    that lane. Part-way through a lane change (1.5 m off the centre line of the lane it now counts as its own,
    turned 0.12 rad into it), braking in front of a faster vehicle behind in that lane is a cut-in: rejected.
    Centred and along the lane, the same vehicle and the same braking are the follower's to avoid: accepted."""
    shield = SafetyShield(dt=DT)
    follower = [[-9.0, 0.0, 0.0, 25.0, 5.0]]  # 9 m behind, 5 m/s faster, in the target lane (centre y = 0)
    braking = constant(1, -4.0)
    for start, cut_in in (([[0.0, 0.8, -0.12, 20.0]], True), ([[0.0, 0.0, 0.0, 20.0]], False)):
        acts, states = samples(start, braking)
        sc = scene(start, follower)
        if with_corridor:
            sc.corridor = straight_corridor(1, lanes_right=1)  # the lane the member is merging from lies at +y
        assert shield.collides(sc, states)[0] == cut_in
