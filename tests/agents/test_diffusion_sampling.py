"""Diffusion planner training and sampling: overfitting, DDIM reproduction, determinism, guidance, selection."""

from __future__ import annotations

import math

import pytest
import torch

from diffplatoon.agents.diffusion.guidance import (
    CostWeights,
    GuidanceConfig,
    SceneContext,
    headway_cost,
    neighbour_cost,
    plan_costs,
    road_cost,
    separation_cost,
    speed_cost,
)
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.schedule import CosineSchedule, ddim_sample
from diffplatoon.agents.diffusion.train import Batch, TrainConfig, Trainer

B, N, H, OBS_DIM = 64, 3, 10, 4
SEP_ONLY = CostWeights(separation=1.0, neighbours=0.0, road=0.0, headway=0.0, comfort=0.0)


def _dataset(seed: int = 0) -> Batch:
    """Constant-acceleration, constant-steering plans; obs[0] and obs[1] encode them, the rest is noise."""
    g = torch.Generator().manual_seed(seed)
    acc = torch.rand(B, N, generator=g) * 4 - 2
    steer = (torch.rand(B, N, generator=g) * 2 - 1) * 0.05
    obs = torch.cat((acc[..., None], 20 * steer[..., None], torch.randn(B, N, OBS_DIM - 2, generator=g)), dim=-1)
    ego = torch.zeros(B, N, 4)
    ego[..., 0] = -15.0 * torch.arange(N, dtype=torch.float32) + torch.rand(B, N, generator=g)
    ego[..., 3] = 20.0 + 6 * torch.rand(B, N, generator=g) - 3
    return Batch(
        obs=obs,
        inbox=torch.randn(B, N, 2, 3, generator=g),
        inbox_mask=torch.ones(B, N, 2, dtype=torch.bool),
        comm_mask=torch.ones(B, N, N, dtype=torch.bool),
        member_mask=torch.ones(B, N, dtype=torch.bool),
        ego_state=ego,
        length=torch.full((B, N), 5.0),
        actions=torch.stack((acc[..., None].expand(B, N, H), steer[..., None].expand(B, N, H)), dim=-1),
    )


def _inputs(batch: Batch) -> dict[str, torch.Tensor]:
    return dict(
        obs=batch.obs, inbox=batch.inbox, inbox_mask=batch.inbox_mask, comm_mask=batch.comm_mask,
        member_mask=batch.member_mask, ego_state=batch.ego_state, length=batch.length,
    )


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = _dataset()
    cfg = PlannerConfig(DenoiserConfig(obs_dim=OBS_DIM, msg_dim=3, d_model=64, n_layers=2, n_heads=4), horizon=H,
                        num_train_steps=50)
    planner = JointDiffusionPlanner(cfg)
    losses = Trainer(planner, TrainConfig(lr=2e-3, ema_decay=0.99, batch_size=B)).fit(data, 200)
    return planner, data, losses


def test_ddpm_loss_decreases_when_overfitting(trained):
    _, _, losses = trained
    assert len(losses) == 200 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    assert last < 0.05 * first


def test_ddim_reproduces_conditioned_plans(trained):
    planner, data, _ = trained
    plan = planner.plan(**_inputs(data), steps=10, seed=1)
    err = (plan.actions - data.actions).abs()
    assert err[..., 0].mean() < 0.05 and err[..., 0].max() < 0.25  # m/s², targets span ±2
    assert err[..., 1].mean() < 0.002 and err[..., 1].max() < 0.01  # rad, targets span ±0.05
    # rolled-out states are the bicycle model applied to the selected actions
    torch.testing.assert_close(plan.states, planner.rollout(data.ego_state, plan.actions, data.length))


