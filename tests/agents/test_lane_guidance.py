"""Guidance measured on lane centre lines and against vehicles ahead: the ``lane`` and corridor ``road`` terms, the
neighbour headway barrier, and the guided planner on a real highway-env scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion import lane_costs
from diffplatoon.agents.diffusion.guidance import (CostWeights, GuidanceConfig, SceneContext, headway_cost,
                                                   lane_cost, neighbour_headway_cost, plan_costs, road_cost)

H = 20
DT = 0.2


def _line(angle: float = 0.0, y0: float = 0.0, n: int = 6, step: float = 20.0) -> torch.Tensor:
    """(1, 1, n, 2) a straight centre line through (0, y0) at ``angle``."""
    s = torch.arange(n, dtype=torch.float32) * step - step
    return torch.stack((s * math.cos(angle), y0 + s * math.sin(angle)), dim=-1)[None, None]


def _drive(y: float | torch.Tensor, heading: float = 0.0, speed: float = 20.0, x0: float = 0.0) -> torch.Tensor:
    """(1, 1, H, 4) states along a straight path from (x0, y) at ``heading``."""
    t = DT * torch.arange(1, H + 1, dtype=torch.float32)
    x = x0 + speed * t * math.cos(heading)
    yy = torch.as_tensor(y, dtype=torch.float32) + speed * t * math.sin(heading)
    return torch.stack((x, yy.expand(H), torch.full((H,), heading), torch.full((H,), speed)), dim=-1)[None, None]


ONE = torch.ones(1, 1, dtype=torch.bool)
OWN_LANE = torch.tensor([[[-2.0, 2.0]]])  # corridor = the member's own 4 m lane
WIDTH = torch.tensor([[4.0]])


def test_lane_offsets_are_signed_offsets_and_heading_errors_on_a_rotated_line():
    angle = math.radians(3.0)
    line = _line(angle)
    on_line = _drive(0.0, heading=angle)
    offset, err = lane_costs.lane_offsets(on_line, line)
    assert offset.abs().max().item() < 1e-3 and err.abs().max().item() < 1e-5
    # 1 m to the line's +y side, parallel: offset +1 everywhere (also beyond the last point: the line continues)
    shifted = on_line.clone()
    shifted[..., 0] -= math.sin(angle)
    shifted[..., 1] += math.cos(angle)
    offset, _ = lane_costs.lane_offsets(shifted, _line(angle, n=3, step=10.0))
    assert torch.allclose(offset, torch.ones_like(offset), atol=1e-4)
    # driving straight along the frame's x axis drifts off a 3°-rotated lane: the offset grows, the error is −3°
    offset, err = lane_costs.lane_offsets(_drive(0.0), line)
    assert offset[0, 0, -1].item() == pytest.approx(-80.0 * math.sin(angle), rel=0.02)
    assert torch.allclose(err, torch.full_like(err, -angle), atol=1e-5)


def test_corridor_road_cost_follows_the_lane_not_the_frame_axis():
    """A lane rotated 3° in the platoon frame (the leader angled): following the lane costs nothing; following the
    frame's x axis leaves the lane within the plan, which the axis-aligned bounds cannot see."""
    cfg = GuidanceConfig()
    angle = math.radians(3.0)
    lane_ctx = SceneContext(lane_points=_line(angle), lane_bounds=OWN_LANE, lane_width=WIDTH)
    axis_ctx = SceneContext(lateral_bounds=torch.tensor([[[-2.0, 2.0]]]))
    along_lane, along_axis = _drive(0.0, heading=angle), _drive(0.0)
    assert road_cost(along_lane, ONE, lane_ctx, cfg).item() == pytest.approx(0.0, abs=1e-6)
    assert road_cost(along_axis, ONE, lane_ctx, cfg).item() > 0.5
    assert road_cost(along_axis, ONE, axis_ctx, cfg).item() == 0.0


