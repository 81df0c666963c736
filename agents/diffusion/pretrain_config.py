"""What a pre-training run is: the validated `PretrainConfig` (YAML) and the planner it builds.

`load_config` reports every problem of a config file as ``file:line: field: message`` (`ConfigError`);
`planner_config` turns the model section and the demos' dimensions into the `PlannerConfig`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffplatoon.agents.diffusion.dataset import DemoData
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import PlannerConfig
from diffplatoon.agents.diffusion.selection import SelectionSection
from diffplatoon.agents.diffusion.train import TrainConfig
from diffplatoon.scenarios.errors import Problem, ScenarioError
from diffplatoon.scenarios.loader import schema_problems
from diffplatoon.scenarios.yaml_source import parse_yaml


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
    oversample: dict[str, Annotated[int, Field(ge=1, le=1000)]] = Field(
        default_factory=dict,
        description="Training scenes of shards whose file name contains the key are repeated this many times, e.g. "
                    "{__dagger: 4} weights DAgger rounds 4:1 against the demonstrations they were added to.")


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

    demos: str | Annotated[list[str], Field(min_length=1)] = Field(
        "runs/demos", description="Demo folder written by `diffplatoon demos collect`, or a list of them (e.g. "
                                  "DAgger rounds and a mix): their union, each shard once.")
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


def _problem(path: tuple, message: str) -> Problem:
    return Problem(path, message)