def test_plans_are_deterministic_per_seed(trained):
    planner, data, _ = trained
    inputs = _inputs(data)
    kw = dict(num_samples=4, steps=5, eta=1.0)
    a = planner.plan(**inputs, seed=7, **kw)
    b = planner.plan(**inputs, seed=7, **kw)
    c = planner.plan(**inputs, seed=8, **kw)
    d = planner.plan(**inputs, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(a.sample_actions, b.sample_actions) and torch.equal(a.sample_costs, b.sample_costs)
    assert torch.equal(a.sample_actions, d.sample_actions)
    assert not torch.equal(a.sample_actions, c.sample_actions)


def _near_collision() -> dict[str, torch.Tensor]:
    """Member 1 is 8 m behind member 0 (cars are 5 m long) and 4 m/s faster; both asked to keep speed."""
    data = _dataset()
    inputs = {k: v[:1].clone() for k, v in _inputs(data).items()}
    inputs["obs"][..., :2] = 0.0
    inputs["ego_state"][0, :, 0] = torch.tensor([0.0, -8.0, -40.0])
    inputs["ego_state"][0, :, 3] = torch.tensor([20.0, 24.0, 20.0])
    return inputs


def test_guidance_reduces_separation_cost_on_near_collision(trained):
    planner, _, _ = trained
    inputs = _near_collision()
    cfg = GuidanceConfig(weights=SEP_ONLY, scale=1.0, start_fraction=0.5, inner_steps=3)
    unguided = planner.plan(**inputs, steps=10, seed=3, selection=cfg)
    guided = planner.plan(**inputs, steps=10, seed=3, guidance=cfg)
    assert unguided.cost_terms["separation"].item() > 1.0
    assert guided.cost_terms["separation"].item() < 0.2 * unguided.cost_terms["separation"].item()
    # a pure separation gradient pushes the pair apart: the rear member ends further behind
    gap = lambda p: (p.states[0, 0, :, 0] - p.states[0, 1, :, 0]).mean()  # noqa: E731
    assert gap(guided) > gap(unguided)


def test_sample_and_select_returns_min_cost_sample(trained):
    planner, _, _ = trained
    inputs = _near_collision()
    context = SceneContext(lateral_bounds=torch.tensor([[[-6.0, 6.0]] * N]))
    cfg = GuidanceConfig()
    plan = planner.plan(**inputs, num_samples=8, steps=5, eta=1.0, noise_scale=1.0, seed=0, selection=cfg, context=context)
    costs = plan.sample_costs[0]
    assert costs.unique().numel() > 1
    assert plan.best_index.item() == int(costs.argmin())
    assert plan.cost.item() == costs.min().item()
    assert torch.equal(plan.actions[0], plan.sample_actions[0, plan.best_index.item()])
    # costs agree with an independent evaluation of every sample
    sa, ss = plan.sample_actions[0], plan.sample_states[0]
    again = plan_costs(sa, ss, inputs["length"].expand(8, N), inputs["member_mask"].expand(8, N),
                       planner.config.dt, cfg, context.repeat_interleave(8))["total"]
    torch.testing.assert_close(again, costs)


# ----------------------------------------------------------------------------------------- costs by hand
def _states(xs, ys, speeds=None, horizon=4):
    n = len(xs)
    s = torch.zeros(1, n, horizon, 4)
    s[..., 0] = torch.tensor(xs)[None, :, None]
    s[..., 1] = torch.tensor(ys)[None, :, None]
    s[..., 3] = torch.tensor(speeds or [20.0] * n)[None, :, None]
    return s


def test_cost_terms_on_hand_checked_geometry():
    cfg = GuidanceConfig(buffer=0.0)
    length, mask = torch.full((1, 2), 5.0), torch.ones(1, 2, dtype=torch.bool)
    # discs of radius 2/√2 = 1.414 m (they reach the 5 × 2 m box's corners): side by side 1.5 m apart they overlap
    # by 2.828 − 1.5 = 1.328 m
    assert separation_cost(_states([0.0, 0.0], [0.0, 1.5]), length, mask, cfg).item() == pytest.approx(1.328, abs=1e-3)
    assert separation_cost(_states([0.0, 0.0], [0.0, 3.5]), length, mask, cfg).item() == 0.0
    # corners overlapping by 0.2 m (the second car 4.8 m ahead, 2 m to the side): end discs 2.69 m apart, so the
    # term sees it (discs of radius 1 did not: 2 − 2.69 < 0)
    corner = separation_cost(_states([0.0, 4.8], [0.0, 2.0]), length, mask, cfg).item()
    assert corner == pytest.approx(2.0 * math.sqrt(2.0) - math.hypot(1.8, 2.0), abs=1e-3) and corner > 0.1
    # absent member is ignored
    assert separation_cost(_states([0.0, 0.0], [0.0, 1.5]), length, torch.tensor([[True, False]]), cfg).item() == 0.0
    # neighbour 6 m ahead: rear disc centre at −1.5 m from it, front disc of member at +1.5 → 3 m apart, no overlap
    nb = torch.zeros(1, 1, 4, 3)
    nb[..., 0] = 6.0
    ctx = SceneContext(neighbours=nb, neighbour_mask=torch.ones(1, 1, dtype=torch.bool))
    one = torch.ones(1, 1, dtype=torch.bool)
    assert neighbour_cost(_states([0.0], [0.0]), torch.full((1, 1), 5.0), one, ctx, cfg).item() == 0.0
    nb[..., 0] = 4.5  # 1.5 m between disc centres → 1.328 m overlap
    assert neighbour_cost(_states([0.0], [0.0]), torch.full((1, 1), 5.0), one, ctx, cfg).item() == pytest.approx(1.328, abs=1e-3)
    # road: right edge at −1.5, vehicle half-width 1 → centre at −1 is 0.5 m over
    bounds = SceneContext(lateral_bounds=torch.tensor([[[-1.5, 5.0]]]))
    assert road_cost(_states([0.0], [-1.0]), one, bounds, cfg).item() == pytest.approx(0.5)
    # headway: 10 m bumper gap at 20 m/s, closing at 10 m/s: time-gap barrier 2 + 0.5·20 − 10 = 2,
    # TTC barrier 2·10 − 10 = 10
    st = _states([0.0, -15.0], [0.0, 0.0], speeds=[10.0, 20.0])
    assert headway_cost(st, length, mask, SceneContext(), cfg).item() == pytest.approx(12.0)
    assert headway_cost(_states([0.0, -60.0], [0.0, 0.0]), length, mask, SceneContext(), cfg).item() == 0.0
    # speed: members at 20 and 28 m/s under a 25 m/s limit → only the second, 3 m/s over
    limit = SceneContext(speed_limit=torch.tensor([[25.0, 25.0]]))
    fast = _states([0.0, -60.0], [0.0, 0.0], speeds=[20.0, 28.0])
    assert speed_cost(fast, mask, limit).item() == pytest.approx(3.0)
    assert speed_cost(fast, torch.tensor([[True, False]]), limit).item() == 0.0
    assert speed_cost(fast, mask, SceneContext()).item() == 0.0


def test_cosine_schedule_endpoints_and_ddim_grid():
    sched = CosineSchedule(100)
    ab = sched.alphas_cumprod
    assert ab[0] > 0.99 and ab[-1] < 1e-3 and bool((ab[1:] < ab[:-1]).all())
    assert sched.ddim_timesteps(1) == [99]
    assert sched.ddim_timesteps(10)[0] == 99 and sched.ddim_timesteps(10)[-1] == 0
    x0 = torch.randn(5, 3)
    x_t = sched.add_noise(x0, torch.randn(5, 3), torch.full((5,), 60))
    # with the exact clean sample as the model's estimate, deterministic DDIM stays on x0's noise ray
    x_s = sched.ddim_step(x_t, x0, 60, 30)
    eps = (x_t - ab[60].sqrt() * x0) / (1 - ab[60]).sqrt()
    torch.testing.assert_close(x_s, ab[30].sqrt() * x0 + (1 - ab[30]).sqrt() * eps)


def _gaussian_x0(mu: float, s: float, schedule: CosineSchedule):
    """The optimal clean-sample predictor for data x0 ~ N(mu, s²): E[x0 | x_t] in closed form."""

    def predict(x_t: torch.Tensor, i: int, t: int) -> torch.Tensor:
        ab = float(schedule.alphas_cumprod[t])
        return mu + math.sqrt(ab) * s**2 / (ab * s**2 + 1 - ab) * (x_t - math.sqrt(ab) * mu)

    return predict


def test_ddpm_and_ddim_step_means_match_their_formulas():
    """η = 1 between consecutive steps is DDPM's ancestral step: mean and variance of q(x_{t−1} | x_t, x0); η = 0
    gives DDIM's deterministic update; σ and the mean are the ones `ddim_step` adds noise to."""
    sched = CosineSchedule(50)
    ab = sched.alphas_cumprod.double()
    g = torch.Generator().manual_seed(0)
    x0, x_t = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    for t in (1, 20, 49):
        beta = 1 - ab[t] / ab[t - 1]
        posterior_mean = ((ab[t - 1].sqrt() * beta / (1 - ab[t])) * x0
                          + ((1 - beta).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])) * x_t)
        posterior_var = beta * (1 - ab[t - 1]) / (1 - ab[t])
        sigma = sched.ddim_sigma(t, t - 1, eta=1.0)
        assert sigma**2 == pytest.approx(float(posterior_var), rel=1e-5)
        torch.testing.assert_close(sched.ddim_mean(x_t, x0, t, t - 1, sigma), posterior_mean, rtol=1e-5, atol=1e-6)
    t, s = 40, 10
    eps = (x_t - ab[t].sqrt() * x0) / (1 - ab[t]).sqrt()
    assert sched.ddim_sigma(t, s, eta=0.0) == 0.0
    torch.testing.assert_close(sched.ddim_mean(x_t, x0, t, s), ab[s].sqrt() * x0 + (1 - ab[s]).sqrt() * eps)
    assert sched.ddim_sigma(5, -1, eta=1.0) == 0.0 and torch.equal(sched.ddim_mean(x_t, x0, 5, -1), x0)
    # ddim_step = mean + σ z, with z drawn from the generator
    sigma = sched.ddim_sigma(t, s, eta=0.7)
    z = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3), dtype=x_t.dtype)
    step = sched.ddim_step(x_t, x0, t, s, eta=0.7, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(step, sched.ddim_mean(x_t, x0, t, s, sigma) + sigma * z)


def _exact_output(mu: float, s: float, schedule: CosineSchedule, steps: int, eta: float) -> tuple[float, float]:
    """Mean and std of the sampler's output for start noise N(0, 1) and the exact Gaussian denoiser.

    Every step is affine in d = x_t − √ᾱ_t·mu: with k = √ᾱ_t s² / v_t (v_t = ᾱ_t s² + 1 − ᾱ_t), x̂0 − mu = k·d
    and ε̂ = d·(1 − √ᾱ_t k) / √(1 − ᾱ_t), so d_s = A·d_t + σ·z with
    A = √ᾱ_s k + √(1 − ᾱ_s − σ²)(1 − √ᾱ_t k) / √(1 − ᾱ_t)."""
    ts = schedule.ddim_timesteps(steps)
    mean, var = -math.sqrt(float(schedule.alphas_cumprod[ts[0]])) * mu, 1.0  # of d at the start
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        a_t = float(schedule.alphas_cumprod[t])
        a_s = 1.0 if t_prev < 0 else float(schedule.alphas_cumprod[t_prev])
        sigma = schedule.ddim_sigma(t, t_prev, eta)
        k = math.sqrt(a_t) * s**2 / (a_t * s**2 + 1 - a_t)
        eps_gain = (1 - math.sqrt(a_t) * k) / math.sqrt(1 - a_t)
        gain = math.sqrt(a_s) * k + math.sqrt(max(0.0, 1 - a_s - sigma**2)) * eps_gain
        mean, var = gain * mean, gain**2 * var + sigma**2
    return mu + mean, math.sqrt(var)


@pytest.mark.parametrize("steps", [5, 20, 100])
def test_deterministic_ddim_with_the_exact_gaussian_denoiser_maps_noise_to_the_data(steps):
    """Data x0 ~ N(mu, s²), whose optimal x0 predictor is known in closed form: deterministic DDIM (η = 0) from
    N(0, 1) is an affine map, so its output is Gaussian with the mean and std `_exact_output` derives from the schedule; the
    mean is mu, and the std approaches s as the steps refine (the probability-flow ODE's discretisation)."""
    mu, s = 1.5, 0.4
    sched = CosineSchedule(100)
    noise = torch.randn(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = ddim_sample(sched, noise, _gaussian_x0(mu, s, sched), steps)
    mean, std = _exact_output(mu, s, sched, steps, eta=0.0)
    assert float(x.mean()) == pytest.approx(mean, abs=3e-3)
    assert float(x.std()) == pytest.approx(std, rel=5e-3)
    assert mean == pytest.approx(mu, abs=0.02)
    assert std <= s * (1 + 1e-9)  # every discrete step shrinks the spread a little (Cauchy–Schwarz)
    if steps == 100:
        assert std == pytest.approx(s, rel=0.02)


def test_stochastic_ddpm_sampling_with_the_exact_gaussian_denoiser_reaches_the_data_distribution():
    """η = 1 over every training step is DDPM's ancestral sampler: with the exact denoiser its output has the mean and
    std `_exact_output` derives, close to N(mu, s²)."""
    mu, s = -0.7, 0.5
    sched = CosineSchedule(100)
    g = torch.Generator().manual_seed(1)
    x = ddim_sample(sched, torch.randn(100_000, generator=g, dtype=torch.float64), _gaussian_x0(mu, s, sched), 100,
                    eta=1.0, generator=g)
    mean, std = _exact_output(mu, s, sched, 100, eta=1.0)
    assert float(x.mean()) == pytest.approx(mean, abs=0.01)
    assert float(x.std()) == pytest.approx(std, rel=0.01)
    assert mean == pytest.approx(mu, abs=0.02) and std == pytest.approx(s, rel=0.05)


def _all_pairs_overlap(a_pose, a_len, b_pose, b_len, pair, cfg):
    """Reference: disc overlap of every allowed pair at every step, no prefilter → (B,)."""
    from diffplatoon.agents.diffusion.guidance import disc_centres

    h = a_pose.shape[-2]
    a = disc_centres(a_pose, a_len[:, :, None].expand(-1, -1, h), cfg.vehicle_width, cfg.n_discs)  # (B,I,H,D,2)
    b = disc_centres(b_pose, b_len[:, :, None].expand(-1, -1, h), cfg.vehicle_width, cfg.n_discs)
    diff = a[:, :, None, :, :, None, :] - b[:, None, :, :, None, :, :]  # (B,I,J,H,D,D,2)
    d = (diff.pow(2).sum(-1) + 1e-6).sqrt().flatten(-2).amin(-1)
    viol = torch.where(pair[..., None], torch.relu(2.0 * cfg.vehicle_width / math.sqrt(2.0) + cfg.buffer - d), 0.0)
    return viol.sum(dim=(1, 2)).mean(-1)


def test_pair_prefilter_keeps_costs_and_gradients_of_all_pairs():
    """Separation and neighbour costs skip pairs provably out of reach: value and gradient equal the all-pairs sum."""
    g = torch.Generator().manual_seed(7)
    b, n, m, h = 6, 4, 10, 12
    states = torch.randn(b, n, h, 4, generator=g) * torch.tensor([25.0, 3.0, 0.2, 2.0])
    states[..., 3] += 20.0
    states[:, 1] = states[:, 0] + torch.tensor([3.0, 1.0, 0.05, 0.0])  # a member pair in overlap reach
    nb = torch.randn(b, m, h, 3, generator=g) * torch.tensor([30.0, 4.0, 0.2])
    nb[:, 0] = states[:, 2, :, :3] + torch.tensor([4.0, 0.5, 0.0])  # a neighbour in reach of member 2
    nb_mask = torch.rand(b, m, generator=g) > 0.2
    nb_mask[:, 0] = True
    member_mask = torch.ones(b, n, dtype=torch.bool)
    member_mask[3, 3] = False
    length = 4.0 + 2.0 * torch.rand(b, n, generator=g)
    nb_len = 4.0 + 2.0 * torch.rand(b, m, generator=g)
    cfg = GuidanceConfig()
    ctx = SceneContext(neighbours=nb, neighbour_mask=nb_mask, neighbour_length=nb_len)
    x = states.clone().requires_grad_(True)
    cost = separation_cost(x, length, member_mask, cfg) + 2.0 * neighbour_cost(x, length, member_mask, ctx, cfg)
    (grad,) = torch.autograd.grad(cost.sum(), x)
    y = states.clone().requires_grad_(True)
    members = member_mask[:, :, None] & member_mask[:, None, :] & torch.ones(n, n, dtype=torch.bool).triu(1)
    ref = (_all_pairs_overlap(y, length, y, length, members, cfg)
           + 2.0 * _all_pairs_overlap(y, length, nb, nb_len, member_mask[:, :, None] & nb_mask[:, None, :], cfg))
    (ref_grad,) = torch.autograd.grad(ref.sum(), y)
    assert (ref > 0).sum() >= 3  # pairs in reach exist, and the costs are not trivially 0
    torch.testing.assert_close(cost, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-6)
