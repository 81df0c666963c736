"""The safety report of a run folder: metrics.json, report.md, report.html, plots and worst-episode replays.

`build_report(out)` only reads what the runner wrote (``records.jsonl``, ``run.json`` and the
per-episode ``episodes/*.npz`` of `episode_data`) and rebuilds everything else from it, so it
can be rerun at any time and never simulates:
- ``metrics.json``: per scenario x policy aggregates (Wilson intervals for rates, mean +/- t
  95% CI for continuous measures), thresholds, provenance, the worst episodes and the
  string-stability curves. Records are put in one canonical order first (`record_order`) and
  nothing time-dependent is written, so the same records give the same bytes whatever order
  they were appended in;
- ``report.md`` and ``report.html`` with the same content; the HTML is self-contained (inline
  CSS, figures and replays embedded as base64);
- ``plots/*.png`` and ``replays/*.gif``: the worst episodes (a collision first, then the
  lowest minimum TTC) are drawn from their stored profiles and boxes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from diffplatoon import io
from diffplatoon.evaluation import episode_data, plots, replay, stats
from diffplatoon.evaluation.aggregate import (Measure, prepare_records, record_order, report_rows,
                                              scenario_thresholds, string_curves, worst_episodes)
from diffplatoon.evaluation.document import BEST, Document
from diffplatoon.evaluation.formatting import fmt_fraction, fmt_num, fmt_pm
from diffplatoon.evaluation.runner import RUN, load_records, spec_hash
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import ScenarioSpec


HOW_TO_READ = (
    "Every number is per episode, and the episode is the sampling unit (vehicles in one episode are "
    "not independent). A rate such as the collision rate is k/n: k episodes with at least one "
    "collision out of n episodes; the interval next to it is the two-sided Wilson score 95% interval, "
    "which stays meaningful for rare events. When no collision was seen, the rule of three gives the "
    "one-sided 95% upper bound 3/n: zero collisions in 100 episodes only shows the rate is below "
    "about 3%, and showing a rate below 1e-3 needs about 3,000 collision-free episodes. Continuous "
    "measures are the mean over episodes ± the half-width of the Student-t 95% interval. In the "
    f"side-by-side tables {BEST} marks the best policy on a row only where its 95% interval does not "
    "overlap the runner-up's (nor any other policy's): overlapping intervals or a tie mean the "
    "difference is not established, and nothing is marked. A mean is printed to three significant "
    "digits and its half-width to the same decimals. A near miss is an episode in which a member's "
    "bumper-to-bumper gap fell below the scenario's `min_gap` without a collision; traffic-only "
    "collisions are crashes between background vehicles with no member involved. Policies are paired by seed: episode i of a "
    "scenario starts from the same traffic for every policy. Failed episodes (errors) are listed and "
    "are not counted in any rate."
)


# ------------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------------


def fmt_rate(row: Mapping[str, Any], name: str) -> str:
    """'k/n = p [lo, hi]' with the Wilson 95% interval, three decimals."""
    if not row.get(f"{name}_n"):
        return "-"
    return (f"{row[f'{name}_k']}/{row[f'{name}_n']} = {fmt_fraction(row[name])} "
            f"[{fmt_fraction(row[f'{name}_lo'])}, {fmt_fraction(row[f'{name}_hi'])}]")


def fmt_rule3(row: Mapping[str, Any], name: str) -> str:
    """'≤ 3/n = x' when there were zero events, else '-'."""
    n, k = row.get(f"{name}_n"), row.get(f"{name}_k")
    return f"≤ 3/{n} = {fmt_fraction(row[f'{name}_rule3'])}" if n and k == 0 else "-"


def fmt_mean(row: Mapping[str, Any], m: Measure) -> str:
    """'mean ± half-width' of a continuous measure, the half-width at the mean's resolution."""
    return fmt_pm(row.get(f"{m.key}_mean"), row.get(f"{m.key}_half"))


def fmt_count(row: Mapping[str, Any], name: str) -> str:
    """Total of a per-episode count over the row's episodes ('-' when no episode has it)."""
    mean, n = row.get(f"{name}_mean"), row.get(f"{name}_n")
    return "-" if not n or mean is None or not math.isfinite(mean) else str(int(round(mean * n)))




