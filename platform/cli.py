"""The `diffplatoon` command line: one entry point over scenarios, simulation, evaluation and training.

Each command group lives in this module as a thin layer over the library: it parses
arguments, calls one library function, and prints with rich. Errors a user can fix (a bad
scenario file, a missing checkpoint) are printed as ``file:line: field: message`` lines and
exit with status 1, never as a traceback.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

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
    try:
        return load_scenario(name_or_path)
    except ScenarioError as exc:
        for line in exc.lines:
            err_console.print(line, markup=False, highlight=False)
        raise typer.Exit(1) from None


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
            for line in exc.lines:
                err_console.print(line, markup=False, highlight=False)
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


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's outputs.")) -> None:
    """The small end-to-end tour `make demo` runs."""
    from diffplatoon.demo import run_demo

    run_demo(out, console)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
