"""The safety report of a run folder: metrics.json, report.md, report.html, plots and worst-episode replays.

`build_report(out)` reads ``records.jsonl`` and ``run.json`` (written by the runner) and
rebuilds everything else from them, so it can be rerun at any time:
- ``metrics.json``: per scenario x policy aggregates (Wilson intervals for rates, mean +/- t
  95% CI for continuous measures), thresholds, provenance and the worst episodes;
- ``report.md`` and ``report.html`` with the same content; the HTML is self-contained (inline
  CSS, figures embedded as base64 PNG) and links only to the replay GIFs next to it;
- ``plots/*.png`` and ``replays/*.gif``.
The worst episodes (a collision first, then the lowest minimum TTC) are re-simulated from the
spec stored in run.json, which reproduces them exactly because episodes are deterministic;
the report says so if a re-simulation ever disagrees with its record.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from diffplatoon import io
from diffplatoon.evaluation import plots, stats
from diffplatoon.evaluation.measures import Thresholds, string_stability
from diffplatoon.evaluation.runner import RUN, load_records, spec_hash
from diffplatoon.scenarios import ScenarioSpec


@dataclass(frozen=True)
class Measure:
    """A reported quantity: record key, label, which direction is better, number format."""

    key: str
    label: str
    higher_is_better: bool
    fmt: str = ".3g"


# Per-episode indicators reported as rates with a Wilson interval (lower is better for all).
RATES: tuple[Measure, ...] = (
    Measure("collision", "collision", False),
    Measure("at_fault", "at-fault collision", False),
    Measure("offroad", "off-road", False),
    Measure("wrong_way", "wrong way", False),
)
# Continuous per-episode measures reported as mean +/- 95% CI.
METRICS: tuple[Measure, ...] = (
    Measure("at_fault_collisions", "at-fault collisions / episode", False),
    Measure("min_ttc", "min TTC [s]", True),
    Measure("min_ttc_2d", "min 2-D TTC [s]", True),
    Measure("tet", "TET (TTC < threshold) [s]", False),
    Measure("min_gap", "min gap [m]", True),
    Measure("min_time_gap", "min time gap [s]", True),
    Measure("max_drac", "max DRAC [m/s²]", False),
    Measure("hard_brakes", "hard-brake steps", False),
    Measure("rms_jerk", "RMS jerk [m/s³]", False),
    Measure("mean_speed", "mean speed [m/s]", True),
    Measure("progress", "progress [m]", True),
    Measure("gap_error_rms", "gap-keeping error RMS [m]", False),
    Measure("gap_error_max", "gap-keeping error max [m]", False),
    Measure("string_error_ratio_max", "string error-norm ratio (max)", False),
    Measure("platoon_splits", "platoon splits", False),
    Measure("merge_success", "merge success", True),
)
BEST = "★"

HOW_TO_READ = (
    "Every number is per episode, and the episode is the sampling unit (vehicles in one episode are "
    "not independent). A rate such as the collision rate is k/n: k episodes with at least one "
    "collision out of n episodes; the interval next to it is the two-sided Wilson score 95% interval, "
    "which stays meaningful for rare events. When no collision was seen, the rule of three gives the "
    "one-sided 95% upper bound 3/n: zero collisions in 100 episodes only shows the rate is below "
    "about 3%, and showing a rate below 1e-3 needs about 3,000 collision-free episodes. Continuous "
    "measures are the mean over episodes ± the half-width of the Student-t 95% interval. In the "
    f"side-by-side tables {BEST} marks the best policy on a row (ties all marked); overlapping "
    "intervals mean the difference is not established. Policies are paired by seed: episode i of a "
    "scenario starts from the same traffic for every policy. Failed episodes (errors) are listed and "
    "are not counted in any rate."
)


# ------------------------------------------------------------------------------------------------
# Numbers
# ------------------------------------------------------------------------------------------------


def fmt_num(x: Any, spec: str = ".3g") -> str:
    """A number as printed in the report ('-' for missing, NaN or infinite values)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(float(x), spec)


