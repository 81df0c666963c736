"""DPPO fine-tuning of the diffusion planner under RLlib: module outputs, exact log-probability recomputation,
real training iterations that move the planner's weights (and resume), and the `rllib:<checkpoint>` policy."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from rich.console import Console
from rllib_checks import assert_rllib_policy_acts

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.agents.rllib.diffusion_module import (CHAIN, CHAIN_LOGP, INPUT_KEYS, SHIELDED, SHIFT,
                                                       DiffusionPlannerModule, module_model_config)
from diffplatoon.agents.rllib.dppo_learner import chain_action_match, pg_agreement, standardise, step_diagnostics
from diffplatoon.agents.rllib.policy import load_module, resolve_checkpoint
from diffplatoon.agents.rllib.train import TrainConfig, build_ppo_config, train, validate_config
from diffplatoon.envs.rllib_env import PlatoonMultiAgentEnv
from diffplatoon.io import read_jsonl
from diffplatoon.scenarios import ScenarioError, validate_data
from diffplatoon.sim.comms import MESSAGE_FIELDS
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

# 2-member platoon, 2 lanes, light traffic, 6 s episodes (30 policy steps).
TINY = {
    "name": "dppo_tiny", "seed": 5, "duration": 6,
    "road": {"type": "highway", "lanes": 2, "length": 600},
    "traffic": {"count": 3, "speed_range": [18, 22], "spawn_region": [0, 300]},  # neighbours in sight
    "platoons": [{"id": "p0", "size": 2, "lane": 0, "start": 100.0, "speed": 20.0, "time_gap": 1.0}],
}
# Guidance on in the last half of 4 DDIM steps, the last 3 fine-tuned (so the first runs on the frozen copy).
MODEL = {"denoising_steps": 4, "ft_steps": 3, "eta": 0.5, "guidance": {"scale": 0.5, "start_fraction": 0.5},
         "shield": True, "critic_hiddens": [32]}


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def planner_path(tmp_path_factory) -> Path:
    """A tiny random planner whose denoiser outputs non-zero plans (its output layer is zero-initialised)."""
    spec = validate_data(dict(TINY), "<test>")
    torch.manual_seed(0)
    cfg = PlannerConfig(DenoiserConfig(obs_dim=features.obs_dim(spec), msg_dim=features.msg_dim(spec), d_model=32,
                                       n_layers=1, n_heads=4), horizon=10, dt=1.0 / spec.policy_frequency,
                        num_train_steps=20)
    planner = JointDiffusionPlanner(cfg)
    with torch.no_grad():
        for net in (planner.model, planner.ema):
            torch.manual_seed(1)
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("planner") / "best.pt"
    planner.save(path)
    return path


def _obs_batch(env: PlatoonMultiAgentEnv, steps: int) -> dict:
    rows = []
    obs, _ = env.reset(seed=0)
    for _ in range(steps):
        rows.append(obs["p0"])
        obs, *_ = env.step({"p0": np.zeros(env.action_spaces["p0"].shape, np.float32)})
    return {Columns.OBS: {k: torch.as_tensor(np.stack([r[k] for r in rows])) for k in rows[0]}}


@pytest.mark.parametrize("act_steps", [1, 3])
def test_module_outputs_and_exact_logp_recomputation(planner_path: Path, act_steps: int) -> None:
    env = PlatoonMultiAgentEnv({"scenario": TINY, "grouping": "platoon", "act_steps": act_steps})
    model = module_model_config({**MODEL, "checkpoint": str(planner_path)}, env.spec, act_steps=act_steps)
    module = DiffusionPlannerModule(observation_space=env.observation_spaces["p0"],
                                    action_space=env.action_spaces["p0"], model_config=model)
    assert module.base is not None and not any(p.requires_grad for p in module.base.parameters())
    batch = _obs_batch(env, 3)
    torch.manual_seed(3)
    out = module.forward_exploration(batch)
    b, n, horizon, k = 3, 2, 10, 3
    assert out[Columns.ACTIONS].shape == (b, act_steps * 2 * n) and (out[Columns.ACTIONS].abs() <= 1).all()
    assert env.action_spaces["p0"].contains(out[Columns.ACTIONS][0].numpy())
    assert out[Columns.ACTIONS].abs().sum() > 0
    assert out[CHAIN].shape == (b, k + 1, n, horizon, 2) and out[SHIFT].shape == (b, k, n, horizon, 2)
    assert out[CHAIN_LOGP].shape == (b, k) and torch.isfinite(out[CHAIN_LOGP]).all()
    assert out[SHIELDED].shape == (b,)
    assert out[SHIFT][:, -2:].abs().sum() > 0 and out[SHIFT][:, 0].abs().sum() == 0  # guided steps only
    torch.testing.assert_close(out[Columns.ACTION_LOGP], out[CHAIN_LOGP].sum(-1))

    train_batch = {Columns.OBS: batch[Columns.OBS], CHAIN: out[CHAIN], SHIFT: out[SHIFT],
                   **{key: out[key] for key in INPUT_KEYS.values()}}
    recomputed = module.forward_train(train_batch)[CHAIN_LOGP]
    # unchanged weights: the same values (the learner's denoiser computes only the executed plan steps, so up
    # to float rounding)
    torch.testing.assert_close(recomputed, out[CHAIN_LOGP], rtol=0.0, atol=1e-5)
    assert recomputed.requires_grad
    perturbed = out[CHAIN].clone()
    perturbed[:, -1, :, act_steps:] += 0.3  # plan steps after the executed chunk are not in the log-probability
    again = module.forward_train({**train_batch, CHAIN: perturbed})[CHAIN_LOGP]
    torch.testing.assert_close(again, recomputed, rtol=0.0, atol=1e-5)
    perturbed[:, -1, :, act_steps - 1] += 0.3  # the chunk's last step is
    assert not torch.allclose(module.forward_train({**train_batch, CHAIN: perturbed})[CHAIN_LOGP][:, -1],
                              recomputed[:, -1])
    with torch.no_grad():  # a weight change must change the recomputed log-probability
        for p in module.denoiser.parameters():
            p.add_(0.01)
    assert not torch.equal(module.forward_train(train_batch)[CHAIN_LOGP], out[CHAIN_LOGP])

    first = module.forward_inference(batch)[Columns.ACTIONS]
    assert torch.equal(first, module.forward_inference(batch)[Columns.ACTIONS])  # deterministic
    # the executed chunk is the plan's first act_steps steps: the log-probability covers exactly those
    torch.manual_seed(3)
    actions, shielded, chain, _ = module.plan_actions(module.scenes(batch[Columns.OBS]), explore=True)
    assert actions.shape == (b, act_steps, n, 2)
    max_acc, max_dec, max_steer = module.cfg.vehicle_limits
    for row in np.flatnonzero(shielded < 0.5):  # executed as planned (clipped to the vehicle's limits; at
        # 20 m/s no step brakes into reverse): the chunk is the plan's first steps
        plan = module._planner.decode_actions(chain.x[row:row + 1])[0].transpose(0, 1).numpy()[:act_steps]
        plan = np.stack([plan[..., 0].clip(-max_dec, max_acc), plan[..., 1].clip(-max_steer, max_steer)], -1)
        np.testing.assert_allclose(actions[row], plan, atol=1e-6)
    values = module.compute_values(batch)
    assert values.shape == (b,) and torch.isfinite(values).all()


def test_shield_corridor_adds_the_road_check(planner_path: Path) -> None:
    """With `shield_corridor` the module's shield also checks each member's lane corridor: every plan it accepts
    is accepted without it too, and this random planner's plans, which steer off their lanes, are overridden more."""
    env = PlatoonMultiAgentEnv({"scenario": TINY, "grouping": "platoon"})
    batch = _obs_batch(env, 12)
    shielded = {}
    for corridor in (False, True):
        model = module_model_config({**MODEL, "checkpoint": str(planner_path), "shield_corridor": corridor}, env.spec)
        module = DiffusionPlannerModule(observation_space=env.observation_spaces["p0"],
                                        action_space=env.action_spaces["p0"], model_config=model)
        _, shielded[corridor], _, _ = module.plan_actions(module.scenes(batch[Columns.OBS]), explore=False)
    assert np.all(shielded[True] >= shielded[False])
    assert shielded[True].sum() > shielded[False].sum()


