"""Route anchors: the lane-change law on straight and curved lanes, its continuation under replanning, and the
planner's anchored samples (the model's accelerations, the law's steering) only where a route asks for a change."""

from __future__ import annotations

import math

import pytest
import torch

from diffplatoon.agents.diffusion.anchors import lane_change_prior
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext
from diffplatoon.agents.diffusion.kinematics import bicycle_rollout
from diffplatoon.agents.diffusion.lane_costs import lane_offsets
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig, shift_plan

DT, H = 0.2, 20


def _straight(b: int, n: int) -> torch.Tensor:
    pts = torch.zeros(b, n, 31, 2)
    pts[..., 0] = torch.linspace(-100.0, 500.0, 31)
    return pts


def _members() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ego = torch.tensor([[[0.0, 0.0, 0.0, 22.0], [-25.0, 0.3, 0.02, 20.0], [-50.0, 0.0, 0.0, 18.0]]])
    base = torch.zeros(1, 3, H, 2)
    base[..., 0] = torch.linspace(-1.0, 1.0, H)
    base[..., 1] = 0.01
    return ego, torch.full((1, 3), 5.0), base


def test_lane_change_reaches_the_target_lane_and_keeps_everything_else():
    ego, length, base = _members()
    target = torch.tensor([[4.0, -4.0, 0.0]])
    anchor = lane_change_prior(base, ego, length, _straight(1, 3), target, dt=DT)
    offset, heading = lane_offsets(bicycle_rollout(ego, anchor, length, DT), _straight(1, 3))
    assert torch.equal(anchor[..., 0], base[..., 0])  # the speed profile is the base plan's
    assert torch.equal(anchor[0, 2], base[0, 2])  # a member without a target keeps its plan
    assert (offset[0, :2, -1] - target[0, :2]).abs().max() < 0.5
    assert heading[0, :2, -1].abs().max() < 0.05
    # smooth: the lateral acceleration stays near the law's cap (2 m/s², v² tan δ / L in the bicycle model)
    lateral = ego[0, :2, 3:4] ** 2 * torch.tan(anchor[0, :2, :, 1]) / 5.0
    assert lateral.abs().max() < 2.5


def test_replanning_after_every_step_finishes_the_lane_change():
    """The law depends on the state alone: re-anchoring from each new state (as a plan replanned every step is)
    continues one lane change instead of restarting it, and the member ends in the target lane."""
    ego, length, base = _members()
    state, plan, target = ego[:, :1].clone(), base[:, :1].clone(), torch.tensor([[4.0]])
    for _ in range(30):  # 6 s
        plan = lane_change_prior(plan, state, length[:, :1], _straight(1, 1), target, dt=DT)
        state = bicycle_rollout(state, plan[:, :, :1], length[:, :1], DT)[:, :, 0]
        plan = torch.from_numpy(shift_plan(plan[0].numpy(), 1))[None]
    offset, heading = lane_offsets(state[:, :, None], _straight(1, 1))
    assert abs(float(offset) - 4.0) < 0.3 and abs(float(heading)) < 0.05


def test_lane_change_follows_a_curved_lane():
    radius = 200.0
    angle = torch.linspace(-0.2, 0.8, 61)
    pts = torch.stack((radius * torch.sin(angle), radius - radius * torch.cos(angle)), dim=-1)[None, None]  # left bend
    ego = torch.tensor([[[0.0, 0.0, 0.0, 20.0]]])
    length = torch.full((1, 1), 5.0)
    steer_curve = math.atan(5.0 / radius)  # what holds the bend
    base = torch.zeros(1, 1, H, 2)
    base[..., 1] = steer_curve
    anchor = lane_change_prior(base, ego, length, pts, torch.tensor([[-4.0]]), dt=DT)
    offset, _ = lane_offsets(bicycle_rollout(ego, anchor, length, DT), pts)
    assert abs(float(offset[0, 0, -1]) + 4.0) < 0.6
    assert offset[0, 0].min() > -4.6  # no overshoot into the lane beyond