def fmt_rate(row: Mapping[str, Any], name: str) -> str:
    """'k/n = p [lo, hi]' with the Wilson 95% interval, three decimals."""
    if not row.get(f"{name}_n"):
        return "-"
    return (f"{row[f'{name}_k']}/{row[f'{name}_n']} = {fmt_num(row[name], '.3f')} "
            f"[{fmt_num(row[f'{name}_lo'], '.3f')}, {fmt_num(row[f'{name}_hi'], '.3f')}]")


def fmt_rule3(row: Mapping[str, Any], name: str) -> str:
    """'≤ 3/n = x' when there were zero events, else '-'."""
    n, k = row.get(f"{name}_n"), row.get(f"{name}_k")
    return f"≤ 3/{n} = {fmt_num(row[f'{name}_rule3'], '.3f')}" if n and k == 0 else "-"


def fmt_mean(row: Mapping[str, Any], m: Measure) -> str:
    """'mean ± half-width' of a continuous measure."""
    mean, half = row.get(f"{m.key}_mean"), row.get(f"{m.key}_half")
    if mean is None or not math.isfinite(mean):
        return "-"
    return fmt_num(mean, m.fmt) + ("" if half is None or not math.isfinite(half) else f" ± {fmt_num(half, m.fmt)}")


def prepare_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Successful records with rate fields as booleans and the at-fault indicator added."""
    out = []
    for rec in records:
        if rec.get("failed"):
            continue
        r = dict(rec)
        if "at_fault_collisions" in r and r["at_fault_collisions"] is not None:
            r["at_fault"] = float(r["at_fault_collisions"]) > 0
        for m in RATES:
            v = r.get(m.key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                r[m.key] = None
            else:
                r[m.key] = bool(v)
        out.append(r)
    return out


def report_rows(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[Measure], list[Measure]]:
    """Aggregate rows per scenario x policy, with the rates and metrics present in the records."""
    recs = prepare_records(records)
    present = {k for r in recs for k, v in r.items() if v is not None}
    rates = [m for m in RATES if m.key in present]
    metrics = [m for m in METRICS if m.key in present]
    rows = stats.aggregate(recs, by=("scenario", "policy"), metrics=[m.key for m in metrics],
                           rates=[m.key for m in rates])
    return rows, rates, metrics


def worst_episodes(records: Sequence[Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """The k worst successful episodes: a collision first, then the lowest minimum TTC."""
    def key(r: Mapping[str, Any]) -> tuple:
        ttc = r.get("min_ttc")
        ttc = math.inf if ttc is None or not math.isfinite(float(ttc)) else float(ttc)
        return (not r.get("collision"), -float(r.get("at_fault_collisions") or 0), ttc, r["job_id"])

    return sorted(prepare_records(records), key=key)[: max(0, k)]


def scenario_thresholds(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Thresholds each scenario's episodes were measured with (from the records; defaults if absent)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.get("failed") or r["scenario"] in out:
            continue
        out[r["scenario"]] = dict(r["thresholds"]) if isinstance(r.get("thresholds"), Mapping) \
            else Thresholds().as_dict()
    return out


def _json_safe(value: Any) -> Any:
    """NaN and inf become None so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# ------------------------------------------------------------------------------------------------
# A document rendered both as Markdown and as self-contained HTML
# ------------------------------------------------------------------------------------------------


