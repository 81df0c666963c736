"""RLlib training driver: a validated YAML `TrainConfig` → `PPOConfig` → iterations, metrics, checkpoints, resume.

    from diffplatoon.agents.rllib.train import train
    out = train("configs/ppo_mlp.yaml")                  # a fresh run into the config's `out`
    out = train("configs/ppo_mlp.yaml", resume=out)      # continue after a crash or kill -9

Run folder (`out`):

| file | written |
|---|---|
| run.json | at start and after every checkpoint: the config, versions, latest checkpoint, iterations done |
| metrics.jsonl | one row per iteration, appended as one line (`diffplatoon.io.append_jsonl`) |
| checkpoint_{iter:06d}/ | every `checkpoint_every` iterations and at the last one: `Algorithm.save_to_path` into a temp folder, plus diffplatoon's own copy of each module (`module_file`: tensors-only weights, and in `diffplatoon.json` the spaces and model config, next to grouping, module, env_config, module ids), then renamed |
| tb/ | TensorBoard event files (tensorboardX; `torch.utils.tensorboard` needs the `tensorboard` package) |
| learning_curve.png | at the end: return, collisions, merge success (where training episodes have merge tasks) and throughput per iteration |

Resume restores the newest complete checkpoint with `Algorithm.from_checkpoint` (weights, optimiser,
iteration and step counters; RLlib unpickles its own files, so a folder resumed from is trusted code,
unlike `rllib:` policies, which read only diffplatoon's files), drops metrics rows after its iteration (they were computed by the lost
tail of the killed run) and continues, so metrics.jsonl ends with every iteration exactly once.

Modules: `TrainConfig.module` selects an entry of `MODULES` (name → function that fills in the
multi-agent part of the `PPOConfig`: policies, mapping, RLModule spec, learner class). "mlp" is the
vehicle-level CTDE baseline (`SharedMLPModule`); "diffusion" is the platoon-level planner fine-tuned
with DPPO (`DiffusionPlannerModule` + `DPPOLearner`).

This module is the driver (`build_ppo_config`, `train`, `main`); the config and the module kinds
live in `train_config`, the run folder's files in `run_folder` (both re-exported here).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from diffplatoon.agents.rllib.run_folder import (CHECKPOINT_PREFIX, checkpoint_iteration, checkpoints, metrics_row,
                                                 plot_learning_curve, progress_line, save_checkpoint, summary_writer,
                                                 truncate_metrics, write_run_json)
# `_map_to_*` stay importable here: checkpoints saved before the config moved to `train_config`
# pickled their policy mapping by this module's name.
from diffplatoon.agents.rllib.train_config import (MODULES, PLATOON_MODULE_ID, VEHICLE_MODULE_ID, ModuleBuilder,
                                                   TrainConfig, _map_to_platoon, _map_to_vehicle, load_config,
                                                   validate_config)
from diffplatoon.cluster import connect_ray
from diffplatoon.io import append_jsonl

__all__ = ["CHECKPOINT_PREFIX", "MODULES", "PLATOON_MODULE_ID", "RESUME_HELP", "VEHICLE_MODULE_ID", "ModuleBuilder",
           "TrainConfig", "build_ppo_config", "checkpoint_iteration", "checkpoints", "load_config", "main",
           "metrics_row", "plot_learning_curve", "train", "validate_config"]

RESUME_HELP = ("Continue the run in this folder from its last checkpoint. RLlib restores it by unpickling its "
               "own files, which can run code: resume only runs you trust (evaluating a checkpoint as an "
               "rllib: policy never unpickles).")


# -- RLlib config ----------------------------------------------------------------------------------


def _set_torch_threads(*, env_runner: Any = None, env_context: Any = None, **kwargs: Any) -> None:
    """Callback on every env runner's env creation: torch threads from the env_config."""
    import torch

    threads = int((env_context or {}).get("torch_threads", 1))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _log_episode(*, episode: Any = None, env: Any = None, env_index: int = 0, metrics_logger: Any = None,
                 **kwargs: Any) -> None:
    """Callback at episode end: the env's collision / off-road / speed counts as runner metrics."""
    if metrics_logger is None or env is None:
        return
    sub = env.envs[env_index].unwrapped if hasattr(env, "envs") else getattr(env, "unwrapped", env)
    stats = getattr(sub, "last_episode_stats", None)
    if not stats:
        return
    for key, value in stats.items():
        metrics_logger.log_value(key, float(value), reduce="mean")


