"""Noise schedule and samplers: cosine ᾱ schedule, forward noising for the DDPM loss, and the DDIM update.

The denoiser predicts the clean sample x0 (not ε). With ᾱ_t the cumulative signal level:

    training (DDPM, x0-prediction):  x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε,   loss = ‖x̂0(x_t, t) − x0‖²
    DDIM step t → s (s < t):         ε̂ = (x_t − √ᾱ_t · x̂0) / √(1 − ᾱ_t)
                                     σ = η · √((1 − ᾱ_s)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_s)
                                     x_s = √ᾱ_s · x̂0 + √(1 − ᾱ_s − σ²) · ε̂ + σ · z

(Song et al., DDIM, arXiv 2010.02502; cosine schedule from Nichol & Dhariwal, arXiv 2102.09672.)
Every random draw takes an explicit ``torch.Generator``, so sampling is deterministic for a given seed.
"""

from __future__ import annotations

import math

import torch


class CosineSchedule:
    """Discrete cosine schedule with ``num_train_steps`` steps; t = 0 is the least noisy step."""

    def __init__(self, num_train_steps: int = 100, s: float = 0.008, max_beta: float = 0.999):
        self.num_train_steps = num_train_steps
        steps = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()  # (T,)

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """ᾱ_t for integer steps t (any shape); t = −1 means the clean sample (ᾱ = 1)."""
        ab = self.alphas_cumprod.to(t.device)
        return torch.where(t >= 0, ab[t.clamp(min=0)], torch.ones((), device=t.device))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Forward process q(x_t | x0) for per-sample steps t of shape (B,) and x0 of shape (B, ...)."""
        ab = self.alpha_bar(t).view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Uniform training steps in [0, T)."""
        return torch.randint(0, self.num_train_steps, (batch,), generator=generator, device=device)

    def ddim_timesteps(self, steps: int) -> list[int]:
        """Evenly spaced decreasing steps from T−1 for a ``steps``-step sampler (the last update goes to t = −1)."""
        if not 1 <= steps <= self.num_train_steps:
            raise ValueError(f"steps must be in [1, {self.num_train_steps}], got {steps}")
        grid = torch.linspace(self.num_train_steps - 1, 0, steps).round().long().tolist()
        return [int(t) for t in grid]

    def ddim_step(
        self,
        x_t: torch.Tensor,
        x0_hat: torch.Tensor,
        t: int,
        t_prev: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """DDIM update from step t to t_prev (t_prev = −1 returns x0_hat) given the model's clean estimate."""
        if t_prev < 0:
            return x0_hat
        ab_t = float(self.alphas_cumprod[t])
        ab_s = float(self.alphas_cumprod[t_prev])
        eps_hat = (x_t - math.sqrt(ab_t) * x0_hat) / math.sqrt(1 - ab_t)
        sigma = eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(max(0.0, 1 - ab_t / ab_s))
        x_s = math.sqrt(ab_s) * x0_hat + math.sqrt(max(0.0, 1 - ab_s - sigma**2)) * eps_hat
        if sigma > 0:
            z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            x_s = x_s + sigma * z
        return x_s
