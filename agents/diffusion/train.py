"""Training of the joint denoiser on in-memory tensors: DDPM x0 loss, inbox dropout, AdamW, EMA, grad clipping.

``Trainer`` owns the optimiser, the step counter and the RNG; ``state_dict()`` / ``load_state_dict()`` hold
everything a resumable wrapper needs besides the planner's own weights (model, EMA, normaliser), and
``Trainer.save(path)`` writes all of it into one planner checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner


@dataclass
class Batch:
    """One training batch of platoon scenes (B scenes, N members, K inbox slots, H steps).

    Attributes:
        obs (B,N,obs_dim), inbox (B,N,K,msg_dim), inbox_mask (B,N,K) bool, comm_mask (B,N,N) bool,
        member_mask (B,N) bool, ego_state (B,N,4) platoon frame, length (B,N) [m],
        actions (B,N,H,2) the demonstrated [acceleration, steering].
    """

    obs: torch.Tensor
    inbox: torch.Tensor
    inbox_mask: torch.Tensor
    comm_mask: torch.Tensor
    member_mask: torch.Tensor
    ego_state: torch.Tensor
    length: torch.Tensor
    actions: torch.Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def index(self, idx: torch.Tensor) -> Batch:
        """Scenes at ``idx``."""
        return Batch(**{f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self)})

    def to(self, device: torch.device) -> Batch:
        """Move to a device, with masks as bool and the rest float32."""
        out = {}
        for f in dataclasses.fields(self):
            v = torch.as_tensor(getattr(self, f.name))
            out[f.name] = v.to(device, torch.bool if f.name.endswith("mask") else torch.float32)
        return Batch(**out)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        lr, weight_decay, betas: AdamW.
        grad_clip: max global gradient norm.
        ema_decay: EMA decay (warmed up as min(decay, (1 + step) / (10 + step))).
        inbox_dropout: probability of dropping each received message (condition dropout).
        comm_dropout: probability of dropping each off-diagonal comm edge (robustness to link loss).
        batch_size: scenes per step when sampling from an in-memory Batch.
        seed: seeds noise, timesteps, dropout and minibatch sampling.
    """

    lr: float = 3e-4
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.995
    inbox_dropout: float = 0.25
    comm_dropout: float = 0.0
    batch_size: int = 64
    seed: int = 0


def ddpm_loss(
    planner: JointDiffusionPlanner,
    batch: Batch,
    generator: torch.Generator,
    inbox_dropout: float = 0.0,
    comm_dropout: float = 0.0,
) -> torch.Tensor:
    """Masked MSE between the model's x̂0 and the normalised clean actions at a random diffusion step."""
    dev = planner.device
    b, n, horizon, _ = batch.actions.shape
    member_mask = batch.member_mask
    x0 = planner.encode_actions(batch.actions)
    inbox_mask = batch.inbox_mask
    comm_mask = batch.comm_mask
    if inbox_dropout > 0:
        inbox_mask = inbox_mask & (torch.rand(inbox_mask.shape, generator=generator, device=dev) >= inbox_dropout)
    if comm_dropout > 0:
        keep = torch.rand(comm_mask.shape, generator=generator, device=dev) >= comm_dropout
        comm_mask = comm_mask & (keep | torch.eye(n, dtype=torch.bool, device=dev))
    t = planner.schedule.sample_timesteps(b, generator, dev)
    noise = torch.randn(x0.shape, generator=generator, device=dev)
    x_t = planner.schedule.add_noise(x0, noise, t)
    obs_n, inbox_n, ego_n = planner.normalized_inputs(batch.obs, batch.inbox, batch.ego_state, batch.length)
    x0_hat = planner.model(x_t, t, obs_n, ego_n, inbox_n, inbox_mask, comm_mask, member_mask)
    w = member_mask[..., None, None].float()
    return ((x0_hat - x0).pow(2) * w).sum() / (w.sum() * horizon * 2).clamp(min=1.0)


class Trainer:
    """One optimisation step at a time over a planner's model, with EMA and a resumable state."""

    def __init__(self, planner: JointDiffusionPlanner, config: TrainConfig = TrainConfig()):
        self.planner = planner
        self.config = config
        self.optimizer = torch.optim.AdamW(
            planner.model.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=config.betas
        )
        self.step = 0
        self.generator = torch.Generator(device=planner.device).manual_seed(config.seed)
        if planner.train_state:
            self.load_state_dict(planner.train_state)

    def fit_normalizer(self, batch: Batch) -> None:
        """Fit the planner's normaliser on a (large) batch of demonstrations."""
        p = self.planner
        batch = batch.to(p.device)
        ego = torch.cat((batch.ego_state, batch.length[..., None]), dim=-1)
        p.normalizer.fit(batch.obs, batch.inbox, batch.inbox_mask, ego, p.clip_actions(batch.actions), batch.member_mask)

    def train_step(self, batch: Batch) -> float:
        """One AdamW step on ``batch``; updates the EMA; returns the loss."""
        p = self.planner
        if not bool(p.normalizer.fitted):
            self.fit_normalizer(batch)
        batch = batch.to(p.device)
        p.model.train()
        loss = ddpm_loss(p, batch, self.generator, self.config.inbox_dropout, self.config.comm_dropout)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(p.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self._update_ema()
        self.step += 1
        return float(loss.detach())

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.ema_decay, (1 + self.step) / (10 + self.step))
        for e, m in zip(self.planner.ema.parameters(), self.planner.model.parameters()):
            e.lerp_(m, 1 - decay)
        for e, m in zip(self.planner.ema.buffers(), self.planner.model.buffers()):
            e.copy_(m)

    def minibatches(self, data: Batch) -> Iterator[Batch]:
        """Endless random minibatches (with reshuffling) from an in-memory Batch."""
        size = min(self.config.batch_size, len(data))
        while True:
            perm = torch.randperm(len(data), generator=torch.Generator().manual_seed(self.config.seed + self.step))
            for i in range(0, len(data) - size + 1, size):
                yield data.index(perm[i : i + size])

    def fit(self, data: Batch | Iterable[Batch], num_steps: int) -> list[float]:
        """Run ``num_steps`` steps on an in-memory Batch (random minibatches) or an iterable of batches."""
        if isinstance(data, Batch):
            if not bool(self.planner.normalizer.fitted):
                self.fit_normalizer(data)
            data = self.minibatches(data)
        losses = []
        it = iter(data)
        for _ in range(num_steps):
            try:
                batch = next(it)
            except StopIteration:
                break
            losses.append(self.train_step(batch))
        return losses

    def state_dict(self) -> dict:
        """Optimiser, step, RNG and config: with the planner's checkpoint, enough to resume exactly."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "generator": self.generator.get_state(),
            "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.config).items()},
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.generator.set_state(state["generator"].cpu())

    def save(self, path: str | Path) -> None:
        """Atomic checkpoint of model + EMA + normaliser + config + optimiser + step + RNG."""
        self.planner.save(path, train_state=self.state_dict())
