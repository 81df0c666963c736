"""What `DiffusionPlannerModule` stores per env step and what its learner reads back from the train batch.

Column names of the extra model outputs (the chain, its guidance shifts and log-probabilities, the
shield flag, the planner inputs: see `diffusion_module`), which rows enter the policy loss
(`policy_rows`), and the critic's input (`platoon_state`). Shared by the module and `dppo_learner`.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns

from diffplatoon.agents.rllib.mlp_module import symlog

CHAIN, SHIFT, CHAIN_LOGP, SHIELDED = "chain", "chain_shift", "chain_logp", "shielded"
LOGP_RANGE = (-5.0, 2.0)  # clamp of a denoising step's log-probability (as DPPO clamps it)
FT_INDEX = "ft_index"  # train output: which fine-tuned steps `chain_logp` holds when `update_steps` < K
INPUT_KEYS = {"obs": "p_obs", "inbox": "p_inbox", "inbox_mask": "p_inbox_mask", "comm_mask": "p_comm_mask",
              "member_mask": "p_member_mask", "ego_state": "p_ego", "length": "p_length"}


def policy_rows(batch: dict[str, Any], shielded_steps: str = "drop") -> torch.Tensor:
    """(B,) bool: train-batch rows that enter the policy loss: real steps, and with ``shielded_steps`` "drop"
    only those whose sampled plan was executed."""
    shielded = batch[SHIELDED]
    rows = shielded < 0.5 if shielded_steps == "drop" else torch.ones_like(shielded, dtype=torch.bool)
    if Columns.LOSS_MASK in batch:
        rows = rows & batch[Columns.LOSS_MASK].bool()
    return rows


def platoon_state(obs: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, N·(D + 7)) critic input: symlog flat observations, member mask, poses relative to the first present member."""
    mask = obs["member_mask"].float()  # (B, N)
    pose = obs["pose"].float()
    first = torch.argmax((mask > 0.5).int(), dim=1)  # 0 when none is present
    origin = pose[torch.arange(len(pose)), first]  # (B, 4)
    c, s = torch.cos(origin[:, 2:3]), torch.sin(origin[:, 2:3])
    dx, dy = pose[..., 0] - origin[:, 0:1], pose[..., 1] - origin[:, 1:2]
    dh = pose[..., 2] - origin[:, 2:3]
    rel = torch.stack([c * dx + s * dy, -s * dx + c * dy, torch.sin(dh), torch.cos(dh), pose[..., 3],
                       obs["length"].float()], dim=-1) * mask[..., None]  # (B, N, 6)
    flat = obs["obs"].float() * mask[..., None]
    return torch.cat([symlog(flat).flatten(1), mask, symlog(rel).flatten(1)], dim=1)