def build_ppo_config(cfg: TrainConfig) -> Any:
    """The `PPOConfig` of a training config (env, runners, learner, PPO settings, callbacks, module)."""
    from ray.rllib.algorithms.ppo import PPOConfig

    from diffplatoon.envs.rllib_env import PlatoonMultiAgentEnv

    if cfg.gpus_per_learner > 0 and cfg.learners == 0:
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"gpus_per_learner: {cfg.gpus_per_learner} with learners: 0 puts the learner on this "
                             f"process's GPU, but torch sees none here; set learners >= 1 for learner actors on "
                             f"cluster nodes with GPUs, or gpus_per_learner: 0")
    env_config = cfg.env_config()
    probe = PlatoonMultiAgentEnv(env_config)
    ppo = (PPOConfig()
           .environment(PlatoonMultiAgentEnv, env_config=env_config)
           .env_runners(num_env_runners=cfg.env_runners, num_envs_per_env_runner=cfg.envs_per_runner,
                        num_cpus_per_env_runner=cfg.cpus_per_runner,
                        rollout_fragment_length=cfg.rollout_fragment_length)
           .learners(num_learners=cfg.learners, num_gpus_per_learner=cfg.gpus_per_learner)
           .training(train_batch_size_per_learner=cfg.train_batch_size, minibatch_size=cfg.minibatch_size,
                     num_epochs=cfg.num_epochs, lr=cfg.lr, clip_param=cfg.clip, vf_clip_param=cfg.vf_clip,
                     vf_loss_coeff=cfg.vf_loss_coeff, entropy_coeff=cfg.entropy_coeff, grad_clip=cfg.grad_clip,
                     gamma=cfg.gamma, lambda_=cfg.lambda_, use_kl_loss=False,
                     learner_config_dict=dict(cfg.learner))
           .reporting(metrics_num_episodes_for_smoothing=cfg.metrics_episodes)
           .callbacks(on_environment_created=_set_torch_threads, on_episode_end=_log_episode)
           .debugging(seed=cfg.seed, log_level="ERROR"))
    if cfg.evaluation_every:
        ppo = ppo.evaluation(evaluation_interval=cfg.evaluation_every, evaluation_duration=cfg.evaluation_episodes,
                             evaluation_duration_unit="episodes", evaluation_num_env_runners=0,
                             evaluation_config={"explore": False})
    return MODULES[cfg.module].configure(cfg, ppo, probe)


# -- driver ----------------------------------------------------------------------------------------


def train(config: str | os.PathLike[str] | TrainConfig, *, resume: str | os.PathLike[str] | None = None,
          ray_address: str | None = None, console: Any = None) -> Path:
    """Run (or resume) training; returns the run folder. See the module docstring."""
    import ray
    import torch
    from rich.console import Console

    cfg = config if isinstance(config, TrainConfig) else load_config(config)
    console = console or Console()
    out = Path(resume if resume is not None else cfg.out)
    existing = checkpoints(out)
    if resume is not None and not existing:
        raise FileNotFoundError(f"{out}: expected a run folder with a checkpoint to resume, found none")
    if resume is None and existing:
        raise FileExistsError(f"{out} already holds checkpoints: resume it (--resume {out}) or choose another `out`")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed)

    started_ray = connect_ray(ray_address)

    metrics_path = out / "metrics.jsonl"
    started = time.time()
    writer = None
    algo = None
    try:
        if existing:
            from ray.rllib.algorithms.algorithm import Algorithm

            latest = existing[-1]
            algo = Algorithm.from_checkpoint(str(latest.resolve()))
            done = int(algo.iteration)
            if done != checkpoint_iteration(latest):
                raise RuntimeError(f"{latest}: restored iteration {done} != recorded {checkpoint_iteration(latest)}")
            truncate_metrics(metrics_path, done)
            try:
                started = float(json.loads((out / "run.json").read_text())["started"])
            except (OSError, ValueError, KeyError):
                pass
            console.print(f"resumed {latest} at iteration {done}")
        else:
            algo = build_ppo_config(cfg).build_algo()
            latest = None
            if metrics_path.exists():
                metrics_path.unlink()  # rows without a checkpoint behind them belong to no run
        write_run_json(out, cfg, int(algo.iteration), latest, started)
        writer = summary_writer(out)

        while algo.iteration < cfg.iterations:
            t0 = time.perf_counter()
            result = algo.train()
            iteration = int(algo.iteration)
            row = metrics_row(result, iteration, time.perf_counter() - t0, cfg.act_steps)
            append_jsonl(metrics_path, row)
            if writer is not None:
                for key, value in row.items():
                    if key != "iteration" and isinstance(value, float):
                        writer.add_scalar(key, value, iteration)
                writer.flush()
            console.print(progress_line(cfg, row), highlight=False)
            if iteration % cfg.checkpoint_every == 0 or iteration >= cfg.iterations:
                latest = save_checkpoint(algo, cfg, out, iteration)
                write_run_json(out, cfg, iteration, latest, started)
        plot_learning_curve(metrics_path, out / "learning_curve.png")
    finally:
        if writer is not None:
            writer.close()
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m diffplatoon.agents.rllib.train CONFIG [--resume DIR] [--ray-address ADDR]`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("config")
    parser.add_argument("--resume", default=None, help=RESUME_HELP)
    parser.add_argument("--ray-address", default=None)
    args = parser.parse_args(argv)
    print(f"run folder: {train(args.config, resume=args.resume, ray_address=args.ray_address)}")


if __name__ == "__main__":
    main()
