"""Failure search: where and how often a policy fails under realistic variation of a scenario.

A space file names scenario fields and their nominal distributions (`space`, `distributions`);
the cross-entropy method adapts a proposal towards failures round by round (`proposal`, `cem`),
episodes run on Ray through the evaluation runner (`search`), the failure probability under the
nominal distribution comes importance-weighted with its 95 % interval and effective sample size
(`estimator`), failing scenarios are written back as runnable YAML (`failures`), and the report
draws the search (`report`, `plots`).

    from diffplatoon.evaluation.search import load_space, run_search
    space = load_space("configs/search/hard_brake.yaml", load_scenario("hard_brake"))
    run = run_search(space, "cacc", budget=2000, out=Path("runs/search-hard_brake"))
    run.result.estimate.probability
"""

from diffplatoon.evaluation.search.estimator import Estimate, importance_estimate, monte_carlo_estimate
from diffplatoon.evaluation.search.search import SearchError, SearchRun, run_search
from diffplatoon.evaluation.search.space import SearchSpace, load_space, parse_space

__all__ = ["Estimate", "SearchError", "SearchRun", "SearchSpace", "importance_estimate", "load_space",
           "monte_carlo_estimate", "parse_space", "run_search"]