@pytest.fixture(scope="module")
def planner() -> JointDiffusionPlanner:
    torch.manual_seed(0)
    p = JointDiffusionPlanner(PlannerConfig(DenoiserConfig(obs_dim=6, msg_dim=4, d_model=32, n_layers=1, n_heads=2,
                                                           chunk=5, max_horizon=H), horizon=H, num_train_steps=100))
    with torch.no_grad():
        for q in p.model.parameters():
            q.add_(0.2 * torch.randn_like(q))
        p.ema.load_state_dict(p.model.state_dict())
    return p


def _platoon_inputs(b: int, n: int, seed: int) -> dict[str, torch.Tensor]:
    """Planner inputs of b scenes of n members in a column 20 m apart at 20 m/s (random observations, full comms)."""
    g = torch.Generator().manual_seed(seed)
    ego = torch.zeros(b, n, 4)
    ego[..., 0] = -20.0 * torch.arange(n, dtype=torch.float32)
    ego[..., 3] = 20.0
    return dict(obs=torch.randn(b, n, 6, generator=g), inbox=torch.randn(b, n, 2, 4, generator=g),
                inbox_mask=torch.ones(b, n, 2, dtype=torch.bool), comm_mask=torch.ones(b, n, n, dtype=torch.bool),
                member_mask=torch.ones(b, n, dtype=torch.bool), ego_state=ego, length=torch.full((b, n), 5.0))


@torch.no_grad()
def test_planner_anchors_only_the_scenes_a_route_asks_to_change_lanes(planner):
    b, n, s = 2, 3, 6
    scene = _platoon_inputs(b, n, seed=1)
    ego = scene["ego_state"]
    target = torch.tensor([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0]])  # scene 1: members 0 and 1 must move left
    ctx = SceneContext(lane_points=_straight(b, n), lane_bounds=torch.tensor([-2.0, 6.0]).expand(b, n, 2),
                       route_target=target, route_distance=torch.full((b, n), 100.0))
    prior = torch.zeros(b, n, H, 2)
    common = dict(num_samples=s, seed=3, context=ctx, warm_start=prior, selection=GuidanceConfig())
    plain = planner.plan(**scene, **common, warm=WarmStartConfig(anchors=0))
    anchored = planner.plan(**scene, **common, warm=WarmStartConfig(anchors=2))
    # scene 0 (no route target) is planned exactly as without anchors
    assert torch.equal(anchored.sample_actions[0], plain.sample_actions[0])
    # scene 1: rows 2 and 3 (before the 2 fresh ones) are anchored; the others as without anchors
    for k in (0, 1, 4, 5):
        assert torch.equal(anchored.sample_actions[1, k], plain.sample_actions[1, k])
    rows = anchored.sample_actions[1, 2:4]  # (2, n, H, 2)
    # the law's steering, run once on the warm prior with each row's acceleration offset (0, then -2 m/s²)
    offsets = torch.tensor([0.0, -2.0])[:, None, None, None]
    law = lane_change_prior(prior[1:2].expand(2, n, H, 2) + torch.cat((offsets.expand(2, n, H, 1),
                                                                      torch.zeros(2, n, H, 1)), dim=-1),
                            ego[1:2].expand(2, n, 4), torch.full((2, n), 5.0), _straight(2, n),
                            target[1:2].expand(2, n), dt=planner.config.dt, steer_limit=planner.config.steer_range[1])
    torch.testing.assert_close(rows[:, :2, :, 1], law[:, :2, :, 1], rtol=0, atol=1e-5)
    assert not torch.equal(rows[:, 2, :, 1], law[:, 2, :, 1])  # a member without a target steers as the model does
    # the second anchored row brakes 2 m/s² harder than the model's plan for it would, so it ends slower
    assert (anchored.sample_states[1, 3, :, -1, 3] < anchored.sample_states[1, 2, :, -1, 3]).all()
    end = anchored.sample_states[1, 2:4, :, -1, 1]  # final lateral positions (2 rows, n members)
    assert (end[:, :2] > 2.5).all()  # most of the way to the target lane 4 m away within the 4 s horizon


