"""The report of a failure-search folder: report.md, report.html, plots and replays of the worst episodes.

`build_search_report(out)` reads only what the search wrote (``search.json``, each round's
``samples.json``, its runner files ``records.jsonl`` / ``run.json`` / ``episodes/*.npz``, and the
failure YAML files), so ``diffplatoon report <folder>`` rebuilds it at any time without
simulating. The worst episodes are the failures, most plausible under the nominal first, then the
most critical of the rest.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from diffplatoon import io
from diffplatoon.evaluation import episode_data, replay
from diffplatoon.evaluation.document import Document
from diffplatoon.evaluation.formatting import fmt_num
from diffplatoon.evaluation.runner import RUN
from diffplatoon.evaluation.search import plots
from diffplatoon.scenarios import ScenarioSpec

HOW_TO_READ = (
    "The search draws the searched fields from a proposal distribution q that the cross-entropy method "
    "moves, round by round, towards the episodes with the most critical outcome (adaptation rounds); "
    "the last proposal is then frozen and sampled for the estimate (estimation rounds). Every episode "
    "carries the weight p/q of the nominal distribution p to the proposal, so the weighted failure rate "
    "estimates the failure probability under the nominal distribution, not under the proposal. The 95% "
    "interval is the estimate ± 1.96 standard errors of the weighted terms; it is trustworthy when the "
    "failures' effective sample size (Kish: (Σw)²/Σw² over the failures) is at least about 10, and "
    "optimistic below that. Plain Monte Carlo (every weight 1) gets the Wilson interval. Traffic is "
    "drawn from its own nominal distribution in every episode (a seed per episode)."
)


def build_search_report(out: Path, *, worst_k: int = 3, render_replays: bool = True) -> Path:
    """(Re)build report.md, report.html, plots/ and replays/ of a search folder; return report.md."""
    out = Path(out)
    state = json.loads((out / "search.json").read_text(encoding="utf-8"))
    rounds = [r for r in state["rounds"] if (out / r["folder"] / "samples.json").is_file()]
    samples = [json.loads((out / r["folder"] / "samples.json").read_text(encoding="utf-8")) for r in rounds]
    samples = [s for s in samples if "failed" in s]
    paths = state["paths"]
    kind = state["space"]["criticality"]
    plot_dir = out / "plots"
    figures: list[tuple[str, str]] = []
    if samples:
        values = np.array([[_numeric(v[p]) for p in paths] for s in samples for v in s["values"]], dtype=np.float64)
        failed = np.array([f for s in samples for f in s["failed"]], dtype=bool)
        crit = np.array([_finite(c) for s in samples for c in s["criticality"]])
        plots.pair_scatter(paths, values, failed, crit, kind, plot_dir / "search_pairs.png")
        figures.append(("plots/search_pairs.png", "Searched parameters of every episode, failures in red"))
        per_round = [np.array([_finite(c) for c, f in zip(s["criticality"], s["failed"]) if not f]) for s in samples]
        plots.criticality_rounds(per_round, [int(sum(s["failed"])) for s in samples],
                                 [r["phase"] for r in rounds[:len(samples)]], kind, plot_dir / "search_criticality.png")
        figures.append(("plots/search_criticality.png", "Criticality of each round's episodes"))
        labels = [d.get("values") if d["type"] == "categorical" else None for d in state["space"]["parameters"].values()]
        plots.proposal_evolution(paths, [r["proposal"] for r in rounds], labels, plot_dir / "search_proposal.png")
        figures.append(("plots/search_proposal.png", "The proposal's evolution"))

    worst = _worst(out, rounds, samples, worst_k)
    replays: dict[str, str] = {}
    if render_replays:
        for name, folder, _ in worst:
            gif = _replay(out / folder, name, state["arguments"]["policy"])
            if gif is not None:
                rel = f"replays/{episode_data.file_name(name)}.gif"
                io.atomic_write_bytes(out / rel, gif)
                replays[name] = rel
    else:
        replays = {n: f"replays/{episode_data.file_name(n)}.gif" for n, _, _ in worst
                   if (out / f"replays/{episode_data.file_name(n)}.gif").is_file()}
    doc = _document(out, state, rounds, samples, figures, worst, replays)
    md = io.atomic_write_text(out / "report.md", doc.markdown())
    io.atomic_write_text(out / "report.html", doc.html("Failure search report"))
    return md


def _numeric(value: Any) -> float:
    """A drawn field value as a plotting coordinate (booleans and numbers as numbers, others NaN)."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _finite(value: Any) -> float:
    return float(value) if value is not None and math.isfinite(float(value)) else math.nan


