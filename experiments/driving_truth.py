"""Driving truth: does the simulated driving itself crash, leave by the wrong exit, fail to merge?

Runs the experts ``cacc`` and ``idm`` over every catalogue scenario and every sweep variant, plus
``onramp_merge`` with a 35 veh/km/lane mainline (``onramp_merge--density=35``), through the
evaluation runner (``evaluation.runner.evaluate``: one output folder, resumable, on Ray;
``--ray-address`` passes through), then prints one table per scenario, one row per policy:

| column | from the records |
|---|---|
| episodes | finished records |
| traffic-only collisions | sum of ``traffic_collisions`` (collisions among traffic alone), and the share of episodes with one [Wilson 95%] |
| at-fault collisions | sum of ``at_fault_collisions`` (member collisions the member caused), and the share of episodes with one [Wilson 95%] |
| wrong exits | members whose ``departed`` reason is ``end_of_road`` in a scenario whose platoons have a route or destination, and the share of episodes with one [Wilson 95%] |
| merge success | mean of ``merge_success`` over the episodes that have it, and the share of episodes where every merger merged [Wilson 95%] |

Targets (the driving-truth issue): 0 traffic-only collisions everywhere; 0 at-fault collisions
and 0 wrong exits for both experts; CACC merge success >= 0.9 on ``onramp_merge`` and ``lane_drop``.
The table is also written as ``driving_truth.md`` and ``driving_truth.json`` in ``--out``.

How to run::

    .venv/bin/python experiments/driving_truth.py --episodes 200 --out runs/driving_truth
    .venv/bin/python experiments/driving_truth.py --episodes 2 --scenarios hard_brake lane_drop   # smoke check
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console

from diffplatoon import io
from diffplatoon.evaluation import runner, stats
from diffplatoon.evaluation.formatting import fmt_rate_cell, grouped_markdown, print_grouped
from diffplatoon.scenarios import load_scenario
from diffplatoon.scenarios.loader import catalogue_names
from diffplatoon.scenarios.schema import ScenarioSpec

POLICIES = ("cacc", "idm")
BUSY_MERGE = 35.0  # [veh/km/lane] mainline density of the extra onramp_merge variant


def busy_merge() -> ScenarioSpec:
    """``onramp_merge`` with a 35 veh/km/lane mainline, named ``onramp_merge--density=35``."""
    spec = load_scenario("onramp_merge")
    return spec.model_copy(update={"name": f"onramp_merge--density={BUSY_MERGE:g}",
                                   "traffic": spec.traffic.model_copy(update={"density": BUSY_MERGE})})


def scenario_list(names: Sequence[str] | None) -> list[str | ScenarioSpec]:
    """Catalogue names (sweeps expand in the runner) plus the busy merge when onramp_merge is asked for."""
    chosen: list[str | ScenarioSpec] = list(names or catalogue_names())
    if "onramp_merge" in chosen:
        chosen.append(busy_merge())
    return chosen


def wrong_exits(record: dict[str, Any]) -> int:
    """Members that left by the end of a road their route does not end on (routed scenarios only)."""
    if record.get("reached_goal") is None:
        return 0
    return sum(1 for reason in (record.get("departed") or {}).values() if reason == "end_of_road")


def table_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, policy), in first-seen order (module docstring's columns)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        if not r.get("failed"):
            groups.setdefault((r["scenario"], r["policy"]), []).append(r)
    rows = []
    for (scenario, policy), recs in groups.items():
        n = len(recs)
        traffic = [int(r["traffic_collisions"]) for r in recs]
        fault = [int(r["at_fault_collisions"]) for r in recs]
        wrong = [wrong_exits(r) for r in recs]
        merge = [float(r["merge_success"]) for r in recs if r.get("merge_success") is not None]
        rows.append({
            "scenario": scenario, "policy": policy, "episodes": n,
            "traffic_collisions": sum(traffic), "traffic_episodes": stats.rate_cell(sum(t > 0 for t in traffic), n),
            "at_fault_collisions": sum(fault), "at_fault_episodes": stats.rate_cell(sum(f > 0 for f in fault), n),
            "wrong_exits": sum(wrong), "wrong_exit_episodes": stats.rate_cell(sum(w > 0 for w in wrong), n),
            "merge_success_mean": sum(merge) / len(merge) if merge else None,
            "merge_all": stats.rate_cell(sum(m >= 1.0 for m in merge), len(merge)) if merge else None,
        })
    return rows


_COLUMNS = ("policy", "episodes", "traffic-only collisions (episodes)", "at-fault collisions (episodes)",
            "wrong exits (episodes)", "merge success (all merged)")


def _cells(row: dict[str, Any]) -> list[str]:
    merge = ("-" if row["merge_success_mean"] is None
             else f"{row['merge_success_mean']:.2f} ({fmt_rate_cell(row['merge_all'])})")
    return [row["policy"], str(row["episodes"]),
            f"{row['traffic_collisions']} ({fmt_rate_cell(row['traffic_episodes'])})",
            f"{row['at_fault_collisions']} ({fmt_rate_cell(row['at_fault_episodes'])})",
            f"{row['wrong_exits']} ({fmt_rate_cell(row['wrong_exit_episodes'])})", merge]


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=200, help="episodes per scenario variant and policy")
    parser.add_argument("--scenarios", nargs="+", default=None, help="catalogue names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("runs/driving_truth"))
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES,
                        help="experts to run (default: both)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    policies = tuple(args.policies)
    console = Console()
    chosen = scenario_list(args.scenarios)
    runner.evaluate(list(policies), chosen, args.episodes, args.out, ray_address=args.ray_address,
                    num_workers=args.num_workers, report=False, render_replays=False,
                    progress=not args.no_progress, console=console)
    names = [e.spec.name for e in runner.resolve_scenarios(chosen)]
    wanted = {runner.job_id(s, p, e) for s in names for p in policies for e in range(args.episodes)}
    records = [r for r in runner.load_records(args.out) if r["job_id"] in wanted]
    order = {s: k for k, s in enumerate(names)}
    records.sort(key=lambda r: (order[r["scenario"]], policies.index(r["policy"]), r["episode"]))
    rows = table_rows(records)
    print_grouped(console, rows, _COLUMNS, _cells)
    io.atomic_write_text(args.out / "driving_truth.md", grouped_markdown(rows, _COLUMNS, _cells))
    io.atomic_write_json(args.out / "driving_truth.json", {"episodes": args.episodes, "rows": io.json_safe(rows)})
    return rows


if __name__ == "__main__":
    main()
