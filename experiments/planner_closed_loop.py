"""Closed-loop evidence for the pre-trained planner: BC vs DAgger, each unshielded and shielded, vs CACC and IDM.

Runs ``evaluation.runner.evaluate`` once (one output folder, resumable, on Ray; ``--ray-address`` passes
through) over the highway catalogue scenarios (``highway_platoon``, ``hard_brake``, ``cut_in``,
``comm_dropout``, ``lane_drop``, ``onramp_merge``) and every variant of ``dense_highway_sweep``, plus the
``--held-out`` scenarios (names or YAML files whose platoon size, speed or comms settings the planners were
not trained on), with these policies:

| label | policy string |
|---|---|
| bc, dagger, NAME | ``diffusion:<ckpt>,<--params>,shield=off`` (the planner as it drives: guided, no shield) |
| bc+shield, … | ``diffusion:<ckpt>,<--params>,shield=on`` (plus the exact shield and its fallbacks) |
| bc unguided, bc unguided+shield, … | the same with ``guidance=off`` (``--guidance off`` or ``both``) |
| cacc, idm | the experts (``--experts`` picks them) |

(rows only for the checkpoints given: ``--bc``, ``--dagger``, and any ``--planner NAME=CKPT``, e.g. a planner
fine-tuned on the generalisation mix; ``--guidance both`` (alias ``--unguided``) is the guidance ablation).
Then one table per scenario, one row per
policy, from the records (the episode is the sampling unit; [lo, hi] is the Wilson 95% interval):

| column | from the records |
|---|---|
| episodes | finished records (failure records are counted apart, in ``failed``) |
| collisions | member collisions, and the episodes with one [Wilson] |
| at-fault | ``at_fault_collisions`` summed, and the episodes with one [Wilson] |
| off-road | episodes with ``offroad`` [Wilson] |
| mean speed | mean of the episodes' ``mean_speed`` [m/s], and its % of CACC's on the same scenario |
| merge success | mean of ``merge_success`` over the episodes that have it |
| shield overrides | share of the shield's decisions that did not execute the first-ranked sample (`ShieldLevel.overrides`) |

and the targets, PASS / FAIL per row (``-`` where a target does not apply to the row):

Every planner row is judged, guided or not (the planner is shipped with the guidance setting that passes).

| target | rows | rule |
|---|---|---|
| at-fault <= CACC+1% | unshielded, catalogue scenarios | at-fault episode rate <= CACC's + 0.01; where CACC has none, the Wilson upper bound <= 0.02 |
| held-out off-road <= 1% | unshielded, held-out | off-road episode rate <= 0.01 |
| held-out at-fault <= CACC+2% | unshielded, held-out | at-fault episode rate <= CACC's + 0.02 |
| stress: 0 at-fault | shielded, hard_brake / cut_in / comm_dropout / onramp_merge (and their variants) | no at-fault collision |
| overrides <= 5% | shielded | shield override share <= 0.05 |
| speed >= 95% CACC | shielded | mean speed >= 0.95 x CACC's |
| merge >= CACC | shielded, scenarios with mergers | merge success >= CACC's |

Written atomically as ``planner_closed_loop.md`` and ``planner_closed_loop.json`` in ``--out``.

How to run (the checkpoints of the README's recipe; a held-out file is any scenario YAML, e.g. a copy of
``scenarios/highway_platoon.yaml`` with 8 members at 30 m/s)::

    .venv/bin/python experiments/planner_closed_loop.py --bc runs/planner_bc.pt \\
        --dagger runs/pretrain_recipe/best.pt --episodes 200 --held-out runs/held_out/platoon8_fast.yaml \\
        --out runs/planner_closed_loop
    .venv/bin/python experiments/planner_closed_loop.py --bc runs/planner_bc.pt --episodes 1 \\
        --scenarios hard_brake --duration 6 --params samples=2,steps=2 --out runs/planner_smoke   # smoke check

``--duration`` must leave the scenarios' events inside the episode (hard_brake brakes at 5 s, cut_in cuts in
at 4 s, comm_dropout drops at 10-14 s). Rerunning the same command skips the finished episodes.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.console import Console

from diffplatoon import io
from diffplatoon.agents.diffusion.policy import check_params
from diffplatoon.agents.diffusion.shield import ShieldLevel
from diffplatoon.agents.policy import parse_params
from diffplatoon.envs.episodes import resolve_scenario
from diffplatoon.evaluation import runner, stats
from diffplatoon.evaluation.formatting import fmt_num, fmt_rate_cell, grouped_markdown, print_grouped
from diffplatoon.scenarios import ScenarioSpec

SCENARIOS = ("highway_platoon", "hard_brake", "cut_in", "comm_dropout", "lane_drop", "onramp_merge",
             "dense_highway_sweep")
STRESS = ("hard_brake", "cut_in", "comm_dropout", "onramp_merge")
EXPERTS = ("cacc", "idm")
TARGETS = {  # key -> column header (module docstring's targets, in its order)
    "at_fault_vs_cacc": "at-fault <= CACC+1%",
    "held_out_offroad": "held-out off-road <= 1%",
    "held_out_at_fault": "held-out at-fault <= CACC+2%",
    "stress_zero_at_fault": "stress: 0 at-fault",
    "overrides": "overrides <= 5%",
    "speed": "speed >= 95% CACC",
    "merge": "merge >= CACC",
}
_EPS = 1e-12  # k/n + 0.01 is not exact in floating point: a rate equal to the bound passes


GUIDANCE = ("on", "off", "both")


def policies(planners: Mapping[str, Path | None], params: str = "", guidance: str = "on",
             experts: Sequence[str] = EXPERTS) -> dict[str, str]:
    """label -> policy string: each given planner (name -> checkpoint) unshielded and shielded, guided
    (``guidance`` on), unguided (off, labels ``<name> unguided``) or both, then the experts."""
    if guidance not in GUIDANCE:
        raise ValueError(f"guidance must be one of {', '.join(GUIDANCE)}, got {guidance!r}")
    labels: dict[str, str] = {}
    for name, ckpt in planners.items():
        if ckpt is None:
            continue
        base = f"diffusion:{ckpt}" + (f",{params}" if params else "")
        if guidance in ("on", "both"):
            labels[name], labels[f"{name}+shield"] = f"{base},shield=off", f"{base},shield=on"
        if guidance in ("off", "both"):
            labels[f"{name} unguided"] = f"{base},guidance=off,shield=off"
            labels[f"{name} unguided+shield"] = f"{base},guidance=off,shield=on"
    return {**labels, **{e: e for e in experts}}


def parse_planner(text: str) -> tuple[str, Path]:
    """``NAME=CKPT`` of ``--planner`` (ValueError naming what is wrong)."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path.strip():
        raise ValueError(f"expected NAME=CHECKPOINT, got {text!r}")
    if name in EXPERTS or "+" in name or " " in name:
        raise ValueError(f"planner name {name!r} must not be an expert's name nor contain '+' or spaces")
    return name, Path(path.strip())


