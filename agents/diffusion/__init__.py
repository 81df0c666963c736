"""Centralized joint diffusion planner for platoons: denoiser, noise schedule and DDIM sampler, bicycle rollout,
safety/comfort guidance costs, normaliser, checkpoints and the training step.

Modules: ``kinematics`` (differentiable bicycle rollout), ``schedule`` (cosine schedule, DDPM noising, DDIM step
mean/sigma and sampling loop), ``model`` (encoder + comm-masked transformer denoiser, DenoiserConfig),
``normalizer``, ``guidance`` (costs, GuidanceConfig, CostGuidance), ``planner`` (JointDiffusionPlanner,
PlannerConfig, Plan), ``train`` (Batch, TrainConfig, Trainer), ``features`` and ``corridor`` (platoon-frame
inputs, lane corridors), ``shield`` and ``shield_scene`` (SafetyShield, ShieldLevel), ``controller``
(PlannerController: the one pipeline from observations to executed actions, used by the ``diffusion:`` policy
in ``policy`` and by the DPPO RLModule), ``warm_start`` (the previous plan as the prior of the next),
``demos``, ``dataset``, ``pretrain_config`` and ``pretrain`` (offline pre-training), ``quality`` (held-out plan
quality), ``selection`` (closed-loop checkpoint selection).
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