def _env_and_module(planner_path: Path, **overrides: Any) -> tuple[PlatoonMultiAgentEnv, DiffusionPlannerModule]:
    """The tiny scenario's platoon env and a DPPO module on the planner checkpoint (``overrides``: model config)."""
    env = PlatoonMultiAgentEnv({"scenario": TINY, "grouping": "platoon"})
    model = {**module_model_config({**MODEL, "checkpoint": str(planner_path)}, env.spec), **overrides}
    return env, DiffusionPlannerModule(observation_space=env.observation_spaces["p0"],
                                       action_space=env.action_spaces["p0"], model_config=model)


def test_learner_forward_recomputes_only_policy_rows(planner_path: Path) -> None:
    """Rows the policy loss drops (shield overrides, RLlib's bootstrap step) keep their stored log-probabilities
    and get no gradient; the other rows are recomputed as in a full pass."""
    env, module = _env_and_module(planner_path)
    batch = _obs_batch(env, 4)
    torch.manual_seed(5)
    out = module.forward_exploration(batch)
    with torch.no_grad():  # new weights, so recomputed rows differ from the stored ones
        for p in module.denoiser.parameters():
            p.add_(0.01)
    rows = {CHAIN: out[CHAIN], SHIFT: out[SHIFT], **{key: out[key] for key in INPUT_KEYS.values()}}
    full = module.forward_train(rows)[CHAIN_LOGP]  # no stored log-probabilities: every row
    skipped = {**rows, CHAIN_LOGP: out[CHAIN_LOGP], SHIELDED: torch.tensor([1.0, 0.0, 0.0, 0.0]),
               Columns.LOSS_MASK: torch.tensor([True, True, False, True])}
    part = module.forward_train(skipped)[CHAIN_LOGP]
    assert torch.equal(part[[0, 2]], out[CHAIN_LOGP][[0, 2]])
    torch.testing.assert_close(part[[1, 3]], full[[1, 3]], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(part[[1, 3]], out[CHAIN_LOGP][[1, 3]])
    (grad,) = torch.autograd.grad(part.sum(), module.denoiser.token_out.weight)
    (grad_used,) = torch.autograd.grad(full[[1, 3]].sum(), module.denoiser.token_out.weight)
    torch.testing.assert_close(grad, grad_used, rtol=1e-3, atol=1e-6)  # float32 sums over other batch shapes

    # shielded_steps "train": the overridden row's sampled plan is scored too (only the bootstrap row is kept)
    _, trained = _env_and_module(planner_path, shielded_steps="train")
    trained.load_state_dict(module.state_dict())
    part = trained.forward_train(skipped)[CHAIN_LOGP]
    assert torch.equal(part[2], out[CHAIN_LOGP][2])
    torch.testing.assert_close(part[[0, 1, 3]], full[[0, 1, 3]], rtol=1e-5, atol=1e-5)


def test_guidance_context_drops_only_padding_and_acting_keeps_the_mode(planner_path: Path) -> None:
    env, module = _env_and_module(planner_path)
    batch = _obs_batch(env, 4)
    batch[Columns.OBS]["inbox"][..., len(MESSAGE_FIELDS):] = 1.0  # messages carrying plan summaries
    scenes = module.scenes(batch[Columns.OBS])
    assert any(s.inputs.inbox[..., len(MESSAGE_FIELDS):-1].any() for s in scenes)
    trimmed = module.controller.guidance_context(scenes)
    m, pad = trimmed.neighbour_mask.shape[1], module.cfg.max_neighbours - trimmed.neighbour_mask.shape[1]
    assert 0 < m < module.cfg.max_neighbours
    # the `diffusion:` policy's context: lane speed limits for the speed cost, neighbours with estimated accelerations
    assert (trimmed.speed_limit[:, :2] > 0).all() and trimmed.lateral_bounds is not None
    assert [s.accel.shape for s in scenes] == [(module.cfg.max_neighbours,)] * len(scenes)
    assert all(not s.inputs.neighbour_mask[m:].any() for s in scenes)
    # the rows the context drops: masked, wherever they are predicted
    full = copy.copy(trimmed)
    full.neighbours = torch.cat([trimmed.neighbours, torch.full((len(scenes), pad) + trimmed.neighbours.shape[2:],
                                                                3.0)], dim=1)
    full.neighbour_mask = torch.cat([trimmed.neighbour_mask, torch.zeros(len(scenes), pad, dtype=torch.bool)], dim=1)
    full.neighbour_length = torch.cat([trimmed.neighbour_length, torch.full((len(scenes), pad), 5.0)], dim=1)
    inp = module.controller.inputs(scenes)
    assert not inp["inbox"][..., len(MESSAGE_FIELDS):-1].any()  # the demonstrations' messages carry no plan
    a, b = (module.sample_chain(inp, explore=True, context=ctx, generator=torch.Generator().manual_seed(7))
            for ctx in (trimmed, full))
    assert a.shift.abs().sum() > 0  # guidance moved the plan
    for name in ("x", "chain", "shift", "logp"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name

    assert not module.training  # acting never switches modes; the learner's forward_train does, once
    module.forward_exploration(batch)
    assert not module.training
    module.train()
    assert all(m.training for m in module.modules())
    module.forward_exploration(batch)
    assert all(m.training for m in module.modules())


@pytest.mark.slow
def test_dppo_iterations_change_weights_and_checkpoint_acts(ray_session, planner_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # shield off: the shield (with its lane corridors) overrides nearly every plan of this random planner, and
    # overridden steps do not enter the policy loss (test_learner_forward_recomputes_only_policy_rows)
    cfg = TrainConfig(scenario=TINY, grouping="platoon", module="diffusion",
                      model={**MODEL, "checkpoint": str(planner_path), "shield": False}, learner={"critic_lr": 1e-3},
                      train_batch_size=30, minibatch_size=15, num_epochs=1, lr=1e-3, iterations=2,
                      checkpoint_every=2, act_steps=2, out=str(out))  # 30 decisions = 60 policy steps
    train(cfg, console=quiet())
    rows = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["iteration"] for r in rows] == [1, 2]
    for row in rows:
        for key in ("policy_loss", "vf_loss", "total_loss", "mean_kl_loss", "shield_rate"):
            assert math.isfinite(row[f"platoon/{key}"]), (key, row)
        steps = {k.rsplit("_k", 1)[1] for k in row if k.startswith("platoon/clip_fraction_k")}  # fine-tuned steps
        assert steps and all(0.0 <= row[f"platoon/clip_fraction_k{k}"] <= 1.0 for k in steps)
        assert all(math.isfinite(row[f"platoon/{name}_k{k}"]) for k in steps for name in ("adv_std", "approx_kl"))
        assert row["env_steps"] >= 30 and row["episode_len_mean"] == 15  # 30 policy steps in chunks of 2
        assert row["episode_policy_steps"] == 30 and row["policy_steps"] == 2 * row["env_steps"]

    train(cfg.model_copy(update={"iterations": 3}), resume=out, console=quiet())  # optimisers and counters restored
    assert [r["iteration"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3]

    checkpoint = resolve_checkpoint(out)
    assert checkpoint.name == "checkpoint_000003"
    module = load_module(checkpoint, "platoon")
    pretrained = JointDiffusionPlanner.load(planner_path).ema.state_dict()
    tuned = module.denoiser.state_dict()
    assert any(not torch.equal(tuned[name], value) for name, value in pretrained.items())
    frozen = module.base.state_dict()
    assert all(torch.equal(frozen[name], value) for name, value in pretrained.items())

    assert_rllib_policy_acts(out, TINY)
    # the policy plans once per chunk of 2 and executes the chunk's steps in order
    spec = validate_data(dict(TINY), "<test>")
    policy = make_policy(f"rllib:{out}", spec)
    policy.reset(SimInfo.from_spec(spec, 0))
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    for step in range(5):
        sim.step(policy.act(observer.observe()))
        assert policy.stats()["plans"] == step // 2 + 1


def test_config_checks(planner_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        validate_config({"scenario": TINY, "grouping": "vehicle", "module": "diffusion",
                         "model": {"ft_steps": 6, "denoising_steps": 5}, "learner": {"gamma_denoise": 2}})
    text = "\n".join(info.value.lines)
    assert "grouping: module 'diffusion' needs grouping platoon" in text
    assert "model: ft_steps (6) must not exceed denoising_steps (5)" in text
    assert "learner.gamma_denoise:" in text
    spec = validate_data({**TINY, "policy_frequency": 3}, "<test>")
    with pytest.raises(ValueError, match="plans in steps of 0.2 s"):
        module_model_config({"checkpoint": str(planner_path)}, spec)


def test_step_diagnostics_per_denoising_step() -> None:
    """Per-step advantage scale, clip fraction, approximate KL and the share of rows the shield dropped."""
    adv = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [3.0, 6.0], [5.0, 5.0]])
    ratio = torch.tensor([[1.0, 1.5], [1.1, 1.0], [0.95, 0.5], [9.0, 9.0]])
    rows = torch.tensor([True, True, True, False])  # the last one overridden by the shield
    valid = torch.tensor([True, True, True, True])
    out = step_diagnostics(adv, ratio, ratio.log(), torch.tensor([0.08, 0.2]), torch.tensor([1, 3]), rows, valid)
    assert out["policy_row_share"] == pytest.approx(0.75)
    names = ("adv_mean", "adv_abs", "adv_std", "clip_fraction", "approx_kl", "ratio_dev")
    assert set(out) == {"policy_row_share"} | {f"{name}_k{k}" for k in (1, 3) for name in names}
    assert out["adv_abs_k1"] == pytest.approx(5 / 3) and out["adv_abs_k3"] == pytest.approx(10 / 3)
    assert out["adv_std_k3"] == pytest.approx(torch.tensor([2.0, -2.0, 6.0]).std().item())
    assert out["clip_fraction_k1"] == pytest.approx(1 / 3) and out["clip_fraction_k3"] == pytest.approx(2 / 3)
    assert out["ratio_dev_k3"] == pytest.approx((0.5 + 0 + 0.5) / 3)
    kl = ratio[:3, 1] - 1 - ratio[:3, 1].log()
    assert out["approx_kl_k3"] == pytest.approx(kl.mean().item())
    assert step_diagnostics(adv, ratio, ratio.log(), torch.tensor([0.1, 0.1]), torch.tensor([0, 1]),
                            torch.zeros(4, dtype=torch.bool), valid) == {"policy_row_share": 0.0}


def test_advantages_standardised_over_policy_rows() -> None:
    """`adv_norm: policy_rows`: mean 0 and std 1 over the rows in the policy loss, whatever the dropped rows hold."""
    adv = torch.tensor([3.0, 1.0, 2.0, -10.0, 0.5])
    rows = torch.tensor([True, True, True, False, True])
    out = standardise(adv, rows)
    assert out[rows].mean().item() == pytest.approx(0.0, abs=1e-6)
    assert out[rows].std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.argsort(out[rows]).tolist() == torch.argsort(adv[rows]).tolist()
    assert standardise(adv, torch.tensor([False, True, False, False, False]))[1].item() == 0.0  # one row: centred
    assert torch.equal(standardise(adv, torch.zeros(5, dtype=torch.bool)), adv)


def test_pg_agreement_is_one_for_identical_halves(planner_path: Path) -> None:
    """Two halves of the same row give the same policy gradient (cosine 1); two halves of unrelated rows with
    advantages of random sign give a cosine strictly inside (−1, 1)."""
    env, module = _env_and_module(planner_path)
    obs = _obs_batch(env, 4)
    torch.manual_seed(2)
    out = module.forward_exploration(obs)
    rows = {CHAIN: out[CHAIN], SHIFT: out[SHIFT], **{key: out[key] for key in INPUT_KEYS.values()}}
    k = module.cfg.ft_steps
    same = {key: value[:1].expand(4, *value.shape[1:]) for key, value in rows.items()}
    agree = pg_agreement(module, same, torch.ones(4), torch.ones(4, dtype=torch.bool), lambda s: 1.0)
    assert set(agree) == {f"pg_agreement_k{j}" for j in range(k)}
    for value in agree.values():
        assert value.item() == pytest.approx(1.0, abs=1e-4)
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    for value in pg_agreement(module, rows, adv, torch.ones(4, dtype=torch.bool), lambda s: 1.0, seed=1).values():
        assert -1.0 < value.item() < 0.999


@pytest.mark.slow
def test_learner_results_carry_step_diagnostics(ray_session, planner_path: Path) -> None:
    """One real iteration: the per-denoising-step diagnostics are in RLlib's learner results."""
    cfg = TrainConfig(scenario=TINY, grouping="platoon", module="diffusion",
                      model={**MODEL, "checkpoint": str(planner_path), "shield": False},
                      learner={"pg_agreement": True}, train_batch_size=30, minibatch_size=30, num_epochs=2,
                      lr=1e-3, iterations=1, act_steps=2)
    algo = build_ppo_config(cfg).build_algo()
    try:
        stats = algo.train()["learners"]["platoon"]
    finally:
        algo.stop()
    for k in range(MODEL["ft_steps"]):
        for name in ("adv_mean", "adv_abs", "adv_std", "clip_fraction", "approx_kl", "ratio_dev", "pg_agreement"):
            assert math.isfinite(float(stats[f"{name}_k{k}"])), (name, k)
    assert float(stats["policy_row_share"]) == 1.0  # shield off: every real row is in the policy loss
    assert float(stats["chain_action_match"]) == 1.0  # RLlib's batch keeps each chain next to its own action
    assert float(stats["actor_grad_norm"]) > 0 and float(stats["logp_at_bound"]) >= 0
    assert -1.0 <= float(stats["pg_agreement_k0"]) <= 1.0


def test_chain_action_match_detects_misaligned_rows(planner_path: Path) -> None:
    """The stored action of a row the shield let through is its chain's final plan; rolled by one row it is not."""
    env = PlatoonMultiAgentEnv({"scenario": TINY, "grouping": "platoon", "act_steps": 2})
    model = module_model_config({**MODEL, "checkpoint": str(planner_path), "shield": False}, env.spec, act_steps=2)
    module = DiffusionPlannerModule(observation_space=env.observation_spaces["p0"],
                                    action_space=env.action_spaces["p0"], model_config=model)
    torch.manual_seed(4)
    out = module.forward_exploration(_obs_batch(env, 6))
    batch = {CHAIN: out[CHAIN], Columns.ACTIONS: out[Columns.ACTIONS], **{key: out[key] for key in INPUT_KEYS.values()}}
    rows = torch.ones(6, dtype=torch.bool)
    assert chain_action_match(module, batch, rows).item() == 1.0
    rolled = {**batch, Columns.ACTIONS: out[Columns.ACTIONS].roll(1, dims=0)}
    assert chain_action_match(module, rolled, rows).item() < 0.5


def test_fused_gradient_check_applies_what_rllib_applies(ray_session, planner_path: Path) -> None:
    """`DPPOLearner.apply_gradients` (one fused finiteness check) moves the weights and the optimiser states exactly
    as RLlib's per-tensor path does, with finite gradients and with a NaN among them (RLlib zeroes it)."""
    from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner

    cfg = TrainConfig(scenario=TINY, grouping="platoon", module="diffusion",
                      model={**MODEL, "checkpoint": str(planner_path), "shield": False}, train_batch_size=20,
                      minibatch_size=20, num_epochs=1, lr=1e-3, iterations=1, act_steps=2)
    algo = build_ppo_config(cfg).build_algo()
    try:
        algo.train()  # Adam states exist
        learner = algo.learner_group._learner
        module = learner.module["platoon"]
        optimizers = [learner.get_optimizer("platoon", name) for name in learner._module_optimizers["platoon"]]
        weights0 = copy.deepcopy(module.state_dict())
        states0 = [copy.deepcopy(o.state_dict()) for o in optimizers]
        generator = torch.Generator().manual_seed(0)
        grads = {pid: torch.randn(p.shape, generator=generator) for pid, p in learner._params.items()}

        def applied(apply, grads) -> tuple[dict, list]:
            module.load_state_dict(weights0)
            for o, s in zip(optimizers, states0):
                o.load_state_dict(copy.deepcopy(s))
            apply(learner, {pid: g.clone() for pid, g in grads.items()})
            return copy.deepcopy(module.state_dict()), [copy.deepcopy(o.state_dict()["state"]) for o in optimizers]

        with_nan = dict(grads)
        first = next(iter(with_nan))
        with_nan[first] = with_nan[first].clone().view(-1).index_fill(0, torch.tensor([0]), float("nan")).view_as(
            with_nan[first])
        for case in (grads, with_nan):
            fused, fused_states = applied(type(learner).apply_gradients, case)
            reference, reference_states = applied(PPOTorchLearner.apply_gradients, case)
            assert any(not torch.equal(fused[k], weights0[k]) for k in weights0)  # a step was taken
            assert all(torch.equal(fused[k], reference[k]) for k in reference)
            for mine, theirs in zip(fused_states, reference_states):
                assert mine.keys() == theirs.keys()
                for key in theirs:
                    assert all(torch.equal(mine[key][n], theirs[key][n]) for n in theirs[key])
    finally:
        algo.stop()