# ------------------------------------------------------------------------------------------------
# build_report
# ------------------------------------------------------------------------------------------------


def build_report(out: Path, *, worst_k: int = 3, render_replays: bool = True) -> Path:
    """(Re)build metrics.json, report.md, report.html, plots/ and replays/ of a run folder; return report.md.

    A failure-search folder (one holding ``search.json``) gets the search report instead."""
    out = Path(out)
    if (out / "search.json").is_file():
        from diffplatoon.evaluation.search.report import build_search_report

        return build_search_report(out, worst_k=worst_k, render_replays=render_replays)
    run = _read_json(out / RUN)
    specs = _specs(run)
    all_records = sorted(load_records(out), key=record_order(run))
    failures = [r for r in all_records if r.get("failed")]
    records = prepare_records(all_records)
    rows, rates, metrics = report_rows(records)
    thresholds = scenario_thresholds(records, specs)
    plot_dir = out / "plots"

    # 1. Worst episodes, drawn from what the runner stored of them.
    worst = worst_episodes(records, worst_k)
    notes: list[str] = []
    replays: dict[str, str] = {}
    profile_png = None
    for rank, rec in enumerate(worst):
        path = episode_data.data_path(out, rec["job_id"])
        if not path.is_file():
            notes.append(f"{rec['job_id']}: no stored episode data (`{path.relative_to(out)}`)")
            continue
        data = episode_data.load(path)
        if rank == 0:
            profile_png = _profile_plot(rec, data, plot_dir / "worst_episode_profiles.png")
        name = f"replays/{episode_data.file_name(rec['job_id'])}.gif"
        if not render_replays:
            if (out / name).is_file():
                replays[rec["job_id"]] = name  # drawn by an earlier build of the same records
            continue
        spec = specs.get(rec["scenario"])
        gif = replay.gif(spec, data) if spec is not None else None
        if gif is None:
            notes.append(f"{rec['job_id']}: no replay stored (episode data over the budget and not notable)"
                         if spec is not None else f"{rec['job_id']}: scenario spec not in run.json, no replay")
            continue
        io.atomic_write_bytes(out / name, gif)
        replays[rec["job_id"]] = name
    if render_replays and (out / "replays").is_dir():
        for stale in (out / "replays").glob("*.gif"):
            if f"replays/{stale.name}" not in replays.values():
                stale.unlink()

    # 2. Figures from the records.
    figures: list[tuple[str, str]] = []
    if rows:
        plots.collision_rates(rows, plot_dir / "collision_rates.png")
        figures.append(("plots/collision_rates.png", "Collision rate per scenario and policy, Wilson 95% interval"))
    if any(r.get("min_ttc") is not None for r in records):
        horizons = {t.get("ttc_horizon") for t in thresholds.values()}
        plots.ttc_distribution(records, plot_dir / "ttc_distribution.png",
                               horizon=horizons.pop() if len(horizons) == 1 else None)
        figures.append(("plots/ttc_distribution.png", "Per-episode minimum TTC"))
    if any(r.get("min_gap") is not None for r in records):
        plots.min_gap_cdf(records, plot_dir / "min_gap_cdf.png")
        figures.append(("plots/min_gap_cdf.png", "CDF of the per-episode minimum gap"))
    if profile_png is not None:
        figures.append(("plots/worst_episode_profiles.png",
                        f"Speed and gap of every platoon member, worst episode {worst[0]['job_id']}"))
    curves = string_curves(records)
    if curves:
        plots.string_stability(curves, plot_dir / "string_stability.png")
        figures.append(("plots/string_stability.png", "String stability: spacing-error norm ratio per member pair"))

    # 3. metrics.json: nothing here depends on the record order or on the time of the build.
    metrics_json = {
        "episodes": len(records), "failures": len(failures),
        "rates": [m.key for m in rates], "metrics": [m.key for m in metrics],
        "rows": rows, "thresholds": thresholds,
        "worst": [{"job_id": r["job_id"], "collision": r.get("collision"), "min_ttc": r.get("min_ttc"),
                   "replay": replays.get(r["job_id"])} for r in worst],
        "string_stability": curves,
        "failed_jobs": [{"job_id": r["job_id"], "error": r.get("error")} for r in failures],
        "run": {k: run.get(k) for k in ("arguments", "policy_versions", "versions")},
    }
    io.atomic_write_json(out / "metrics.json", io.json_safe(metrics_json))

    # 4. The document.
    doc = _document(out, run, rows, rates, metrics, records, failures, worst, replays, figures, notes, thresholds)
    md_path = io.atomic_write_text(out / "report.md", doc.markdown())
    io.atomic_write_text(out / "report.html", doc.html("Safety evaluation report"))
    return md_path


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _specs(run: Mapping[str, Any]) -> dict[str, ScenarioSpec]:
    """Resolved specs stored in run.json, checked against their hashes."""
    specs = {}
    for entry in run.get("scenarios", []):
        spec = ScenarioSpec.model_validate(entry["spec"])
        if entry.get("sha256") and spec_hash(spec) != entry["sha256"]:
            raise ValueError(f"run.json: spec of {entry['name']} does not match its hash")
        specs[entry["name"]] = spec
    return specs


