"""Sharded safety evaluation: (scenario x episode x policy) jobs as Ray tasks, one record per episode.

`evaluate` expands the scenarios (catalogue names, YAML files, spec objects; sweeps become
one spec per grid point), submits one Ray task per job and appends each finished episode's
record to ``<out>/records.jsonl`` from the driver as results arrive, so a crash loses only
the episodes still running. Before a record is appended, what the report draws of that episode
(`episode_data`: member profiles, the replay when it is cheap or the episode notable) is
written atomically to ``<out>/episodes/<job>.npz``; the report only reads these files.
Resuming: a rerun reads the records, skips every job_id already there and reports each
episode exactly once.

Guards: every policy is built once for every scenario in the driver before Ray starts, so a
policy that cannot be built is one `PolicyBuildError`, not a folder of failure records. Each
job has a wall-clock limit (``timeout``, default `DEFAULT_JOB_TIMEOUT`): a task past it is
cancelled and its worker killed (`diffplatoon.cluster.run_bounded`), so a hang even inside one
simulator step becomes a failure record "timed out after N s" and the run goes on.

Failures: a Python exception inside an episode is deterministic (same seed, same error), so
it is not retried; it becomes one failure record (``failed: true`` and the error). A task
whose worker process dies (segfault, out of memory) is retried by Ray up to ``max_retries``
times and recorded as a failure if it still dies. Failure records are final on rerun unless
``retry_failed`` is set, which runs those jobs again and appends their new records. Older
lines stay in the file as the audit trail; `load_records` keeps the newest record of each
job_id, so the report counts every episode exactly once.

Parallelism: at most ``num_workers`` tasks are in flight, one CPU each, torch limited to one
thread per worker. Episodes are seeded by (scenario seed, episode index) only, so the records
(minus ``wall_time``) do not depend on the number of workers or the completion order.

``run.json`` (arguments, scenario hashes, versions) is written by `provenance`, the console table
by `summary`.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from diffplatoon import io
from diffplatoon.cluster import (DEFAULT_JOB_TIMEOUT, JobSummary, Overdue, check_timeout, connect_ray, remote,
                                 run_bounded)
from diffplatoon.evaluation import episode_data
from diffplatoon.evaluation.formatting import print_table
from diffplatoon.evaluation.provenance import RUN, write_run_json  # noqa: F401 - RUN: the run folder's names here too
from diffplatoon.evaluation.summary import summary_rows, summary_table
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import ScenarioSpec, expand_sweep, load_scenario
from diffplatoon.scenarios.loader import resolve_source

RECORDS = "records.jsonl"
# Ray retries a task whose worker died this many times before it is recorded as a failure.
DEFAULT_MAX_RETRIES = 2


@dataclass(frozen=True)
class ScenarioEntry:
    """One resolved scenario (a sweep variant counts as its own scenario)."""

    spec: ScenarioSpec
    source: str  # catalogue file name, YAML path, or "<spec>" for an object passed in
    sha256: str  # of the resolved spec's canonical JSON


@dataclass(frozen=True)
class Job:
    """One episode of one policy on one scenario."""

    scenario: str
    policy: str
    episode: int

    @property
    def job_id(self) -> str:
        """The key records are matched on when resuming."""
        return job_id(self.scenario, self.policy, self.episode)


@dataclass
class EvalSummary(JobSummary):
    """What one `evaluate` call did; ``rows`` are per scenario x policy aggregates."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None

    @property
    def episodes_per_s(self) -> float:
        """Episodes finished in this call per second of wall time."""
        return self.completed / self.wall_time if self.wall_time > 0 else float("nan")


def job_id(scenario: str, policy: str, episode: int) -> str:
    """Identifier of a job: ``scenario|policy|episode``."""
    return f"{scenario}|{policy}|{episode}"


def spec_hash(spec: ScenarioSpec) -> str:
    """SHA-256 of the spec's canonical JSON (what a rerun must reproduce)."""
    return hashlib.sha256(spec.model_dump_json(by_alias=True).encode("utf-8")).hexdigest()