def test_lane_term_admits_the_routed_side_lane_and_penalises_drift():
    cfg = GuidanceConfig()
    ctx = SceneContext(lane_points=_line(), lane_bounds=OWN_LANE, lane_width=WIDTH)
    centred, drifting = _drive(0.0), _drive(0.0, heading=math.radians(1.0))
    assert lane_cost(centred, ONE, ctx, cfg).item() == pytest.approx(0.0, abs=1e-6)
    assert lane_cost(drifting, ONE, ctx, cfg).item() > 0.5
    # ending centred one lane to the left (−y): costs a lane width squared unless the corridor admits that lane
    in_left_lane = _drive(-4.0)
    assert lane_cost(in_left_lane, ONE, ctx, cfg).item() == pytest.approx(16.0, rel=1e-4)
    routed = SceneContext(lane_points=_line(), lane_bounds=torch.tensor([[[-6.0, 2.0]]]), lane_width=WIDTH)
    assert lane_cost(in_left_lane, ONE, routed, cfg).item() == pytest.approx(0.0, abs=1e-5)
    assert lane_cost(centred, ONE, routed, cfg).item() == pytest.approx(0.0, abs=1e-6)


def _neighbour(x0: float, y: float, speed: float) -> SceneContext:
    t = DT * torch.arange(1, H + 1, dtype=torch.float32)
    nb = torch.stack((x0 + speed * t, torch.full((H,), y), torch.zeros(H)), dim=-1)[None, None]  # (1, 1, H, 3)
    return SceneContext(neighbours=nb, neighbour_mask=ONE, neighbour_length=torch.full((1, 1), 5.0))


def test_neighbour_headway_costs_the_approach_to_a_slower_vehicle_ahead_in_lane_only():
    cfg = GuidanceConfig()
    length = torch.full((1, 1), 5.0)
    me = _drive(0.0, speed=25.0)
    slow_ahead = _neighbour(30.0, 0.5, 10.0)
    assert neighbour_headway_cost(me, length, ONE, slow_ahead, cfg, DT).item() > 5.0
    assert neighbour_headway_cost(me, length, ONE, _neighbour(30.0, 4.0, 10.0), cfg, DT).item() == 0.0  # next lane
    assert neighbour_headway_cost(me, length, ONE, _neighbour(-40.0, 0.0, 10.0), cfg, DT).item() == 0.0  # behind
    assert neighbour_headway_cost(me, length, ONE, _neighbour(30.0, 0.0, 30.0), cfg, DT).item() == 0.0  # faster
    # the speeds derived from the predicted positions are the ones given
    given = SceneContext(**{**slow_ahead.__dict__, "neighbour_speed": torch.full((1, 1, H), 10.0)})
    assert neighbour_headway_cost(me, length, ONE, given, cfg, DT).item() == pytest.approx(
        neighbour_headway_cost(me, length, ONE, slow_ahead, cfg, DT).item(), rel=1e-4)
    # headway_cost adds it to the platoon-predecessor barrier only when it knows the plan step
    assert headway_cost(me, length, ONE, slow_ahead, cfg).item() == 0.0
    assert headway_cost(me, length, ONE, slow_ahead, cfg, DT).item() > 5.0


HEADWAY_ONLY = GuidanceConfig(weights=CostWeights(separation=0, neighbours=0, road=0, lane=0, headway=1, comfort=0,
                                                speed=0))


def _headway_gradient(neighbour: SceneContext) -> tuple[float, torch.Tensor]:
    """The headway cost of driving straight at 25 m/s for the plan, and its gradient on the actions (1, 1, H, 2)."""
    from diffplatoon.agents.diffusion.kinematics import bicycle_rollout

    start = torch.tensor([[[0.0, 0.0, 0.0, 25.0]]])
    length = torch.full((1, 1), 5.0)
    actions = torch.zeros(1, 1, H, 2, requires_grad=True)
    states = bicycle_rollout(start, actions, length, DT, 1, (0.0, 40.0))
    cost = plan_costs(actions, states, length, ONE, DT, HEADWAY_ONLY, neighbour)["total"]
    (grad,) = torch.autograd.grad(cost.sum(), actions)
    return cost.item(), grad


def test_headway_gradient_through_the_rollout_says_brake():
    """d(cost)/d(acceleration) > 0 behind a slower vehicle: guidance moves the plan towards braking."""
    cost, grad = _headway_gradient(_neighbour(30.0, 0.0, 10.0))
    assert cost > 0 and grad[..., 0].sum().item() > 0


def test_headway_barrier_brakes_rather_than_steers():
    """Behind a slower vehicle offset inside the lane, the barrier's gradient on steering is ~0 while braking pays:
    the gap is measured along the neighbour's heading, so turning away does not look like opening it."""
    ctx = _neighbour(30.0, 1.0, 10.0)
    _, grad = _headway_gradient(ctx)
    brake, steer = grad[..., 0].abs().sum().item(), grad[..., 1].abs().sum().item()
    assert brake > 0 and steer < 1e-3 * brake
    # the member's own heading does not change the barrier (same positions, turned 5°)
    me, length = _drive(0.0, speed=25.0), torch.full((1, 1), 5.0)
    turned = me.clone()
    turned[..., 2] = math.radians(5.0)
    assert neighbour_headway_cost(turned, length, ONE, ctx, HEADWAY_ONLY, DT).item() == pytest.approx(
        neighbour_headway_cost(me, length, ONE, ctx, HEADWAY_ONLY, DT).item(), rel=1e-6)


