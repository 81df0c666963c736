"""`make demo`: a few-minute tour of the platform on small defaults.

Stages, each printing what it does and where its output went:
1. the scenario catalogue, every entry validated;
2. a top-down GIF of the on-ramp merge driven by the CACC expert;
3. a baseline safety evaluation (CACC vs IDM on the stress scenarios) with its report.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from diffplatoon.scenarios import catalogue_names, load_scenario

STRESS_SCENARIOS = ["hard_brake", "cut_in", "comm_dropout"]


def run_demo(out: Path, console: Console, *, episodes: int = 6) -> None:
    """Run every demo stage, writing outputs under `out`."""
    from diffplatoon.cli import one_line_summary

    out.mkdir(parents=True, exist_ok=True)
    console.print(Rule("1. The scenario catalogue"))
    for name in catalogue_names():
        console.print(f"  [green]OK[/green] {one_line_summary(load_scenario(name))}", highlight=False)

    console.print(Rule("2. A rendered scenario"))
    from diffplatoon.sim.render import render_scenario

    gif = render_scenario(load_scenario("onramp_merge"), seconds=20, out_path=out / "onramp_merge.gif", controller="cacc")
    console.print(f"  top-down replay of onramp_merge (CACC platoon): {gif}")

    console.print(Rule("3. Baseline safety evaluation: CACC vs IDM"))
    from diffplatoon.evaluation.runner import evaluate

    evaluate(["cacc", "idm"], STRESS_SCENARIOS, episodes, out / "eval-baselines", worst_k=2)
    console.print(f"  report: {out / 'eval-baselines' / 'report.md'} (and report.html)")

    console.print(f"\n[bold]Done.[/bold] Outputs are under {out}/")