def _profile_plot(rec: Mapping[str, Any], data: episode_data.EpisodeData, path: Path) -> Path | None:
    """Speed and gap profile of every platoon member of one stored episode."""
    if data.speed.ndim != 2 or not data.speed.shape[1]:
        return None
    time = np.arange(data.speed.shape[0]) * data.dt
    times = [c["time"] for c in rec.get("collisions") or [] if isinstance(c, Mapping) and "time" in c]
    title = (f"{rec['job_id']}: " + ("collision" if rec.get("collision") else "no collision")
             + f", min TTC {fmt_num(rec.get('min_ttc'))} s (red: collisions; gap to the vehicle ahead)")
    return plots.platoon_profiles(time, data.speed.astype(np.float64), data.gap.astype(np.float64),
                                  list(data.names), title, path, collisions=times)


def _document(out: Path, run: Mapping[str, Any], rows: list[dict[str, Any]], rates: list[Measure],
              metrics: list[Measure], records: list[dict[str, Any]], failures: list[dict[str, Any]],
              worst: list[dict[str, Any]], replays: Mapping[str, str], figures: list[tuple[str, str]],
              notes: list[str], thresholds: Mapping[str, Any]) -> Document:
    """Lay out the report."""
    doc = Document(out)
    args = run.get("arguments", {})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    doc.h(1, "Safety evaluation report")
    doc.p(f"Run folder `{out}`: {len(records)} episodes over {len(scenarios)} scenario(s) × "
          f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'} ({', '.join(policies) or '-'}); "
          f"{len(failures)} failed job(s).")
    doc.h(2, "How to read this")
    doc.p(HOW_TO_READ)

    doc.h(2, "Collisions")
    header = ["scenario", "policy", "episodes", "collision rate k/n = p [Wilson 95%]", "rule of three (0 events)"]
    header += [f"{m.label} rate [Wilson 95%]" for m in rates if m.key != "collision"]
    header += ["traffic-only collisions (total)"]
    body = []
    for r in rows:
        line = [str(r["scenario"]), str(r["policy"]), str(r["n"]), fmt_rate(r, "collision"), fmt_rule3(r, "collision")]
        line += [fmt_rate(r, m.key) for m in rates if m.key != "collision"]
        line += [fmt_count(r, "traffic_collisions")]
        body.append(line)
    doc.table(header, body)
    if any(r.get("collision_k") == 0 for r in rows):
        doc.p("Rule of three: with zero collisions in n episodes the one-sided 95% upper bound on the "
              "collision rate is about 3/n; the Wilson interval's upper end is the two-sided counterpart.")

    doc.h(2, "Policies side by side")
    doc.p(f"Mean ± 95% CI over episodes; {BEST} marks the best policy on the row within the scenario "
          "where its interval is separated from every other policy's.")
    for sc in scenarios:
        sc_rows = [r for r in rows if r["scenario"] == sc]
        doc.h(3, sc)
        table = []
        for m in list(rates) + list(metrics):
            is_rate = m in rates
            marks = stats.best_marker(sc_rows, m.key, m.higher_is_better) if len(sc_rows) > 1 else [False] * len(sc_rows)
            cells = []
            for r, best in zip(sc_rows, marks):
                txt = fmt_rate(r, m.key) if is_rate else fmt_mean(r, m)
                cells.append(txt + (f" {BEST}" if best and txt != "-" else ""))
            if any(c != "-" for c in cells):
                table.append([m.label + (" (higher is better)" if m.higher_is_better else "")] + cells)
        doc.table(["measure"] + [str(r["policy"]) for r in sc_rows], table)

    doc.h(2, "Figures")
    for rel, alt in figures:
        doc.p(alt)
        doc.image(rel, alt)

    doc.h(2, "Worst episodes")
    doc.p("Ordered by: a collision first (more at-fault collisions first), then the lowest minimum TTC.")
    doc.table(["rank", "episode (scenario|policy|episode)", "collision", "at-fault", "min TTC [s]", "min gap [m]", "replay"],
              [[str(i + 1), r["job_id"], "yes" if r.get("collision") else "no", fmt_num(r.get("at_fault_collisions")),
                fmt_num(r.get("min_ttc")), fmt_num(r.get("min_gap")),
                f"[GIF]({replays[r['job_id']]})" if r["job_id"] in replays else "-"] for i, r in enumerate(worst)])
    for note in notes:
        doc.p(f"Note: {note}.")
    for r in worst:
        if r["job_id"] in replays:
            doc.p(f"Replay of {r['job_id']} (platoons in colour, the leader outlined; traffic grey; crashed red).")
            doc.animation(replays[r["job_id"]], f"replay of {r['job_id']}")

    if failures:
        doc.h(2, "Failed jobs")
        doc.p("These jobs raised an error (or their worker died after every retry); they are not counted above.")
        doc.table(["job", "error"], [[r["job_id"], str(r.get("error", ""))[:200]] for r in failures])

    doc.h(2, "Thresholds")
    doc.p("Measures were computed with these thresholds (per scenario: the scenario's safety settings "
          "and its first platoon's time gap and standstill gap; the string-stability window starts at "
          "`disturbance_step`, the first brake or speed-change event; `min_gap` is the near-miss "
          "threshold, gaps themselves are the plain bumper-to-bumper clearance).")
    keys = list(dict.fromkeys(k for t in thresholds.values() for k in t)) or list(Thresholds().as_dict())
    names = list(thresholds)
    doc.table(["threshold"] + names + ["default"],
              [[k] + [str(thresholds[n].get(k, "-")) for n in names] + [str(Thresholds().as_dict().get(k, "-"))]
               for k in keys])

    doc.h(2, "Reproduce this run")
    sc_info = run.get("scenarios", [])
    doc.table(["scenario", "file", "spec sha256", "seed", "episodes"],
              [[s["name"], s.get("source", "-"), s.get("sha256", "-")[:16], str(s.get("seed")),
                _ranges(s.get("episodes", []))] for s in sc_info])
    versions = run.get("policy_versions", {})
    doc.table(["policy", "version"], [[p, ", ".join(versions.get(p, [])) or "-"] for p in args.get("policies", policies)])
    doc.p("Software: " + ", ".join(f"{k} {v}" for k, v in run.get("versions", {}).items()) + ".")
    doc.p("Each episode is seeded by (scenario seed, episode index), so this command reproduces "
          "every record (resolved specs, including sweep variants, are stored in `run.json`):")
    cmd = ["diffplatoon evaluate"] + [f"--policy {p}" for p in args.get("policies", [])]
    cmd += ["--scenarios " + " ".join(args.get("scenarios", [])), f"--episodes {args.get('episodes')}"]
    if args.get("seed_offset"):
        cmd.append(f"--seed-offset {args['seed_offset']}")
    cmd.append(f"--out {args.get('out', out)}")
    doc.code(" ".join(cmd))
    return doc


def _ranges(episodes: Sequence[int]) -> str:
    """'0-199' for a contiguous list of episode indices."""
    if not episodes:
        return "-"
    e = sorted(episodes)
    return f"{e[0]}-{e[-1]}" if e == list(range(e[0], e[-1] + 1)) else ", ".join(map(str, e))
