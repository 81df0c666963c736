"""Offline pre-training of the joint diffusion planner on expert demonstrations: config, loop, checkpoints, metrics.

``pretrain(config)`` loads the demo folder (`dataset.load_demos`, split by shard), builds the planner from the
config's model section and the demos' dimensions, fits the normaliser on the training split and runs the
`Trainer` for ``train.steps`` steps. Outputs in ``out``:

- ``last.pt`` every ``checkpoint_every`` steps and at the end, ``best.pt`` at each new best validation loss
  (EMA weights, same objective and fixed noise every time, on validation scenes spread over every scenario)
  or, with a ``selection:`` block, at each new best closed-loop score (`selection`: seeded episodes driven by
  the EMA weights every ``selection.every`` steps; ties to the lower validation loss): model + EMA + optimiser
  + normaliser + planner config + step + trainer RNG + loss and closed-loop history, written atomically;
- ``tb/``: TensorBoard scalars (tensorboardX): train/loss, val/loss, lr, closed_loop/* (the selection metrics);
- ``loss.png``: training loss (per step and smoothed) and validation loss;
- ``metrics.json``: losses, timing, ``best_by``, every closed-loop evaluation (``closed_loop``, with its
  validation loss) and the best one, and the quality of ``best.pt`` on held-out demos: minADE/minFDE of K
  joint samples against the expert future [m] (per scene, the best sample's mean over members and steps),
  and the share of sampled joint plans in which two members' oriented boxes overlap at some step, sampled
  unguided and guided.

Resuming (``resume=True``) reloads ``last.pt``: weights, EMA, optimiser, step and the trainer's RNG, and the
minibatch of each step is a function of (seed, step), so the losses continue exactly as without a stop.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffplatoon import io
from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.dataset import DemoData, DemoSet, fit_normalizer, load_demos, spread
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig, resolve_device
from diffplatoon.agents.diffusion.selection import EpisodeRunner, SelectionSection, Selector
from diffplatoon.agents.diffusion.train import TrainConfig, Trainer, ddpm_loss
from diffplatoon.scenarios.errors import ScenarioError
from diffplatoon.scenarios.loader import schema_problems
from diffplatoon.scenarios.yaml_source import parse_yaml
from diffplatoon.geometry import box_corners, boxes_overlap


class ConfigError(ScenarioError):
    """An invalid training config; ``str()`` lists ``file:line: field: message`` per problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(_Section):
    """Planner size (→ `PlannerConfig`)."""

    horizon: int = Field(20, ge=1, le=80, description="Plan length H [policy steps]; at most the demos' horizon.")
    d_model: int = Field(128, ge=8, le=1024, description="Token width.")
    n_layers: int = Field(3, ge=1, le=24, description="Transformer blocks.")
    n_heads: int = Field(4, ge=1, le=32, description="Attention heads (must divide d_model).")
    mlp_ratio: int = Field(4, ge=1, le=8, description="MLP width / d_model.")
    chunk: int = Field(5, ge=1, le=80, description="Plan steps per token (must divide horizon).")
    num_train_steps: int = Field(100, ge=2, le=5000, description="Diffusion steps of the training schedule.")
    noise_scale: float = Field(1.0, gt=0, le=2, description="Default start-noise scale at sampling.")
    max_members: int = Field(16, ge=1, le=64, description="Largest platoon the planner accepts.")


class TrainSection(_Section):
    """Optimisation (→ `TrainConfig`)."""

    steps: int = Field(2000, ge=0, le=10_000_000, description="Optimisation steps in total (resume counts on).")
    batch_size: int = Field(64, ge=1, le=65536, description="Scenes per step.")
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW learning rate.")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW weight decay.")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the sampling weights.")
    grad_clip: float = Field(1.0, gt=0, description="Max global gradient norm.")
    inbox_dropout: float = Field(0.25, ge=0, le=1, description="Probability of dropping each received message.")
    comm_dropout: float = Field(0.0, ge=0, le=1, description="Probability of dropping each comm edge.")


class DataSection(_Section):
    """Which demonstrations and how they are split."""

    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of shards (episodes) held out.")
    max_shards: int | None = Field(None, ge=1, description="Use only the first N shards (sorted by name).")
    normalizer_scenes: int = Field(20000, ge=1, description="Training scenes the normaliser is fitted on.")
    val_scenes: int = Field(2048, ge=1, description="Validation scenes the validation loss is averaged over.")