def test_guided_planner_on_a_real_highway_scene_lowers_the_new_terms(tiny_planner):
    """The real pipeline: a highway-env platoon observed by the Observer, the controller's guidance context (lane
    lines, neighbour speeds), a planner's samples with and without guidance, ranked by the same costs."""
    from diffplatoon.agents.diffusion.controller import MemberLimits, PlannerController
    from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
    from diffplatoon.scenarios import load_scenario
    from diffplatoon.sim.observation import Observer
    from diffplatoon.sim.simulation import Simulation

    spec = load_scenario("hard_brake").model_copy(update={"duration": 3.0})
    planner = JointDiffusionPlanner.load(tiny_planner(spec))
    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    rows = np.arange(len(sim.agent_names))
    cfg = GuidanceConfig(scale=1.0, start_fraction=1.0)
    controller = PlannerController(dt=0.2, substeps=1, speed_range=(-40.0, 40.0), horizon=planner.config.horizon,
                                   n_max=len(rows), m_max=16, guidance=cfg, shield=False, interval=0.2)
    scene = controller.observe("p", obs, rows, MemberLimits.of(len(rows), 5.0, 2.0, 4.0, 8.0, 0.6))
    ctx = controller.guidance_context([scene])
    assert ctx.lane_points.shape[:2] == (1, len(rows)) and ctx.neighbour_speed.shape[-1] == planner.config.horizon
    from diffplatoon.sim.observation import EGO_FEATURES

    # the members start on their lane centres: their centre lines pass through them
    offset, _ = lane_costs.lane_offsets(torch.as_tensor(scene.inputs.ego_state[None, :, None, :3]), ctx.lane_points)
    assert offset.abs().max().item() < 1e-3
    inputs = controller.inputs([scene])
    plain = planner.plan(**inputs, num_samples=8, steps=4, context=ctx, selection=cfg)
    guided = planner.plan(**inputs, num_samples=8, steps=4, context=ctx, guidance=cfg)
    assert guided.sample_costs.mean().item() < plain.sample_costs.mean().item()
    assert guided.cost_terms["lane"].mean().item() < plain.cost_terms["lane"].mean().item()


