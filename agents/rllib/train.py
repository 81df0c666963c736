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
| learning_curve.png | at the end: return, collisions and throughput per iteration |

Resume restores the newest complete checkpoint with `Algorithm.from_checkpoint` (weights, optimiser,
iteration and step counters; RLlib unpickles its own files, so a folder resumed from is trusted code,
unlike `rllib:` policies, which read only diffplatoon's files), drops metrics rows after its iteration (they were computed by the lost
tail of the killed run) and continues, so metrics.jsonl ends with every iteration exactly once.

Modules: `TrainConfig.module` selects an entry of `MODULES` (name → function that fills in the
multi-agent part of the `PPOConfig`: policies, mapping, RLModule spec, learner class). "mlp" is the
vehicle-level CTDE baseline (`SharedMLPModule`); "diffusion" is the platoon-level planner fine-tuned
with DPPO (`DiffusionPlannerModule` + `DPPOLearner`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffplatoon.cluster import connect_ray
from diffplatoon.agents.rllib.module_file import CHECKPOINT_META, write_modules
from diffplatoon.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from diffplatoon.scenarios.errors import Problem, ScenarioError
from diffplatoon.scenarios.loader import schema_problems
from diffplatoon.scenarios.yaml_source import line_of, parse_yaml

CHECKPOINT_PREFIX = "checkpoint_"
VEHICLE_MODULE_ID = "vehicle"
RESUME_HELP = ("Continue the run in this folder from its last checkpoint. RLlib restores it by unpickling its "
               "own files, which can run code: resume only runs you trust (evaluating a checkpoint as an "
               "rllib: policy never unpickles).")
PLATOON_MODULE_ID = "platoon"


# -- config ----------------------------------------------------------------------------------------


class TrainConfig(BaseModel):
    """One training run. Every field has a default that runs except `scenario`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field("run", description="Run name (shown in progress lines and run.json).")
    scenario: str | dict[str, Any] = Field(..., description="Catalogue name, YAML path, or an inline scenario mapping.")
    grouping: Literal["vehicle", "platoon"] = Field("vehicle", description="RLlib agents: one per member or per platoon.")
    module: str = Field("mlp", description="RLModule kind, a key of `MODULES`.")
    model: dict[str, Any] = Field(default_factory=dict, description="The module's model_config (validated by the module).")
    learner: dict[str, Any] = Field(default_factory=dict, description="learner_config_dict for the module's learner.")
    duration: float | None = Field(None, gt=0, description="Episode length override [s].")
    platoon_reward: Literal["mean", "sum"] = Field("mean", description="Platoon grouping: aggregate of member rewards.")
    act_steps: int = Field(1, ge=1, description="Platoon grouping: policy steps per env step (an action chunk run "
                           "open-loop); RLlib's env steps and batch sizes count chunks.")
    env_runners: int = Field(0, ge=0, description="Remote EnvRunner actors (0 = sample in the driver process).")
    envs_per_runner: int = Field(1, ge=1, description="Vectorized env copies per runner.")
    cpus_per_runner: float = Field(1, gt=0, description="CPUs reserved per remote EnvRunner.")
    rollout_fragment_length: int | Literal["auto"] = Field("auto", description="Steps per runner sample call.")
    train_batch_size: int = Field(2000, ge=1, description="Env steps per training iteration (per learner).")
    minibatch_size: int = Field(250, ge=1, description="SGD minibatch size.")
    num_epochs: int = Field(5, ge=1, description="Passes over each train batch.")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate.")
    clip: float = Field(0.2, gt=0, description="PPO ratio clip.")
    vf_clip: float = Field(10000.0, gt=0, description="Clamp of the squared value error (beyond it the value "
                           "gradient is 0, so it must exceed the squared return scale; episode returns here are "
                           "−50 to −300).")
    vf_loss_coeff: float = Field(0.5, ge=0, description="Weight of the value loss.")
    entropy_coeff: float = Field(0.0, ge=0, description="Weight of the entropy bonus.")
    grad_clip: float | None = Field(0.5, gt=0, description="Global gradient-norm clip (null: off).")
    gamma: float = Field(0.99, gt=0, le=1, description="Discount.")
    lambda_: float = Field(0.95, ge=0, le=1, alias="lambda", description="GAE lambda.")
    iterations: int = Field(20, ge=1, description="Training iterations in total (a resumed run counts earlier ones).")
    checkpoint_every: int = Field(5, ge=1, description="Checkpoint period in iterations (the last one is always saved).")
    evaluation_every: int = Field(0, ge=0, description="Evaluation period in iterations (0: off).")
    evaluation_episodes: int = Field(4, ge=1, description="Episodes per evaluation (deterministic actions).")
    metrics_episodes: int = Field(20, ge=1, description="Episodes averaged into each iteration's return.")
    seed: int = Field(0, ge=0, description="Seed of torch, the env runners' episode streams and RLlib.")
    torch_threads: int = Field(1, ge=1, description="torch threads in the driver, learner and env runners.")
    out: str = Field("runs/run", description="Run folder.")

    @field_validator("module")
    @classmethod
    def _known_module(cls, value: str) -> str:
        if value not in MODULES:
            raise ValueError(f"expected one of {', '.join(MODULES)}, got {value!r}")  # registration order
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.act_steps > 1 and self.grouping != "platoon":
            raise ValueError(f"act_steps ({self.act_steps}) needs grouping 'platoon'")
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size ({self.minibatch_size}) must not exceed train_batch_size "
                             f"({self.train_batch_size})")
        return self

    def env_config(self) -> dict[str, Any]:
        """The env_config of `PlatoonMultiAgentEnv` (plus `torch_threads` for the env runners)."""
        cfg: dict[str, Any] = {"scenario": self.scenario, "grouping": self.grouping,
                               "platoon_reward": self.platoon_reward, "torch_threads": self.torch_threads,
                               "act_steps": self.act_steps}
        if self.duration is not None:
            cfg["duration"] = self.duration
        return cfg


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read and validate a training config; every problem is reported as ``file:line: field: message``."""
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise ScenarioError(source, [Problem((), "expected an existing training config file, found none")])
    data, lines = parse_yaml(p.read_text(encoding="utf-8", errors="replace"), source)
    return validate_config(data, source, lines)


def validate_config(data: dict[str, Any], source: str = "<config>", lines: dict | None = None) -> TrainConfig:
    """Validate parsed config data (and an inline or named scenario); raise `ScenarioError` on problems."""
    lines = lines or {}
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(source, schema_problems(exc, lines, root=TrainConfig)) from None
    _check_semantics(cfg, source, lines)
    return cfg


def _check_semantics(cfg: TrainConfig, source: str, lines: dict) -> None:
    """Scenario, module/grouping pairing and module settings, checked before Ray starts.

    Errors of an inline scenario or of `model` point into the config file."""
    from diffplatoon.envs.rllib_env import resolve_scenario
    from diffplatoon.scenarios import validate_data

    if isinstance(cfg.scenario, dict):
        sub = {path[1:]: line for path, line in lines.items() if path[:1] == ("scenario",)}
        try:
            validate_data(dict(cfg.scenario), source, sub)
        except ScenarioError as exc:
            raise ScenarioError(source, [Problem(("scenario", *p.path), p.message, p.line) for p in exc.problems]) from None
    else:
        resolve_scenario(cfg.scenario)
    builder = MODULES[cfg.module]
    problems = []
    if cfg.grouping not in builder.groupings:
        problems.append(Problem(("grouping",), f"module {cfg.module!r} needs grouping "
                                f"{' or '.join(builder.groupings)}, got {cfg.grouping!r}", line_of(lines, ("grouping",))))
    schemas = [("model", builder.model_schema, cfg.model), ("learner", builder.learner_schema, cfg.learner)]
    for key, make_schema, value in schemas:
        if make_schema is None:
            continue
        schema = make_schema()
        try:
            schema.model_validate(value)
        except ValidationError as exc:
            problems.extend(schema_problems(exc, lines, root=schema, prefix=(key,)))
    if problems:
        raise ScenarioError(source, problems)


# -- modules ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleBuilder:
    """How one module kind plugs into PPO.

    Attributes:
        configure: (train config, PPOConfig, a probe env) → PPOConfig with policies, mapping, RLModule spec
            and, if the kind needs one, its learner class.
        groupings: env groupings the module accepts.
        module_ids: RLModule ids it trains (the `rllib:` policy loads the first).
        model_schema: () → the pydantic model that validates `TrainConfig.model` (imported on call).
        learner_schema: () → the pydantic model that validates `TrainConfig.learner`; None: no learner settings.
    """

    configure: Callable[..., Any]
    groupings: tuple[str, ...]
    module_ids: tuple[str, ...]
    model_schema: Callable[[], type[BaseModel]]
    learner_schema: Callable[[], type[BaseModel]] | None = None


def _configure_mlp(cfg: TrainConfig, ppo: Any, env: Any) -> Any:
    """Vehicle grouping, one parameter-shared `SharedMLPModule` for every member."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from diffplatoon.agents.rllib.mlp_module import SharedMLPModule

    spec = RLModuleSpec(module_class=SharedMLPModule, model_config=dict(cfg.model))
    return (ppo
            .multi_agent(policies={VEHICLE_MODULE_ID}, policy_mapping_fn=_map_to_vehicle,
                         count_steps_by="env_steps")
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={VEHICLE_MODULE_ID: spec})))


def _mlp_schema() -> type[BaseModel]:
    from diffplatoon.agents.rllib.mlp_module import MLPModuleConfig

    return MLPModuleConfig


def _map_to_vehicle(agent_id: str, episode: Any = None, **kwargs: Any) -> str:
    return VEHICLE_MODULE_ID


def _configure_diffusion(cfg: TrainConfig, ppo: Any, env: Any) -> Any:
    """Platoon grouping, one `DiffusionPlannerModule` for every platoon, trained by `DPPOLearner`;
    the scenario's fields of the model config come from the probe env (`module_model_config`)."""
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from diffplatoon.agents.rllib.diffusion_module import DiffusionPlannerModule, module_model_config
    from diffplatoon.agents.rllib.dppo_learner import DPPOLearner

    model = module_model_config(dict(cfg.model), env.spec, cfg.torch_threads, cfg.act_steps)
    module_spec = RLModuleSpec(module_class=DiffusionPlannerModule, model_config=model)
    return (ppo
            .multi_agent(policies={PLATOON_MODULE_ID}, policy_mapping_fn=_map_to_platoon,
                         count_steps_by="env_steps")
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={PLATOON_MODULE_ID: module_spec}))
            .learners(learner_class=DPPOLearner))


