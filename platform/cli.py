"""The `diffplatoon` command line: one entry point over scenarios, simulation, evaluation and training.

Each command group lives in this module as a thin layer over the library: it parses
arguments, calls one library function, and prints with rich.

Errors a user can fix take one path (`diffplatoon.cli_errors` and `main`): a bad scenario or
config file (``file:line: field: message``), an unknown controller or policy, a corrupt or
missing checkpoint, an output path that cannot be written, a bad flag value, an unreachable
Ray cluster. Each is one unwrapped line on stderr naming the thing and what was expected, exit
status 1 (2 for a malformed command line), never a traceback. Anything else is a bug and keeps
its traceback. Arguments are checked before Ray starts.
"""

from __future__ import annotations

import json
import math
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

try:  # typer vendors click from 0.2x on; its usage errors are those classes
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - older typer on the public click
    from click import exceptions as click_exceptions

from diffplatoon.cli_errors import (UserError, check_controller, check_output, check_seconds, os_error_line,
                                    print_problems, say, user_errors)
from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT
from diffplatoon.evaluation.formatting import print_table
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, catalogue_names, expand_sweep, load_scenario

console = Console()

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


def _load(name_or_path: str) -> ScenarioSpec:
    with user_errors():
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
    """List the scenario catalogue: name, road type, platoons (vehicles), traffic, description."""
    table = Table(title="diffplatoon scenario catalogue", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("name", no_wrap=True)
    table.add_column("road", no_wrap=True)
    table.add_column("platoons (veh.)", justify="right", width=8)  # fixed widths: the description gets the rest
    table.add_column("traffic", width=11)
    table.add_column("description")
    for name in catalogue_names():
        spec = _load(name)
        first = spec.description.strip().split(". ")[0].rstrip(".")
        table.add_row(name, spec.road.type, f"{len(spec.platoons)} ({spec.num_controlled})", traffic_summary(spec),
                      first)
    print_table(console, table)


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
            print_problems(exc)
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
    table.add_column("variant", no_wrap=True)
    for key in keys:
        table.add_column(key, no_wrap=True)
    for variant in variants:
        dumped = variant.model_dump(mode="json", by_alias=True)
        table.add_row(variant.name, *(json.dumps(_get(dumped, k)) for k in keys))
    print_table(console, table)


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

        check_output("--out", out, folder=False)
        with user_errors(f"--out {out}", (OSError,), "expected a writable path"):
            atomic_write_text(out, text + "\n")
        console.print(f"wrote {out}")


@scenario_app.command("render")
def scenario_render(
    scenario: str = typer.Argument(..., help="Scenario file or catalogue name."),
    seconds: float = typer.Option(20.0, "--seconds", help="Simulated time to render [s]."),
    out: Path = typer.Option(Path("runs/render.gif"), "--out", help="GIF to write."),
    controller: str = typer.Option("cacc", "--controller", help="Policy driving the platoons (idm, cacc, random, ...)."),
    episode: int = typer.Option(0, "--episode", min=0, help="Episode index (seeds every random draw)."),
) -> None:
    """Render a scenario top-down to a GIF: platoons coloured, V2V links drawn, time stamped."""
    from diffplatoon.run import render_scenario

    check_seconds(seconds)
    spec = _load(scenario)
    check_controller("--controller", controller, spec)
    check_output("--out", out, folder=False)
    path = render_scenario(spec, seconds=seconds, out_path=out, controller=controller, episode=episode)
    console.print(f"wrote {path}")


@scenario_app.command("run")
def scenario_run(
    scenario: str = typer.Argument(..., help="Scenario file or catalogue name."),
    controller: str = typer.Option("cacc", "--controller", help="Policy driving the platoons (idm, cacc, random, ...)."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Simulated time [s]; default the scenario's duration."),
    episode: int = typer.Option(0, "--episode", min=0, help="Episode index (seeds every random draw)."),
) -> None:
    """Run a scenario headless with a built-in controller and print a step summary."""
    from diffplatoon.run import run_scenario

    check_seconds(seconds)
    spec = _load(scenario)
    check_controller("--controller", controller, spec)
    summary = run_scenario(spec, controller, seconds=seconds, episode=episode)
    print_table(console, summary.table())


@app.command("evaluate")
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
        _load(name)
    with user_errors():  # every check below happens before Ray starts; a cluster that cannot be joined too
        if num_workers is not None and num_workers < 1:
            raise UserError(f"--num-workers {num_workers}: expected a positive number of workers")
        if not (math.isfinite(episode_timeout) and episode_timeout > 0):
            raise UserError(f"--episode-timeout {episode_timeout:g}: expected a positive number of seconds")
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


@app.command("search")
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

    spec = _load(scenario)
    with user_errors():
        space_spec = load_space(space, spec)
        check_controller("--policy", policy, spec)
        check_output("--out", out, folder=True)
        if num_workers is not None and num_workers < 1:
            raise UserError(f"--num-workers {num_workers}: expected a positive number of workers")
        if not (math.isfinite(episode_timeout) and episode_timeout > 0):
            raise UserError(f"--episode-timeout {episode_timeout:g}: expected a positive number of seconds")
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


@app.command("report")
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


@demos_app.command("collect")
def demos_collect(
    scenarios: list[str] = typer.Option(..., "--scenarios", help="Scenario names or files; several may follow one --scenarios."),
    expert: str = typer.Option("cacc", "--expert", help="Expert policy that drives the platoons."),
    episodes: int = typer.Option(50, "--episodes", min=1, help="Episodes per scenario."),
    out: Path = typer.Option(Path("runs/demos"), "--out", help="Folder for the shards and manifest.json."),
    horizon: int = typer.Option(20, "--horizon", min=1, help="Future steps stored per sample."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]; an episode past it is stopped (its worker killed) and counted as failed."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Roll out an expert over scenarios and store (observation, inbox, future plan) shards; resumable.

    Exits with status 1 when any episode failed (crashed or timed out); rerunning the same command
    runs those again (only collected episodes are listed in the manifest).
    """
    from diffplatoon.agents.diffusion.demos import check_expert, collect_demos

    scenarios = scenarios + (more_scenarios or [])
    specs = [_load(name) for name in scenarios]  # every argument checked before Ray starts
    check_controller("--expert", expert, specs[0])
    with user_errors("--expert", (ValueError,)):  # every sweep variant too
        check_expert(expert, [variant for spec in specs for variant in expand_sweep(spec)[0]])
    check_output("--out", out, folder=True)
    with user_errors():
        if not (0 < episode_timeout < float("inf")):
            raise UserError(f"--episode-timeout: expected a positive number of seconds, got {episode_timeout}")
        summary = collect_demos(scenarios, expert, episodes, out, horizon=horizon, ray_address=ray_address,
                                timeout=episode_timeout)
        if summary.failed:
            raise UserError(f"{summary.failed} of {summary.jobs} demo episodes failed (reasons above); "
                            f"rerun the same command to collect them")


@demos_app.command("aggregate")
def demos_aggregate(
    planner: Path = typer.Option(..., "--planner", help="Planner checkpoint to roll out (e.g. runs/pretrain/best.pt)."),
    scenarios: list[str] = typer.Option(..., "--scenarios", "--scenario", help="Scenario names or files."),
    beta: float = typer.Option(0.5, "--beta", min=0.0, max=1.0, help="Probability that a step executes the expert's action instead of the planner's (lower it each round, e.g. 0.5**round)."),
    round_: int = typer.Option(0, "--round", min=0, help="DAgger iteration: names the shards and seeds the draws."),
    expert: str = typer.Option("cacc", "--expert", help="Expert policy that labels the visited states."),
    episodes: int = typer.Option(20, "--episodes", min=1, help="Episodes per scenario."),
    out: Path = typer.Option(Path("runs/demos"), "--out", help="Demo folder to add the labelled shards to (created if new)."),
    horizon: int = typer.Option(20, "--horizon", min=1, help="Future steps stored per sample (the folder's)."),
    label_every: int = typer.Option(5, "--label-every", min=1, help="Policy steps between labelled states."),
    perturbations: int = typer.Option(0, "--perturbations", min=0, help="Perturbed copies labelled per state (members offset sideways, in heading and speed)."),
    planner_params: str = typer.Option("", "--planner-params", help="diffusion policy parameters, e.g. 'samples=4,steps=5'."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Closed-loop data aggregation: the planner drives, the expert labels the visited states; resumable."""
    from diffplatoon.agents.diffusion.dagger import DaggerSettings, aggregate, check_planner
    from diffplatoon.agents.diffusion.demos import check_expert

    scenarios = scenarios + (more_scenarios or [])
    specs = [variant for name in scenarios for variant in expand_sweep(_load(name))[0]]
    check_controller("--expert", expert, specs[0])
    with user_errors("--expert", (ValueError,)):
        check_expert(expert, specs)
    policy = f"diffusion:{planner}" + (f",{planner_params}" if planner_params else "")
    with user_errors(f"--planner {planner}", (ValueError,)):
        check_planner(policy, specs)
    check_output("--out", out, folder=True)
    with user_errors("--out", (ValueError,)):  # a folder of other settings, or a round of other settings
        if not (0 < episode_timeout < float("inf")):
            raise UserError(f"--episode-timeout: expected a positive number of seconds, got {episode_timeout}")
        settings = DaggerSettings(policy, expert, beta, round_, horizon, label_every=label_every,
                                  perturbations=perturbations)
        summary = aggregate(scenarios, settings, out, episodes=episodes, ray_address=ray_address,
                            timeout=episode_timeout)
        if summary.failed:
            raise UserError(f"{summary.failed} of {summary.jobs} episodes failed (reasons above); rerun to retry them")


@app.command("pretrain")
def pretrain_command(
    config: Path = typer.Argument(..., help="Pre-training config (YAML), e.g. configs/pretrain_planner.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last.pt."),
) -> None:
    """Pre-train the joint diffusion planner on demonstrations (DDPM, EMA, checkpoints, loss curve)."""
    from diffplatoon.agents.diffusion.pretrain import pretrain
    from diffplatoon.evaluation.episode import run_episode  # closed-loop checkpoint selection drives episodes

    with user_errors():
        out = pretrain(config, resume=resume, run_episode=run_episode)
    console.print(f"run folder: {out}")


@app.command("train")
def train_command(
    config: Path = typer.Argument(..., help="Training config (YAML), e.g. configs/ppo_mlp.yaml."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint. RLlib restores it by unpickling its own files, which can run code: resume only runs you trust (an rllib: policy never unpickles)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
) -> None:
    """Train cooperative driving policies with RLlib (MLP PPO baseline or DPPO fine-tuning of the planner)."""
    from diffplatoon.agents.rllib.train import train

    try:
        with user_errors():
            out = train(config, resume=resume, ray_address=ray_address)
    except FileExistsError as exc:  # a fresh run into a folder that already has checkpoints
        raise UserError(f"{exc}; pass --resume to continue it, or choose another 'out' folder") from None
    except FileNotFoundError as exc:  # --resume on a folder without a checkpoint
        raise UserError(str(exc)) from None
    console.print(f"run folder: {out}")


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's outputs.")) -> None:
    """The small end-to-end tour `make demo` runs."""
    from diffplatoon.demo import run_demo

    check_output("--out", out, folder=True)
    run_demo(out, console)


def main() -> None:
    """Console-script entry point: every user error is one line on stderr, never a traceback.

    Commands refuse their arguments through `user_errors`; what reaches here unconverted is a
    user error raised deeper (a scenario error, an unwritable or missing file named by the
    user) or a malformed command line (exit 2). Other exceptions are bugs: their traceback shows.
    """
    try:
        with user_errors():
            code = app(standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as exc:  # `diffplatoon scenario`: the group's help
        exc.show()
        code = exc.exit_code
    except click_exceptions.ClickException as exc:  # a malformed command line: one line instead of rich's panel
        where = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) is not None else ""
        say(f"{where}{exc.format_message()} (see --help)")
        code = exc.exit_code
    except typer.Abort:
        code = 1
    except typer.Exit as exc:
        code = exc.exit_code
    except (FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError) as exc:
        say(os_error_line(exc))
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
