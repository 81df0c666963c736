"""Per-episode records to report numbers: canonical order, aggregates, worst episodes, thresholds, curves.

Pure functions of the records the runner wrote (and of run.json's scenario order); nothing
here simulates or draws. `record_order` gives the records one order before anything is
aggregated, so the numbers do not depend on the order the records were appended in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from diffplatoon.evaluation import stats
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import ScenarioSpec


@dataclass(frozen=True)
class Measure:
    """A reported quantity: record key, label, which direction is better."""

    key: str
    label: str
    higher_is_better: bool


# Per-episode indicators reported as rates with a Wilson interval (lower is better for all).
RATES: tuple[Measure, ...] = (
    Measure("collision", "collision", False),
    Measure("at_fault", "at-fault collision", False),
    Measure("traffic_collision", "traffic-only collision", False),
    Measure("near_miss", "near miss (gap < min_gap, no collision)", False),
    Measure("offroad", "off-road", False),
    Measure("wrong_way", "wrong way", False),
)
# Continuous per-episode measures reported as mean +/- 95% CI.
METRICS: tuple[Measure, ...] = (
    Measure("at_fault_collisions", "at-fault collisions / episode", False),
    Measure("traffic_collisions", "traffic-only collisions / episode", False),
    Measure("min_ttc", "min TTC [s]", True),
    Measure("min_ttc_2d", "min 2-D TTC [s]", True),
    Measure("tet", "TET (TTC < threshold) [s]", False),
    Measure("min_gap", "min gap [m]", True),
    Measure("min_time_gap", "min time gap [s]", True),
    Measure("max_drac", "max DRAC [m/s²]", False),
    Measure("max_drac_ahead", "max DRAC, two vehicles ahead [m/s²]", False),
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


def prepare_records(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Successful records with rate fields as booleans and the at-fault and traffic-only indicators added."""
    out = []
    for rec in records:
        if rec.get("failed"):
            continue
        r = dict(rec)
        for count, indicator in (("at_fault_collisions", "at_fault"), ("traffic_collisions", "traffic_collision")):
            if r.get(count) is not None:
                r[indicator] = float(r[count]) > 0
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


def scenario_thresholds(records: Sequence[Mapping[str, Any]],
                        specs: Mapping[str, ScenarioSpec]) -> dict[str, dict[str, Any]]:
    """Thresholds each scenario's episodes were measured with: from its records, else from its spec."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["scenario"] in out:
            continue
        if isinstance(r.get("thresholds"), Mapping):
            out[r["scenario"]] = dict(r["thresholds"])
        elif r["scenario"] in specs:
            out[r["scenario"]] = Thresholds.for_spec(specs[r["scenario"]]).as_dict()
    return out


def record_order(run: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], tuple]:
    """Sort key giving records one canonical order: scenario and policy as run.json lists them, episode, job id."""
    scenarios = {e["name"]: i for i, e in enumerate(run.get("scenarios", []))}
    policies = {p: i for i, p in enumerate(run.get("arguments", {}).get("policies", []))}

    def key(r: Mapping[str, Any]) -> tuple:
        sc, pol, ep = str(r.get("scenario")), str(r.get("policy")), r.get("episode")
        return (scenarios.get(sc, len(scenarios)), sc, policies.get(pol, len(policies)), pol,
                int(ep) if isinstance(ep, (int, float)) else -1, str(r.get("job_id")))

    return key


def string_curves(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[float | None]]]:
    """Mean spacing-error norm ratio per member pair over episodes, per scenario, policy and platoon.

    From the records' ``string_error_ratios`` (one list per platoon); a platoon with fewer
    than three members has no ratio. Curves are labelled by policy, and by platoon as well
    when a scenario has several platoons with ratios. Undefined ratios (None) are left out of
    the mean.
    """
    ratios: dict[tuple[str, str, int], list[list[float]]] = {}
    for r in records:
        for p, row in enumerate(r.get("string_error_ratios") or []):
            if row:
                ratios.setdefault((r["scenario"], r["policy"], p), []).append(
                    [math.nan if v is None else float(v) for v in row])
    curves: dict[str, dict[str, list[float | None]]] = {}
    for (sc, pol, p), rows in ratios.items():
        several = len({q for s, _, q in ratios if s == sc}) > 1
        width = min(len(x) for x in rows)
        arr = np.array([x[:width] for x in rows], dtype=np.float64)
        finite = np.isfinite(arr)
        mean = np.where(finite, arr, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
        curves.setdefault(sc, {})[f"{pol} · platoon {p}" if several else pol] = [
            float(m) if n else None for m, n in zip(mean, finite.sum(axis=0))]
    return curves
