"""`DiffusionModuleConfig`: the `model_config` of the DPPO module, and its completion from a scenario and a
pre-trained planner checkpoint (`module_model_config`), done by the training driver."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from diffplatoon.agents.diffusion.guidance import CostWeights, GuidanceConfig
from diffplatoon.geometry import VEHICLE_LENGTH, VEHICLE_WIDTH


class DiffusionModuleConfig(BaseModel):
    """`model_config` of `DiffusionPlannerModule` (the fields under "filled from the scenario" are set by the driver)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(None, description="Pre-trained planner checkpoint (best.pt); null: random init.")
    planner: dict[str, Any] = Field(default_factory=dict, description="PlannerConfig fields of a random init "
                                    "(filled from the checkpoint by the driver, so RLlib checkpoints rebuild without it).")
    init_from_ema: bool = Field(True, description="Start fine-tuning from the checkpoint's EMA weights.")
    denoising_steps: int = Field(5, ge=1, description="DDIM steps per env step.")
    ft_steps: int = Field(5, ge=1, description="K: the last K denoising steps are fine-tuned.")
    horizon: int | None = Field(None, ge=1, description="Plan length [steps] (null: the planner's).")
    eta: float = Field(0.0, ge=0, le=1, description="DDIM eta (stochasticity beyond min_std).")
    min_std: float = Field(0.1, gt=0, description="Minimum std of a denoising step (normalised action units).")
    min_logprob_std: float = Field(0.1, gt=0, description="Minimum std in the log-probability.")
    noise_clip: float = Field(3.0, gt=0, description="Step noise clipped to ±noise_clip std.")
    act_steps: int = Field(1, ge=1, description="Plan steps executed per env step (filled from the training "
                           "config: the env's action chunk).")
    logprob_steps: int | None = Field(None, ge=1, description="Plan steps in the log-probability (null: the executed "
                                      "act_steps).")
    update_steps: int | None = Field(None, ge=1, description="Fine-tuned steps recomputed per minibatch, drawn at "
                                     "random from the K (null: all K); the learner's cost scales with it.")
    guidance: dict[str, Any] | None = Field(None, description="GuidanceConfig fields (weights as a mapping); null: off.")
    shield: bool = Field(False, description="Check the plan with SafetyShield and brake when it fails.")
    shield_steps: int = Field(5, ge=1, description="Plan steps the shield checks.")
    shielded_steps: Literal["drop", "train"] = Field("drop", description="Steps whose plan the shield overrode: "
                                                     "'drop' leaves them out of the policy loss; 'train' scores the "
                                                     "sampled plan with the advantage of what the shield executed "
                                                     "(the shield as part of the environment).")
    shield_corridor: bool = Field(False, description="Give the shield each member's lane corridor (road check, "
                                  "lane-kept fallback), as the `diffusion:` policy does. Off by default under RL: "
                                  "with the pre-trained planner it raised the override rate from 28 % to 65 % of "
                                  "steps (dropped from the policy loss) and halved training throughput.")
    max_neighbours: int = Field(16, ge=1, description="Non-platoon vehicles given to guidance and the shield.")
    critic_hiddens: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        [256, 256], min_length=1, max_length=16, description="Hidden widths of the critic.")
    inference_seed: int = Field(0, ge=0, description="Seed of the start noise of deterministic inference.")
    torch_threads: int = Field(1, ge=1, description="torch threads (filled from the training config).")
    # filled from the scenario by the training driver
    neighbours: int = Field(8, ge=1, description="K neighbour slots of the flat observation.")
    lane_points: int = Field(5, ge=1, description="Lane points of the flat observation.")
    vehicle_limits: tuple[float, float, float] = Field((4.0, 8.0, 0.6), description="[max acceleration, max "
                                                       "deceleration, max steering] of the env's action scaling.")
    vehicle_length: float = Field(VEHICLE_LENGTH, gt=0, description="Member length [m] (shield).")
    vehicle_width: float = Field(VEHICLE_WIDTH, gt=0, description="Member width [m] (shield).")

    @model_validator(mode="after")
    def _steps(self) -> "DiffusionModuleConfig":
        if self.ft_steps > self.denoising_steps:
            raise ValueError(f"ft_steps ({self.ft_steps}) must not exceed denoising_steps ({self.denoising_steps})")
        if self.update_steps is not None and self.update_steps > self.ft_steps:
            raise ValueError(f"update_steps ({self.update_steps}) must not exceed ft_steps ({self.ft_steps})")
        if self.shield and self.shield_steps < self.act_steps:
            raise ValueError(f"shield_steps ({self.shield_steps}) must cover the executed act_steps ({self.act_steps})")
        return self

    @property
    def logprob_horizon(self) -> int:
        """Plan steps in the log-probability."""
        return self.logprob_steps if self.logprob_steps is not None else self.act_steps

    def guidance_config(self) -> GuidanceConfig | None:
        """The GuidanceConfig of `guidance`, or None."""
        if self.guidance is None:
            return None
        fields = dict(self.guidance)
        weights = fields.pop("weights", None)
        cfg = GuidanceConfig(**fields)
        return cfg if weights is None else GuidanceConfig(**{**fields, "weights": CostWeights(**weights)})


def planner_config_of(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """The PlannerConfig (as a plain dict) stored in a planner checkpoint."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return dict(ckpt["config"])


def module_model_config(model: dict[str, Any], spec: Any, torch_threads: int = 1, act_steps: int = 1) -> dict[str, Any]:
    """`model` completed with the scenario's fields (observation layout, action scaling, vehicle size).

    A pre-trained checkpoint's path is made absolute and its PlannerConfig copied into ``planner``, so an
    RLlib checkpoint rebuilds the module without the file. One module drives every platoon: the first
    platoon's vehicle type sets the action scaling."""
    vehicle = spec.platoons[0].vehicle
    out = {**model, "neighbours": spec.observation.neighbours, "lane_points": spec.observation.lane_points,
           "vehicle_limits": (vehicle.max_acceleration, vehicle.max_deceleration, vehicle.max_steering),
           "vehicle_length": vehicle.length, "vehicle_width": vehicle.width, "torch_threads": torch_threads,
           "act_steps": act_steps}
    if out.get("checkpoint"):
        path = Path(out["checkpoint"]).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"model.checkpoint: expected a planner checkpoint, found none at {path}")
        out["checkpoint"] = str(path)
        out["planner"] = planner_config_of(path)
        dt, step = float(out["planner"]["dt"]), 1.0 / spec.policy_frequency
        if abs(dt - step) > 1e-9:
            raise ValueError(f"{path} plans in steps of {dt} s; the scenario's policy step is {step} s")
    return DiffusionModuleConfig.model_validate(out).model_dump()
