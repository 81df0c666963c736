"""Nominal distributions of the search space: sampling and log-densities, numpy only.

Each parameter of a search space (`space.SearchSpace`) has one nominal distribution, written in
the space file as a mapping with a ``type``:

    {type: uniform, low: 2, high: 12}
    {type: normal, mean: 6, std: 1.5}
    {type: truncnormal, mean: 6, std: 1.5, low: 2, high: 12}
    {type: beta, a: 2, b: 5, low: 0, high: 8}          # Beta(a, b) stretched onto [low, high]
    {type: categorical, values: [0, 1, 2], probs: [0.7, 0.2, 0.1]}

A parameter is carried as one float per sample, its *latent* value: the number itself for the
continuous kinds, the index into ``values`` for `categorical`. Densities are over that latent
value (a categorical's is its probability mass). The normal CDF and its inverse come from the
standard library (`math.erfc`, `statistics.NormalDist`), since scipy is not a dependency.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field, StrictBool, StrictInt, model_validator

from diffplatoon.scenarios.limits import MAX_NUMBER
from diffplatoon.scenarios.schema import Strict

_STD_NORMAL = NormalDist()
# A normal's support is reported (for validating a space's extremes) as mean +/- this many stds.
NORMAL_EXTENT = 5.0


def normal_cdf(z: np.ndarray | float) -> np.ndarray:
    """Standard normal CDF, elementwise, through math.erfc (accurate in both tails)."""
    z = np.asarray(z, dtype=np.float64)
    return np.vectorize(lambda v: 0.5 * math.erfc(-v / math.sqrt(2.0)), otypes=[np.float64])(z)


def normal_logpdf(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Log-density of N(mean, std^2) at x."""
    z = (np.asarray(x, dtype=np.float64) - mean) / std
    return -0.5 * z * z - math.log(std) - 0.5 * math.log(2.0 * math.pi)


def truncnormal_logpdf(x: np.ndarray, mean: float, std: float, low: float, high: float) -> np.ndarray:
    """Log-density of N(mean, std^2) truncated to [low, high] at x (-inf outside)."""
    x = np.asarray(x, dtype=np.float64)
    mass = _interval_mass(mean, std, low, high)
    out = normal_logpdf(x, mean, std) - math.log(mass)
    return np.where((x >= low) & (x <= high), out, -np.inf)


def truncnormal_sample(rng: np.random.Generator, n: int, mean: float, std: float, low: float,
                       high: float) -> np.ndarray:
    """n draws of N(mean, std^2) truncated to [low, high], by the inverse CDF.

    Computed on whichever side of the mean the interval lies, so that a far-tail interval does not
    lose its precision to CDF values rounding to 1.
    """
    a, b = (low - mean) / std, (high - mean) / std
    flip = a > 0  # work in the lower tail, where the CDF keeps its digits
    if flip:
        a, b = -b, -a
    ca, cb = float(normal_cdf(a)), float(normal_cdf(b))
    u = ca + rng.random(n) * (cb - ca)
    tiny = np.nextafter(0.0, 1.0)
    z = np.array([_STD_NORMAL.inv_cdf(min(max(v, tiny), 1.0 - 1e-16)) for v in u], dtype=np.float64)
    z = np.clip(z, a, b)
    return mean + std * (-z if flip else z)


def _interval_mass(mean: float, std: float, low: float, high: float) -> float:
    """P(low <= X <= high) for X ~ N(mean, std^2), computed on the side that keeps precision."""
    a, b = (low - mean) / std, (high - mean) / std
    if a > 0:
        a, b = -b, -a
    mass = float(normal_cdf(b) - normal_cdf(a))
    return max(mass, 1e-300)


class _Continuous(Strict):
    """A distribution over a number (the latent value is the value)."""

    def support(self) -> tuple[float, float]:
        raise NotImplementedError

    def start(self) -> tuple[float, float]:
        """(mean, std) of the normal, truncated to `support`, that the cross-entropy proposal starts from."""
        raise NotImplementedError

    def value(self, latent: float) -> float:
        """The field value of a latent draw."""
        return float(latent)

    def latent_of(self, value: Any) -> float:
        return float(value)


class _Interval(_Continuous):
    """A continuous distribution on [low, high]; each subclass declares `low` and `high` itself (so
    that its fields keep their order in a dumped space)."""

    if TYPE_CHECKING:
        low: float
        high: float

    @model_validator(mode="after")
    def _order(self) -> "_Interval":
        if not self.low < self.high:
            raise ValueError(f"expected low < high, got low={self.low:g}, high={self.high:g}")
        return self

    def support(self) -> tuple[float, float]:
        return self.low, self.high


class Uniform(_Interval):
    """Uniform on [low, high]."""

    type: Literal["uniform"]
    low: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Lower end.")
    high: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Upper end, above `low`.")

    def start(self) -> tuple[float, float]:
        return 0.5 * (self.low + self.high), (self.high - self.low) / math.sqrt(12.0)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.uniform(self.low, self.high, n)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return np.where((x >= self.low) & (x <= self.high), -math.log(self.high - self.low), -np.inf)


