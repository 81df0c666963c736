"""Centralized joint diffusion planner for platoons: denoiser, noise schedule and DDIM sampler, bicycle rollout,
safety/comfort guidance costs, normaliser, checkpoints and the training step.

Modules: ``kinematics`` (differentiable bicycle rollout), ``schedule`` (cosine schedule, DDPM noising, DDIM),
``model`` (encoder + comm-masked transformer denoiser), ``normalizer``, ``guidance`` (costs, GuidanceConfig),
``planner`` (JointDiffusionPlanner, PlannerConfig, Plan), ``train`` (Batch, TrainConfig, Trainer).
"""

from diffplatoon.agents.diffusion.guidance import CostWeights, GuidanceConfig, SceneContext, plan_costs
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, Plan, PlannerConfig
from diffplatoon.agents.diffusion.train import Batch, TrainConfig, Trainer

__all__ = [
    "Batch",
    "CostWeights",
    "GuidanceConfig",
    "JointDiffusionPlanner",
    "Plan",
    "PlannerConfig",
    "SceneContext",
    "TrainConfig",
    "Trainer",
    "plan_costs",
]
