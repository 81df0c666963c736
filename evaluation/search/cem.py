"""The cross-entropy search loop, independent of how an episode is run.

`cross_entropy_search` splits the budget into rounds of ``round_size`` episodes. Adaptation
rounds sample the current proposal and refit it to their most critical episodes
(`proposal.cem_update`); adaptation stops after the first round in which at least
``elite_fraction`` of the episodes failed (its refit on the failures is the last), after
``max_adapt_rounds``, or when half the rounds are spent. Every later round is an estimation
round: it samples that frozen proposal, so its episodes are independent and identically
distributed and the importance-sampling estimate over them has the textbook variance
(`estimator.importance_estimate`). That estimate is the result. The estimate over all rounds
(each episode weighted by the proposal that drew it, also unbiased) is reported beside it.
With ``method: monte_carlo`` every round samples the nominal and the result is k/n with its
Wilson interval.

Every draw of round r comes from a generator seeded by (``seed``, r), and the proposal of round r
is a function of the earlier rounds' results, so rerunning a search redraws exactly the same
episodes: the caller's `run_round` can skip the ones it has already run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from diffplatoon.evaluation.search.estimator import Estimate, importance_estimate, monte_carlo_estimate
from diffplatoon.evaluation.search.proposal import Proposal, cem_update
from diffplatoon.evaluation.search.space import SearchSettings, SearchSpace

# (round index, its proposal, latent draws (n, parameters)) -> (criticality (n,), failed (n,) bool).
# Criticality is oriented so that larger is closer to failure; a failure should score +inf.
RunRound = Callable[[int, Proposal, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Round:
    """One finished round: what it sampled from and what it found."""

    index: int
    phase: Literal["adapt", "estimate"]
    proposal: Proposal
    x: np.ndarray  # (n, parameters) latent values
    log_p: np.ndarray  # nominal log-density
    log_q: np.ndarray  # proposal log-density
    scores: np.ndarray  # criticality, larger is more critical
    failed: np.ndarray  # bool
    level: float | None = None  # elite level of an adaptation round


@dataclass(frozen=True)
class SearchResult:
    """All rounds, the estimate (estimation rounds) and the all-rounds estimate."""

    rounds: list[Round]
    estimate: Estimate
    all_rounds: Estimate


def plan_rounds(budget: int, round_size: int) -> list[int]:
    """Round sizes that spend `budget` episodes: full rounds, the last one the remainder."""
    if budget < 1:
        raise ValueError(f"the budget must be at least 1 episode, got {budget}")
    full, rest = divmod(budget, round_size)
    return [round_size] * full + ([rest] if rest else [])


def round_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of round `index`'s draws."""
    return np.random.default_rng([int(seed), int(index)])


def cross_entropy_search(space: SearchSpace, budget: int, run_round: RunRound,
                         on_round: Callable[[Round], None] | None = None) -> SearchResult:
    """Spend `budget` episodes (module docstring); `on_round` sees each round as it finishes."""
    settings: SearchSettings = space.spec.search
    sizes = plan_rounds(budget, settings.round_size)
    adapting = settings.method == "cem"
    limit = min(settings.max_adapt_rounds, len(sizes) // 2)
    proposal = Proposal.nominal(space)
    rounds: list[Round] = []
    for r, size in enumerate(sizes):
        phase: Literal["adapt", "estimate"] = "adapt" if adapting and r < limit else "estimate"
        x = proposal.sample(space, round_rng(settings.seed, r), size)
        log_p, log_q = space.log_pdf(x), proposal.log_pdf(space, x)
        scores, failed = run_round(r, proposal, x)
        scores, failed = np.asarray(scores, dtype=np.float64), np.asarray(failed, dtype=bool)
        level = None
        if phase == "adapt":
            next_proposal, level = cem_update(proposal, space, x, scores, log_p - log_q, settings)
            if level == math.inf or r + 1 >= limit:
                adapting = False
        done = Round(r, phase, proposal, x, log_p, log_q, scores, failed, level)
        rounds.append(done)
        if on_round is not None:
            on_round(done)
        if phase == "adapt":
            proposal = next_proposal
    return SearchResult(rounds, estimate_of(rounds, settings), all_rounds_estimate(rounds))


def estimate_of(rounds: list[Round], settings: SearchSettings) -> Estimate:
    """The result: over the estimation rounds (Wilson for plain Monte Carlo)."""
    final = [r for r in rounds if r.phase == "estimate"]
    failed = np.concatenate([r.failed for r in final]) if final else np.zeros(0, dtype=bool)
    if settings.method == "monte_carlo":
        return monte_carlo_estimate(failed)
    log_w = np.concatenate([r.log_p - r.log_q for r in final]) if final else np.zeros(0)
    return importance_estimate(failed, log_w)


def all_rounds_estimate(rounds: list[Round]) -> Estimate:
    """Every episode weighted by the proposal that drew it (unbiased, noisier while adapting)."""
    failed = np.concatenate([r.failed for r in rounds])
    return importance_estimate(failed, np.concatenate([r.log_p - r.log_q for r in rounds]))


__all__ = ["Round", "RunRound", "SearchResult", "all_rounds_estimate", "cross_entropy_search", "estimate_of",
           "plan_rounds", "round_rng"]
