"""Failure search on Ray: cross-entropy rounds of episodes through the evaluation runner.

`run_search` binds the loop of `cem.cross_entropy_search` to real episodes. Each round's draws
become scenario specs (`SearchSpace.make_spec`: the sampled fields set, a per-draw seed for the
traffic, named ``<scenario>--rNN-IIII``), and the round runs as one `evaluate` call with one
episode (index 0) of each spec into its own folder ``<out>/rounds/rNN/`` (records.jsonl,
run.json with every resolved spec, episodes/*.npz). So the runner's guarantees hold: one Ray
task per episode with its wall-clock limit, records appended as episodes finish, and a rerun
skips every episode already recorded. The draws of a round are written to
``rounds/rNN/samples.json`` before it runs; a rerun redraws them (`cem` is deterministic given
the stored results) and refuses to go on if they differ (the space, scenario or code changed).

An episode's score is its criticality: ``-min_ttc``, ``-min_gap`` or ``max_drac`` (larger is
more critical), and +inf when it failed (``collision``: a collision involving a platoon member;
``at_fault_collision``: one a member caused). After the last round the search writes the failing
scenarios as YAML (`failures`), ``search.json`` (every round's proposal and counts, the
estimates, the failures) and the report (`diffplatoon.evaluation.search.report`).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from rich.console import Console

from diffplatoon import io
from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT, connect_ray
from diffplatoon.evaluation.provenance import package_version
from diffplatoon.evaluation.runner import evaluate, load_records
from diffplatoon.evaluation.search import failures as failure_files
from diffplatoon.evaluation.search.cem import Round, SearchResult, cross_entropy_search
from diffplatoon.evaluation.search.proposal import Proposal
from diffplatoon.evaluation.search.space import SearchSpace
from diffplatoon.scenarios import ScenarioError

SEARCH = "search.json"
SAMPLES = "samples.json"
ROUNDS = "rounds"


class SearchError(RuntimeError):
    """A search that cannot go on as asked (changed inputs, a draw that is not a valid scenario, failed episodes)."""


@dataclass(frozen=True)
class SearchRun:
    """A finished search: its folder, result, the failure files written and the episodes run by this call."""

    out: Path
    result: SearchResult
    failure_files: list[Path]
    episodes_run: int
    wall_time: float


def criticality(record: Mapping[str, Any], kind: str) -> float:
    """The continuous score of an episode record, larger = closer to failure (-inf when undefined)."""
    value = record.get(kind)
    if value is None or not math.isfinite(float(value)):
        return -math.inf
    return float(value) if kind == "max_drac" else -float(value)


def is_failure(record: Mapping[str, Any], kind: str) -> bool:
    """Whether an episode record is a failure of the given kind."""
    if kind == "at_fault_collision":
        return bool(record.get("at_fault_collisions"))
    return bool(record.get("collision"))


def round_folder(out: Path, index: int) -> Path:
    """Where round `index` keeps its episodes."""
    return Path(out) / ROUNDS / f"r{index:02d}"


def run_search(space: SearchSpace, policy: str, budget: int, out: Path, *, ray_address: str | None = None,
               num_workers: int | None = None, timeout: float | None = DEFAULT_JOB_TIMEOUT,
               retry_failed: bool = False, worst_k: int = 3, max_failure_files: int = 100,
               report: bool = True, render_replays: bool = True, space_file: str | None = None,
               console: Console | None = None) -> SearchRun:
    """Run (or resume) a failure search of `policy` over `space` with `budget` episodes into `out`."""
    import ray

    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    arguments = {"policy": policy, "scenario": space.scenario.name, "space": space_file or space.source,
                 "budget": budget, "out": str(out), "ray_address": ray_address, "num_workers": num_workers}
    _check_same_search(out, arguments, space)
    rounds: list[dict[str, Any]] = []
    ran = [0]

    def run_round(index: int, proposal: Proposal, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scores, failed, now = _run_round(space, policy, out, index, proposal, x, ray_address=ray_address,
                                         num_workers=num_workers, timeout=timeout, retry_failed=retry_failed)
        ran[0] += now
        return scores, failed

    def on_round(done: Round) -> None:
        rounds.append(_round_summary(done, space))
        _write_state(out, arguments, space, rounds)
        level = "" if done.level is None else f", elite level {_fmt_level(done.level, space.spec.criticality)}"
        console.print(f"round {done.index + 1} ({done.phase}): {len(done.x)} episodes, "
                      f"{int(done.failed.sum())} failures{level}", highlight=False)

    we_started = connect_ray(ray_address, num_workers)
    try:
        result = cross_entropy_search(space, budget, run_round, on_round)
    finally:
        if we_started:
            ray.shutdown()
    files = failure_files.write_failures(out, space, result, policy, limit=max_failure_files)
    _write_state(out, arguments, space, rounds, result, files)
    if report:
        from diffplatoon.evaluation.search.report import build_search_report

        build_search_report(out, worst_k=worst_k, render_replays=render_replays)
    return SearchRun(out, result, files, ran[0], time.perf_counter() - started)


def _run_round(space: SearchSpace, policy: str, out: Path, index: int, proposal: Proposal, x: np.ndarray, *,
               ray_address: str | None, num_workers: int | None, timeout: float | None,
               retry_failed: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Run one round's episodes through `evaluate` (skipping recorded ones); (scores, failed, episodes run)."""
    folder = round_folder(out, index)
    names, seeds = space.draw_names(index, len(x)), space.draw_seeds(index, len(x))
    path = folder / SAMPLES
    if path.is_file():
        stored = _read_json(path)
        if stored.get("names") != names or not np.array_equal(np.asarray(stored.get("x")), x):
            raise SearchError(f"{path}: this round was drawn differently before (the space file, the scenario, "
                              f"the budget or the code changed); start a new search in another --out folder")
    specs = []
    for i, name in enumerate(names):
        try:
            specs.append(space.make_spec(x[i], name=name, seed=seeds[i]))
        except ScenarioError as exc:
            drawn = ", ".join(f"{k}={v!r}" for k, v in space.values(x[i]).items())
            raise SearchError(f"{space.source}: the draw {drawn} gives an invalid scenario "
                              f"({exc.lines[0]}); narrow that parameter's distribution") from None
    samples = {"round": index, "proposal": proposal.as_dict(), "names": names, "seeds": seeds,
               "paths": space.paths, "x": x.tolist(), "values": [space.values(row) for row in x],
               "log_p": space.log_pdf(x).tolist(), "log_q": proposal.log_pdf(space, x).tolist()}
    if not path.is_file():
        io.atomic_write_json(path, io.json_safe(samples))
    summary = evaluate([policy], specs, 1, folder, ray_address=ray_address, num_workers=num_workers,
                       progress=False, report=False, timeout=timeout, retry_failed=retry_failed,
                       console=Console(file=sys.stderr, quiet=True))
    records = {r["scenario"]: r for r in load_records(folder)}
    bad = [n for n in names if n not in records or records[n].get("failed")]
    if bad:
        raise SearchError(f"{len(bad)} episodes of round {index} failed to run (reasons in "
                          f"{folder / 'records.jsonl'}); rerun the same command with --retry-failed")
    failed = np.array([is_failure(records[n], space.spec.failure) for n in names], dtype=bool)
    scores = np.array([criticality(records[n], space.spec.criticality) for n in names])
    scores[failed] = math.inf
    samples.update(scores=scores.tolist(), failed=failed.tolist(),
                   criticality=[criticality(records[n], space.spec.criticality) for n in names])
    io.atomic_write_json(path, io.json_safe(samples))
    return scores, failed, summary.completed


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON file written by the search."""
    import json

    return json.loads(path.read_text(encoding="utf-8"))


def _check_same_search(out: Path, arguments: Mapping[str, Any], space: SearchSpace) -> None:
    """A folder holds one search: resuming with another policy, scenario or space is refused.

    A changed budget is allowed: the rounds it shares with the earlier one are reused where they draw
    the same episodes (always for Monte Carlo), and `_run_round` refuses a round drawn differently."""
    path = out / SEARCH
    if not path.is_file():
        return
    before = _read_json(path)
    keys = ("policy", "scenario")
    changed = [k for k in keys if before.get("arguments", {}).get(k) != arguments[k]]
    if before.get("space") != space.spec.model_dump(mode="json"):
        changed.append("space")
    if changed:
        raise SearchError(f"{out}: holds a search with another {', '.join(changed)}; choose another --out folder")


def _round_summary(done: Round, space: SearchSpace) -> dict[str, Any]:
    """What search.json keeps of a round."""
    w = np.exp(done.log_p - done.log_q)
    return {"index": done.index, "phase": done.phase, "folder": f"{ROUNDS}/r{done.index:02d}",
            "episodes": int(len(done.x)), "failures": int(done.failed.sum()),
            "level": "failure" if done.level == math.inf else done.level,
            "nominal": done.proposal.defensive >= 1.0, "proposal": done.proposal.as_dict(),
            "max_weight": float(w.max()) if len(w) else None}


def _write_state(out: Path, arguments: Mapping[str, Any], space: SearchSpace, rounds: list[dict[str, Any]],
                 result: SearchResult | None = None, files: list[Path] | None = None) -> None:
    """search.json: arguments, the space, every round so far and, once done, the estimates and failures."""
    state: dict[str, Any] = {
        "command": "search", "arguments": dict(arguments), "space": space.spec.model_dump(mode="json"),
        "scenario": space.scenario.model_dump(mode="json", by_alias=True), "paths": space.paths,
        "rounds": rounds, "complete": result is not None,
        "versions": {"diffplatoon": package_version(), "python": sys.version.split()[0]},
    }
    if result is not None:
        state["estimate"] = result.estimate.as_dict()
        state["all_rounds_estimate"] = result.all_rounds.as_dict()
        state["failure_files"] = [str(p.relative_to(out)) for p in files or []]
    io.atomic_write_json(out / SEARCH, io.json_safe(state))


def _fmt_level(level: float, kind: str) -> str:
    """An elite level in the criticality's own units ('failure' once it is reached)."""
    if level == math.inf:
        return "failure"
    if level == -math.inf:
        return "undefined"
    value = level if kind == "max_drac" else -level
    return f"{kind} {'>=' if kind == 'max_drac' else '<='} {value:.3g}"


__all__ = ["SearchError", "SearchRun", "criticality", "is_failure", "round_folder", "run_search"]