def check_planner_params(text: str) -> str:
    """``--params`` validated as diffusion policy parameters (ValueError naming the bad one); the shield is ours."""
    params = parse_params(text)
    if "shield" in params:
        raise ValueError("--params: leave 'shield' out, the script runs every planner with shield=off and shield=on")
    if "guidance" in params:
        raise ValueError("--params: leave 'guidance' out, --guidance picks guided and/or unguided rows")
    check_params(params)
    return text.strip().strip(",")


def scenario_items(names: Sequence[str], duration: float | None) -> list[str | ScenarioSpec]:
    """What to hand the runner: the names/files themselves, or with ``duration`` validated specs cut to it
    and renamed ``<name>--duration=<d>`` (a run folder never mixes episodes of different lengths)."""
    if duration is None:
        return list(names)
    out: list[str | ScenarioSpec] = []
    for item in names:
        spec = resolve_scenario(item, {"duration": duration})
        out.append(spec.model_copy(update={"name": f"{spec.name}--duration={duration:g}"}))
    return out


def base_name(scenario: str) -> str:
    """The catalogue scenario a variant or a cut copy came from (``hard_brake--duration=5`` -> ``hard_brake``)."""
    return scenario.split("--", 1)[0]


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _row(scenario: str, label: str, recs: Sequence[dict[str, Any]], failed: int, held_out: bool) -> dict[str, Any]:
    """The measured columns of one (scenario, policy) cell."""
    n = len(recs)
    fault = [int(r["at_fault_collisions"]) for r in recs]
    counts = [r.get("shield") or {} for r in recs]
    decisions = sum(int(v) for c in counts for v in c.values())
    overridden = sum(int(v) for c in counts for k, v in c.items() if ShieldLevel(k).overrides)
    return {
        "scenario": scenario, "policy": label, "held_out": held_out, "stress": base_name(scenario) in STRESS,
        "episodes": n, "failed": failed,
        "collisions": sum(len(r["collisions"]) for r in recs),
        "collision_episodes": stats.rate_cell(sum(bool(r["collision"]) for r in recs), n),
        "at_fault_collisions": sum(fault), "at_fault_episodes": stats.rate_cell(sum(f > 0 for f in fault), n),
        "offroad_episodes": stats.rate_cell(sum(bool(r["offroad"]) for r in recs), n),
        "mean_speed": _mean([float(r["mean_speed"]) for r in recs if r.get("mean_speed") is not None]),
        "merge_success": _mean([float(r["merge_success"]) for r in recs if r.get("merge_success") is not None]),
        "shield_decisions": decisions, "shield_overrides": overridden,
        "override_share": overridden / decisions if decisions else None,
    }


