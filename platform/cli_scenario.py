"""`diffplatoon scenario …`: list, validate, show, schema, render and run YAML scenarios.

Each command parses its arguments, calls one library function and prints with rich; bad
arguments go through `diffplatoon.cli_errors`. `one_line_summary` is the line `validate`
prints (the demo prints it too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich import box
from rich.console import Console
from rich.table import Table

from diffplatoon.cli_errors import (check_controller, check_output, check_seconds, load_spec, print_problems,
                                    user_errors)
from diffplatoon.evaluation.formatting import print_table
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, catalogue_names, expand_sweep, load_scenario
from diffplatoon.scenarios.sweep import get_path

console = Console()

scenario_app = typer.Typer(help="Define, check, inspect and run YAML scenarios.", no_args_is_help=True)


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
        spec = load_spec(name)
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
    spec = load_spec(scenario)
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
        table.add_row(variant.name, *(json.dumps(get_path(dumped, k)) for k in keys))
    print_table(console, table)


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
    spec = load_spec(scenario)
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
    spec = load_spec(scenario)
    check_controller("--controller", controller, spec)
    summary = run_scenario(spec, controller, seconds=seconds, episode=episode)
    print_table(console, summary.table())