def resolve_scenarios(scenarios: Iterable[str | os.PathLike[str] | ScenarioSpec]) -> list[ScenarioEntry]:
    """Load names, files and spec objects and expand their sweeps; names must be unique."""
    entries: list[ScenarioEntry] = []
    for item in scenarios:
        if isinstance(item, ScenarioSpec):
            source, spec = "<spec>", item
        else:
            source = resolve_source(item)[0]
            spec = load_scenario(item)
        variants, _ = expand_sweep(spec, source=source)
        entries.extend(ScenarioEntry(v, source, spec_hash(v)) for v in variants)
    names = [e.spec.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"scenario names must be unique within a run, repeated: {', '.join(dupes)}")
    return entries


def make_jobs(entries: Sequence[ScenarioEntry], policies: Sequence[str], episodes: int,
              seed_offset: int = 0) -> list[Job]:
    """Jobs in submission order: scenario, then episode, then policy (paired by seed)."""
    return [Job(e.spec.name, p, ep) for e in entries
            for ep in range(seed_offset, seed_offset + episodes) for p in policies]


# ------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------


def repair_records(path: Path) -> int:
    """Drop a torn (unterminated) last line left by a killed run; return the bytes removed.

    Appending after a torn line would glue the next record onto it and lose both.
    """
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return 0
    keep = data[: data.rfind(b"\n") + 1]
    io.atomic_write_bytes(path, keep)
    return len(data) - len(keep)


