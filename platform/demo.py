"""`make demo`: a few-minute tour of the platform on small defaults.

Each stage prints what it does and where its output went; the stages grow as the platform
does (scenario catalogue → validation → a rendered scenario → ...).
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from diffplatoon.scenarios import catalogue_names, load_scenario


def run_demo(out: Path, console: Console) -> None:
    """Run every demo stage, writing outputs under `out`."""
    from diffplatoon.cli import one_line_summary

    out.mkdir(parents=True, exist_ok=True)
    console.print(Rule("1. The scenario catalogue"))
    for name in catalogue_names():
        console.print(f"  [green]OK[/green] {one_line_summary(load_scenario(name))}", highlight=False)
    console.print(f"\n[bold]Done.[/bold] Outputs are under {out}/")
