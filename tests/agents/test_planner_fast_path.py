"""The planner's fast paths decide as the straightforward computation does.

`JointDiffusionPlanner.plan` ranks its samples with the rollouts and cost terms the last guidance step's line search
already computed (``reuse_search``), the DDIM sampler returns the last step's clean estimate without a copy, and
`lane_costs.lane_offsets` and `kinematics.bicycle_rollout` are written with fewer tensor operations. Each is compared
here with a reference computed independently: the same call with the shortcut off, the costs of the returned
samples recomputed from scratch, a per-pose loop over the polyline's segments, the step-by-step bicycle model.
"""

from __future__ import annotations

import math

import pytest
import torch

from diffplatoon.agents.diffusion import lane_costs
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext, plan_costs
from diffplatoon.agents.diffusion.kinematics import bicycle_rollout, bicycle_step
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig

N, H, OBS, MSG, M = 4, 10, 6, 4, 2


@pytest.fixture(scope="module")
def planner() -> JointDiffusionPlanner:
    """A small planner with random weights (AdaLN-Zero alone would predict constants), three sub-steps per step, and
    an action normaliser off zero, as a fitted one is (an absent member's zero network output then decodes to a
    non-zero action, which its placeholder must not follow)."""
    config = PlannerConfig(DenoiserConfig(obs_dim=OBS, msg_dim=MSG, d_model=32, n_layers=1, n_heads=2, chunk=5,
                                          max_horizon=20), horizon=H, substeps=3)
    planner = JointDiffusionPlanner.with_random_weights(config, std=0.3, seed=0)
    planner.normalizer.action_mean.copy_(torch.tensor([-0.5, 0.01]))
    planner.normalizer.action_std.copy_(torch.tensor([2.0, 0.2]))
    return planner


def _scene(b: int = 2, absent: bool = False) -> dict[str, torch.Tensor]:
    """A platoon 8 m apart in one lane at 25 m/s (close enough for the separation and headway terms to count)."""
    g = torch.Generator().manual_seed(1)
    ego = torch.zeros(b, N, 4)
    ego[..., 0] = -8.0 * torch.arange(N, dtype=torch.float32)
    ego[..., 3] = 25.0
    member_mask = torch.ones(b, N, dtype=torch.bool)
    if absent:
        member_mask[0, 2] = False
    return dict(obs=torch.randn(b, N, OBS, generator=g), inbox=torch.randn(b, N, 2, MSG, generator=g),
                inbox_mask=torch.ones(b, N, 2, dtype=torch.bool), comm_mask=torch.ones(b, N, N, dtype=torch.bool),
                member_mask=member_mask, ego_state=ego, length=torch.full((b, N), 5.0))


def _context(b: int = 2) -> SceneContext:
    """Every cost term's inputs: bending lane lines, a corridor that admits the left lane, two neighbours (one just
    ahead of the leader), speed limits, a lane end within the horizon's reach and a route asking one member left."""
    xs = torch.linspace(-60.0, 140.0, 6)
    line = torch.stack((xs, 0.002 * xs.clamp(min=0.0) ** 2), dim=-1)  # (6, 2)
    points = line.expand(b, N, 6, 2).clone()
    nb_x = torch.tensor([12.0, -4.0])[:, None] + 20.0 * 0.2 * torch.arange(1, H + 1)  # 20 m/s, (M, H)
    neighbours = torch.stack((nb_x, torch.tensor([0.5, 4.0])[:, None].expand(M, H), torch.zeros(M, H)), dim=-1)
    return SceneContext(
        neighbours=neighbours.expand(b, M, H, 3).clone(), neighbour_mask=torch.ones(b, M, dtype=torch.bool),
        neighbour_length=torch.full((b, M), 5.0), neighbour_speed=torch.full((b, M, H), 20.0),
        speed_limit=torch.full((b, N), 24.0), lane_points=points,
        lane_bounds=torch.tensor([-2.0, 6.0]).expand(b, N, 2).clone(), lane_width=torch.full((b, N), 4.0),
        lane_end=torch.full((b, N), 45.0), route_target=torch.tensor([0.0, 4.0, 0.0, 0.0]).expand(b, N).clone(),
        route_distance=torch.full((b, N), 60.0))


def _prior(planner: JointDiffusionPlanner, scene: dict, context: SceneContext) -> torch.Tensor:
    return planner.plan(**scene, guidance=GuidanceConfig(), context=context, num_samples=4, seed=3).actions


