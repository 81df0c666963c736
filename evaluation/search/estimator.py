"""Failure probability under the nominal distribution, from importance-weighted or plain samples.

Importance sampling: n episodes x_i drawn from a proposal q, failure indicators f_i, weights
w_i = p(x_i) / q(x_i). The estimate is the mean of the terms f_i w_i,

    P_hat = (1/n) sum_i f_i w_i,       se = sd(f_i w_i) / sqrt(n)   (sample sd, n - 1),

unbiased for P = E_p[f] whenever q > 0 wherever p f > 0 (the defensive mixture guarantees it).
The 95 % interval is P_hat -/+ 1.96 se (the central limit theorem over the terms), cut at 0; with
few failures it is optimistic, which `failure_ess` shows: Kish's effective sample size of the
failures' weights, (sum w)^2 / sum w^2 over failures only, is the number of equally weighted
failures the estimate is worth. `ess` is the same over all n weights (how far q is from p). With
no failure the interval has no upper end from the samples (reported as None).

Plain Monte Carlo (q = p, every weight 1) gets the Wilson score interval instead, which stays
meaningful at 0 or a few failures (`diffplatoon.evaluation.stats.wilson_interval`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diffplatoon.evaluation.stats import normal_quantile, wilson_interval


@dataclass(frozen=True)
class Estimate:
    """A failure probability with its 95 % interval and the sample behind it."""

    method: str  # "importance" or "monte_carlo"
    probability: float
    std_error: float
    low: float
    high: float | None  # None: no failure, no upper end from the samples
    n: int
    failures: int
    ess: float  # Kish effective sample size of all weights
    failure_ess: float  # ... of the failures' weights

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def kish_ess(weights: np.ndarray) -> float:
    """Kish's effective sample size (sum w)^2 / sum w^2 (0 for no weights)."""
    w = np.asarray(weights, dtype=np.float64)
    total = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / total) if total > 0 else 0.0


def importance_estimate(failed: np.ndarray, log_w: np.ndarray, *, confidence: float = 0.95) -> Estimate:
    """The importance-sampling estimate from failure indicators and log-weights log p - log q."""
    failed = np.asarray(failed, dtype=bool)
    w = np.exp(np.asarray(log_w, dtype=np.float64))
    n = len(w)
    if n == 0:
        return Estimate("importance", math.nan, math.nan, math.nan, None, 0, 0, 0.0, 0.0)
    terms = np.where(failed, w, 0.0)
    p_hat = float(terms.mean())
    se = float(terms.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    z = normal_quantile(0.5 + confidence / 2.0)
    k = int(failed.sum())
    high = min(1.0, p_hat + z * se) if k and math.isfinite(se) else None
    low = max(0.0, p_hat - z * se) if math.isfinite(se) else 0.0
    return Estimate("importance", p_hat, se, low, high, n, k, kish_ess(w), kish_ess(w[failed]))


def monte_carlo_estimate(failed: np.ndarray, *, confidence: float = 0.95) -> Estimate:
    """The plain Monte Carlo estimate k/n with its Wilson score interval."""
    failed = np.asarray(failed, dtype=bool)
    n, k = len(failed), int(failed.sum())
    if n == 0:
        return Estimate("monte_carlo", math.nan, math.nan, math.nan, None, 0, 0, 0.0, 0.0)
    low, high = wilson_interval(k, n, confidence=confidence)
    p_hat = k / n
    return Estimate("monte_carlo", p_hat, math.sqrt(p_hat * (1 - p_hat) / n), low, high, n, k, float(n), float(k))


__all__ = ["Estimate", "importance_estimate", "kish_ess", "monte_carlo_estimate"]
