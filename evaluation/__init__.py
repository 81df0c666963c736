"""Safety evaluation: collision evaluator, surrogate safety measures, statistics, the Ray runner and the report."""