def load_records(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of a run folder, one per job_id: the newest line of each job (a retry supersedes the
    failure before it), in the order jobs first appear in the file."""
    chosen: dict[str, dict[str, Any]] = {}
    for rec in io.read_jsonl(Path(out) / RECORDS):
        key = rec.get("job_id")
        if key is not None:
            chosen[key] = rec
    return list(chosen.values())


class PolicyBuildError(ValueError):
    """A policy string that cannot be built for a scenario of the run (checked before Ray starts)."""


def check_policies(policies: Sequence[str], entries: Sequence[ScenarioEntry]) -> None:
    """Build every policy once for every scenario in this process; raise `PolicyBuildError` naming
    the first that fails (unknown kind, bad parameter, missing or mismatched checkpoint)."""
    from diffplatoon.agents.policy import make_policy

    for name in policies:
        for entry in entries:
            try:
                make_policy(name, entry.spec)
            except Exception as exc:  # noqa: BLE001 - any build error is the user's policy string
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise PolicyBuildError(f"policy {name!r} cannot be built for scenario {entry.spec.name!r}: "
                                       f"{text}") from exc


def failure_record(job: Job, seed: int, error: str, detail: str = "") -> dict[str, Any]:
    """The record of a job that could not produce an episode."""
    return {"job_id": job.job_id, "scenario": job.scenario, "policy": job.policy, "episode": job.episode,
            "seed": seed, "failed": True, "error": error, "traceback": detail}


# ------------------------------------------------------------------------------------------------
# The task
# ------------------------------------------------------------------------------------------------


def run_job(spec: ScenarioSpec, policy: str, episode: int) -> tuple[dict[str, Any], bytes | None]:
    """Run one episode in this process: its record (or a failure record) and its `episode_data` npz bytes.

    The record's ``replay_stored`` says whether the bytes hold the replay (`episode_data.compact`).
    """
    import torch

    torch.set_num_threads(1)  # one worker per core; more threads only contend (ARCHITECTURE §7)
    job = Job(spec.name, policy, episode)
    try:
        from diffplatoon.evaluation.episode import run_episode

        result = run_episode(spec, policy, episode)
        record = dict(result.record)
        payload, record["replay_stored"] = episode_data.compact(result.data, record, Thresholds.for_spec(spec))
    except Exception as exc:  # noqa: BLE001 - any episode error becomes a failure record
        return failure_record(job, spec.seed, f"{type(exc).__name__}: {exc}", traceback.format_exc()), None
    record["job_id"] = job.job_id
    return record, payload


# ------------------------------------------------------------------------------------------------
# evaluate
# ------------------------------------------------------------------------------------------------


def evaluate(policies: list[str], scenarios: list[str], episodes: int, out: Path, *,
             ray_address: str | None = None, num_workers: int | None = None, seed_offset: int = 0,
             worst_k: int = 3, progress: bool = True, max_retries: int = DEFAULT_MAX_RETRIES,
             retry_failed: bool = False, report: bool = True, render_replays: bool = True,
             timeout: float | None = DEFAULT_JOB_TIMEOUT, console: Console | None = None) -> EvalSummary:
    """Run every (scenario, episode, policy) job on Ray, append records, then build the report.

    ``scenarios`` may hold catalogue names, YAML paths or `ScenarioSpec` objects. Jobs whose
    job_id is already in ``out/records.jsonl`` are skipped (failures too, unless
    ``retry_failed``). ``timeout`` is each job's wall-clock limit [s] (None: none). Raises
    `PolicyBuildError` before starting Ray when a policy cannot be built for some scenario.
    """
    import ray

    if episodes < 0:
        raise ValueError(f"episodes must be >= 0, got {episodes}")
    if not policies:
        raise ValueError("at least one policy is needed")
    if num_workers is not None and num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    check_timeout(timeout)
    out = Path(out)
    console = console or Console()
    entries = resolve_scenarios(scenarios)
    check_policies(policies, entries)
    out.mkdir(parents=True, exist_ok=True)
    specs = {e.spec.name: e.spec for e in entries}
    jobs = make_jobs(entries, policies, episodes, seed_offset)
    records_path = out / RECORDS
    repair_records(records_path)
    done = {r["job_id"]: r for r in load_records(out)}
    todo = [j for j in jobs if j.job_id not in done or (retry_failed and done[j.job_id].get("failed"))]
    write_run_json(out, policies, scenarios, episodes, entries, seed_offset, ray_address, num_workers,
                   worst_k)

    started = time.perf_counter()
    completed = 0
    we_started_ray = False
    if todo:
        we_started_ray = connect_ray(ray_address, num_workers)
        try:
            completed = _drive(todo, specs, records_path, num_workers, max_retries, timeout, progress, console)
        finally:
            if we_started_ray:
                ray.shutdown()
    wall = time.perf_counter() - started

    wanted = {j.job_id for j in jobs}
    records = [r for r in load_records(out) if r["job_id"] in wanted]
    write_run_json(out, policies, scenarios, episodes, entries, seed_offset, ray_address, num_workers,
                   worst_k, records)
    ok = [r for r in records if not r.get("failed")]
    summary = EvalSummary(out=out, jobs=len(jobs), completed=completed, skipped=len(jobs) - len(todo),
                          failed=sum(1 for r in records if r.get("failed")), wall_time=wall,
                          rows=summary_rows(ok))
    if progress:
        print_table(console, summary_table(summary.rows, failed=summary.failed, scenarios=list(specs),
                                           policies=policies))
        console.print(f"{summary.completed} episodes run, {summary.skipped} already done, "
                      f"{summary.failed} failed, in {wall:.1f} s -> {out}")
    if report:
        from diffplatoon.evaluation.report import build_report

        summary.report = build_report(out, worst_k=worst_k, render_replays=render_replays)
    return summary


def _drive(todo: list[Job], specs: dict[str, ScenarioSpec], records_path: Path, num_workers: int | None,
           max_retries: int, timeout: float | None, show: bool, console: Console) -> int:
    """Run the jobs through `run_bounded`; store each episode's data, then append its record."""
    import ray

    workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    spec_refs = {name: ray.put(spec) for name, spec in specs.items()}
    task = remote(run_job).options(max_retries=max_retries)
    completed = 0
    bar = Progress(TextColumn("[bold]evaluate"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                   disable=not show)
    with bar:
        task_id = bar.add_task("episodes", total=len(todo))
        for job, ref in run_bounded(todo, lambda j: task.remote(spec_refs[j.scenario], j.policy, j.episode),
                                    workers=workers, timeout=timeout):
            seed = specs[job.scenario].seed
            if isinstance(ref, Overdue):
                record, payload = failure_record(job, seed, ref.reason), None
                record["timed_out"] = True
            else:
                try:
                    record, payload = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - worker died after all retries
                    first = str(exc).splitlines()[0] if str(exc) else ""
                    record, payload = failure_record(job, seed, f"{type(exc).__name__}: {first}", str(exc)), None
            if payload is not None:  # first, so that a record's data file is always whole
                io.atomic_write_bytes(episode_data.data_path(records_path.parent, job.job_id), payload)
            io.append_jsonl(records_path, record)
            completed += 1
            bar.advance(task_id)
    return completed
