"""Joint diffusion planner model: shapes, comm-graph masking, absent members, bicycle rollout, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from highway_env.road.road import Road, RoadNetwork
from highway_env.vehicle.kinematics import Vehicle

from diffplatoon.agents.diffusion.kinematics import bicycle_rollout
from diffplatoon.agents.diffusion.model import DenoiserConfig, sinusoidal_embedding
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.train import Batch, TrainConfig, Trainer

OBS_DIM, MSG_DIM, K = 6, 3, 4


def _planner(seed: int = 0, **kw) -> JointDiffusionPlanner:
    """Small planner with every weight random (AdaLN-Zero init would hide any coupling)."""
    cfg = PlannerConfig(DenoiserConfig(obs_dim=OBS_DIM, msg_dim=MSG_DIM, d_model=32, n_layers=2, n_heads=4), **kw)
    return JointDiffusionPlanner.with_random_weights(cfg, std=0.3, seed=seed)


def _scene(b: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ego = torch.zeros(b, n, 4)
    ego[..., 0] = -12.0 * torch.arange(n, dtype=torch.float32)
    ego[..., 3] = 20.0 + torch.rand(b, n, generator=g)
    return dict(
        obs=torch.randn(b, n, OBS_DIM, generator=g),
        inbox=torch.randn(b, n, K, MSG_DIM, generator=g),
        inbox_mask=torch.rand(b, n, K, generator=g) > 0.3,
        comm_mask=torch.ones(b, n, n, dtype=torch.bool),
        member_mask=torch.ones(b, n, dtype=torch.bool),
        ego_state=ego,
        length=torch.full((b, n), 5.0),
    )


@pytest.mark.parametrize("n", [1, 4, 8])
@pytest.mark.parametrize("horizon", [20, 40])
def test_plan_shapes(n, horizon):
    planner = _planner()
    b, s = 2, 3
    plan = planner.plan(**_scene(b, n), num_samples=s, steps=3, horizon=horizon)
    assert plan.actions.shape == (b, n, horizon, 2)
    assert plan.states.shape == (b, n, horizon, 4)
    assert plan.sample_actions.shape == (b, s, n, horizon, 2)
    assert plan.sample_states.shape == (b, s, n, horizon, 4)
    assert plan.sample_costs.shape == (b, s) and plan.cost.shape == (b,) and plan.best_index.shape == (b,)
    assert torch.isfinite(plan.states).all()
    lo, hi = planner.config.acc_range
    assert plan.actions[..., 0].min() >= lo and plan.actions[..., 0].max() <= hi


def test_horizon_must_be_multiple_of_chunk():
    with pytest.raises(ValueError):
        _planner().plan(**_scene(1, 2), horizon=22, steps=1)


def test_isolated_member_is_unaffected_bit_for_bit():
    planner = _planner()
    n, iso = 5, 2
    scene = _scene(2, n)
    scene["comm_mask"][:, iso, :] = False
    scene["comm_mask"][:, :, iso] = False
    scene["comm_mask"][:, iso, iso] = True
    base = planner.plan(**scene, num_samples=2, steps=4)

    perturbed = {k: v.clone() for k, v in scene.items()}
    perturbed["obs"][:, 0] += 3.0
    perturbed["inbox"][:, 1] *= -2.0
    perturbed["inbox_mask"][:, 3] = ~perturbed["inbox_mask"][:, 3]
    perturbed["ego_state"][:, 4, 1] += 1.5
    other = planner.plan(**perturbed, num_samples=2, steps=4)

    assert torch.equal(base.sample_actions[:, :, iso], other.sample_actions[:, :, iso])
    # the members that hear the perturbed ones do change, so the test can fail
    rest = [i for i in range(n) if i != iso]
    assert not torch.equal(base.sample_actions[:, :, rest], other.sample_actions[:, :, rest])


def test_member_attends_only_to_members_it_hears():
    planner = _planner()
    scene = _scene(1, 3)
    scene["comm_mask"][:] = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)  # 2 hears 0, 1
    base = planner.plan(**scene, steps=3)
    perturbed = {k: v.clone() for k, v in scene.items()}
    perturbed["obs"][:, 2] += 2.0  # nobody hears member 2
    other = planner.plan(**perturbed, steps=3)
    assert torch.equal(base.actions[:, :2], other.actions[:, :2])
    assert not torch.equal(base.actions[:, 2], other.actions[:, 2])


def test_absent_member_does_not_affect_others():
    planner = _planner()
    scene = _scene(2, 4)
    scene["member_mask"][:, 3] = False
    base = planner.plan(**scene, num_samples=2, steps=4)

    garbage = {k: v.clone() for k, v in scene.items()}
    garbage["obs"][:, 3] = float("nan")
    garbage["inbox"][:, 3] = 1e6
    garbage["ego_state"][:, 3] = float("nan")
    garbage["length"][:, 3] = 0.0
    other = planner.plan(**garbage, num_samples=2, steps=4)

    assert torch.equal(base.sample_actions[:, :, :3], other.sample_actions[:, :, :3])
    assert torch.equal(base.sample_costs, other.sample_costs)
    assert torch.all(other.actions[:, 3] == 0)
    assert torch.isfinite(other.sample_costs).all()


def test_empty_inbox_is_finite():
    planner = _planner()
    scene = _scene(1, 3)
    scene["inbox_mask"][:] = False
    scene["inbox"][:] = float("nan")
    assert torch.isfinite(planner.plan(**scene, steps=2).actions).all()


# ------------------------------------------------------------------------------------------------ kinematics
def _numpy_rollout(state, actions, length, dt, substeps):
    """Step-by-step reference of the same equations for one vehicle."""
    x, y, psi, v = (float(s) for s in state)
    h = dt / substeps
    out = []
    for acc, steer in actions:
        for _ in range(substeps):
            acc_k = min(acc, 40.0 - v) if v > 40.0 else acc
            beta = np.arctan(0.5 * np.tan(steer))
            x, y = x + v * np.cos(psi + beta) * h, y + v * np.sin(psi + beta) * h
            psi = psi + v * np.sin(beta) / (length / 2) * h
            v = v + acc_k * h
        out.append((x, y, psi, v))
    return np.array(out)


@pytest.mark.parametrize("substeps", [1, 3])
@pytest.mark.parametrize("start_speed", [20.0, 39.8])  # 39.8 m/s crosses highway-env's MAX_SPEED cap
def test_rollout_matches_numpy_reference(substeps, start_speed):
    rng = np.random.default_rng(0)
    n, horizon = 3, 15
    state0 = np.stack([rng.normal(0, 5, n), rng.normal(0, 2, n), rng.normal(0, 0.1, n), np.full(n, start_speed)], -1)
    actions = np.stack([rng.uniform(-3, 3, (n, horizon)), rng.uniform(-0.2, 0.2, (n, horizon))], -1)
    actions[..., 0] = np.abs(actions[..., 0]) if start_speed > 39 else actions[..., 0]
    length = rng.uniform(4, 6, n)
    got = bicycle_rollout(torch.tensor(state0), torch.tensor(actions), torch.tensor(length), 0.2, substeps)
    want = np.stack([_numpy_rollout(state0[i], actions[i], length[i], 0.2, substeps) for i in range(n)])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5, rtol=0)


def test_rollout_matches_highway_env_vehicle():
    road = Road(RoadNetwork.straight_road_network(lanes=3), record_history=False)
    vehicle = Vehicle(road, [10.0, 4.0], heading=0.05, speed=22.0)
    rng = np.random.default_rng(1)
    actions = np.stack([rng.uniform(-4, 4, 30), rng.uniform(-0.1, 0.1, 30)], -1)
    dt, substeps = 0.2, 3
    want = []
    for acc, steer in actions:
        vehicle.act({"acceleration": float(acc), "steering": float(steer)})
        for _ in range(substeps):
            vehicle.step(dt / substeps)
        want.append([*vehicle.position, vehicle.heading, vehicle.speed])
    state0 = torch.tensor([10.0, 4.0, 0.05, 22.0], dtype=torch.float64)
    got = bicycle_rollout(state0, torch.tensor(actions), Vehicle.LENGTH, dt, substeps)
    np.testing.assert_allclose(got.numpy(), np.array(want), atol=1e-5, rtol=0)


def test_gradient_flows_through_rollout():
    actions = torch.zeros(2, 3, 10, 2, requires_grad=True)
    state0 = torch.tensor([0.0, 0.0, 0.0, 20.0]).expand(2, 3, 4)
    states = bicycle_rollout(state0, actions, torch.full((2, 3), 5.0), 0.2)
    (states[..., -1, 0].sum() + states[..., -1, 1].sum()).backward()
    grad = actions.grad
    assert torch.isfinite(grad).all()
    assert (grad[..., :-1, 0] > 0).all()  # earlier acceleration moves the final x forward
    assert (grad[..., :-1, 1] > 0).all()  # steering left moves the final y left


# ------------------------------------------------------------------------------------------------ checkpoints
def _batch(b: int, n: int, horizon: int, seed: int) -> Batch:
    s = _scene(b, n, seed)
    g = torch.Generator().manual_seed(seed + 100)
    return Batch(actions=torch.randn(b, n, horizon, 2, generator=g), **s)


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    torch.manual_seed(0)
    net = DenoiserConfig(obs_dim=OBS_DIM, msg_dim=MSG_DIM, d_model=32, n_layers=1)
    planner = JointDiffusionPlanner(PlannerConfig(net, horizon=10))
    trainer = Trainer(planner, TrainConfig(lr=1e-3, ema_decay=0.9))
    batches = [_batch(8, 3, 10, seed) for seed in range(5)]
    trainer.fit(batches[:3], num_steps=3)
    path = tmp_path / "ckpt" / "planner.pt"
    trainer.save(path)

    raw = torch.load(path, weights_only=True)
    assert {"config", "model", "ema", "normalizer", "train_state"} <= raw.keys()
    assert raw["train_state"]["step"] == 3 and raw["train_state"]["optimizer"]["state"]
    assert bool(raw["normalizer"]["fitted"])
    assert not [p for p in path.parent.iterdir() if p.name != "planner.pt"]  # no temp file left

    loaded = JointDiffusionPlanner.load(path)
    assert loaded.config == planner.config
    scene = _scene(2, 3)
    for use_ema in (True, False):
        a = planner.plan(**scene, num_samples=2, steps=4, horizon=10, use_ema=use_ema)
        b = loaded.plan(**scene, num_samples=2, steps=4, horizon=10, use_ema=use_ema)
        assert torch.equal(a.sample_actions, b.sample_actions)
    assert not torch.equal(planner.plan(**scene, horizon=10).actions, planner.plan(**scene, horizon=10, use_ema=False).actions)

    resumed = Trainer(loaded, TrainConfig(lr=1e-3, ema_decay=0.9))
    assert resumed.step == 3
    assert trainer.fit(batches[3:], 2) == resumed.fit(batches[3:], 2)
    for p, q in zip(planner.ema.parameters(), loaded.ema.parameters()):
        assert torch.equal(p, q)


def test_checkpoint_with_the_flat_config_of_earlier_versions_loads(tmp_path):
    """Checkpoints written before `PlannerConfig` embedded `DenoiserConfig` hold one flat config dict (the
    denoiser's fields beside the planner's): they load to the same planner, plan the same and resume training."""
    planner = _planner(3, horizon=10, num_train_steps=20, noise_scale=0.8)
    trainer = Trainer(planner, TrainConfig(lr=1e-3, ema_decay=0.9))
    trainer.fit([_batch(8, 3, 10, seed) for seed in range(2)], num_steps=2)
    cfg = planner.config
    flat = {"obs_dim": OBS_DIM, "msg_dim": MSG_DIM, "horizon": 10, "dt": cfg.dt, "substeps": cfg.substeps,
            "acc_range": list(cfg.acc_range), "steer_range": list(cfg.steer_range),
            "speed_range": list(cfg.speed_range), "max_members": cfg.max_members, "d_model": 32, "n_layers": 2,
            "n_heads": 4, "mlp_ratio": 4, "chunk": 5, "max_horizon": 80, "num_train_steps": 20, "noise_scale": 0.8}
    path = tmp_path / "old.pt"
    trainer.save(path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["config"] == cfg.to_dict() and "denoiser" in ckpt["config"]
    torch.save({**ckpt, "config": flat}, path)  # the layout the earlier versions wrote

    loaded = JointDiffusionPlanner.load(path)
    assert loaded.config == cfg
    assert loaded.config.denoiser == DenoiserConfig(OBS_DIM, MSG_DIM, d_model=32, n_layers=2, n_heads=4)
    assert PlannerConfig.from_dict(flat) == PlannerConfig.from_dict(cfg.to_dict()) == cfg
    scene = _scene(2, 3)
    a, b = (p.plan(**scene, num_samples=2, steps=4) for p in (planner, loaded))
    assert torch.equal(a.sample_actions, b.sample_actions)
    assert Trainer(loaded, TrainConfig(lr=1e-3, ema_decay=0.9)).step == 2


def test_inbox_dropout_hides_messages_from_the_loss():
    from diffplatoon.agents.diffusion.train import ddpm_loss

    planner = _planner()
    batch = _batch(4, 3, 20, seed=0)
    other = Batch(**{**batch.__dict__, "inbox": batch.inbox + 5.0})

    def loss(b, p):
        return ddpm_loss(planner, b, torch.Generator().manual_seed(0), inbox_dropout=p).item()

    assert loss(batch, 0.0) != loss(other, 0.0)
    assert loss(batch, 1.0) == loss(other, 1.0)


@pytest.mark.parametrize("out_steps", [1, 7, 20])
def test_denoise_first_steps_only_matches_the_full_output_and_gradient(out_steps):
    """`out_steps` computes the last block for the chunks holding those steps only: same values and weight
    gradients (in float64, so float32 rounding, amplified by the large random weights, does not blur the check)."""
    planner = _planner(3)
    net = planner.model.double()
    scene = _scene(3, 4, seed=2)
    scene["member_mask"][1, 2] = False
    scene["comm_mask"][0, 0, 1] = False
    obs_n, inbox_n, ego_n = (v.double() for v in planner.normalized_inputs(scene["obs"], scene["inbox"],
                                                                           scene["ego_state"], scene["length"]))
    x = torch.randn(3, 4, 20, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    t = torch.tensor([10, 40, 90])
    outs, grads = [], []
    for steps in (None, out_steps):
        net.zero_grad()
        cond = net.encode(obs_n, ego_n, inbox_n, scene["inbox_mask"], scene["member_mask"])
        temb = sinusoidal_embedding(t, net.config.d_model).double()
        time_cond = net.time_modulation(torch.nn.functional.silu(net.time_mlp(temb)))
        y = net.denoise(x, t, cond, net.member_attention_mask(scene["comm_mask"], scene["member_mask"]),
                        scene["member_mask"], time_cond=time_cond, out_steps=steps)
        y[:, :, :out_steps].sin().sum().backward()
        outs.append(y[:, :, :out_steps].detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert outs[1].shape == (3, 4, out_steps, 2)
    torch.testing.assert_close(outs[1], outs[0], rtol=0.0, atol=1e-10)
    assert grads[0].norm() > 0 and (grads[1] - grads[0]).norm() <= 1e-10 * grads[0].norm()
