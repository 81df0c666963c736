"""Provenance of an evaluation run: ``run.json`` (arguments, resolved scenarios with hashes, seeds, thresholds,
policy and library versions), written by `runner.evaluate` before and after its episodes.
"""

from __future__ import annotations

import platform as _platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from diffplatoon import io
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import ScenarioSpec

if TYPE_CHECKING:
    from diffplatoon.evaluation.runner import ScenarioEntry

RUN = "run.json"


def package_version() -> str:
    """Installed diffplatoon version."""
    try:
        return version("diffplatoon")
    except PackageNotFoundError:
        return "0+unknown"


def write_run_json(out: Path, policies: Sequence[str], scenarios: Sequence[Any], episodes: int,
                   entries: Sequence[ScenarioEntry], seed_offset: int, ray_address: str | None,
                   num_workers: int | None, worst_k: int, records: Sequence[dict[str, Any]] = ()) -> None:
    """Write ``run.json``: arguments, resolved scenarios with hashes, seeds, versions."""
    versions: dict[str, list[str]] = {}
    for rec in records:
        if not rec.get("failed") and rec.get("policy_version") is not None:
            versions.setdefault(rec["policy"], [])
            if str(rec["policy_version"]) not in versions[rec["policy"]]:
                versions[rec["policy"]].append(str(rec["policy_version"]))
    run = {
        "command": "evaluate",
        "arguments": {
            "policies": list(policies),
            "scenarios": [s.name if isinstance(s, ScenarioSpec) else str(s) for s in scenarios],
            "episodes": episodes, "out": str(out), "ray_address": ray_address, "num_workers": num_workers,
            "seed_offset": seed_offset, "worst_k": worst_k,
        },
        "scenarios": [{
            "name": e.spec.name, "source": e.source, "sha256": e.sha256, "seed": e.spec.seed,
            "episodes": list(range(seed_offset, seed_offset + episodes)),
            "thresholds": Thresholds.for_spec(e.spec).as_dict(),
            "spec": e.spec.model_dump(mode="json", by_alias=True),
        } for e in entries],
        "policy_versions": versions,
        "versions": {"diffplatoon": package_version(), "python": sys.version.split()[0],
                     "platform": _platform.platform(), **lib_versions()},
    }
    io.atomic_write_json(out / RUN, run)


def lib_versions() -> dict[str, str]:
    """Versions of the libraries that shape the numbers."""
    found = {}
    for lib in ("numpy", "highway-env", "torch", "ray", "shapely"):
        try:
            found[lib] = version(lib)
        except PackageNotFoundError:
            pass
    return found