def test_guidance_step_never_raises_a_plans_cost_and_still_corrects_drift():
    """A fixed step overshoots where the cost is steep in steering; the line search keeps, per scene, the best of the
    unguided estimate and the step's fractions: costs never rise, a drifting plan is pulled back to its lane."""
    from diffplatoon.agents.diffusion.guidance import CostGuidance
    from diffplatoon.agents.diffusion.kinematics import bicycle_rollout

    ctx = SceneContext(lane_points=_line(), lane_bounds=OWN_LANE, lane_width=WIDTH).repeat_interleave(2)  # 2 scenes
    steer_scale = 0.01  # normalised steering unit [rad], as small as a trained planner's action std

    def decode(x: torch.Tensor) -> torch.Tensor:
        return torch.stack((x[..., 0], (x[..., 1] * steer_scale).clamp(-0.5, 0.5)), dim=-1)

    def encode(a: torch.Tensor) -> torch.Tensor:
        return torch.stack((a[..., 0], a[..., 1] / steer_scale), dim=-1)

    def rollout(ego: torch.Tensor, actions: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return bicycle_rollout(ego, actions, length, DT, 1, (0.0, 40.0))

    start = torch.tensor([[[0.0, 0.0, 0.0, 25.0]], [[0.0, 0.6, 0.0, 25.0]]])  # centred; 0.6 m off the centre
    x0 = torch.zeros(2, 1, H, 2)
    x0[1, :, :, 1] = 0.5  # the second scene also steers further off its lane
    length, mask = torch.full((2, 1), 5.0), torch.ones(2, 1, dtype=torch.bool)

    def cost(x: torch.Tensor) -> torch.Tensor:
        a = decode(x)
        return plan_costs(a, rollout(start, a, length), length, mask, DT, cfg, ctx)["total"]

    cfg = GuidanceConfig(scale=5.0, line_search=())
    plain = CostGuidance(cfg, decode, encode, rollout, DT)(x0, start, length, mask, ctx)
    before, after_plain = cost(x0), cost(plain)
    assert (after_plain > before).any()  # the full step overshoots
    cfg = GuidanceConfig(scale=5.0)
    searched = CostGuidance(cfg, decode, encode, rollout, DT)(x0, start, length, mask, ctx)
    after = cost(searched)
    assert (after <= before + 1e-6).all()
    assert after[1].item() < 0.5 * before[1].item()  # the drifting plan is corrected
    with pytest.raises(ValueError, match="line_search fractions"):
        GuidanceConfig(line_search=(0.5, 0.0))
    assert GuidanceConfig(line_search=[1, 0.5]).line_search == (1.0, 0.5)  # a YAML list


def test_lane_end_term_stops_a_member_before_its_lane_ends_but_not_once_it_has_left_the_lane():
    """An acceleration lane ending 40 m ahead: driving on at 20 m/s passes it within the plan and costs (brake to
    lower it), so does a plan that stays short of it but could no longer stop before it, also astride the lane line (part of the body still in the ending lane); the same plan one lane over
    (merged) or wholly past the line costs nothing; without ``lane_end`` the term is 0."""
    from diffplatoon.agents.diffusion.guidance import lane_end_cost

    cfg = GuidanceConfig()
    length = torch.full((1, 1), 5.0)
    ctx = SceneContext(lane_points=_line(), lane_bounds=OWN_LANE, lane_width=WIDTH, lane_end=torch.tensor([[40.0]]))
    on = _drive(0.0, speed=20.0)
    cost = lane_end_cost(on, length, ONE, ctx, cfg, DT)
    assert cost.item() > 10.0  # 80 m travelled against 40 − 2.5 − 1 m of room
    slower = _drive(0.0, speed=6.0)  # 24 m in 4 s + 4.5 m to stop at 4 m/s²: front at 32 m, within the room
    assert lane_end_cost(slower, length, ONE, ctx, cfg, DT).item() == 0.0
    # 36 m in 4 s keeps the front 0.5 m short of the end, but from 9 m/s it could not stop there any more
    unstoppable = _drive(0.0, speed=9.0)
    assert lane_end_cost(unstoppable, length, ONE, ctx, cfg, DT).item() > 1.0
    positions_only = GuidanceConfig(lane_end_decel=0.0)
    assert lane_end_cost(unstoppable, length, ONE, ctx, positions_only, DT).item() == 0.0
    merged = _drive(4.0, speed=20.0)
    assert lane_end_cost(merged, length, ONE, ctx, cfg, DT).item() == 0.0
    straddling = _drive(2.5, speed=20.0)  # centre past the line, but 0.5 m of its 2 m body still in the ending lane
    assert lane_end_cost(straddling, length, ONE, ctx, cfg, DT).item() == pytest.approx(cost.item())
    assert lane_end_cost(_drive(3.1, speed=20.0), length, ONE, ctx, cfg, DT).item() == 0.0
    far = SceneContext(**{**ctx.__dict__, "lane_end": torch.tensor([[1000.0]])})
    assert lane_end_cost(on, length, ONE, far, cfg, DT).item() == 0.0
    assert lane_end_cost(on, length, ONE, SceneContext(lane_points=_line()), cfg, DT).item() == 0.0
    speeds = on[..., 3].clone().requires_grad_(True)
    states = torch.cat((on[..., :3], speeds[..., None]), dim=-1)
    (grad,) = torch.autograd.grad(lane_end_cost(states, length, ONE, ctx, cfg, DT).sum(), speeds)
    assert (grad >= 0).all() and grad.sum().item() > 0  # lower speeds lower the cost
    assert plan_costs(torch.zeros(1, 1, H, 2), on, length, ONE, DT, cfg, ctx)["lane_end"].item() == pytest.approx(
        cfg.weights.lane_end * cost.item())


def test_route_term_makes_waiting_in_an_ending_lane_cost_and_pulls_towards_the_target_lane():
    """A member asked to move one lane left (target −4 m) 30 m before the change must be done (urgency 0.8 at the
    150 m horizon): staying costs 0.8 × 4 m, the merged plan ~0; beyond the horizon, or with no target, 0; and the
    gradient of staying points the plan towards the target side."""
    from diffplatoon.agents.diffusion.guidance import route_cost

    cfg = GuidanceConfig()
    ctx = SceneContext(lane_points=_line(), lane_bounds=torch.tensor([[[-6.0, 2.0]]]), lane_width=WIDTH,
                       route_target=torch.tensor([[-4.0]]), route_distance=torch.tensor([[30.0]]))
    stay, merged = _drive(0.0), _drive(-4.0)
    located = lambda s: lane_costs.lane_offsets(s, ctx.lane_points)  # noqa: E731
    assert route_cost(ONE, ctx, cfg, located(stay)).item() == pytest.approx(0.8 * 4.0, rel=1e-3)
    assert route_cost(ONE, ctx, cfg, located(merged)).item() < 0.1
    far = SceneContext(**{**ctx.__dict__, "route_distance": torch.tensor([[200.0]])})
    assert route_cost(ONE, far, cfg, located(stay)).item() == 0.0
    none = SceneContext(**{**ctx.__dict__, "route_target": torch.tensor([[0.0]])})
    assert route_cost(ONE, none, cfg, located(stay)).item() == 0.0
    assert route_cost(~ONE, ctx, cfg, located(stay)).item() == 0.0  # absent member
    ys = torch.zeros(1, requires_grad=True)
    cost = plan_costs(torch.zeros(1, 1, H, 2), _drive(ys), torch.full((1, 1), 5.0), ONE, DT, cfg, ctx)
    (grad,) = torch.autograd.grad(cost["route"].sum(), ys)
    assert grad.item() > 0  # descending moves the plan to −y, the target side
    assert cost["route"].item() == pytest.approx(cfg.weights.route * 0.8 * 4.0, rel=1e-3)


def test_controller_gives_the_route_target_on_an_acceleration_lane_and_none_on_the_single_lane_ramp():
    """On the on-ramp's acceleration lane the route asks for one lane left, which the corridor admits: the target is
    one lane width towards it and the distance the observation's; on the single-lane ramp before it, none."""
    from diffplatoon.agents.diffusion.controller import MemberLimits, PlannerController
    from diffplatoon.scenarios import ScenarioSpec
    from diffplatoon.sim.observation import EGO_FEATURES, ROUTE_FEATURES, Observer
    from diffplatoon.sim.simulation import Simulation

    spec = ScenarioSpec.model_validate({
        "name": "route_target", "road": {"type": "onramp_merge", "main_lanes": 2, "main_length": 600},
        "traffic": {"count": 0},
        "platoons": [{"id": "accel", "size": 1, "lane": "accel", "start": 40.0, "speed": 20.0,
                      "destination": "main_out"},
                     {"id": "ramp", "size": 1, "lane": "ramp", "start": 20.0, "speed": 15.0,
                      "destination": "main_out"},
                     {"id": "main", "size": 1, "lane": ["merge_begin", "merge_end", 1], "start": 60.0, "speed": 20.0}],
    })
    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    controller = PlannerController(dt=0.2, substeps=1, speed_range=(-40.0, 40.0), horizon=H, n_max=2, m_max=4,
                                   guidance=GuidanceConfig(), shield=False)
    limits = MemberLimits.of(1, 5.0, 2.0, 4.0, 8.0, 0.6)
    scenes = [controller.observe(k, obs, np.array([k]), limits) for k in range(3)]
    ctx = controller.guidance_context(scenes)
    width = obs.ego[0, EGO_FEATURES.index("lane_width")]
    assert obs.route[0, ROUTE_FEATURES.index("lane_changes_needed")] == -1.0
    assert ctx.route_target[0, 0].item() == pytest.approx(-width)
    assert ctx.route_distance[0, 0].item() == pytest.approx(spec.road.accel_length - 40.0, abs=1e-3)
    assert ctx.route_target[1, 0].item() == 0.0  # the ramp has no lane to its left yet
    # the lane that must be left ends where the change must be done
    assert ctx.lane_end[0, 0].item() == pytest.approx(obs.ego[0, EGO_FEATURES.index("distance_to_lane_end")])
    assert ctx.lane_end[0, 0].item() == pytest.approx(ctx.route_distance[0, 0].item())
    # the main road's lane ends only at the road's exit, where vehicles drive off: no lane end there
    assert obs.ego[2, EGO_FEATURES.index("distance_to_lane_end")] < 1000.0
    assert ctx.lane_end[2, 0].item() == 1000.0 and ctx.route_target[2, 0].item() == 0.0
    assert ctx.route_target[:, 1].abs().max().item() == 0.0  # padding rows