def _diffusion_schema() -> type[BaseModel]:
    from diffplatoon.agents.rllib.diffusion_module import DiffusionModuleConfig

    return DiffusionModuleConfig


def _dppo_learner_schema() -> type[BaseModel]:
    from diffplatoon.agents.rllib.dppo_learner import DPPOLearnerConfig

    return DPPOLearnerConfig


def _map_to_platoon(agent_id: str, episode: Any = None, **kwargs: Any) -> str:
    return PLATOON_MODULE_ID


# name → builder. A new module kind adds one entry (its configure function may import lazily).
MODULES: dict[str, ModuleBuilder] = {
    "mlp": ModuleBuilder(_configure_mlp, ("vehicle",), (VEHICLE_MODULE_ID,), _mlp_schema),
    "diffusion": ModuleBuilder(_configure_diffusion, ("platoon",), (PLATOON_MODULE_ID,), _diffusion_schema,
                               _dppo_learner_schema),
}


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

    env_config = cfg.env_config()
    probe = PlatoonMultiAgentEnv(env_config)
    ppo = (PPOConfig()
           .environment(PlatoonMultiAgentEnv, env_config=env_config)
           .env_runners(num_env_runners=cfg.env_runners, num_envs_per_env_runner=cfg.envs_per_runner,
                        num_cpus_per_env_runner=cfg.cpus_per_runner,
                        rollout_fragment_length=cfg.rollout_fragment_length)
           .learners(num_learners=0)
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


def _save_checkpoint(algo: Any, cfg: TrainConfig, out: Path, iteration: int) -> Path:
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


def _write_run_json(out: Path, cfg: TrainConfig, iteration: int, latest: Path | None, started: float) -> None:
    import ray
    import torch

    atomic_write_json(out / "run.json", {
        "name": cfg.name, "config": cfg.model_dump(mode="json", by_alias=True), "iterations_done": iteration,
        "latest_checkpoint": latest.name if latest else None, "started": started, "updated": time.time(),
        "versions": {"ray": ray.__version__, "torch": torch.__version__},
    })


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Keep metrics rows of iterations <= `iteration`, each once (rewritten atomically)."""
    rows, seen = [], set()
    for row in read_jsonl(path):
        it = int(row.get("iteration", -1))
        if 0 < it <= iteration and it not in seen:
            seen.add(it)
            rows.append(row)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _summary_writer(out: Path) -> Any:
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
    }
    evaluation = result.get("evaluation", {}).get("env_runners", {})
    if evaluation:
        row["eval_return_mean"] = evaluation.get("episode_return_mean")
        row["eval_collisions"] = evaluation.get("collisions")
    for mid, stats in result.get("learners", {}).items():
        if mid.startswith("__") or not isinstance(stats, dict):
            continue
        for key in ("policy_loss", "vf_loss", "entropy", "total_loss", "mean_kl_loss", "vf_explained_var",
                    "clip_fraction", "shield_rate", "bc_loss"):
            if key in stats:
                row[f"{mid}/{key}"] = float(stats[key])
    return {k: (v if k == "iteration" or v is None or isinstance(v, (bool, str)) else float(v)) for k, v in row.items()}


def _progress_line(cfg: TrainConfig, row: dict[str, Any]) -> str:
    def f(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    return (f"[bold]{cfg.name}[/] iter {row['iteration']:>4d}/{cfg.iterations}  return {f(row['return_mean'], '8.2f')}"
            f"  len {f(row['episode_len_mean'], '5.1f')}  collisions {f(row['collisions'], '4.2f')}"
            f"  {row['policy_steps_per_s']:5.0f} steps/s  {row['time_s']:5.1f} s")


def plot_learning_curve(metrics_path: Path, png: Path) -> Path | None:
    """Return, collisions and throughput per iteration as a PNG; None without rows."""
    rows = list(read_jsonl(metrics_path))
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [r["iteration"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, key, label in zip(axes, ("return_mean", "collisions", "policy_steps_per_s"),
                              ("mean episode return", "collisions per episode", "policy steps / s")):
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
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return png


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
            _truncate_metrics(metrics_path, done)
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
        _write_run_json(out, cfg, int(algo.iteration), latest, started)
        writer = _summary_writer(out)

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
            console.print(_progress_line(cfg, row), highlight=False)
            if iteration % cfg.checkpoint_every == 0 or iteration >= cfg.iterations:
                latest = _save_checkpoint(algo, cfg, out, iteration)
                _write_run_json(out, cfg, iteration, latest, started)
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
