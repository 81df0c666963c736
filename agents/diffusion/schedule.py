"""Noise schedule and samplers: cosine ᾱ schedule, forward noising for the DDPM loss, and the DDIM update.

The denoiser predicts the clean sample x0 (not ε). With ᾱ_t the cumulative signal level:

    training (DDPM, x0-prediction):  x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε,   loss = ‖x̂0(x_t, t) − x0‖²
    DDIM step t → s (s < t):         ε̂ = (x_t − √ᾱ_t · x̂0) / √(1 − ᾱ_t)
                                     σ = η · √((1 − ᾱ_s)/(1 − ᾱ_t)) · √(1 − ᾱ_t/ᾱ_s)
                                     x_s = √ᾱ_s · x̂0 + √(1 − ᾱ_s − σ²) · ε̂ + σ · z

(Song et al., DDIM, arXiv 2010.02502; cosine schedule from Nichol & Dhariwal, arXiv 2102.09672.) With η = 1
and s = t − 1 the step is DDPM's ancestral step: its mean is the posterior mean of q(x_s | x_t, x0 = x̂0) and
σ² its variance. `ddim_sigma` and `ddim_mean` are the two halves of the step, public so that a caller that
needs the step's Gaussian (the DPPO module's log-probabilities) uses the same formulas as `ddim_step`;
`ddim_sample` is the sampling loop around any clean-sample predictor, from pure noise or, per row, from an
intermediate step (a plan re-noised with `add_noise` to step t_k and denoised over the last steps only: the
truncated chain of a warm start). Every random draw takes an explicit
``torch.Generator``, so sampling is deterministic for a given seed.
"""

from __future__ import annotations

import math
from typing import Callable

import torch


class CosineSchedule:
    """Discrete cosine schedule with ``num_train_steps`` steps; t = 0 is the least noisy step."""

    def __init__(self, num_train_steps: int = 100, s: float = 0.008, max_beta: float = 0.999):
        self.num_train_steps = num_train_steps
        steps = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()  # (T,)
        self._ab_values = self.alphas_cumprod.tolist()  # the same values as Python floats, for the sampler's steps

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

    def ddim_timesteps(self, steps: int, start: int | None = None) -> list[int]:
        """Evenly spaced decreasing steps from ``start`` (default T−1, pure noise) for a ``steps``-step sampler (the
        last update goes to t = −1). ``ddim_timesteps(k, ddim_timesteps(n)[n − k])`` is the last k steps of the
        n-step chain whenever those are evenly spaced (e.g. every k for n = 10, T = 100)."""
        start = self.num_train_steps - 1 if start is None else int(start)
        if not 0 <= start < self.num_train_steps:
            raise ValueError(f"start must be in [0, {self.num_train_steps - 1}], got {start}")
        if not 1 <= steps <= start + 1:
            raise ValueError(f"steps must be in [1, {start + 1}], got {steps}")
        grid = torch.linspace(start, 0, steps).round().long().tolist()
        return [int(t) for t in grid]

    def _ab(self, t: int) -> float:
        return 1.0 if t < 0 else self._ab_values[t]

    def ddim_sigma(self, t: int, t_prev: int, eta: float = 0.0) -> float:
        """σ of the DDIM step t → t_prev (0 for the last step, t_prev = −1, and for η = 0)."""
        if t_prev < 0 or eta == 0:
            return 0.0
        ab_t, ab_s = self._ab(t), self._ab(t_prev)
        return eta * math.sqrt((1 - ab_s) / (1 - ab_t)) * math.sqrt(max(0.0, 1 - ab_t / ab_s))

    def ddim_mean(self, x_t: torch.Tensor, x0_hat: torch.Tensor, t: int, t_prev: int,
                  sigma: float = 0.0) -> torch.Tensor:
        """Mean of the DDIM step t → t_prev with step std ``sigma`` (t_prev = −1: x0_hat itself)."""
        if t_prev < 0:
            return x0_hat
        ab_t, ab_s = self._ab(t), self._ab(t_prev)
        eps_hat = (x_t - math.sqrt(ab_t) * x0_hat) / math.sqrt(1 - ab_t)
        return math.sqrt(ab_s) * x0_hat + math.sqrt(max(0.0, 1 - ab_s - sigma**2)) * eps_hat

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
        sigma = self.ddim_sigma(t, t_prev, eta)
        x_s = self.ddim_mean(x_t, x0_hat, t, t_prev, sigma)
        if sigma > 0:
            z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            x_s = x_s + sigma * z
        return x_s


def ddim_sample(
    schedule: CosineSchedule,
    x: torch.Tensor,
    predict_x0: Callable[[torch.Tensor, int, int | torch.Tensor], torch.Tensor],
    steps: int,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    start: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``steps`` DDIM steps from x down to a clean sample.

    ``start``: the diffusion step x is at: None = T−1 (x is the start noise), an int for every row, or a (B,)
    tensor with one start per row of x; the rows that share a start form one chain over
    ``schedule.ddim_timesteps(steps, start)``, so a row re-noised to an intermediate step (a warm start) runs the
    last part of a chain while a row of pure noise runs a whole (coarser) chain, in the same network calls.

    ``predict_x0(x_t, i, t)`` returns the clean estimate at denoising step i (diffusion step t: an int when every
    row is at the same step, else a (B,) long tensor); it is where a caller clips, guides or swaps networks."""
    if start is None or isinstance(start, int):
        ts = schedule.ddim_timesteps(steps, start)
        for i, t in enumerate(ts):
            x0_hat = predict_x0(x, i, t)
            t_prev = ts[i + 1] if i + 1 < len(ts) else -1
            x = schedule.ddim_step(x, x0_hat, t, t_prev, eta=eta, generator=generator)
        return x
    start = start.to(x.device)
    chains = [(start == s, schedule.ddim_timesteps(steps, int(s))) for s in torch.unique(start).tolist()]
    t_rows = torch.empty((steps, len(start)), dtype=torch.long, device=x.device)  # (steps, B)
    for rows, ts in chains:
        t_rows[:, rows] = torch.tensor(ts, device=x.device)[:, None]
    for i in range(steps):
        x0_hat = predict_x0(x, i, t_rows[i])
        if i + 1 == steps:  # every chain's last step goes to t = −1, which returns x̂0 itself
            return x0_hat
        x = x.clone()
        for rows, ts in chains:
            x[rows] = schedule.ddim_step(x[rows], x0_hat[rows], ts[i], ts[i + 1], eta=eta, generator=generator)
    return x
