"""The estimator and the cross-entropy loop on closed-form problems: Gaussian tail probabilities.

P(X > t) for X ~ N(0, 1) is erfc(t / sqrt 2) / 2 exactly (math.erfc, no scipy); P(X1 + X2 > t) for
two independent standard normals is erfc(t / 2) / 2. The "simulator" is the indicator itself, the
criticality the sum, so the whole search runs in numpy in well under a second.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffplatoon.evaluation.search.cem import cross_entropy_search
from diffplatoon.evaluation.search.estimator import importance_estimate, kish_ess, monte_carlo_estimate
from diffplatoon.evaluation.search.space import SearchSpace, SpaceSpec
from diffplatoon.scenarios import load_scenario


def gaussian_space(dims: int, seed: int, round_size: int = 100) -> SearchSpace:
    """`dims` independent standard normals (the scenario is never run, only carried)."""
    params = {f"x{j}": {"type": "normal", "mean": 0.0, "std": 1.0} for j in range(dims)}
    spec = SpaceSpec.model_validate({"parameters": params, "search": {"round_size": round_size, "seed": seed}})
    return SearchSpace(spec, load_scenario("hard_brake"), "<gaussian>", (False,) * dims)


def tail_search(dims: int, t: float, budget: int, seed: int):
    """The search of P(sum of `dims` standard normals > t)."""
    def run_round(index, proposal, x):
        s = x.sum(axis=1)
        failed = s > t
        return np.where(failed, np.inf, s), failed

    return cross_entropy_search(gaussian_space(dims, seed), budget, run_round)


@pytest.mark.parametrize("dims, t", [(1, 3.5), (2, 5.0)])
def test_gaussian_tail_estimate_matches_the_exact_value(dims: int, t: float) -> None:
    exact = 0.5 * math.erfc(t / math.sqrt(2.0 * dims))  # ~2.3e-4 and ~2.0e-4
    covered, errors = 0, []
    for seed in range(20):
        result = tail_search(dims, t, 1000, seed)
        e = result.estimate
        assert e.n == sum(len(r.x) for r in result.rounds if r.phase == "estimate") > 0
        assert e.failures > 0 and e.high is not None
        covered += e.low <= exact <= e.high
        errors.append(abs(e.probability / exact - 1.0))
    # A 95% interval covers the truth in about 19 of 20 independent searches.
    assert covered >= 17, covered
    assert float(np.median(errors)) < 0.15, errors
    # Monte Carlo with the same 1,000 episodes expects 0.2 failures: the estimate needs the weights.
    assert 1000 * exact < 0.25


def test_adaptation_moves_the_proposal_to_the_failure_region() -> None:
    result = tail_search(1, 3.5, 1000, seed=0)
    means = [r.proposal.marginals[0].mean for r in result.rounds]
    assert result.rounds[0].proposal.defensive == 1.0  # round 0 samples the nominal itself
    assert means[-1] > 3.0 and result.rounds[-1].phase == "estimate"
    assert sum(r.failed.mean() for r in result.rounds[-3:]) / 3 > 0.3


def test_importance_estimate_with_unit_weights_is_the_plain_rate() -> None:
    failed = np.zeros(400, dtype=bool)
    failed[:7] = True
    e = importance_estimate(failed, np.zeros(400))
    mc = monte_carlo_estimate(failed)
    assert e.probability == mc.probability == 7 / 400
    assert e.ess == pytest.approx(400.0) and e.failure_ess == pytest.approx(7.0)
    assert mc.low < 7 / 400 < mc.high
    assert math.isclose(e.std_error, np.std(failed.astype(float), ddof=1) / 20.0)


def test_no_failure_has_no_upper_end_and_kish_ess() -> None:
    e = importance_estimate(np.zeros(10, dtype=bool), np.log(np.linspace(0.5, 2.0, 10)))
    assert e.probability == 0.0 and e.high is None and e.failures == 0
    assert kish_ess(np.ones(5)) == pytest.approx(5.0)
    assert kish_ess(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)