def _assert_same_decision(fast, ref) -> None:
    assert torch.equal(fast.sample_actions, ref.sample_actions)
    assert torch.equal(fast.best_index, ref.best_index)
    assert torch.equal(fast.actions, ref.actions)
    torch.testing.assert_close(fast.sample_states, ref.sample_states, rtol=1e-6, atol=1e-4)
    torch.testing.assert_close(fast.sample_costs, ref.sample_costs, rtol=1e-5, atol=1e-5)
    assert fast.cost_terms.keys() == ref.cost_terms.keys()
    for name in ref.cost_terms:
        torch.testing.assert_close(fast.cost_terms[name], ref.cost_terms[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("absent", [False, True])
def test_reused_line_search_ranks_as_the_recomputed_ranking(planner, warm, absent):
    """Guided, cold and warm-started, with and without an absent member: the same samples, costs and choice as the
    call that rolls out and scores the final samples again."""
    scene, context = _scene(absent=absent), _context()
    kw = dict(guidance=GuidanceConfig(), context=context, num_samples=8, steps=6, seed=5)
    if warm:
        kw.update(warm_start=_prior(planner, scene, context), warm=WarmStartConfig(steps=2, fresh=2))
    fast = planner.plan(**scene, **kw)
    ref = planner.plan(**scene, **kw, reuse_search=False)
    _assert_same_decision(fast, ref)
    assert (ref.sample_costs > 0).all()  # the scene exercises the costs, so a wrong reuse would show
    if absent:  # an absent member's placeholder stands at the origin in every sample
        assert torch.equal(fast.sample_states[0, :, 2], torch.zeros_like(fast.sample_states[0, :, 2]))


@pytest.mark.parametrize("guided", [False, True])
def test_ranking_is_the_cost_of_the_returned_samples(planner, guided):
    """Recomputed from the returned actions alone: the rollout, every cost term and the argmin."""
    scene, context = _scene(absent=True), _context()
    cfg = GuidanceConfig()
    plan = planner.plan(**scene, guidance=cfg if guided else None, context=context, num_samples=6, steps=4, seed=2,
                        warm_start=_prior(planner, scene, context), warm=WarmStartConfig())
    b, s = plan.sample_costs.shape
    rep = lambda v: v.repeat_interleave(s, dim=0)  # noqa: E731
    mm = rep(scene["member_mask"])
    ego = rep(torch.where(scene["member_mask"][..., None], scene["ego_state"], 0.0))
    actions = plan.sample_actions.flatten(0, 1)
    assert torch.equal(actions, torch.where(mm[..., None, None], actions, 0.0))
    states = planner.rollout(ego, actions, rep(scene["length"]))
    terms = plan_costs(actions, states, rep(scene["length"]), mm, planner.config.dt, cfg, context.repeat_interleave(s))
    torch.testing.assert_close(plan.sample_states.flatten(0, 1), states, rtol=1e-6, atol=1e-4)
    for name, value in terms.items():
        torch.testing.assert_close(plan.cost_terms[name], value.view(b, s), rtol=1e-5, atol=1e-5)
    assert torch.equal(plan.best_index, plan.sample_costs.argmin(dim=1))


def test_a_selection_config_other_than_the_guidance_is_scored_with_its_own_costs(planner):
    """The line search's costs are the guidance's; ranking with other weights must not take them."""
    scene, context = _scene(), _context()
    selection = GuidanceConfig().with_weights(comfort=50.0, speed=0.0)
    kw = dict(guidance=GuidanceConfig(), context=context, num_samples=6, steps=4, seed=4)
    plan = planner.plan(**scene, **kw, selection=selection)
    ref = planner.plan(**scene, **kw, selection=selection, reuse_search=False)
    _assert_same_decision(plan, ref)
    guided_only = planner.plan(**scene, **kw)
    assert not torch.allclose(plan.sample_costs, guided_only.sample_costs)


def test_guidance_record_holds_the_returned_estimate_its_rollout_and_costs(planner):
    """`CostGuidance` fills ``record`` with what its line search computed for the x̂0 it returns."""
    scene, context = _scene(), _context()
    cfg = GuidanceConfig(inner_steps=2)
    guide = planner.guide(cfg)
    x0 = planner.encode_actions(torch.randn(2, N, H, 2, generator=torch.Generator().manual_seed(7)) * 2.0)
    record: dict = {}
    out = guide(x0, scene["ego_state"], scene["length"], scene["member_mask"], context, record=record)
    assert not torch.equal(out, x0)  # the step moved at least one scene
    assert torch.equal(record["x0"], out)
    actions = planner.decode_actions(out)
    states = planner.rollout(scene["ego_state"], actions, scene["length"])
    terms = plan_costs(actions, states, scene["length"], scene["member_mask"], planner.config.dt, cfg, context)
    torch.testing.assert_close(record["states"], states, rtol=1e-6, atol=1e-4)
    for name, value in terms.items():
        torch.testing.assert_close(record["terms"][name], value, rtol=1e-5, atol=1e-5)
    fixed = planner.guide(GuidanceConfig(line_search=()))
    record = {"stale": 1}
    fixed(x0, scene["ego_state"], scene["length"], scene["member_mask"], context, record=record)
    assert record == {}  # no line search, nothing to reuse


def _reference_lane_offsets(states: torch.Tensor, points: torch.Tensor) -> list[list[tuple[float, float]]]:
    """Per pose (flattened): the (offset, heading error) of every segment whose nearest point (the first segment
    continued backwards, the last forwards) is the nearest one, in plain Python arithmetic. Several where a pose
    lies beyond a vertex on the outside of a bend: both segments' nearest point is then that vertex."""
    out = []
    for pose, pts in zip(states[..., :3].reshape(-1, 3).tolist(),
                         points[:, :, None].expand(*states.shape[:3], *points.shape[2:]).reshape(-1, points.shape[2], 2)
                         .tolist()):
        x, y, psi = pose
        found = []
        for s, ((ax, ay), (bx, by)) in enumerate(zip(pts[:-1], pts[1:])):
            length = max(math.hypot(bx - ax, by - ay), 1e-9)
            ux, uy = (bx - ax) / length, (by - ay) / length
            t = (x - ax) * ux + (y - ay) * uy
            if s > 0:
                t = max(t, 0.0)
            if s < len(pts) - 2:
                t = min(t, length)
            err = psi - math.atan2(uy, ux)
            found.append((math.hypot(x - ax - t * ux, y - ay - t * uy), ux * (y - ay) - uy * (x - ax),
                          math.atan2(math.sin(err), math.cos(err))))
        nearest = min(f[0] for f in found)
        out.append([(off, err) for dist, off, err in found if dist <= nearest + 1e-9])
    return out


def test_lane_offsets_match_a_per_pose_reference_with_their_gradients():
    g = torch.Generator().manual_seed(0)
    points = torch.cumsum(torch.randn(2, 3, 5, 2, generator=g, dtype=torch.float64)
                          * torch.tensor([15.0, 2.0], dtype=torch.float64) + torch.tensor([10.0, 0.0], dtype=torch.float64),
                          dim=2)
    states = torch.randn(2, 3, 7, 4, generator=g, dtype=torch.float64) * torch.tensor([40.0, 4.0, 2.0, 1.0],
                                                                                       dtype=torch.float64)
    states[..., 0] += 40.0
    states.requires_grad_(True)
    offset, err = lane_costs.lane_offsets(states, points)
    reference = _reference_lane_offsets(states.detach(), points)
    assert any(len(r) > 1 for r in reference)  # the data has poses off a bend's vertex, where either segment is right
    for got, accepted in zip(zip(offset.flatten().tolist(), err.flatten().tolist()), reference):
        assert any(abs(got[0] - o) < 1e-9 and abs(got[1] - e) < 1e-9 for o, e in accepted), (got, accepted)
    # within its segment the offset is linear in (x, y) along the segment's normal, the heading error is ψ − const
    (grad,) = torch.autograd.grad(offset.sum() + 3.0 * err.sum(), states)
    assert torch.allclose(grad[..., 0] ** 2 + grad[..., 1] ** 2, torch.ones_like(grad[..., 0]))
    assert torch.allclose(grad[..., 2], torch.full_like(grad[..., 2], 3.0)) and not grad[..., 3].any()


@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("fast_start", [25.0, 39.5])  # 39.5 m/s: a speed leaves the range, the loop runs instead
def test_rollout_matches_the_step_by_step_bicycle_model_with_its_gradients(substeps, fast_start):
    g = torch.Generator().manual_seed(substeps)
    state0 = torch.randn(3, 4, 4, generator=g, dtype=torch.float64) * torch.tensor([20.0, 3.0, 0.2, 2.0],
                                                                                     dtype=torch.float64)
    state0[..., 3] += 25.0
    state0[0, 0, 3] = fast_start
    actions = (torch.randn(3, 4, 8, 2, generator=g, dtype=torch.float64)
               * torch.tensor([3.0, 0.3], dtype=torch.float64)).requires_grad_(True)
    length = torch.full((3, 4), 5.0, dtype=torch.float64)
    dt = 0.2
    states = bicycle_rollout(state0, actions, length, dt, substeps)
    state, ref = state0, []
    for k in range(actions.shape[-2]):
        for _ in range(substeps):
            state = bicycle_step(state, actions[..., k, :], length, dt / substeps)
        ref.append(state)
    ref = torch.stack(ref, dim=-2)
    torch.testing.assert_close(states, ref, rtol=1e-12, atol=1e-10)
    weights = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((states * weights).sum(), actions)
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), actions)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-9)
