"""Per-channel normalisation of the planner's inputs and outputs, stored as buffers so it travels with the checkpoint.

Channels: member observations (obs_dim), V2V messages (msg_dim), the member's start state plus its length
(``[x, y, heading, speed, length]`` in the platoon frame) and actions (``[acceleration, steering]``).
Statistics are masked means/stds over present members and received messages only.
"""

from __future__ import annotations

import torch
from torch import nn

_MIN_STD = 1e-3  # channels with a smaller spread are treated as constant: centred, not scaled


def _masked_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std over all leading dims of x (..., C) where mask (...) is True."""
    flat = x.reshape(-1, x.shape[-1]).double()
    m = mask.reshape(-1)
    if not bool(m.any()):
        return torch.zeros(x.shape[-1]), torch.ones(x.shape[-1])
    sel = flat[m]
    mean = sel.mean(0)
    std = sel.std(0, unbiased=False)
    std = torch.where(std < _MIN_STD, torch.ones_like(std), std)
    return mean.float(), std.float()


class Normalizer(nn.Module):
    """Affine per-channel normaliser (x − mean) / std for obs, msg, ego and action channels."""

    EGO_DIM = 5  # [x, y, heading, speed, length]

    def __init__(self, obs_dim: int, msg_dim: int, action_dim: int = 2):
        super().__init__()
        for name, dim in (("obs", obs_dim), ("msg", msg_dim), ("ego", self.EGO_DIM), ("action", action_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit(
        self,
        obs: torch.Tensor,
        inbox: torch.Tensor,
        inbox_mask: torch.Tensor,
        ego: torch.Tensor,
        actions: torch.Tensor,
        member_mask: torch.Tensor,
    ) -> None:
        """Set statistics from a data sample: obs (B,N,D), inbox (B,N,K,M), ego (B,N,5), actions (B,N,H,2)."""
        member_mask = member_mask.bool()
        pairs = (
            ("obs", obs, member_mask),
            ("msg", inbox, inbox_mask.bool() & member_mask[..., None]),
            ("ego", ego, member_mask),
            ("action", actions, member_mask[..., None].expand(actions.shape[:-1])),
        )
        for name, x, mask in pairs:
            mean, std = _masked_stats(x, mask)
            getattr(self, f"{name}_mean").copy_(mean)
            getattr(self, f"{name}_std").copy_(std)
        self.fitted.fill_(True)

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(x − mean) / std for channel group ``name`` in {obs, msg, ego, action}."""
        return (x - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def denormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Inverse of ``normalize``."""
        return x * getattr(self, f"{name}_std") + getattr(self, f"{name}_mean")
