"""Safety evidence for the joint diffusion planner: unguided vs guided vs guided+shield vs the CACC expert.

Runs ``evaluation.runner.evaluate`` once (one output folder, resumable) over ``hard_brake`` and ``cut_in``
with N episodes each and four policies:

| label | policy string |
|---|---|
| unguided | ``diffusion:<ckpt>,guidance=off,shield=off,samples=1`` (the pretrained planner as it samples) |
| guided | ``diffusion:<ckpt>,guidance=on,shield=off,samples=S`` (cost guidance + sample-and-select) |
| guided+shield | ``diffusion:<ckpt>,guidance=on,shield=on,samples=S`` (plus the exact shield and braking fallbacks) |
| cacc | the CACC expert |

and writes ``diffusion_safety.md`` / ``diffusion_safety.json`` into the folder: per (scenario, policy) the
collision rate with its Wilson 95% interval, mean speed, and for the shielded policy how often each
shield level fired (share of plan decisions).

How to run::

    .venv/bin/python experiments/diffusion_safety.py --checkpoint runs/pretrain/best.pt --episodes 200
    .venv/bin/python experiments/diffusion_safety.py --episodes 10          # smoke check, newest runs/pretrain*/best.pt

Results to expect: the shielded planner's collision rate is not above the CACC expert's; guidance and the
shield cost a little mean speed (braking fallbacks). With ~200 episodes per cell a rate of 0 has a Wilson
upper bound of about 1.9%.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from diffplatoon import io
from diffplatoon.agents.diffusion.shield import LEVELS
from diffplatoon.evaluation import runner, stats

SCENARIOS = ("hard_brake", "cut_in")


def policies(checkpoint: Path, samples: int, steps: int, replan_every: int) -> dict[str, str]:
    """label → policy string of the four compared policies."""
    common = f"diffusion:{checkpoint},steps={steps},replan_every={replan_every}"
    return {
        "unguided": f"{common},guidance=off,shield=off,samples=1",
        "guided": f"{common},guidance=on,shield=off,samples={samples}",
        "guided+shield": f"{common},guidance=on,shield=on,samples={samples}",
        "cacc": "cacc",
    }


def newest_checkpoint(root: Path = Path("runs")) -> Path | None:
    """The most recently written ``runs/pretrain*/best.pt``, if any."""
    found = sorted(root.glob("pretrain*/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def table_rows(records: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """One row per (scenario, policy label): collision rate + Wilson CI, mean speed, shield level shares."""
    by_string = {s: label for label, s in labels.items()}
    ok = [dict(r, label=by_string.get(r["policy"], r["policy"])) for r in records if not r.get("failed")]
    rows = stats.aggregate(ok, by=("scenario", "label"), metrics=["mean_speed"], rates=["collision"])
    for row in rows:
        shield = [r.get("shield") or {} for r in ok if (r["scenario"], r["label"]) == (row["scenario"], row["label"])]
        total = {lv: sum(int(s.get(lv, 0)) for s in shield) for lv in LEVELS}
        decisions = sum(total.values())
        row["shield"] = {lv: total[lv] / decisions for lv in LEVELS} if decisions else {}
        row["shield_decisions"] = decisions
    order = list(labels)
    rows.sort(key=lambda r: (r["scenario"], order.index(r["label"]) if r["label"] in order else len(order)))
    return rows


def _f(x: Any, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, spec)


def markdown(rows: list[dict[str, Any]], checkpoint: Path, episodes: int) -> str:
    """The evidence table as markdown."""
    lines = [
        f"# Diffusion planner safety: {checkpoint}, {episodes} episodes per scenario",
        "",
        "| scenario | policy | collisions | rate [95% Wilson CI] | mean speed [m/s] "
        f"| shield: {' / '.join(LEVELS)} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        sh = " / ".join(f"{100 * r['shield'][lv]:.1f}%" for lv in LEVELS) if r["shield"] else "-"
        lines.append(
            f"| {r['scenario']} | {r['label']} | {r['collision_k']}/{r['collision_n']} | "
            f"{_f(r['collision'], '.3f')} [{_f(r['collision_lo'], '.3f')}, {_f(r['collision_hi'], '.3f')}] | "
            f"{_f(r.get('mean_speed_mean'), '.2f')} | {sh} |")
    return "\n".join(lines) + "\n"


def rich_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="Diffusion planner safety (collision rate with Wilson 95% CI)")
    for col in ("scenario", "policy", "collisions", "rate [95% CI]", "speed", "shield " + "/".join(LEVELS)):
        table.add_column(col)
    for r in rows:
        sh = "/".join(f"{100 * r['shield'][lv]:.0f}%" for lv in LEVELS) if r["shield"] else "-"
        table.add_row(r["scenario"], r["label"], f"{r['collision_k']}/{r['collision_n']}",
                      f"{_f(r['collision'], '.3f')} [{_f(r['collision_lo'], '.3f')}, {_f(r['collision_hi'], '.3f')}]",
                      _f(r.get("mean_speed_mean"), ".2f"), sh)
    return table


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="planner checkpoint (default: the newest runs/pretrain*/best.pt)")
    parser.add_argument("--episodes", type=int, default=200, help="episodes per scenario and policy")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--out", type=Path, default=Path("runs/diffusion_safety"))
    parser.add_argument("--samples", type=int, default=8, help="joint samples per plan (guided policies)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--replan-every", type=int, default=5)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--ray-address", default=None)
    parser.add_argument("--report", action="store_true", help="also build the evaluator's full report")
    args = parser.parse_args(argv)

    checkpoint = args.checkpoint or newest_checkpoint()
    if checkpoint is None or not Path(checkpoint).is_file():
        parser.error(f"no planner checkpoint found ({checkpoint or 'runs/pretrain*/best.pt'}); pass --checkpoint")
    labels = policies(Path(checkpoint), args.samples, args.steps, args.replan_every)
    console = Console()

    runner.evaluate(list(labels.values()), args.scenarios, args.episodes, args.out, ray_address=args.ray_address,
                    num_workers=args.num_workers, report=args.report, console=console)

    wanted = {runner.job_id(s, p, e) for s in args.scenarios for p in labels.values() for e in range(args.episodes)}
    records = [r for r in runner.load_records(args.out) if r["job_id"] in wanted]
    rows = table_rows(records, labels)
    console.print(rich_table(rows))
    io.atomic_write_text(args.out / "diffusion_safety.md", markdown(rows, Path(checkpoint), args.episodes))
    payload = {"checkpoint": str(checkpoint), "episodes": args.episodes, "policies": labels, "rows": io.json_safe(rows)}
    io.atomic_write_json(args.out / "diffusion_safety.json", payload)
    console.print(f"-> {args.out / 'diffusion_safety.md'}")
    return rows




if __name__ == "__main__":
    main()
