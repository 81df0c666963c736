"""What a training run is: the validated `TrainConfig` and the module kinds (`MODULES`) it may name.

`load_config` reads a YAML file and reports every problem as ``file:line: field: message``
(the scenario, the module/grouping pairing and the module's own settings included), before Ray
starts. `MODULES` maps a module kind to the `ModuleBuilder` that fills in the multi-agent part
of the `PPOConfig`: "mlp" is the vehicle-level CTDE baseline (`SharedMLPModule`); "diffusion"
is the platoon-level planner fine-tuned with DPPO (`DiffusionPlannerModule` + `DPPOLearner`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffplatoon.scenarios.errors import Problem, ScenarioError
from diffplatoon.scenarios.loader import schema_problems
from diffplatoon.scenarios.yaml_source import line_of, parse_yaml

VEHICLE_MODULE_ID = "vehicle"
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
    learners: int = Field(0, ge=0, description="Remote Learner actors, each updating on its share of the batch and "
                          "averaging gradients (0 = learn in the driver process). `train_batch_size` is per "
                          "learner: an iteration samples that many env steps for each.")
    gpus_per_learner: float = Field(0, ge=0, description="GPUs per learner (0 = CPU); with `learners: 0` the "
                                    "driver's own learner takes the GPU.")
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