class Normal(_Continuous):
    """Normal N(mean, std^2), unbounded (prefer `truncnormal` for fields with limits)."""

    type: Literal["normal"]
    mean: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Mean.")
    std: float = Field(..., gt=0, le=MAX_NUMBER, description="Standard deviation, positive.")

    def support(self) -> tuple[float, float]:
        return self.mean - NORMAL_EXTENT * self.std, self.mean + NORMAL_EXTENT * self.std

    def start(self) -> tuple[float, float]:
        return self.mean, self.std

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.normal(self.mean, self.std, n)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        return normal_logpdf(x, self.mean, self.std)


class TruncNormal(_Interval):
    """N(mean, std^2) truncated to [low, high] (mean and std are those of the untruncated normal)."""

    type: Literal["truncnormal"]
    mean: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Mean of the untruncated normal.")
    std: float = Field(..., gt=0, le=MAX_NUMBER, description="Standard deviation of the untruncated normal.")
    low: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Lower end.")
    high: float = Field(..., ge=-MAX_NUMBER, le=MAX_NUMBER, description="Upper end, above `low`.")

    def start(self) -> tuple[float, float]:
        return self.mean, self.std  # the proposal family holds this distribution exactly

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return truncnormal_sample(rng, n, self.mean, self.std, self.low, self.high)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        return truncnormal_logpdf(x, self.mean, self.std, self.low, self.high)


class Beta(_Interval):
    """Beta(a, b) stretched onto [low, high] (default [0, 1])."""

    type: Literal["beta"]
    a: float = Field(..., gt=0, le=1000, description="First shape parameter.")
    b: float = Field(..., gt=0, le=1000, description="Second shape parameter.")
    low: float = Field(0.0, ge=-MAX_NUMBER, le=MAX_NUMBER, description="Lower end.")
    high: float = Field(1.0, ge=-MAX_NUMBER, le=MAX_NUMBER, description="Upper end, above `low`.")

    def start(self) -> tuple[float, float]:
        a, b, width = self.a, self.b, self.high - self.low
        var = a * b / ((a + b) ** 2 * (a + b + 1))
        return self.low + width * a / (a + b), width * math.sqrt(var)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.low + (self.high - self.low) * rng.beta(self.a, self.b, n)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        width = self.high - self.low
        u = (x - self.low) / width
        inside = (u >= 0) & (u <= 1)
        uc = np.clip(u, 1e-300, 1 - 1e-16)
        log_norm = math.lgamma(self.a + self.b) - math.lgamma(self.a) - math.lgamma(self.b) - math.log(width)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = log_norm + (self.a - 1) * np.log(uc) + (self.b - 1) * np.log1p(-uc)
        return np.where(inside, out, -np.inf)


Scalar = Union[StrictBool, StrictInt, float, str]


class Categorical(Strict):
    """One of `values`, with probabilities `probs` (default: equally likely)."""

    type: Literal["categorical"]
    values: list[Scalar] = Field(..., min_length=1, max_length=256, description="The values a field may take.")
    probs: list[float] | None = Field(None, description="Their probabilities (sum to 1); default uniform.")

    @model_validator(mode="after")
    def _probs(self) -> "Categorical":
        if self.probs is not None:
            if len(self.probs) != len(self.values):
                raise ValueError(f"expected one probability per value ({len(self.values)}), got {len(self.probs)}")
            if any(p < 0 for p in self.probs) or abs(sum(self.probs) - 1.0) > 1e-6:
                raise ValueError(f"expected non-negative probabilities summing to 1, got {self.probs}")
        return self

    @property
    def p(self) -> np.ndarray:
        """The probabilities as an array."""
        k = len(self.values)
        return np.asarray(self.probs if self.probs is not None else [1.0 / k] * k, dtype=np.float64)

    def support(self) -> tuple[float, float]:
        return 0.0, float(len(self.values) - 1)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.choice(len(self.values), size=n, p=self.p).astype(np.float64)

    def log_pdf(self, x: np.ndarray) -> np.ndarray:
        idx = np.asarray(x, dtype=np.float64)
        ok = (idx >= 0) & (idx < len(self.values)) & (idx == np.round(idx))
        with np.errstate(divide="ignore"):
            logp = np.log(self.p)
        return np.where(ok, logp[np.clip(idx, 0, len(self.values) - 1).astype(np.intp)], -np.inf)

    def value(self, latent: float) -> Any:
        return self.values[int(latent)]


Distribution = Annotated[Union[Uniform, Normal, TruncNormal, Beta, Categorical], Field(discriminator="type")]
"""A nominal distribution of one search parameter, chosen by its ``type``."""

__all__ = ["Beta", "Categorical", "Distribution", "Normal", "TruncNormal", "Uniform", "normal_cdf",
           "normal_logpdf", "truncnormal_logpdf", "truncnormal_sample"]
