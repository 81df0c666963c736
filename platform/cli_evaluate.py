"""`diffplatoon evaluate`, `search` and `report`: safety evaluation, failure search and their reports.

Each command checks every argument before Ray starts (`diffplatoon.cli_errors`), calls one
library function and prints with rich. `diffplatoon.cli` registers them on the root command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from diffplatoon.cli_errors import (UserError, check_controller, check_output, check_timeout, check_workers,
                                    load_spec, user_errors)
from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT

console = Console()


def evaluate_command(
    policy: list[str] = typer.Option(..., "--policy", help="Policy to evaluate; repeat for several (idm, cacc, diffusion:<ckpt>, rllib:<ckpt>, sb3:<model.zip>)."),
    scenarios: list[str] = typer.Option(..., "--scenarios", help="Scenario names or files (sweeps expand to their variants); several may follow one --scenarios."),
    episodes: int = typer.Option(20, "--episodes", min=1, help="Episodes per scenario and policy."),
    out: Path = typer.Option(Path("runs/eval"), "--out", help="Output folder (records.jsonl, report.md/html, plots/, replays/)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Parallel episode workers (default: available CPUs)."),
    worst_k: int = typer.Option(3, "--worst-k", help="Replays (GIF) of the k worst episodes in the report."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]; an episode past it is stopped (its worker killed) and recorded as failed."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run the episodes recorded as failed in --out again (the newest record of an episode counts)."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Run a safety evaluation: episodes as Ray tasks, resumable records, then the report.

    Exits with status 1 when any episode failed (crashed or timed out); rerun the same command
    with --retry-failed to run those again.
    """
    from diffplatoon.evaluation.runner import PolicyBuildError, evaluate

    scenarios = scenarios + (more_scenarios or [])
    for name in scenarios:  # fail fast with file:line errors before starting Ray
        load_spec(name)
    with user_errors():  # every check below happens before Ray starts; a cluster that cannot be joined too
        check_workers(num_workers)
        check_timeout(episode_timeout)
        try:
            summary = evaluate(policy, scenarios, episodes, out, ray_address=ray_address, num_workers=num_workers,
                               worst_k=worst_k, timeout=episode_timeout, retry_failed=retry_failed)
        except PolicyBuildError as exc:
            raise UserError(f"--policy: {exc}") from None
        except ValueError as exc:  # repeated scenario names
            raise UserError(f"--scenarios: {exc}") from None
        if summary.failed:
            raise UserError(f"{summary.failed} of {summary.jobs} episodes failed (reasons in "
                            f"{out / 'records.jsonl'}); rerun the same command with --retry-failed to run them again")


def search_command(
    policy: str = typer.Option(..., "--policy", help="Policy to search failures of (idm, cacc, diffusion:<ckpt>, rllib:<ckpt>, sb3:<model.zip>)."),
    scenario: str = typer.Option(..., "--scenario", help="Scenario name or file whose fields the space varies."),
    space: Path = typer.Option(..., "--space", help="Search space file (YAML): field paths and their nominal distributions."),
    budget: int = typer.Option(2000, "--budget", min=1, help="Episodes to spend, over every round."),
    out: Path = typer.Option(Path("runs/search"), "--out", help="Output folder (search.json, rounds/, failures/*.yaml, report.md/html)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Parallel episode workers (default: available CPUs)."),
    worst_k: int = typer.Option(3, "--worst-k", min=0, help="Replays (GIF) of the k worst episodes in the report."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]; an episode past it is stopped and recorded as failed."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run the episodes recorded as failed in --out again."),
) -> None:
    """Search where a policy fails: cross-entropy importance sampling over a scenario's fields, resumable.

    Prints the failure probability under the nominal distribution (importance-weighted, 95%
    interval, effective sample size); writes the failing scenarios as YAML and a report.
    """
    from diffplatoon.evaluation.search import SearchError, load_space, run_search

    spec = load_spec(scenario)
    with user_errors():
        space_spec = load_space(space, spec)
        check_controller("--policy", policy, spec)
        check_output("--out", out, folder=True)
        check_workers(num_workers)
        check_timeout(episode_timeout)
        try:
            run = run_search(space_spec, policy, budget, out, ray_address=ray_address, num_workers=num_workers,
                             timeout=episode_timeout, retry_failed=retry_failed, worst_k=worst_k,
                             space_file=str(space), console=console)
        except SearchError as exc:
            raise UserError(str(exc)) from None
    e = run.result.estimate
    interval = f"[{e.low:.3g}, {e.high:.3g}]" if e.high is not None else "(no failure found: no upper end)"
    console.print(f"failure probability under the nominal distribution: {e.probability:.3g} {interval} (95%), "
                  f"{e.failures} failures in {e.n} estimation episodes, ESS {e.ess:.1f} (failures {e.failure_ess:.1f})",
                  highlight=False, soft_wrap=True)
    console.print(f"{run.episodes_run} episodes run now, {len(run.failure_files)} failing scenarios written, "
                  f"report in {out / 'report.md'}", highlight=False, soft_wrap=True)


def report_command(
    folder: Path = typer.Argument(..., help="An evaluation output folder with records.jsonl."),
    worst_k: int = typer.Option(3, "--worst-k", min=0, help="Replays (GIF) of the k worst episodes."),
    no_replays: bool = typer.Option(False, "--no-replays", help="Skip drawing the worst episodes' stored replays to GIF."),
) -> None:
    """(Re)build report.md / report.html / metrics.json / plots from an evaluation's records."""
    from diffplatoon.evaluation.report import build_report

    if not ((folder / "records.jsonl").is_file() or (folder / "search.json").is_file()):
        raise UserError(f"{folder}: expected an evaluation folder containing records.jsonl (or a search folder "
                        f"containing search.json), found none")
    path = build_report(folder, worst_k=worst_k, render_replays=not no_replays)
    console.print(f"wrote {path}")
