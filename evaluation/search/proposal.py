"""The cross-entropy proposal: a family of sampling distributions over a search space and its update.

Round 0 samples the nominal distribution p itself. After each round the cross-entropy method
(CEM for rare events) ranks the round's episodes by criticality, keeps the most critical
``elite_fraction`` of them (or every failure, once that many failed), and refits the proposal to
those elites weighted by their likelihood ratio p/q. Each parameter has its own component:

- continuous nominal on [low, high] (uniform, truncnormal, beta): a normal truncated to the same
  [low, high], fitted by the elites' weighted mean and standard deviation;
- normal nominal: a normal, fitted the same way;
- categorical nominal: categorical probabilities, the elites' weighted frequencies.

The new parameters are blended with the previous ones (``smoothing``); a standard deviation never
falls below the nominal's, and categorical probabilities keep 1 % of the nominal's, so no
component collapses. (The elites' own spread is that of the tail beyond the current level, which
is narrow: fitted as is, it shrinks the proposal round after round before the failure level is
reached. On the Gaussian tail P(X > 3.5) with 500 episodes in rounds of 100, a floor at half the
nominal's left 24 of 30 seeds' intervals covering the exact value; this floor, 30 of 30.) The proposal actually sampled is the defensive mixture

    q(x) = a p(x) + (1 - a) prod_j q_j(x_j),      a = ``defensive``,

which covers every failure the nominal can produce and bounds each weight p/q by 1/a.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from diffplatoon.evaluation.search.distributions import (Categorical, Normal, normal_logpdf, truncnormal_logpdf,
                                                         truncnormal_sample)
from diffplatoon.evaluation.search.space import SearchSettings, SearchSpace

STD_FLOOR = 1.0  # of the nominal's standard deviation
CATEGORICAL_FLOOR = 0.01  # share of the nominal's probabilities kept in every categorical component


@dataclass(frozen=True)
class Marginal:
    """One parameter's component of the adapted proposal."""

    kind: Literal["normal", "truncnormal", "categorical"]
    mean: float = 0.0
    std: float = 1.0
    low: float = -math.inf
    high: float = math.inf
    probs: tuple[float, ...] = ()

    @classmethod
    def start(cls, dist: Any) -> "Marginal":
        """The component that stands in for a nominal distribution before any adaptation."""
        if isinstance(dist, Categorical):
            return cls("categorical", probs=tuple(float(v) for v in dist.p))
        mean, std = dist.start()
        if isinstance(dist, Normal):
            return cls("normal", mean, std)
        low, high = dist.support()
        return cls("truncnormal", mean, std, low, high)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws of this component (latent values)."""
        if self.kind == "categorical":
            return rng.choice(len(self.probs), size=n, p=np.asarray(self.probs)).astype(np.float64)
        if self.kind == "normal":
            return rng.normal(self.mean, self.std, n)
        return truncnormal_sample(rng, n, self.mean, self.std, self.low, self.high)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        """Log-density (log-mass for a categorical) of latent values."""
        if self.kind == "categorical":
            idx = np.clip(np.asarray(x, dtype=np.float64), 0, len(self.probs) - 1).astype(np.intp)
            with np.errstate(divide="ignore"):
                return np.log(np.asarray(self.probs))[idx]
        if self.kind == "normal":
            return normal_logpdf(x, self.mean, self.std)
        return truncnormal_logpdf(x, self.mean, self.std, self.low, self.high)

    def fit(self, x: np.ndarray, w: np.ndarray, nominal: "Marginal", smoothing: float) -> "Marginal":
        """Refit to elite values `x` with weights `w` (summing to 1), blended with this component."""
        s = smoothing
        if self.kind == "categorical":
            freq = np.bincount(x.astype(np.intp), weights=w, minlength=len(self.probs))
            probs = s * freq + (1 - s) * np.asarray(self.probs)
            probs = (1 - CATEGORICAL_FLOOR) * probs + CATEGORICAL_FLOOR * np.asarray(nominal.probs)
            return replace(self, probs=tuple(float(v) for v in probs / probs.sum()))
        mean = float(np.sum(w * x))
        std = float(np.sqrt(np.sum(w * (x - mean) ** 2)))
        std = max(s * std + (1 - s) * self.std, STD_FLOOR * nominal.std)
        return replace(self, mean=s * mean + (1 - s) * self.mean, std=std)


@dataclass(frozen=True)
class Proposal:
    """The defensive mixture a p + (1 - a) prod_j q_j over a space's latent values (a = 1: the nominal)."""

    marginals: tuple[Marginal, ...]
    defensive: float

    @classmethod
    def nominal(cls, space: SearchSpace) -> "Proposal":
        """The nominal distribution itself (round 0)."""
        return cls(tuple(Marginal.start(d) for d in space.distributions), 1.0)

    def sample(self, space: SearchSpace, rng: np.random.Generator, n: int) -> np.ndarray:
        """n draws, (n, parameters): each from the nominal with probability `defensive`, else the components."""
        from_nominal = rng.random(n) < self.defensive
        x = np.empty((n, len(self.marginals)))
        k = int(from_nominal.sum())
        if k:
            x[from_nominal] = space.sample(rng, k)
        if n - k:
            x[~from_nominal] = np.stack([m.sample(rng, n - k) for m in self.marginals], axis=1)
        return x

    def log_pdf(self, space: SearchSpace, x: np.ndarray) -> np.ndarray:
        """Log-density of the mixture at (n, parameters) latent values."""
        log_p = space.log_pdf(x)
        if self.defensive >= 1.0:
            return log_p
        log_c = np.sum([m.log_pdf(x[:, j]) for j, m in enumerate(self.marginals)], axis=0)
        with np.errstate(divide="ignore"):
            a = math.log(self.defensive) if self.defensive > 0 else -math.inf
        return np.logaddexp(a + log_p, math.log1p(-self.defensive) + log_c)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (inverse: `from_dict`)."""
        return {"defensive": self.defensive,
                "marginals": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(m).items()}
                              for m in self.marginals]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Proposal":
        """The proposal `as_dict` wrote."""
        return cls(tuple(Marginal(**{**m, "probs": tuple(m.get("probs", ()))}) for m in data["marginals"]),
                   float(data["defensive"]))


def elite_level(scores: np.ndarray, fraction: float) -> float:
    """The criticality of the ceil(fraction * n)-th most critical episode (elites score at least this)."""
    n_elite = max(1, math.ceil(fraction * len(scores)))
    return float(np.sort(scores)[::-1][n_elite - 1])


def cem_update(proposal: Proposal, space: SearchSpace, x: np.ndarray, scores: np.ndarray, log_w: np.ndarray,
               settings: SearchSettings) -> tuple[Proposal, float]:
    """The next proposal fitted to this round's elites (weights exp(log_w) = p/q), and the elite level."""
    level = elite_level(scores, settings.elite_fraction)
    elite = scores >= level
    w = np.exp(log_w[elite] - np.max(log_w[elite]))
    w = w / w.sum()
    start = Proposal.nominal(space).marginals
    marginals = tuple(m.fit(x[elite, j], w, start[j], settings.smoothing)
                      for j, m in enumerate(proposal.marginals))
    return Proposal(marginals, settings.defensive), level


def describe(proposal: Proposal, space: SearchSpace) -> list[str]:
    """One short text per parameter: 'mean ± std' or the most likely values."""
    out = []
    for m, dist in zip(proposal.marginals, space.distributions):
        if m.kind == "categorical":
            top = np.argsort(m.probs)[::-1][:3]
            out.append(", ".join(f"{dist.values[i]}: {m.probs[i]:.2f}" for i in top))
        else:
            out.append(f"{m.mean:.3g} ± {m.std:.2g}")
    return out


__all__ = ["Marginal", "Proposal", "cem_update", "describe", "elite_level"]