@pytest.mark.parametrize("ahead, changes", [(0.0, False), (8.0, False), (60.0, True), (-60.0, True)])
def test_lane_change_waits_for_a_gap_in_the_target_lane(ahead, changes):
    """A vehicle predicted alongside in the target lane (or within the accepted gap) holds the member in its lane;
    one far enough ahead or behind leaves the change free."""
    from diffplatoon.agents.diffusion.anchors import Traffic, target_lane_traffic

    ego = torch.tensor([[[0.0, 0.0, 0.0, 20.0]]])
    length = torch.full((1, 1), 5.0)
    t = DT * torch.arange(1, H + 1, dtype=torch.float32)
    poses = torch.stack((ahead + 20.0 * t, torch.full_like(t, 4.0), torch.zeros_like(t)), dim=-1)[None, None]
    traffic = Traffic(poses, torch.ones(1, 1, dtype=torch.bool), torch.full((1, 1), 5.0))
    target = torch.tensor([[4.0]])
    occupied = target_lane_traffic(traffic, _straight(1, 1), target, None, H)
    anchor = lane_change_prior(torch.zeros(1, 1, H, 2), ego, length, _straight(1, 1), target, dt=DT, occupied=occupied)
    offset, _ = lane_offsets(bicycle_rollout(ego, anchor, length, DT), _straight(1, 1))
    assert (float(offset[0, 0, -1]) > 3.0) == changes
    if not changes:
        assert offset[0, 0].abs().max() < 0.5


@torch.no_grad()
@pytest.mark.parametrize("alongside, moves", [(False, True), (True, False)])
def test_planner_anchors_wait_for_the_gap_its_context_predicts(planner, alongside, moves):
    """The planner's anchored rows read the target lane's traffic from the guidance context's predicted
    neighbours: a vehicle driving alongside the members in the target lane holds them in their lane."""
    b, n, s = 2, 2, 6
    scene = _platoon_inputs(b, n, seed=2)
    t = DT * torch.arange(1, H + 1, dtype=torch.float32)
    x0 = torch.tensor([0.0, -20.0]) if alongside else torch.tensor([150.0, -150.0])  # (M,) one per member or far
    nb = torch.stack((x0[:, None] + 20.0 * t, torch.full((2, H), 4.0), torch.zeros(2, H)), dim=-1)  # (M, H, 3)
    ctx = SceneContext(lane_points=_straight(b, n), lane_bounds=torch.tensor([-2.0, 6.0]).expand(b, n, 2),
                       route_target=torch.full((b, n), 4.0), route_distance=torch.full((b, n), 100.0),
                       neighbours=nb.expand(b, 2, H, 3), neighbour_mask=torch.ones(b, 2, dtype=torch.bool),
                       neighbour_length=torch.full((b, 2), 5.0))
    plan = planner.plan(**scene, num_samples=s, seed=3, context=ctx, warm_start=torch.zeros(b, n, H, 2),
                        selection=GuidanceConfig(), warm=WarmStartConfig(anchors=3))
    end = plan.sample_states[:, 1:4, :, -1, 1]  # anchored rows 1-3 of both scenes
    assert ((end > 2.5).all() if moves else (end.abs() < 1.0).all())


@pytest.mark.parametrize("speed, changes", [(20.0, True), (28.0, False)])
def test_a_faster_vehicle_behind_needs_a_larger_gap(speed, changes):
    """20 m behind in the target lane is a gap for a vehicle at the member's speed, not for one closing at 8 m/s
    (it could not brake to the member's speed in the room left)."""
    from diffplatoon.agents.diffusion.anchors import Traffic, target_lane_traffic

    ego = torch.tensor([[[0.0, 0.0, 0.0, 20.0]]])
    length = torch.full((1, 1), 5.0)
    t = DT * torch.arange(1, H + 1, dtype=torch.float32)
    poses = torch.stack((-20.0 + speed * t, torch.full_like(t, 4.0), torch.zeros_like(t)), dim=-1)[None, None]
    target = torch.tensor([[4.0]])
    occupied = target_lane_traffic(Traffic(poses, torch.ones(1, 1, dtype=torch.bool), torch.full((1, 1), 5.0)),
                                   _straight(1, 1), target, None, H)
    anchor = lane_change_prior(torch.zeros(1, 1, H, 2), ego, length, _straight(1, 1), target, dt=DT, occupied=occupied)
    offset, _ = lane_offsets(bicycle_rollout(ego, anchor, length, DT), _straight(1, 1))
    assert (float(offset[0, 0, 4]) > 0.5) == changes  # under way within the first second, or not
