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

The config and the planner it builds live in `pretrain_config`, the held-out quality report in `quality`
(both re-exported here); this module runs the loop and writes the outputs.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from diffplatoon import io
from diffplatoon.agents.diffusion.dataset import DemoSet, fit_normalizer, load_demos, spread
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, resolve_device
from diffplatoon.agents.diffusion.pretrain_config import (ConfigError, DataSection, EvalSection, ModelSection,
                                                          PretrainConfig, TrainSection, load_config, planner_config)
from diffplatoon.agents.diffusion.quality import plan_quality, sample_collisions
from diffplatoon.agents.diffusion.selection import EpisodeRunner, Selector
from diffplatoon.agents.diffusion.train import Trainer, ddpm_loss

__all__ = ["ConfigError", "DataSection", "EvalSection", "ModelSection", "PretrainConfig", "TrainSection", "load_config",
           "metrics_of", "plan_quality", "planner_config", "pretrain", "sample_collisions", "validation_loss"]


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
                      max_shards=cfg.data.max_shards, oversample=cfg.data.oversample)
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