def verdicts(row: dict[str, Any], cacc: dict[str, Any] | None) -> dict[str, bool | None]:
    """The targets of one row (module docstring): True / False, None where a target does not apply."""
    out: dict[str, bool | None] = dict.fromkeys(TARGETS)
    if row["policy"] in EXPERTS or not row["episodes"]:
        return out
    fault = row["at_fault_episodes"]
    c_fault = cacc["at_fault_episodes"] if cacc and cacc["episodes"] else None
    if not row["policy"].endswith("+shield"):
        if row["held_out"]:
            out["held_out_offroad"] = row["offroad_episodes"]["rate"] <= 0.01 + _EPS
            if c_fault is not None:
                out["held_out_at_fault"] = fault["rate"] <= c_fault["rate"] + 0.02 + _EPS
        elif c_fault is not None:
            out["at_fault_vs_cacc"] = (fault["hi"] <= 0.02 if c_fault["k"] == 0
                                       else fault["rate"] <= c_fault["rate"] + 0.01 + _EPS)
        return out
    if row["stress"]:
        out["stress_zero_at_fault"] = row["at_fault_collisions"] == 0
    if row["override_share"] is not None:
        out["overrides"] = row["override_share"] <= 0.05 + _EPS
    if cacc and row["mean_speed"] is not None and cacc["mean_speed"] is not None:
        out["speed"] = row["mean_speed"] >= 0.95 * cacc["mean_speed"] - _EPS
    if cacc and row["merge_success"] is not None and cacc["merge_success"] is not None:
        out["merge"] = row["merge_success"] >= cacc["merge_success"] - _EPS
    return out


