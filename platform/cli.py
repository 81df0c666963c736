"""The `diffplatoon` command line: one entry point over scenarios, simulation, evaluation and training.

Each command group lives in this module as a thin layer over the library: it parses
arguments, calls one library function, and prints with rich. Errors a user can fix (a bad
scenario file, a missing checkpoint) are printed as ``file:line: field: message`` lines and
exit with status 1, never as a traceback.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Iterator, NoReturn, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, catalogue_names, expand_sweep, load_scenario

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    help="diffplatoon: cooperative platoon driving on highway-env roads — scenarios, simulation, "
    "safety evaluation and training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
scenario_app = typer.Typer(help="Define, check, inspect and run YAML scenarios.", no_args_is_help=True)
app.add_typer(scenario_app, name="scenario")
demos_app = typer.Typer(help="Expert demonstrations for pre-training the diffusion planner.", no_args_is_help=True)
app.add_typer(demos_app, name="demos")


def _version() -> str:
    try:
        return version("diffplatoon")
    except PackageNotFoundError:  # running from a source tree without an install
        return "0+unknown"


@app.callback(invoke_without_command=True)
def _root(
    show_version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if show_version:
        console.print(f"diffplatoon {_version()}")
        raise typer.Exit()


def _print_problems(exc: ScenarioError) -> None:
    """A scenario or config error as its `file:line: field: message` lines on stderr."""
    for line in exc.lines:
        err_console.print(line, markup=False, highlight=False)


@contextmanager
def _exit_on_scenario_error() -> Iterator[None]:
    """Turn a ScenarioError raised inside into its printed lines and exit status 1 (no traceback)."""
    try:
        yield
    except ScenarioError as exc:
        _print_problems(exc)
        raise typer.Exit(1) from None


def _load(name_or_path: str) -> ScenarioSpec:
    with _exit_on_scenario_error():
        return load_scenario(name_or_path)


def traffic_summary(spec: ScenarioSpec) -> str:
    """'30 vehicles' or '20 veh/km/lane' (or 'none')."""
    t = spec.traffic
    if t.count is not None:
        return f"{t.count} vehicles"
    if t.density is not None:
        return f"{t.density:g} veh/km/lane"
    return "none"


def one_line_summary(spec: ScenarioSpec) -> str:
    """The one-line summary `scenario validate` prints."""
    members = spec.num_controlled
    parts = [
        f"{spec.road.type} road",
        f"{len(spec.platoons)} platoon{'s' if len(spec.platoons) != 1 else ''} ({members} vehicles)",
        f"traffic {traffic_summary(spec)}",
        f"{len(spec.events)} event{'s' if len(spec.events) != 1 else ''}",
        f"{spec.duration:g} s",
    ]
    if spec.sweep:
        n = len(expand_sweep(spec)[0])
        parts.append(f"sweep of {n} variants")
    return f"{spec.name}: " + ", ".join(parts)


@scenario_app.command("list")
def scenario_list() -> None:
    """List the scenario catalogue: name, road type, platoons, vehicles, description."""
    table = Table(title="diffplatoon scenario catalogue")
    for column in ("name", "road", "platoons", "members", "traffic", "description"):
        table.add_column(column, overflow="fold")
    for name in catalogue_names():
        spec = _load(name)
        first = spec.description.strip().split(". ")[0].rstrip(".")
        table.add_row(
            name, spec.road.type, str(len(spec.platoons)), str(spec.num_controlled), traffic_summary(spec), first
        )
    console.print(table)


@scenario_app.command("validate")
def scenario_validate(
    scenarios: list[str] = typer.Argument(..., help="Scenario files or catalogue names."),
) -> None:
    """Validate scenarios; print a one-line summary each, or every problem as file:line: field: message."""
    failed = False
    for name in scenarios:
        try:
            spec = load_scenario(name)
        except ScenarioError as exc:
            failed = True
            _print_problems(exc)
            continue
        console.print(f"[green]OK[/green] {name}: {one_line_summary(spec).split(': ', 1)[1]}", highlight=False)
    if failed:
        raise typer.Exit(1)


@scenario_app.command("show")
def scenario_show(
    scenario: str = typer.Argument(..., help="Scenario file or catalogue name."),
    sweep: bool = typer.Option(False, "--sweep", help="Show the variants the sweep expands to."),
) -> None:
    """Print the fully resolved scenario (defaults filled in) as YAML, or its sweep variants."""
    spec = _load(scenario)
    if not sweep:
        data = spec.model_dump(mode="json", by_alias=True)
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return
    variants, _ = expand_sweep(spec)
    keys = list(spec.sweep)
    table = Table(title=f"{spec.name}: {len(variants)} variant{'s' if len(variants) != 1 else ''}")
    table.add_column("variant")
    for key in keys:
        table.add_column(key)
    for variant in variants:
        dumped = variant.model_dump(mode="json", by_alias=True)
        table.add_row(variant.name, *(json.dumps(_get(dumped, k)) for k in keys))
    console.print(table)


def _get(data: dict, dotted: str) -> object:
    node: object = data
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]  # type: ignore[index]
    return node


@scenario_app.command("schema")
def scenario_schema(
    out: Optional[Path] = typer.Option(None, "--out", help="Write the JSON Schema here instead of stdout."),
) -> None:
    """Export the scenario JSON Schema (point your editor's YAML plugin at it)."""
    text = json.dumps(ScenarioSpec.model_json_schema(by_alias=True), indent=2)
    if out is None:
        sys.stdout.write(text + "\n")
    else:
        from diffplatoon.io import atomic_write_text

        atomic_write_text(out, text + "\n")
        console.print(f"wrote {out}")


@scenario_app.command("render")
def scenario_render(
    scenario: str = typer.Argument(..., help="Scenario file or catalogue name."),
    seconds: float = typer.Option(20.0, "--seconds", help="Simulated time to render [s]."),
    out: Path = typer.Option(Path("runs/render.gif"), "--out", help="GIF to write."),
    controller: str = typer.Option("cacc", "--controller", help="Policy driving the platoons (idm, cacc, random, ...)."),
    episode: int = typer.Option(0, "--episode", help="Episode index (seeds every random draw)."),
) -> None:
    """Render a scenario top-down to a GIF: platoons coloured, V2V links drawn, time stamped."""
    from diffplatoon.run import render_scenario

    spec = _load(scenario)
    path = render_scenario(spec, seconds=seconds, out_path=out, controller=controller, episode=episode)
    console.print(f"wrote {path}")


@scenario_app.command("run")
def scenario_run(
    scenario: str = typer.Argument(..., help="Scenario file or catalogue name."),
    controller: str = typer.Option("cacc", "--controller", help="Policy driving the platoons (idm, cacc, random, ...)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Simulated time [s]; default the scenario's duration."),
    episode: int = typer.Option(0, "--episode", help="Episode index (seeds every random draw)."),
) -> None:
    """Run a scenario headless with a built-in controller and print a step summary."""
    from diffplatoon.run import run_scenario

    summary = run_scenario(_load(scenario), controller, seconds=seconds, episode=episode)
    console.print(summary.table())


@app.command("evaluate")
def evaluate_command(
    policy: list[str] = typer.Option(..., "--policy", help="Policy to evaluate; repeat for several (idm, cacc, diffusion:<ckpt>, rllib:<ckpt>)."),
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
    from diffplatoon.cluster import RayConnectError
    from diffplatoon.evaluation.runner import PolicyBuildError, evaluate

    def fail(message: str) -> NoReturn:
        err_console.print(message, markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    if num_workers is not None and num_workers < 1:
        fail(f"--num-workers: expected a positive integer, got {num_workers}")
    if not (0 < episode_timeout < float("inf")):
        fail(f"--episode-timeout: expected a positive number of seconds, got {episode_timeout}")
    scenarios = scenarios + (more_scenarios or [])
    for name in scenarios:  # fail fast with file:line errors before starting Ray
        _load(name)
    try:
        with _exit_on_scenario_error():
            summary = evaluate(policy, scenarios, episodes, out, ray_address=ray_address, num_workers=num_workers,
                               worst_k=worst_k, timeout=episode_timeout, retry_failed=retry_failed)
    except PolicyBuildError as exc:  # raised before Ray starts
        fail(f"--policy: {exc}")
    except (RayConnectError, ValueError) as exc:  # a cluster that cannot be joined; repeated scenario names
        fail(str(exc))
    if summary.failed:
        fail(f"{summary.failed} of {summary.jobs} episodes failed (reasons in {out / 'records.jsonl'}); "
             f"rerun the same command with --retry-failed to run them again")


@app.command("report")
def report_command(
    folder: Path = typer.Argument(..., help="An evaluation output folder with records.jsonl."),
    worst_k: int = typer.Option(3, "--worst-k", help="Replays (GIF) of the k worst episodes."),
    no_replays: bool = typer.Option(False, "--no-replays", help="Skip drawing the worst episodes' stored replays to GIF."),
) -> None:
    """(Re)build report.md / report.html / metrics.json / plots from an evaluation's records."""
    from diffplatoon.evaluation.report import build_report

    if not (folder / "records.jsonl").exists():
        err_console.print(f"{folder}: expected an evaluation folder containing records.jsonl, found none")
        raise typer.Exit(1)
    path = build_report(folder, worst_k=worst_k, render_replays=not no_replays)
    console.print(f"wrote {path}")


@demos_app.command("collect")
def demos_collect(
    scenarios: list[str] = typer.Option(..., "--scenarios", help="Scenario names or files; several may follow one --scenarios."),
    expert: str = typer.Option("cacc", "--expert", help="Expert policy that drives the platoons."),
    episodes: int = typer.Option(50, "--episodes", min=1, help="Episodes per scenario."),
    out: Path = typer.Option(Path("runs/demos"), "--out", help="Folder for the shards and manifest.json."),
    horizon: int = typer.Option(20, "--horizon", min=1, help="Future steps stored per sample."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Roll out an expert over scenarios and store (observation, inbox, future plan) shards; resumable."""
    from diffplatoon.agents.diffusion.demos import collect_demos

    scenarios = scenarios + (more_scenarios or [])
    for name in scenarios:
        _load(name)
    collect_demos(scenarios, expert, episodes, out, horizon=horizon, ray_address=ray_address)


@app.command("pretrain")
def pretrain_command(
    config: Path = typer.Argument(..., help="Pre-training config (YAML), e.g. configs/pretrain_planner.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last.pt."),
) -> None:
    """Pre-train the joint diffusion planner on demonstrations (DDPM, EMA, checkpoints, loss curve)."""
    from diffplatoon.agents.diffusion.pretrain import pretrain

    with _exit_on_scenario_error():
        out = pretrain(config, resume=resume)
    console.print(f"run folder: {out}")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training config (YAML), e.g. configs/ppo_mlp.yaml."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
) -> None:
    """Train cooperative driving policies with RLlib (MLP PPO baseline or DPPO fine-tuning of the planner)."""
    from diffplatoon.agents.rllib.train import train

    try:
        with _exit_on_scenario_error():
            out = train(config, resume=resume, ray_address=ray_address)
    except FileExistsError as exc:  # a fresh run into a folder that already has checkpoints
        err_console.print(f"{exc}; pass --resume to continue it, or choose another 'out' folder")
        raise typer.Exit(1) from None
    except FileNotFoundError as exc:  # --resume on a folder without a checkpoint
        err_console.print(str(exc))
        raise typer.Exit(1) from None
    console.print(f"run folder: {out}")


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's outputs.")) -> None:
    """The small end-to-end tour `make demo` runs."""
    from diffplatoon.demo import run_demo

    run_demo(out, console)


def main() -> None:
    """Console-script entry point: a missing or clashing file is a one-line error, not a traceback."""
    try:
        app()
    except (FileNotFoundError, FileExistsError) as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
