"""Figures of the safety report, drawn with matplotlib's Agg backend and written atomically as PNG.

Each function takes already-aggregated numbers or per-episode records (it never runs a
simulation), draws one figure on a `matplotlib.figure.Figure` (no pyplot global state, so
it is safe in any process) and returns the PNG path.
"""

from __future__ import annotations

import io as _bytes_io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from diffplatoon import io

_DPI = 110
# Upper end of the gap axis in the profile plot [m]; larger gaps run off the top.
_GAP_VIEW_MAX = 120.0
# Ratio plots switch to a log axis when a ratio exceeds this; ratios are clipped below at
# _RATIO_FLOOR there (a 0/0 ratio is reported as 0).
_RATIO_LOG_ABOVE = 10.0
_RATIO_FLOOR = 1e-3


def save_png(fig: Figure, path: Path) -> Path:
    """Render a figure to PNG in memory, then write it atomically (every report figure goes through here)."""
    buf = _bytes_io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    return io.atomic_write_bytes(path, buf.getvalue())


def _finite(values: Sequence[Any]) -> np.ndarray:
    """Finite floats of a sequence (None, NaN and inf dropped)."""
    arr = np.array([float(v) for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def _policies_scenarios(rows: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """Policies and scenarios in order of first appearance."""
    return (list(dict.fromkeys(r["policy"] for r in rows)), list(dict.fromkeys(r["scenario"] for r in rows)))


def collision_rates(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Grouped bars: collision rate per scenario x policy with Wilson 95% error bars."""
    policies, scenarios = _policies_scenarios(rows)
    by = {(r["scenario"], r["policy"]): r for r in rows}
    fig = Figure(figsize=(max(5.0, 1.2 * len(scenarios) * max(1, len(policies)) ** 0.5 + 2), 3.6))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(policies))
    xs = np.arange(len(scenarios))
    for k, pol in enumerate(policies):
        rate, lo, hi = [], [], []
        for sc in scenarios:
            r = by.get((sc, pol))
            p = float(r["collision"]) if r and r.get("collision_n") else math.nan
            rate.append(p)
            lo.append(p - float(r["collision_lo"]) if r and r.get("collision_n") else 0.0)
            hi.append(float(r["collision_hi"]) - p if r and r.get("collision_n") else 0.0)
        pos = xs - 0.4 + width * (k + 0.5)
        ax.bar(pos, rate, width, yerr=[lo, hi], capsize=3, label=pol)
        for x, sc in zip(pos, scenarios):
            r = by.get((sc, pol))
            if r and r.get("collision_n"):
                ax.annotate(f"{r['collision_k']}/{r['collision_n']}", (x, 0), xytext=(0, 2),
                            textcoords="offset points", ha="center", fontsize=7)
    ax.set_xticks(xs, scenarios, rotation=20 if len(scenarios) > 3 else 0, ha="right" if len(scenarios) > 3 else "center")
    ax.set_ylabel("collision rate per episode")
    ax.set_ylim(0, max(0.05, min(1.0, max([float(r.get("collision_hi", 0) or 0) for r in rows] + [0]) * 1.15)))
    ax.set_title("Collision rate (bars: Wilson 95% interval; labels: collisions/episodes)")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def ttc_distribution(records: Sequence[Mapping[str, Any]], path: Path, *, key: str = "min_ttc",
                     horizon: float | None = None) -> Path:
    """Box plot of the per-episode minimum TTC for every scenario x policy."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in records:
        groups.setdefault((r["scenario"], r["policy"]), []).append(r.get(key))
    labels, data = [], []
    for (sc, pol), vals in groups.items():
        labels.append(f"{sc}\n{pol}")
        data.append(_finite(vals))
    fig = Figure(figsize=(max(5.0, 0.9 * len(labels) + 1.5), 3.8))
    ax = fig.add_subplot()
    if data:
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True)
        ax.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=7)
    if horizon is not None:
        ax.axhline(horizon, color="grey", ls=":", lw=1, label=f"cap {horizon:g} s")
        ax.legend(fontsize=8)
    ax.set_ylabel("episode minimum TTC [s]")
    ax.set_title("Distribution of the per-episode minimum time-to-collision")
    return save_png(fig, path)


def min_gap_cdf(records: Sequence[Mapping[str, Any]], path: Path, *, key: str = "min_gap") -> Path:
    """Empirical CDF of the per-episode minimum gap, one curve per scenario x policy."""
    groups: dict[tuple[str, str], list[Any]] = {}
    for r in records:
        groups.setdefault((r["scenario"], r["policy"]), []).append(r.get(key))
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for (sc, pol), vals in groups.items():
        v = np.sort(_finite(vals))
        if v.size:
            ax.step(np.concatenate([[v[0]], v]), np.arange(v.size + 1) / v.size, where="post",
                    label=f"{sc} / {pol} (n={v.size})")
    ax.set_xlabel("episode minimum bumper-to-bumper gap [m]")
    ax.set_ylabel("fraction of episodes <= x")
    ax.set_ylim(0, 1.02)
    ax.set_title("Minimum-gap CDF")
    if groups:
        ax.legend(fontsize=7)
    return save_png(fig, path)


def platoon_profiles(time: np.ndarray, speed: np.ndarray, gap: np.ndarray, labels: Sequence[str],
                     title: str, path: Path, *, collisions: Sequence[float] = ()) -> Path:
    """Speed and gap-to-predecessor of every platoon member over one episode.

    ``speed`` and ``gap`` are (T, M) for the M members; ``gap[:, 0]`` of a platoon leader is
    not drawn (a leader has no predecessor in its platoon, pass NaN).
    """
    fig = Figure(figsize=(8.0, 5.2))
    ax_v, ax_g = fig.subplots(2, 1, sharex=True)
    for m, label in enumerate(labels):
        ax_v.plot(time, speed[:, m], lw=1.2, label=label)
        if np.isfinite(gap[:, m]).any():
            ax_g.plot(time, gap[:, m], lw=1.2, label=label)
    for ax in (ax_v, ax_g):
        for t in collisions:
            ax.axvline(t, color="red", ls="--", lw=1)
        ax.grid(alpha=0.3)
    ax_v.set_ylabel("speed [m/s]")
    ax_g.set_ylabel("gap to the vehicle ahead [m]")
    ax_g.axhline(0.0, color="black", lw=0.8)
    finite = gap[np.isfinite(gap)]
    if finite.size:  # a leader far from any traffic would flatten the members' gaps
        ax_g.set_ylim(min(-1.0, float(finite.min()) - 1.0), min(float(finite.max()), _GAP_VIEW_MAX) * 1.05 + 1.0)
    ax_g.set_xlabel("time [s]")
    ax_v.legend(fontsize=7, ncol=min(6, max(1, len(labels))))
    ax_v.set_title(title, fontsize=9)
    return save_png(fig, path)


def string_stability(curves: Mapping[str, Mapping[str, Sequence[float]]], path: Path) -> Path:
    """Error-norm ratio ||e_{i+1}|| / ||e_i|| per member pair, one panel per scenario, one line per policy.

    ``curves[scenario][policy]`` is the ratio of each consecutive member pair (mean over the
    episodes that were used); a ratio above 1 means the spacing error grows down the platoon.
    """
    scenarios = list(curves)
    cols = min(3, max(1, len(scenarios)))
    rows = max(1, math.ceil(len(scenarios) / cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    policies = list(dict.fromkeys(p for sc in scenarios for p in curves[sc]))
    colour = {p: f"C{k % 10}" for k, p in enumerate(policies)}  # one colour per policy in every panel
    for ax, sc in zip(axes, scenarios):
        width = 0
        for pol, ratios in curves[sc].items():
            r = np.asarray(ratios, dtype=np.float64)
            if r.size:
                ax.plot(np.arange(1, r.size + 1), np.maximum(r, _RATIO_FLOOR), marker="o", label=pol,
                        color=colour[pol])
                width = max(width, r.size)
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        if any(np.nanmax(np.asarray(r, dtype=np.float64), initial=0.0) > _RATIO_LOG_ABOVE
               for r in curves[sc].values() if len(r)):
            ax.set_yscale("log")
            ax.set_ylim(bottom=_RATIO_FLOOR)
        ax.set_title(sc, fontsize=9)
        ax.set_xticks(np.arange(1, width + 1), [f"{k}→{k + 1}" for k in range(1, width + 1)])
        ax.set_xlabel("followers i → i+1")
        ax.set_ylabel("‖e_(i+1)‖ / ‖e_i‖")
        ax.legend(fontsize=7)
    for ax in axes[len(scenarios):]:
        ax.set_visible(False)
    if not scenarios:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no platoon with two or more members", ha="center", va="center")
    fig.suptitle("String stability (ratio <= 1: disturbances shrink down the platoon)", fontsize=10)
    return save_png(fig, path)
