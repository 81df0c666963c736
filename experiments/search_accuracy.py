"""Accuracy of the failure search: cross-entropy importance sampling against brute-force Monte Carlo.

Two cases, CACC on ``hard_brake`` with the braking deceleration and the V2V latency varied:

| case | space | nominal failure probability |
|---|---|---|
| common | ``configs/search/hard_brake.yaml`` | about 1e-2 |
| rare | ``configs/search/hard_brake_rare.yaml`` | about 1e-4 |

For each case the script runs the search (``method: cem``) and plain Monte Carlo over the same
nominal distribution (``method: monte_carlo``, its own seed), both through `run_search`, so both
use the same runner, episodes and failure definition. It writes ``search_accuracy.md`` and
``search_accuracy.json`` into ``--out`` (one resumable sub-folder per run) with, per run, the
episodes, failures, the estimate with its 95 % interval (importance sampling: estimate -/+ 1.96
standard errors; Monte Carlo: Wilson) and the failures' effective sample size, and for the
search whether its estimate lies inside the Monte Carlo interval.

How to run::

    .venv/bin/python experiments/search_accuracy.py                       # the full evidence (5,000 MC episodes)
    .venv/bin/python experiments/search_accuracy.py --mc-episodes 2000    # a smaller brute-force reference

Results to expect: in the common case the search's estimate from 500 episodes (1/10 of the Monte
Carlo run) lies inside the Monte Carlo 95 % interval; in the rare case the search finds failures
and estimates about 1e-4 from 1,000 episodes, where Monte Carlo with the same 1,000 finds none.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from diffplatoon import io
from diffplatoon.cluster import connect_ray
from diffplatoon.evaluation.formatting import print_table
from diffplatoon.evaluation.search import SearchSpace, load_space, run_search
from diffplatoon.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[1]
CASES = {"common": ROOT / "configs/search/hard_brake.yaml", "rare": ROOT / "configs/search/hard_brake_rare.yaml"}
MC_SEED = 1  # Monte Carlo draws independently of the search (seed 0)
MC_ROUND = 500


def monte_carlo(space: SearchSpace) -> SearchSpace:
    """The same space sampled by plain Monte Carlo (nominal only, Wilson interval)."""
    settings = space.spec.search.model_copy(update={"method": "monte_carlo", "round_size": MC_ROUND,
                                                    "seed": MC_SEED})
    return dataclasses.replace(space, spec=space.spec.model_copy(update={"search": settings}))


def row(case: str, method: str, run: Any, wall: float) -> dict[str, Any]:
    """One line of the results table."""
    e = run.result.estimate
    return {"case": case, "method": method, "episodes": sum(len(r.x) for r in run.result.rounds),
            "estimation_episodes": e.n, "failures_found": sum(int(r.failed.sum()) for r in run.result.rounds),
            "estimate": e.probability, "low": e.low, "high": e.high, "std_error": e.std_error,
            "ess": e.ess, "failure_ess": e.failure_ess, "wall_time_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="cacc")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--search-budget", type=int, default=500, help="Episodes of the search, common case.")
    parser.add_argument("--mc-episodes", type=int, default=5000, help="Brute-force Monte Carlo episodes, common case.")
    parser.add_argument("--rare-budget", type=int, default=1000, help="Episodes of the search and of Monte Carlo, rare case.")
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "runs/search_accuracy")
    args = parser.parse_args()
    console = Console()
    scenario = load_scenario("hard_brake")
    plan = {"common": (args.search_budget, args.mc_episodes), "rare": (args.rare_budget, args.rare_budget)}
    rows: list[dict[str, Any]] = []
    connect_ray(args.ray_address, args.num_workers)
    for case in args.cases:
        space = load_space(CASES[case], scenario)
        search_budget, mc_budget = plan[case]
        for method, sp, budget in (("search (CEM-IS)", space, search_budget),
                                   ("Monte Carlo", monte_carlo(space), mc_budget)):
            console.print(f"[bold]{case}: {method}, {budget} episodes")
            started = time.perf_counter()
            folder = args.out / f"{case}-{'search' if sp is space else 'mc'}"
            run = run_search(sp, args.policy, budget, folder, num_workers=args.num_workers,
                             space_file=str(CASES[case].relative_to(ROOT)), report=sp is space, console=console)
            rows.append(row(case, method, run, time.perf_counter() - started))
        search, mc = rows[-2], rows[-1]
        search["inside_mc_interval"] = mc["low"] <= search["estimate"] <= (mc["high"] if mc["high"] is not None else 1)
        search["budget_ratio"] = search["episodes"] / mc["episodes"]

    table = Table(title="Failure search vs brute-force Monte Carlo (CACC, hard_brake)")
    for col in ("case", "method", "episodes", "failures", "estimate", "95% interval", "ESS (failures)",
                "inside MC interval"):
        table.add_column(col, no_wrap=True)
    lines = ["| case | method | episodes | failures found | estimate | 95% interval | ESS (failures) | "
             "inside MC interval |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        interval = f"[{r['low']:.2g}, {r['high']:.2g}]" if r["high"] is not None else "[0, -] (no failure)"
        inside = {True: "yes", False: "no"}.get(r.get("inside_mc_interval"), "")
        cells = [r["case"], r["method"], str(r["episodes"]), str(r["failures_found"]), f"{r['estimate']:.3g}",
                 interval, f"{r['failure_ess']:.1f}", inside]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    print_table(console, table)
    io.atomic_write_json(args.out / "search_accuracy.json", io.json_safe({"arguments": vars(args), "rows": rows}))
    io.atomic_write_text(args.out / "search_accuracy.md", "\n".join(lines) + "\n")
    console.print(f"wrote {args.out / 'search_accuracy.md'}")


if __name__ == "__main__":
    main()