class EvalSection(_Section):
    """Quality report at the end of training, on held-out scenes."""

    scenes: int = Field(256, ge=0, description="Held-out scenes evaluated (0 = skip).")
    samples: int = Field(8, ge=1, le=256, description="Joint samples per scene (K of minADE/minFDE).")
    denoise_steps: int = Field(10, ge=1, le=1000, description="DDIM steps per plan.")
    guidance_scale: float = Field(0.5, ge=0, description="Guidance step size of the guided run.")
    vehicle_width: float = Field(2.0, gt=0, description="Box width of members in the collision check [m].")
    batch_size: int = Field(64, ge=1, description="Scenes per plan() call.")


class PretrainConfig(_Section):
    """`diffplatoon pretrain` configuration (YAML); every field has a default that runs."""

    demos: str = Field("runs/demos", description="Demo folder written by `diffplatoon demos collect`.")
    out: str = Field("runs/pretrain", description="Run folder: checkpoints, TensorBoard, loss.png, metrics.json.")
    seed: int = Field(0, ge=0, description="Seeds the split, initialisation, minibatches, noise and dropout.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when available, else CPU.")
    torch_threads: int = Field(1, ge=1, le=256, description="torch.set_num_threads for this process (1 is fastest on a busy 2-core machine).")
    validate_every: int = Field(200, ge=1, description="Steps between validation losses.")
    checkpoint_every: int = Field(500, ge=1, description="Steps between last.pt checkpoints.")
    log_every: int = Field(20, ge=1, description="Steps between TensorBoard/progress updates.")
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    data: DataSection = Field(default_factory=DataSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    selection: SelectionSection | None = Field(None, description="Closed-loop checkpoint selection (None: best.pt by validation loss).")

    def train_config(self) -> TrainConfig:
        """The `Trainer`'s settings."""
        t = self.train
        return TrainConfig(lr=t.lr, weight_decay=t.weight_decay, grad_clip=t.grad_clip, ema_decay=t.ema_decay,
                           inbox_dropout=t.inbox_dropout, comm_dropout=t.comm_dropout, batch_size=t.batch_size,
                           seed=self.seed)


def load_config(path: str | os.PathLike[str]) -> PretrainConfig:
    """Read and validate a YAML config; raise `ConfigError` naming file:line and field for every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [_problem((), "expected an existing config file, found none")])
    source = str(path)
    try:
        data, lines = parse_yaml(path.read_text(encoding="utf-8", errors="replace"), source)
    except ScenarioError as exc:
        raise ConfigError(source, exc.problems) from None
    try:
        return PretrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, schema_problems(exc, lines, root=PretrainConfig)) from None


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def planner_config(cfg: PretrainConfig, data: DemoData) -> PlannerConfig:
    """Planner hyper-parameters from the model section and the demos' dimensions."""
    m, dims = cfg.model, data.manifest["dims"]
    if m.horizon % m.chunk:
        raise ConfigError("<config>", [_problem(("model", "chunk"), f"expected a divisor of horizon {m.horizon}, got {m.chunk}")])
    if m.d_model % m.n_heads:
        raise ConfigError("<config>", [_problem(("model", "n_heads"), f"expected a divisor of d_model {m.d_model}, got {m.n_heads}")])
    denoiser = DenoiserConfig(obs_dim=int(dims["obs_dim"]), msg_dim=int(dims["msg_dim"]), d_model=m.d_model,
                              n_layers=m.n_layers, n_heads=m.n_heads, mlp_ratio=m.mlp_ratio, chunk=m.chunk,
                              max_horizon=max(80, m.horizon))
    return PlannerConfig(
        denoiser, horizon=m.horizon, dt=float(dims["dt"]), substeps=int(dims["substeps"]),
        max_members=max(m.max_members, int(dims["n_max"])), num_train_steps=m.num_train_steps,
        noise_scale=m.noise_scale,
    )


def _problem(path, message):
    from diffplatoon.scenarios.errors import Problem

    return Problem(path, message)


@torch.no_grad()
def validation_loss(planner: JointDiffusionPlanner, data: DemoSet, cfg: PretrainConfig) -> float:
    """DDPM loss of the EMA weights on (at most ``data.val_scenes``, spread over every validation shard and so every
    scenario) validation scenes, with fixed noise."""
    scenes = spread(len(data), cfg.data.val_scenes)
    n = len(scenes)
    if n == 0:
        return float("nan")
    gen = torch.Generator(device=planner.device).manual_seed(cfg.seed + 1)
    model = planner.model
    planner.model = planner.ema  # ddpm_loss runs planner.model
    total, count = 0.0, 0
    try:
        for start in range(0, n, cfg.train.batch_size):
            idx = scenes[start:start + cfg.train.batch_size]
            batch = data.batch(idx).to(planner.device)
            total += float(ddpm_loss(planner, batch, gen)) * len(idx)
            count += len(idx)
    finally:
        planner.model = model
    return total / count


def pretrain(config: str | os.PathLike[str] | PretrainConfig, *, resume: bool = False, progress: bool = True,
             run_episode: EpisodeRunner | None = None) -> Path:
    """Train (or with ``resume`` continue) a planner as configured; return the path of ``best.pt``.

    ``run_episode``: the evaluation's episode runner, needed by a ``selection`` block (`selection`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
    from tensorboardX import SummaryWriter

    cfg = config if isinstance(config, PretrainConfig) else load_config(config)
    torch.set_num_threads(cfg.torch_threads)
    console = Console()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(out / "config.yaml", _yaml_dump(cfg))
    device = resolve_device(cfg.device)
    data = load_demos(cfg.demos, horizon=cfg.model.horizon, val_fraction=cfg.data.val_fraction, seed=cfg.seed,
                      max_shards=cfg.data.max_shards)
    if len(data.train) == 0:
        raise ValueError(f"{cfg.demos}: no full-horizon training scenes")
    last, best = out / "last.pt", out / "best.pt"

    if resume and last.exists():
        planner = JointDiffusionPlanner.load(last, device)
        state = planner.train_state or {}
        history = state.get("history", {"train": [], "val": [], "best_val": math.inf, "wall": 0.0})
    else:
        if resume and progress:
            console.print(f"[yellow]no {last} to resume from; starting fresh")
        torch.manual_seed(cfg.seed)
        planner = JointDiffusionPlanner(planner_config(cfg, data), device)
        history = {"train": [], "val": [], "best_val": math.inf, "wall": 0.0}
    trainer = Trainer(planner, cfg.train_config())
    if not bool(planner.normalizer.fitted):
        fit_normalizer(trainer, data.train, cfg.data.normalizer_scenes, cfg.seed)
    # history beyond the checkpoint's step belongs to a run that was cut off: drop it
    history["train"] = history["train"][:trainer.step]
    history["val"] = [v for v in history["val"] if v[0] <= trainer.step]
    history["closed_loop"] = [e for e in history.get("closed_loop", []) if e["step"] <= trainer.step]
    selector = Selector(cfg.selection, run_episode, history["closed_loop"]) if cfg.selection else None

    writer = SummaryWriter(logdir=str(out / "tb"), purge_step=trainer.step if trainer.step else None)
    started = time.perf_counter()
    wall0 = float(history.get("wall", 0.0))

    def save(path: Path) -> None:
        history["wall"] = wall0 + time.perf_counter() - started
        planner.save(path, train_state={**trainer.state_dict(), "history": history})

    bar = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not progress)
    if progress:
        console.print(f"planner: {planner.num_parameters() / 1e6:.2f}M parameters on {device}; "
                      f"{len(data.train)} training / {len(data.val)} validation scenes "
                      f"({len(data.train.shards)} / {len(data.val.shards)} episodes)")
    with bar:
        task = bar.add_task("", total=cfg.train.steps, completed=min(trainer.step, cfg.train.steps))
        while trainer.step < cfg.train.steps:
            loss = trainer.train_step(data.train.batch_at(trainer.step, cfg.train.batch_size, cfg.seed))
            history["train"].append(loss)
            step = trainer.step
            if step % cfg.log_every == 0 or step == cfg.train.steps:
                recent = float(np.mean(history["train"][-cfg.log_every:]))
                writer.add_scalar("train/loss", recent, step)
                writer.add_scalar("lr", cfg.train.lr, step)
                bar.update(task, description=f"loss {recent:.4f}")
            if step % cfg.validate_every == 0 or step == cfg.train.steps:
                val = validation_loss(planner, data.val, cfg)
                history["val"].append([step, val])
                writer.add_scalar("val/loss", val, step)
                if math.isfinite(val) and val < history["best_val"]:
                    history["best_val"] = val
                    if selector is None:
                        save(best)
            if selector is not None and selector.due(step, step == cfg.train.steps):
                val = history["val"][-1][1] if history["val"] else None  # the latest: the tie-breaker
                if selector.evaluate(planner, step, val, writer):
                    save(best)
            if step % cfg.checkpoint_every == 0 or step == cfg.train.steps:
                save(last)
            bar.update(task, completed=step)
    writer.close()
    if not last.exists():
        save(last)
    if not best.exists():  # no validation split: the last weights are the best we have
        save(best)
    _plot_losses(history, out / "loss.png")

    metrics = {
        "steps": trainer.step,
        "parameters": planner.num_parameters(),
        "train_scenes": len(data.train),
        "val_scenes": len(data.val),
        "train_episodes": len(data.train.shards),
        "val_episodes": len(data.val.shards),
        "final_train_loss": float(np.mean(history["train"][-cfg.log_every:])) if history["train"] else None,
        "best_val_loss": history["best_val"] if math.isfinite(history["best_val"]) else None,
        "val_loss": history["val"],
        "best_by": "closed_loop" if selector else "val_loss",
        "train_wall_time_s": wall0 + time.perf_counter() - started,
        "device": str(device),
        "torch_threads": cfg.torch_threads,
    }
    if selector is not None:
        metrics["closed_loop"] = history["closed_loop"]
        metrics["best_closed_loop"] = selector.best()
    if cfg.eval.scenes > 0 and len(data.val) > 0:
        t0 = time.perf_counter()
        metrics["quality"] = plan_quality(JointDiffusionPlanner.load(best, device), data.val, cfg)
        metrics["quality"]["wall_time_s"] = time.perf_counter() - t0
    io.atomic_write_json(out / "metrics.json", io.json_safe(metrics))
    if progress:
        _print_metrics(metrics, console, out)
    return best


# ------------------------------------------------------------------------------------------------
# Quality on held-out demos
# ------------------------------------------------------------------------------------------------


def sample_collisions(states: np.ndarray, length: np.ndarray, member_mask: np.ndarray, width: float) -> np.ndarray:
    """Whether two present members' oriented boxes overlap at some step: states (..., N, H, 4) → (...,) bool."""
    n = states.shape[-3]
    if n < 2:
        return np.zeros(states.shape[:-3], bool)
    corners = box_corners(states[..., 0], states[..., 1], states[..., 2], length[..., None], width)  # (..., N, H, 4, 2)
    i, j = np.triu_indices(n, 1)
    hit = boxes_overlap(corners[..., i, :, :, :], corners[..., j, :, :, :])  # (..., P, H)
    pair = member_mask[..., i] & member_mask[..., j]
    return (hit.any(axis=-1) & pair).any(axis=-1)


def plan_quality(planner: JointDiffusionPlanner, data: DemoSet, cfg: PretrainConfig) -> dict:
    """minADE/minFDE of K samples vs the expert and collision rates of sampled plans, unguided and guided."""
    ev = cfg.eval
    n = min(len(data), ev.scenes)
    idx = np.sort(np.random.default_rng(cfg.seed + 2).choice(len(data), n, replace=False))
    a = {k: v[idx] for k, v in data.arrays.items()}
    guidance = GuidanceConfig(scale=ev.guidance_scale, vehicle_width=ev.vehicle_width)
    out: dict = {"scenes": n, "samples": ev.samples, "denoise_steps": ev.denoise_steps,
                 "guidance_scale": ev.guidance_scale}
    mm = a["member_mask"]
    expert = sample_collisions(a["states"], a["length"], mm, ev.vehicle_width)
    out["expert_collision_rate"] = float(expert.mean())
    # the bicycle rollout of the expert's own actions vs what the simulator did (model mismatch floor)
    roll = planner.rollout(torch.from_numpy(a["ego_state"]), torch.from_numpy(a["actions"]),
                           torch.from_numpy(a["length"])).numpy()
    err = np.linalg.norm(roll[..., :2] - a["states"][..., :2], axis=-1)
    out["expert_rollout_ade"] = float(err[mm].mean())
    for name, g in (("unguided", None), ("guided", guidance)):
        ade, fde, coll = [], [], []
        for start in range(0, n, ev.batch_size):
            sl = slice(start, min(n, start + ev.batch_size))
            scenes = [features.PlatoonInputs(**{k: a[k][i] for k in _INPUT_KEYS}) for i in range(sl.start, sl.stop)]
            inputs = {k: torch.from_numpy(a[k][sl]) for k in features.PLAN_KEYS}
            ctx = features.scene_context(scenes, planner.config.horizon, planner.config.dt) if g is not None else SceneContext()
            plan = planner.plan(**inputs, guidance=g, context=ctx, num_samples=ev.samples, steps=ev.denoise_steps,
                                seed=cfg.seed + start)
            states = plan.sample_states.cpu().numpy()  # (b, S, N, H, 4)
            m = mm[sl][:, None, :, None]  # (b, 1, N, 1)
            d = np.linalg.norm(states[..., :2] - a["states"][sl][:, None, ..., :2], axis=-1)  # (b, S, N, H)
            members = np.maximum(mm[sl].sum(axis=1), 1)[:, None]  # (b, 1)
            ade.append(((d * m).sum(axis=(2, 3)) / (members * d.shape[-1])).min(axis=1))
            fde.append(((d[..., -1] * m[..., 0]).sum(axis=2) / members).min(axis=1))
            coll.append(sample_collisions(states, a["length"][sl][:, None], mm[sl][:, None], ev.vehicle_width))
        coll = np.concatenate(coll)
        out[name] = {"minADE": float(np.concatenate(ade).mean()), "minFDE": float(np.concatenate(fde).mean()),
                     "collision_rate": float(coll.mean()), "plans": int(coll.size)}
    return out


_INPUT_KEYS = tuple(f for f in features.PlatoonInputs.__dataclass_fields__)


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------


def _plot_losses(history: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    train = np.asarray(history["train"], dtype=float)
    if len(train):
        steps = np.arange(1, len(train) + 1)
        ax.plot(steps, train, color="tab:blue", alpha=0.25, lw=0.8, label="train (per step)")
        w = max(1, len(train) // 50)
        if w > 1:
            smooth = np.convolve(train, np.ones(w) / w, mode="valid")
            ax.plot(steps[w - 1:], smooth, color="tab:blue", lw=1.5, label=f"train ({w}-step mean)")
    if history["val"]:
        v = np.asarray(history["val"], dtype=float)
        ax.plot(v[:, 0], v[:, 1], "o-", color="tab:orange", lw=1.5, ms=3, label="validation (EMA)")
    ax.set_xlabel("step")
    ax.set_ylabel("DDPM x0 loss (normalised actions)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    import io as _bytesio

    buf = _bytesio.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    io.atomic_write_bytes(path, buf.getvalue())




def _yaml_dump(cfg: PretrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def _print_metrics(metrics: dict, console, out: Path) -> None:
    best = metrics["best_val_loss"]
    console.print(f"{metrics['steps']} steps, best validation loss {'-' if best is None else f'{best:.4g}'}, "
                  f"{metrics['train_wall_time_s']:.0f} s -> {out}")
    q = metrics.get("quality")
    if q:
        from rich.table import Table

        table = Table(title=f"Held-out demos: {q['scenes']} scenes, K={q['samples']} samples, {q['denoise_steps']} DDIM steps")
        for col in ("sampling", "minADE [m]", "minFDE [m]", "collision rate"):
            table.add_column(col, justify="left" if col == "sampling" else "right")
        for name in ("unguided", "guided"):
            r = q[name]
            table.add_row(name, f"{r['minADE']:.3f}", f"{r['minFDE']:.3f}", f"{r['collision_rate']:.4f}")
        table.caption = (f"expert plans collide in {q['expert_collision_rate']:.4f}; bicycle rollout of the expert's "
                         f"actions is off by {q['expert_rollout_ade']:.3f} m on average")
        console.print(table)


def metrics_of(out: str | os.PathLike[str]) -> dict:
    """The metrics.json of a run folder."""
    return json.loads((Path(out) / "metrics.json").read_text())
