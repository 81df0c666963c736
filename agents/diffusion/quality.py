"""Quality of a planner on held-out demonstrations, the report at the end of pre-training.

minADE/minFDE of K joint samples against the expert future [m] (per scene, the best sample's mean
over members and steps), and the share of sampled joint plans in which two members' oriented boxes
overlap at some step, sampled unguided and guided; beside them the expert's own overlap rate and how
far the bicycle rollout of the expert's actions is from what the simulator did.
"""

from __future__ import annotations

import numpy as np
import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.dataset import DemoSet
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
from diffplatoon.agents.diffusion.pretrain_config import PretrainConfig
from diffplatoon.geometry import box_corners, boxes_overlap


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
