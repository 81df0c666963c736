"""Failing scenarios found by a search, written back as ready-to-run YAML.

Each file ``<out>/failures/<scenario>--rNN-IIII.yaml`` is the fully resolved scenario of one
failing episode: every default filled in, the searched fields set to the values drawn, and the
episode's own seed, so that it loads with `load_scenario`, and episode 0 of it (the default of
``diffplatoon scenario run`` and the first episode of ``evaluate``) replays the failure bit for
bit; the file is exactly the spec the search ran (same `spec_hash`), and a comment header says
where it came from. Failures are written most plausible first (highest
nominal density), at most ``limit`` of them; ``search.json`` lists the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from diffplatoon import io
from diffplatoon.evaluation.search.cem import SearchResult
from diffplatoon.evaluation.search.space import SearchSpace

FAILURES = "failures"


def failure_yaml(space: SearchSpace, latent: np.ndarray, *, name: str, seed: int, policy: str,
                 log_p: float) -> str:
    """The YAML text of one failing draw (its resolved scenario, with a comment header)."""
    data = space.scenario_data(latent, name=name, seed=seed)
    values = space.values(latent)
    drawn = ", ".join(f"{k}={v!r}" for k, v in values.items())
    header = [f"# A failure of policy {policy} found by `diffplatoon search` on {space.scenario.name}.",
              f"# Drawn values: {drawn}; nominal log-density {log_p:.4g}.",
              f"# Replay: diffplatoon scenario run {name}.yaml --controller {policy}",
              f"# Evaluate: diffplatoon evaluate --policy {policy} --scenarios {name}.yaml --episodes 1"]
    return "\n".join(header) + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def write_failures(out: Path, space: SearchSpace, result: SearchResult, policy: str, *,
                   limit: int = 100) -> list[Path]:
    """Write the failing draws of every round as YAML (most plausible first, at most `limit`)."""
    found: list[tuple[float, str, int, np.ndarray]] = []
    for r in result.rounds:
        names, seeds = space.draw_names(r.index, len(r.x)), space.draw_seeds(r.index, len(r.x))
        for i in np.flatnonzero(r.failed):
            found.append((float(r.log_p[i]), names[i], seeds[i], r.x[i]))
    found.sort(key=lambda f: (-f[0], f[1]))
    paths = []
    for log_p, name, seed, latent in found[:limit]:
        text = failure_yaml(space, latent, name=name, seed=seed, policy=policy, log_p=log_p)
        paths.append(io.atomic_write_text(Path(out) / FAILURES / f"{name}.yaml", text))
    return paths


__all__ = ["FAILURES", "failure_yaml", "write_failures"]