class _Doc:
    """Blocks of a report: headings, paragraphs, tables, images, bullet lists."""

    def __init__(self, root: Path):
        self.root = root
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, rel: str, alt: str) -> None:
        self.blocks.append(("img", (rel, alt)))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    # Inline markup shared by both renderers: [text](href) links and `code`.
    _LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")

    def _inline_html(self, text: str) -> str:
        parts, last = [], 0
        for m in self._LINK.finditer(text):
            parts.append(self._code_html(text[last:m.start()]))
            parts.append(f'<a href="{html.escape(m.group(2))}">{self._code_html(m.group(1))}</a>')
            last = m.end()
        parts.append(self._code_html(text[last:]))
        return "".join(parts)

    @staticmethod
    def _code_html(text: str) -> str:
        pieces = text.split("`")
        return "".join(f"<code>{html.escape(s)}</code>" if i % 2 else html.escape(s) for i, s in enumerate(pieces))

    def markdown(self) -> str:
        out = []
        for kind, data in self.blocks:
            if kind == "h":
                out.append("#" * data[0] + " " + data[1])
            elif kind == "p":
                out.append(data)
            elif kind == "table":
                header, rows = data
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
            elif kind == "img":
                out.append(f"![{data[1]}]({data[0]})")
            elif kind == "ul":
                out.extend(f"- {item}" for item in data)
            elif kind == "code":
                out.append("```\n" + data + "\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        body = []
        for kind, data in self.blocks:
            if kind == "h":
                body.append(f"<h{data[0]}>{html.escape(data[1])}</h{data[0]}>")
            elif kind == "p":
                body.append(f"<p>{self._inline_html(data)}</p>")
            elif kind == "table":
                header, rows = data
                head = "".join(f"<th>{self._inline_html(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(
                    f"<td class=\"best\">{self._inline_html(c)}</td>" if BEST in c else f"<td>{self._inline_html(c)}</td>"
                    for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                png = (self.root / data[0]).read_bytes()
                uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(data[1])}" src="{uri}"></figure>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{self._inline_html(i)}</li>" for i in data) + "</ul>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(data)}</pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")


_CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#eef8ee}"
    "code,pre{background:#f5f5f5;font-size:0.9em}pre{padding:0.6em;overflow-x:auto}"
    "figure{margin:1em 0}img{max-width:100%}h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa}"
)


# ------------------------------------------------------------------------------------------------
# Re-simulation of chosen episodes
# ------------------------------------------------------------------------------------------------


def _specs(run: Mapping[str, Any]) -> dict[str, ScenarioSpec]:
    """Resolved specs stored in run.json, checked against their hashes."""
    specs = {}
    for entry in run.get("scenarios", []):
        spec = ScenarioSpec.model_validate(entry["spec"])
        if entry.get("sha256") and spec_hash(spec) != entry["sha256"]:
            raise ValueError(f"run.json: spec of {entry['name']} does not match its hash")
        specs[entry["name"]] = spec
    return specs


def _platoon_columns(spec: ScenarioSpec, trace: Any) -> list[list[int]]:
    """Trace columns of each platoon's members, leader first."""
    given = getattr(trace, "platoons", None)
    if given is not None:
        return [list(map(int, p)) for p in given]
    cols, offset = [], 0  # the simulation spawns the platoons first, in spec order
    for p in spec.platoons:
        cols.append(list(range(offset, offset + p.size)))
        offset += p.size
    return cols