def _worst(out: Path, rounds: list[dict[str, Any]], samples: list[dict[str, Any]],
           k: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(scenario name, round folder, drawn values) of the k worst episodes (module docstring)."""
    rows = []
    for r, s in zip(rounds, samples):
        for i, name in enumerate(s["names"]):
            crit = _finite(s["criticality"][i])
            key = (0, -s["log_p"][i]) if s["failed"][i] else (1, -(crit if math.isfinite(crit) else -math.inf))
            rows.append((key, name, r["folder"], s["values"][i]))
    rows.sort(key=lambda row: row[0])
    return [(name, folder, values) for _, name, folder, values in rows[:k]]


def _replay(folder: Path, name: str, policy: str) -> bytes | None:
    """GIF of one stored episode, drawn with its resolved spec from the round's run.json."""
    job = f"{name}|{policy}|0"
    path = episode_data.data_path(folder, job)
    run = json.loads((folder / RUN).read_text(encoding="utf-8")) if (folder / RUN).is_file() else {}
    entry = next((e for e in run.get("scenarios", []) if e["name"] == name), None)
    if entry is None or not path.is_file():
        return None
    return replay.gif(ScenarioSpec.model_validate(entry["spec"]), episode_data.load(path))


def _fmt_p(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def _estimate_row(label: str, e: Mapping[str, Any]) -> list[str]:
    interval = f"[{_fmt_p(e['low'])}, {_fmt_p(e['high'])}]" if e.get("high") is not None else "no failure: no upper end"
    return [label, _fmt_p(e["probability"]), interval, _fmt_p(e["std_error"]), f"{e['failures']}/{e['n']}",
            fmt_num(e["ess"]), fmt_num(e["failure_ess"])]


def _document(out: Path, state: Mapping[str, Any], rounds: list[dict[str, Any]], samples: list[dict[str, Any]],
              figures: list[tuple[str, str]], worst: list[tuple[str, str, dict[str, Any]]],
              replays: Mapping[str, str]) -> Document:
    """Lay out the report."""
    args, space = state["arguments"], state["space"]
    doc = Document(out)
    doc.h(1, "Failure search report")
    total = sum(r["episodes"] for r in rounds)
    doc.p(f"Policy `{args['policy']}` on scenario `{args['scenario']}`, space `{args['space']}`, budget "
          f"{args['budget']} episodes ({total} run in {len(rounds)} rounds, method {space['search']['method']}). "
          f"Failure: {space['failure'].replace('_', ' ')}; criticality: {space['criticality']}."
          + ("" if state.get("complete") else " The search is not complete: rerun the same command to finish it."))
    doc.h(2, "How to read this")
    doc.p(HOW_TO_READ)
    doc.h(2, "Failure probability under the nominal distribution")
    header = ["estimate", "probability", "95% interval", "std. error", "failures/episodes", "ESS (all weights)",
              "ESS (failures)"]
    body = []
    if "estimate" in state:
        label = "Monte Carlo (Wilson)" if space["search"]["method"] == "monte_carlo" else "estimation rounds (result)"
        body.append(_estimate_row(label, state["estimate"]))
        body.append(_estimate_row("all rounds", state["all_rounds_estimate"]))
    doc.table(header, body)
    doc.h(2, "Searched fields (nominal distributions)")
    doc.table(["field", "nominal"], [[p, ", ".join(f"{k}={v}" for k, v in d.items())]
                                     for p, d in space["parameters"].items()])
    doc.h(2, "Rounds")
    doc.table(["round", "phase", "episodes", "failures", "elite level (criticality)", "largest weight p/q"],
              [[str(r["index"] + 1), r["phase"] + (" (nominal)" if r["nominal"] else ""), str(r["episodes"]),
                str(r["failures"]), _fmt_level(r["level"], space["criticality"]), fmt_num(r["max_weight"])]
               for r in rounds])
    doc.h(2, "Figures")
    for rel, alt in figures:
        doc.p(alt)
        doc.image(rel, alt)
    doc.h(2, "Failing scenarios")
    files = state.get("failure_files", [])
    doc.p(f"{sum(r['failures'] for r in rounds)} failing episodes; {len(files)} written as ready-to-run YAML "
          f"(most plausible under the nominal first): `diffplatoon scenario run <file> --controller {args['policy']}` "
          f"replays one, `diffplatoon evaluate --policy {args['policy']} --scenarios <file> --episodes 1` evaluates it.")
    if files:
        doc.bullets([f"[{f}]({f})" for f in files[:20]] + ([f"... and {len(files) - 20} more"] if len(files) > 20 else []))
    doc.h(2, "Worst episodes")
    doc.table(["episode", "drawn values", "replay"],
              [[n, ", ".join(f"{k}={_fmt_value(v)}" for k, v in values.items()),
                f"[GIF]({replays[n]})" if n in replays else "-"] for n, _, values in worst])
    for n, _, _ in worst:
        if n in replays:
            doc.p(f"Replay of {n} (platoon in colour, traffic grey, crashed red).")
            doc.animation(replays[n], f"replay of {n}")
    doc.h(2, "Reproduce this search")
    cmd = (f"diffplatoon search --policy {args['policy']} --scenario {args['scenario']} --space {args['space']} "
           f"--budget {args['budget']} --out {args['out']}")
    doc.code(cmd)
    doc.p("Software: " + ", ".join(f"{k} {v}" for k, v in state.get("versions", {}).items()) + ".")
    return doc


def _fmt_level(level: Any, kind: str) -> str:
    """An adaptation round's elite level in the criticality's units ('failure' once failures fill the elite)."""
    if level is None or isinstance(level, str):
        return level or "-"
    return f"{kind} {'≥' if kind == 'max_drac' else '≤'} {fmt_num(level if kind == 'max_drac' else -level)}"


def _fmt_value(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


__all__ = ["build_search_report"]
