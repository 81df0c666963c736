"""A training run's folder: checkpoints, run.json, metrics.jsonl, TensorBoard and the learning curve.

The layout is the table in `diffplatoon.agents.rllib.train`. A checkpoint is written into a
temporary folder (RLlib's files plus diffplatoon's own copy of each module and
`CHECKPOINT_META`) and renamed, so `checkpoints` lists only complete ones; `truncate_metrics`
drops the rows a killed run wrote after its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from diffplatoon.agents.rllib.module_file import CHECKPOINT_META, write_modules
from diffplatoon.agents.rllib.train_config import MODULES, TrainConfig
from diffplatoon.io import atomic_write_json, atomic_write_text, read_jsonl

CHECKPOINT_PREFIX = "checkpoint_"


# -- run folder ------------------------------------------------------------------------------------


def checkpoints(out: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [p for p in out.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)
             and p.name[len(CHECKPOINT_PREFIX):].isdigit() and (p / CHECKPOINT_META).exists()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def checkpoint_iteration(path: str | os.PathLike[str]) -> int:
    """Training iteration a checkpoint folder holds."""
    return int(json.loads((Path(path) / CHECKPOINT_META).read_text())["iteration"])


def save_checkpoint(algo: Any, cfg: TrainConfig, out: Path, iteration: int) -> Path:
    final = out / f"{CHECKPOINT_PREFIX}{iteration:06d}"
    tmp = out / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    module_ids = list(MODULES[cfg.module].module_ids)
    meta = {"iteration": iteration, "grouping": cfg.grouping, "module": cfg.module,
            "module_ids": module_ids, "env_config": cfg.env_config(),
            "config": cfg.model_dump(mode="json", by_alias=True),
            "modules": write_modules(algo, tmp, module_ids)}
    atomic_write_json(tmp / CHECKPOINT_META, meta)
    if final.exists():  # left by a run killed after its rename but before run.json was updated
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def write_run_json(out: Path, cfg: TrainConfig, iteration: int, latest: Path | None, started: float) -> None:
    import ray
    import torch

    atomic_write_json(out / "run.json", {
        "name": cfg.name, "config": cfg.model_dump(mode="json", by_alias=True), "iterations_done": iteration,
        "latest_checkpoint": latest.name if latest else None, "started": started, "updated": time.time(),
        "versions": {"ray": ray.__version__, "torch": torch.__version__},
    })


def truncate_metrics(path: Path, iteration: int) -> None:
    """Keep metrics rows of iterations <= `iteration`, each once (rewritten atomically)."""
    rows, seen = [], set()
    for row in read_jsonl(path):
        it = int(row.get("iteration", -1))
        if 0 < it <= iteration and it not in seen:
            seen.add(it)
            rows.append(row)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def summary_writer(out: Path) -> Any:
    """A TensorBoard writer, or None when neither torch's (needs `tensorboard`) nor tensorboardX is installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            return None
    return SummaryWriter(str(out / "tb"))


# -- metrics ---------------------------------------------------------------------------------------


# Learner statistics copied into metrics.jsonl: the losses, and the DPPO learner's per-denoising-step diagnostics
# (`dppo_learner`: advantage scale, clip fraction, approximate KL, ratio deviation, gradient norms, agreement).
_LEARNER_KEYS = frozenset({"policy_loss", "vf_loss", "entropy", "total_loss", "mean_kl_loss", "vf_explained_var",
                           "clip_fraction", "shield_rate", "bc_loss", "policy_row_share", "logp_at_bound",
                           "chain_action_match"})
_LEARNER_PREFIXES = ("adv_", "clip_fraction_k", "approx_kl_k", "ratio_dev_k", "actor_grad_norm", "pg_agreement_k")


def metrics_row(result: dict[str, Any], iteration: int, elapsed: float, act_steps: int = 1) -> dict[str, Any]:
    """The metrics.jsonl row of one `algo.train()` result. ``env_steps`` are RLlib's (action chunks when
    ``act_steps`` > 1), ``policy_steps`` the simulated policy steps they ran."""
    runners = result.get("env_runners", {})
    steps = float(runners.get("num_env_steps_sampled", 0.0) or 0.0)
    row: dict[str, Any] = {
        "iteration": iteration,
        "time_s": elapsed,
        "env_steps": steps,
        "env_steps_lifetime": float(result.get("num_env_steps_sampled_lifetime", 0.0) or 0.0),
        "env_steps_per_s": steps / elapsed if elapsed > 0 else 0.0,
        "policy_steps": steps * act_steps,
        "policy_steps_per_s": steps * act_steps / elapsed if elapsed > 0 else 0.0,
        "episodes": float(runners.get("num_episodes", 0.0) or 0.0),
        "return_mean": runners.get("episode_return_mean"),
        "episode_len_mean": runners.get("episode_len_mean"),
        "episode_policy_steps": runners.get("steps"),
        "collisions": runners.get("collisions"),
        "offroad_steps": runners.get("offroad_steps"),
        "mean_speed": runners.get("mean_speed"),
        "merge_success": runners.get("merge_success"),
    }
    evaluation = result.get("evaluation", {}).get("env_runners", {})
    if evaluation:
        row["eval_return_mean"] = evaluation.get("episode_return_mean")
        row["eval_collisions"] = evaluation.get("collisions")
    for mid, stats in result.get("learners", {}).items():
        if mid.startswith("__") or not isinstance(stats, dict):
            continue
        for key, value in stats.items():
            if (key in _LEARNER_KEYS or key.startswith(_LEARNER_PREFIXES)) and isinstance(value, (int, float)):
                row[f"{mid}/{key}"] = float(value)
    return {k: (v if k == "iteration" or v is None or isinstance(v, (bool, str)) else float(v)) for k, v in row.items()}


def progress_line(cfg: TrainConfig, row: dict[str, Any]) -> str:
    def f(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    return (f"[bold]{cfg.name}[/] iter {row['iteration']:>4d}/{cfg.iterations}  return {f(row['return_mean'], '8.2f')}"
            f"  len {f(row['episode_len_mean'], '5.1f')}  collisions {f(row['collisions'], '4.2f')}"
            f"  {row['policy_steps_per_s']:5.0f} steps/s  {row['time_s']:5.1f} s")


def plot_learning_curve(metrics_path: Path, png: Path) -> Path | None:
    """Return, collisions, merge success (where the training episodes have merge tasks) and throughput per
    iteration as a PNG; None without rows."""
    rows = list(read_jsonl(metrics_path))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    panels = [("return_mean", "mean episode return"), ("collisions", "collisions per episode")]
    if any(r.get("merge_success") is not None for r in rows):
        panels.append(("merge_success", "merge success (training episodes)"))
    panels.append(("policy_steps_per_s", "policy steps / s"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6))
    for ax, (key, label) in zip(axes, panels):
        ys = [r.get(key, r.get("env_steps_per_s")) for r in rows]  # rows written before policy steps existed
        ax.plot([i for i, y in zip(it, ys) if y is not None], [y for y in ys if y is not None], marker=".")
        if key == "return_mean" and any(r.get("eval_return_mean") is not None for r in rows):
            ev = [(r["iteration"], r["eval_return_mean"]) for r in rows if r.get("eval_return_mean") is not None]
            ax.plot(*zip(*ev), marker="o", label="evaluation")
            ax.legend()
        ax.set_xlabel("iteration")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, png)


def save_figure(fig, png: Path) -> Path:
    """Write a matplotlib figure to ``png`` atomically (a temporary file renamed over it) and close it."""
    import matplotlib.pyplot as plt

    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png
