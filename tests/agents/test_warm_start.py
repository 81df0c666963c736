"""Warm-started planning: the truncated DDIM chain with a real denoiser, the shift, invalidation, diversity, seeds,
and the default policy (replan every step, warm) in a real episode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.policy import DiffusionPolicy
from diffplatoon.agents.diffusion.schedule import ddim_sample
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig, WarmStarts, layout, shift_plan
from diffplatoon.evaluation.episode import run_episode
from diffplatoon.scenarios import load_scenario

N, H, OBS, MSG = 3, 10, 6, 4


@pytest.fixture(scope="module")
def planner() -> JointDiffusionPlanner:
    """A small untrained planner whose weights are jittered (AdaLN-Zero alone would predict constants)."""
    torch.manual_seed(0)
    p = JointDiffusionPlanner(PlannerConfig(DenoiserConfig(obs_dim=OBS, msg_dim=MSG, d_model=32, n_layers=1, n_heads=2,
                                                           chunk=5, max_horizon=20), horizon=H, num_train_steps=100))
    with torch.no_grad():
        for q in p.model.parameters():
            q.add_(0.2 * torch.randn_like(q))
        p.ema.load_state_dict(p.model.state_dict())
    return p


def _scene(b: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ego = torch.zeros(b, N, 4)
    ego[..., 0] = -20.0 * torch.arange(N, dtype=torch.float32)
    ego[..., 3] = 25.0
    return dict(obs=torch.randn(b, N, OBS, generator=g), inbox=torch.randn(b, N, 2, MSG, generator=g),
                inbox_mask=torch.ones(b, N, 2, dtype=torch.bool), comm_mask=torch.ones(b, N, N, dtype=torch.bool),
                member_mask=torch.ones(b, N, dtype=torch.bool), ego_state=ego, length=torch.full((b, N), 5.0))


def _predictor(planner: JointDiffusionPlanner, scene: dict, rows: int):
    net = planner.ema
    obs_n, inbox_n, ego_n = planner.normalized_inputs(scene["obs"], scene["inbox"], scene["ego_state"], scene["length"])
    cond = net.encode(obs_n, ego_n, inbox_n, scene["inbox_mask"], scene["member_mask"]).repeat_interleave(rows, 0)
    attn = net.member_attention_mask(scene["comm_mask"], scene["member_mask"]).repeat_interleave(rows, 0)
    mm = scene["member_mask"].repeat_interleave(rows, 0)

    def predict(x_t, i, t):
        t_vec = t if isinstance(t, torch.Tensor) else torch.full((len(x_t),), t, dtype=torch.long)
        return planner.encode_actions(planner.decode_actions(net.denoise(x_t, t_vec, cond, attn, mm)))

    return predict


@torch.no_grad()
def test_truncated_chain_is_the_tail_of_the_full_chain_with_a_real_denoiser(planner):
    """Starting at step ddim_timesteps(10)[6] = 33 and running 4 steps is exactly the last 4 steps of the 10-step
    chain; per-row starts run each row's own chain in shared network calls."""
    scene, sch = _scene(), planner.schedule
    predict = _predictor(planner, scene, 2)
    x_T = torch.randn(2, N, H, 2, generator=torch.Generator().manual_seed(3))
    seen = []
    full = ddim_sample(sch, x_T, lambda x, i, t: (seen.append(x.clone()), predict(x, i, t))[1], 10)
    ts = sch.ddim_timesteps(10)
    assert sch.ddim_timesteps(4, ts[6]) == ts[6:]
    assert torch.equal(ddim_sample(sch, seen[6], predict, 4, start=ts[6]), full)
    # row 0 warm from step 33, row 1 a 4-step chain from pure noise: each as when run alone
    mixed = ddim_sample(sch, torch.stack((seen[6][0], x_T[1])), predict, 4, start=torch.tensor([ts[6], 99]))
    alone = ddim_sample(sch, x_T, predict, 4)
    torch.testing.assert_close(mixed[0], full[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(mixed[1], alone[1], rtol=0, atol=1e-6)


@torch.no_grad()
def test_plan_warm_start_re_noises_the_prior_and_runs_the_sub_chain(planner):
    """Without noise (noise_scale 0) the warm plan is the k-step DDIM chain from √ᾱ_tk · x0(prior)."""
    scene, sch = _scene(), planner.schedule
    prior = torch.stack((torch.linspace(-1, 1, H).expand(N, H), torch.full((N, H), 0.01)), dim=-1)[None]
    cfg = WarmStartConfig(steps=3, level=0.3, fresh=0)
    plan = planner.plan(**scene, num_samples=1, warm_start=prior, warm=cfg, noise_scale=0.0)
    t_k = cfg.start_step(100)
    x = sch.alpha_bar(torch.tensor(t_k)).sqrt() * planner.encode_actions(prior)
    expected = planner.decode_actions(ddim_sample(sch, x, _predictor(planner, scene, 1), 3, start=t_k))
    torch.testing.assert_close(plan.actions, expected, rtol=0, atol=1e-5)


@torch.no_grad()
def test_warm_samples_differ_and_are_deterministic_for_a_seed(planner):
    scene = _scene(2)
    prior = torch.zeros(2, N, H, 2)
    cfg = WarmStartConfig(steps=2, level=0.3, fresh=2)
    a = planner.plan(**scene, num_samples=6, warm_start=prior, warm=cfg, seed=5)
    b = planner.plan(**scene, num_samples=6, warm_start=prior, warm=cfg, seed=5)
    c = planner.plan(**scene, num_samples=6, warm_start=prior, warm=cfg, seed=6)
    assert torch.equal(a.sample_actions, b.sample_actions)
    assert not torch.equal(a.sample_actions, c.sample_actions)
    s = a.sample_actions  # (B, S, N, H, 2): every pair of samples of a scene differs
    diff = (s[:, :, None] - s[:, None]).abs().amax(dim=(3, 4, 5))
    assert (diff + torch.eye(6) > 1e-4).all()
    # the fresh samples (last 2 of a scene) stray further from the prior than the warm ones
    dev = s.abs().mean(dim=(2, 3, 4))
    assert dev[:, 4:].mean() > dev[:, :4].mean()


def test_shift_drops_executed_steps_and_pads_at_constant_speed():
    plan = np.stack((np.arange(10.0)[None].repeat(2, 0), 0.1 * np.arange(10.0)[None].repeat(2, 0)), axis=-1)
    out = shift_plan(plan, 3)
    np.testing.assert_array_equal(out[:, :7], plan[:, 3:])
    np.testing.assert_array_equal(out[:, 7:, 0], 0.0)  # acceleration 0
    np.testing.assert_allclose(out[:, 7:, 1], 0.9)  # last steering held
    with pytest.raises(ValueError):
        shift_plan(plan, 10)


def test_memory_invalidates_on_layout_age_and_forget():
    spec = load_scenario("cut_in")
    from diffplatoon.sim.observation import Observer
    from diffplatoon.sim.simulation import Simulation

    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    rows = np.flatnonzero(np.array([int(sim.world.platoon[r]) for r in sim.controlled]) == 0)
    inputs = features.platoon_inputs(obs, rows, len(rows), 8)
    lay = layout(inputs, len(rows))
    memory, plan = WarmStarts(), np.ones((len(rows), H, 2))
    memory.remember("p", plan, lay, step=4)
    assert memory.recall("p", lay, 5) is not None and memory.recall("p", lay, 4 + H) is None
    gone = inputs.member_mask.copy()
    gone[1] = False  # a member left
    assert memory.recall("p", layout(features.PlatoonInputs(**{**inputs.__dict__, "member_mask": gone}), len(rows)),
                         5) is None
    # a vehicle between the first two members, in their lane: a cut-in
    nb, nm = inputs.neighbours.copy(), inputs.neighbour_mask.copy()
    free = int(np.flatnonzero(~nm)[0])
    ego = inputs.ego_state
    nb[free, :2] = [(ego[0, 0] + ego[1, 0]) / 2, ego[0, 1]]
    nm[free] = True
    cut = layout(features.PlatoonInputs(**{**inputs.__dict__, "neighbours": nb, "neighbour_mask": nm}), len(rows))
    assert cut != lay and memory.recall("p", cut, 5) is None
    memory.forget("p")
    assert memory.recall("p", lay, 5) is None


def test_default_policy_replans_every_step_warm_after_the_first(planner):
    spec = load_scenario("hard_brake").model_copy(update={"duration": 2.0})
    cfg = PlannerConfig(DenoiserConfig(obs_dim=features.obs_dim(spec), msg_dim=features.msg_dim(spec), d_model=32,
                                       n_layers=1, n_heads=2, chunk=5, max_horizon=20), horizon=H, num_train_steps=20)
    torch.manual_seed(0)
    p = JointDiffusionPlanner(cfg)
    policy = DiffusionPolicy(spec, p, version="test", samples=4, shield=False)
    assert (policy.params.replan_every, policy.params.warm_steps) == (1, 2)
    rec = run_episode(spec, policy, 0).record
    steps = rec["steps"]
    assert policy.replan_steps == list(range(steps)) and policy.warm_plans == steps - 1
    cold = DiffusionPolicy(spec, p, samples=4, shield=False, replan_every=5, warm_steps=0)
    run_episode(spec, cold, 0)
    assert cold.warm_plans == 0 and cold.replan_steps == list(range(0, steps, 5))