def _gif_bytes(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """Animated GIF (looping) of RGB frames."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.stack([np.asarray(f, dtype=np.uint8) for f in frames]),
                       extension=".gif", duration=1000.0 / fps, loop=0)


def _safe_name(job: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", job.replace("|", "__"))


def _same_outcome(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Re-simulated record agrees with the stored one on the figures the report uses."""
    for key in ("collision", "steps", "min_ttc", "min_gap"):
        x, y = a.get(key), b.get(key)
        if isinstance(x, float) and isinstance(y, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


# ------------------------------------------------------------------------------------------------
# build_report
# ------------------------------------------------------------------------------------------------


def build_report(out: Path, *, worst_k: int = 3, render_replays: bool = True) -> Path:
    """(Re)build metrics.json, report.md, report.html, plots/ and replays/ of a run folder; return report.md."""
    from diffplatoon.evaluation.episode import run_episode

    out = Path(out)
    all_records = load_records(out)
    run = _read_json(out / RUN)
    specs = _specs(run)
    failures = [r for r in all_records if r.get("failed")]
    records = prepare_records(all_records)
    rows, rates, metrics = report_rows(records)
    thresholds = scenario_thresholds(records)
    plot_dir, replay_dir = out / "plots", out / "replays"

    # 1. Worst episodes: re-simulate (trace for the profile plot, frames for the replays).
    worst = worst_episodes(records, worst_k)
    notes: list[str] = []
    replays: dict[str, str] = {}
    profile_png = None
    for rank, rec in enumerate(worst):
        spec = specs.get(rec["scenario"])
        if spec is None:
            notes.append(f"{rec['job_id']}: scenario spec not in run.json, not re-simulated")
            continue
        trace_needed = rank == 0
        existing = f"replays/{_safe_name(rec['job_id'])}.gif"
        if not render_replays and (out / existing).is_file():
            replays[rec["job_id"]] = existing  # rendered by an earlier build of the same records
        if not (trace_needed or render_replays):
            continue
        res = run_episode(spec, rec["policy"], int(rec["episode"]), record_trace=trace_needed,
                          render=render_replays)
        if not _same_outcome(res.record, rec):
            notes.append(f"{rec['job_id']}: the re-simulation differs from the stored record")
        if render_replays and res.frames:
            name = f"replays/{_safe_name(rec['job_id'])}.gif"
            io.atomic_write_bytes(out / name, _gif_bytes(res.frames, spec.policy_frequency))
            replays[rec["job_id"]] = name
        if trace_needed and res.trace is not None:
            profile_png = _profile_plot(spec, rec, res.trace, plot_dir / "worst_episode_profiles.png")

    if render_replays and replay_dir.is_dir():
        for stale in replay_dir.glob("*.gif"):
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
        figures.append(("plots/worst_episode_profiles.png", f"Speed and gap of every platoon member, worst episode {worst[0]['job_id']}"))
    curves = _string_curves(records, specs, run_episode)
    if curves:
        plots.string_stability(curves, plot_dir / "string_stability.png")
        figures.append(("plots/string_stability.png", "String stability: spacing-error norm ratio per member pair"))

    # 3. metrics.json
    metrics_json = {
        "generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "episodes": len(records), "failures": len(failures),
        "rates": [m.key for m in rates], "metrics": [m.key for m in metrics],
        "rows": rows, "thresholds": thresholds,
        "worst": [{"job_id": r["job_id"], "collision": r.get("collision"), "min_ttc": r.get("min_ttc"),
                   "replay": replays.get(r["job_id"])} for r in worst],
        "string_stability": curves,
        "failed_jobs": [{"job_id": r["job_id"], "error": r.get("error")} for r in failures],
        "run": {k: run.get(k) for k in ("arguments", "policy_versions", "versions")},
    }
    io.atomic_write_json(out / "metrics.json", _json_safe(metrics_json))

    # 4. The document.
    doc = _document(out, run, rows, rates, metrics, records, failures, worst, replays, figures, notes, thresholds)
    md_path = io.atomic_write_text(out / "report.md", doc.markdown())
    io.atomic_write_text(out / "report.html", doc.html("Safety evaluation report"))
    return md_path


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _profile_plot(spec: ScenarioSpec, rec: Mapping[str, Any], trace: Any, path: Path) -> Path | None:
    """Speed and gap profile of every platoon member of one traced episode."""
    speed = np.asarray(trace.speed, dtype=np.float64)
    cols = [c for p in _platoon_columns(spec, trace) for c in p]
    names = [n for p in spec.platoons for n in p.member_names()]
    if not cols or speed.ndim != 2:
        return None
    gap = np.asarray(trace.gap, dtype=np.float64) if getattr(trace, "gap", None) is not None \
        else np.full_like(speed, np.nan)
    time = np.arange(speed.shape[0]) * float(trace.dt)
    times = [c["time"] for c in rec.get("collisions") or [] if isinstance(c, Mapping) and "time" in c]
    title = (f"{rec['job_id']}: " + ("collision" if rec.get("collision") else "no collision")
             + f", min TTC {fmt_num(rec.get('min_ttc'))} s (red: collisions; gap to the vehicle ahead)")
    return plots.platoon_profiles(time, speed[:, cols], gap[:, cols], names[: len(cols)], title, path,
                                  collisions=times)


def _string_curves(records: Sequence[Mapping[str, Any]], specs: Mapping[str, ScenarioSpec],
                   run_episode: Any) -> dict[str, dict[str, list[float]]]:
    """Error-norm ratio per member pair, per scenario and policy.

    Taken as the mean over episodes of the records' ``string_error_ratios`` when the records
    carry them; otherwise from a traced re-simulation of the first episode of each pair.
    """
    curves: dict[str, dict[str, list[float]]] = {}
    firsts: dict[tuple[str, str], Mapping[str, Any]] = {}
    lists: dict[tuple[str, str], list[list[float]]] = {}
    for r in records:
        firsts.setdefault((r["scenario"], r["policy"]), r)
        if isinstance(r.get("string_error_ratios"), list):
            lists.setdefault((r["scenario"], r["policy"]), []).append([float(x) for x in r["string_error_ratios"]])
    for (sc, pol), rec in firsts.items():
        spec = specs.get(sc)
        if spec is None or not any(p.size >= 3 for p in spec.platoons):
            continue
        if (sc, pol) in lists:
            rows = [x for x in lists[(sc, pol)] if x]
            width = min((len(x) for x in rows), default=0)
            ratios = np.mean([x[:width] for x in rows], axis=0).tolist() if width else []
        else:
            trace = run_episode(spec, pol, int(rec["episode"]), record_trace=True).trace
            if trace is None or getattr(trace, "gap", None) is None:
                continue
            ratios = []
            th = rec.get("thresholds") if isinstance(rec.get("thresholds"), Mapping) else {}
            for p, cols in zip(spec.platoons, _platoon_columns(spec, trace)):
                if len(cols) >= 3:
                    ss = string_stability(np.asarray(trace.gap)[:, cols], np.asarray(trace.speed)[:, cols],
                                          time_gap=p.desired_time_gap, standstill=p.standstill_gap,
                                          start=int(th.get("disturbance_step", 0)))
                    ratios = ss.error_ratios.tolist()
                    break
        if ratios:
            curves.setdefault(sc, {})[pol] = ratios
    return curves


def _document(out: Path, run: Mapping[str, Any], rows: list[dict[str, Any]], rates: list[Measure],
              metrics: list[Measure], records: list[dict[str, Any]], failures: list[dict[str, Any]],
              worst: list[dict[str, Any]], replays: Mapping[str, str], figures: list[tuple[str, str]],
              notes: list[str], thresholds: Mapping[str, Any]) -> _Doc:
    """Lay out the report."""
    doc = _Doc(out)
    args = run.get("arguments", {})
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    doc.h(1, "Safety evaluation report")
    doc.p(f"Run folder `{out}`: {len(records)} episodes over {len(scenarios)} scenario(s) × "
          f"{len(policies)} polic{'y' if len(policies) == 1 else 'ies'} ({', '.join(policies) or '-'}); "
          f"{len(failures)} failed job(s). Generated "
          f"{_dt.datetime.now(_dt.timezone.utc).isoformat(timespec='seconds')}.")
    doc.h(2, "How to read this")
    doc.p(HOW_TO_READ)

    doc.h(2, "Collisions")
    header = ["scenario", "policy", "episodes", "collision rate k/n = p [Wilson 95%]", "rule of three (0 events)"]
    header += [f"{m.label} rate [Wilson 95%]" for m in rates if m.key != "collision"]
    body = []
    for r in rows:
        line = [str(r["scenario"]), str(r["policy"]), str(r["n"]), fmt_rate(r, "collision"), fmt_rule3(r, "collision")]
        line += [fmt_rate(r, m.key) for m in rates if m.key != "collision"]
        body.append(line)
    doc.table(header, body)
    if any(r.get("collision_k") == 0 for r in rows):
        doc.p("Rule of three: with zero collisions in n episodes the one-sided 95% upper bound on the "
              "collision rate is about 3/n; the Wilson interval's upper end is the two-sided counterpart.")

    doc.h(2, "Policies side by side")
    doc.p(f"Mean ± 95% CI over episodes; {BEST} marks the best policy on the row within the scenario.")
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

    if failures:
        doc.h(2, "Failed jobs")
        doc.p("These jobs raised an error (or their worker died after every retry); they are not counted above.")
        doc.table(["job", "error"], [[r["job_id"], str(r.get("error", ""))[:200]] for r in failures])

    doc.h(2, "Thresholds")
    doc.p("Measures were computed with these thresholds (per scenario: the scenario's safety settings "
          "and its first platoon's time gap and standstill gap; the string-stability window starts at "
          "`disturbance_step`, the first brake or speed-change event).")
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