def table_rows(records: Sequence[dict[str, Any]], labels: dict[str, str], scenarios: Sequence[str],
               held_out: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (scenario, policy label) in ``scenarios`` x ``labels`` order, with the measured columns,
    ``speed_vs_cacc`` (share of CACC's mean speed) and ``targets`` (`verdicts`)."""
    by_string = {s: label for label, s in labels.items()}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    failed: dict[tuple[str, str], int] = {}
    for r in records:
        key = (r["scenario"], by_string.get(r["policy"], r["policy"]))
        if r.get("failed"):
            failed[key] = failed.get(key, 0) + 1
        else:
            groups.setdefault(key, []).append(r)
    rows = [_row(s, label, groups.get((s, label), []), failed.get((s, label), 0), s in held_out)
            for s in scenarios for label in labels if (s, label) in groups or (s, label) in failed]
    cacc = {r["scenario"]: r for r in rows if r["policy"] == "cacc"}
    for row in rows:
        ref = cacc.get(row["scenario"])
        ok = ref is not None and row["mean_speed"] is not None and ref["mean_speed"]
        row["speed_vs_cacc"] = row["mean_speed"] / ref["mean_speed"] if ok else None
        row["targets"] = verdicts(row, ref)
    return rows


COLUMNS = ("policy", "episodes", "collisions (episodes)", "at-fault (episodes)", "off-road (episodes)",
           "mean speed [m/s] (% CACC)", "merge success", "shield overrides", *TARGETS.values())


def _verdict(v: bool | None) -> str:
    return "-" if v is None else "PASS" if v else "FAIL"


def cells(row: dict[str, Any]) -> list[str]:
    """A row's cells in `COLUMNS` order."""
    speed = fmt_num(row["mean_speed"])
    if row["speed_vs_cacc"] is not None and row["policy"] != "cacc":
        speed += f" ({100 * row['speed_vs_cacc']:.1f}%)"
    share = row["override_share"]
    overrides = "-" if share is None else f"{100 * share:.2f}% ({row['shield_overrides']}/{row['shield_decisions']})"
    episodes = str(row["episodes"]) + (f" ({row['failed']} failed)" if row["failed"] else "")
    return [row["policy"], episodes,
            f"{row['collisions']} ({fmt_rate_cell(row['collision_episodes'])})",
            f"{row['at_fault_collisions']} ({fmt_rate_cell(row['at_fault_episodes'])})",
            fmt_rate_cell(row["offroad_episodes"]), speed, fmt_num(row["merge_success"]), overrides,
            *(_verdict(row["targets"][k]) for k in TARGETS)]


def tally(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per target: rows that pass and rows that fail."""
    return {k: {"pass": sum(r["targets"][k] is True for r in rows), "fail": sum(r["targets"][k] is False for r in rows)}
            for k in TARGETS}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bc", type=Path, default=None, help="planner pre-trained on the expert demonstrations")
    parser.add_argument("--dagger", type=Path, default=None, help="planner retrained with DAgger shards")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per scenario variant and policy")
    parser.add_argument("--scenarios", nargs="*", default=list(SCENARIOS),
                        help="catalogue names or YAML files (none: only the --held-out ones)")
    parser.add_argument("--held-out", nargs="+", default=[],
                        help="extra scenarios (names or YAML files) left out of training: held-out targets")
    parser.add_argument("--params", default="", help="diffusion policy parameters for every planner row, "
                        "e.g. 'samples=4,steps=5' (not shield)")
    parser.add_argument("--planner", action="append", default=[], metavar="NAME=CKPT",
                        help="another planner row (repeatable), e.g. mix=runs/pretrain_dagger_mix/last.pt")
    parser.add_argument("--guidance", choices=GUIDANCE, default="on",
                        help="planner rows guided (on), unguided (off) or both (the guidance ablation)")
    parser.add_argument("--unguided", action="store_true", help="the same as --guidance both")
    parser.add_argument("--experts", nargs="*", default=list(EXPERTS), choices=EXPERTS,
                        help="expert rows (CACC is the targets' reference)")
    parser.add_argument("--duration", type=float, default=None, help="cut every episode to this many seconds")
    parser.add_argument("--out", type=Path, default=Path("runs/planner_closed_loop"))
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    planners: dict[str, Path] = {n: p for n, p in (("bc", args.bc), ("dagger", args.dagger)) if p is not None}
    for text in args.planner:
        try:
            name, path = parse_planner(text)
        except ValueError as exc:
            parser.error(f"--planner: {exc}")
        if name in planners:
            parser.error(f"--planner: the name {name!r} is given twice")
        planners[name] = path
    if not planners:
        parser.error("give a planner: --bc, --dagger and/or --planner NAME=CKPT")
    if not args.scenarios and not args.held_out:
        parser.error("no scenarios: give --scenarios and/or --held-out")
    for name, path in planners.items():
        if not path.is_file():
            flag = f"--{name}" if name in ("bc", "dagger") else f"--planner {name}"
            parser.error(f"{flag}: no planner checkpoint at {path}")
    names_of = list(planners)
    for i, a in enumerate(names_of):
        for b in names_of[i + 1:]:
            if os.path.samefile(planners[a], planners[b]):
                parser.error(f"planners {a!r} and {b!r} are the same file; their rows would be one policy")
    if args.duration is not None and args.duration <= 0:
        parser.error(f"--duration must be > 0 s, got {args.duration}")
    try:
        params = check_planner_params(args.params)
    except (ValueError, TypeError) as exc:
        parser.error(f"--params {args.params!r}: {exc}")
    guidance = "both" if args.unguided else args.guidance
    labels = policies(planners, params, guidance, args.experts)
    main_items = scenario_items(args.scenarios, args.duration)
    held_items = scenario_items(args.held_out, args.duration)
    names = [e.spec.name for e in runner.resolve_scenarios(main_items)]
    held = [e.spec.name for e in runner.resolve_scenarios(held_items)]
    console = Console()

    runner.evaluate(list(labels.values()), main_items + held_items, args.episodes, args.out,
                    ray_address=args.ray_address, num_workers=args.num_workers, report=False,
                    render_replays=False, progress=not args.no_progress, console=console)

    wanted = {runner.job_id(s, p, e) for s in names + held for p in labels.values() for e in range(args.episodes)}
    records = [r for r in runner.load_records(args.out) if r["job_id"] in wanted]
    rows = table_rows(records, labels, names + held, held)
    print_grouped(console, rows, COLUMNS, cells)
    totals = tally(rows)
    console.print("targets: " + "; ".join(f"{TARGETS[k]}: {t['pass']} pass, {t['fail']} fail"
                                           for k, t in totals.items() if t["pass"] or t["fail"]))
    header = (f"# Planner closed loop: {args.episodes} episodes per scenario and policy\n\n"
              + "".join(f"- {label}: `{s}`\n" for label, s in labels.items())
              + (f"- held out: {', '.join(held)}\n" if held else "") + "\n")
    io.atomic_write_text(args.out / "planner_closed_loop.md", header + grouped_markdown(rows, COLUMNS, cells))
    payload = {"episodes": args.episodes, "policies": labels, "held_out": held, "targets": TARGETS,
               "tally": totals, "rows": io.json_safe(rows)}
    io.atomic_write_json(args.out / "planner_closed_loop.json", payload)
    console.print(f"-> {args.out / 'planner_closed_loop.md'}")
    return rows


if __name__ == "__main__":
    main()
