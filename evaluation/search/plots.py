"""Figures of a failure search, drawn from ``search.json`` and the rounds' ``samples.json``.

Three figures, each written atomically as PNG by `diffplatoon.evaluation.plots.save_png`:
parameter pairs coloured by outcome (where the failures are), the criticality of every round
(how the proposal moved towards failure) and the proposal's parameters round by round.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure

from diffplatoon.evaluation.plots import save_png

_MAX_PAIRS = 15


def pair_scatter(paths: Sequence[str], values: np.ndarray, failed: np.ndarray, criticality: np.ndarray,
                 kind: str, path: Path) -> Path:
    """Every episode in each parameter pair's plane (one parameter: against the criticality); failures red."""
    d = values.shape[1]
    pairs = list(itertools.combinations(range(d), 2))[:_MAX_PAIRS] if d > 1 else [(0, -1)]
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    for k, (i, j) in enumerate(pairs):
        ax = fig.add_subplot(rows, cols, k + 1)
        y = values[:, j] if j >= 0 else _natural(criticality, kind)
        ax.scatter(values[~failed, i], y[~failed], s=8, c="#8c8c8c", alpha=0.5, label="no failure", linewidths=0)
        ax.scatter(values[failed, i], y[failed], s=16, c="#d62728", marker="x", label="failure")
        ax.set_xlabel(paths[i], fontsize=8)
        ax.set_ylabel(paths[j] if j >= 0 else kind, fontsize=8)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{int(failed.sum())} failures in {len(failed)} episodes (every round)", fontsize=10)
    return save_png(fig, path)


def criticality_rounds(per_round: Sequence[np.ndarray], failures: Sequence[int], phases: Sequence[str],
                       kind: str, path: Path) -> Path:
    """Box plot of each round's criticality (in the measure's units), its failure count under it."""
    fig = Figure(figsize=(max(5.0, 0.6 * len(per_round) + 2.0), 3.8))
    ax = fig.add_subplot()
    data = []
    for scores in per_round:
        v = _natural(np.asarray(scores, dtype=np.float64), kind)
        v = v[np.isfinite(v)]
        data.append(v if v.size else np.array([np.nan]))
    ax.boxplot(data, showfliers=True)
    labels = [f"{k + 1}\n{'adapt' if p == 'adapt' else 'est.'}\n{f} fail." for k, (p, f) in
              enumerate(zip(phases, failures))]
    ax.set_xticks(np.arange(1, len(data) + 1), labels, fontsize=7)
    ax.set_ylabel(f"episode {kind} (failures excluded)")
    better = "higher" if kind == "max_drac" else "lower"
    ax.set_title(f"Criticality per round (round, phase, failures; {better} {kind} is more critical)", fontsize=9)
    return save_png(fig, path)


def proposal_evolution(paths: Sequence[str], proposals: Sequence[dict[str, Any]], labels: Sequence[Any],
                       path: Path) -> Path:
    """Each parameter's proposal component round by round: mean with a +/-1 std band, or category shares."""
    d = len(paths)
    fig = Figure(figsize=(4.4 * min(d, 3), 3.4 * math.ceil(d / 3)))
    x = np.arange(1, len(proposals) + 1)
    for j, name in enumerate(paths):
        ax = fig.add_subplot(math.ceil(d / 3), min(d, 3), j + 1)
        comps = [p["marginals"][j] for p in proposals]
        nominal = [p["defensive"] >= 1.0 for p in proposals]
        if comps[0]["kind"] == "categorical":
            probs = np.array([c["probs"] for c in comps])
            bottom = np.zeros(len(comps))
            for k in range(probs.shape[1]):
                ax.bar(x, probs[:, k], bottom=bottom, label=str(labels[j][k]) if labels[j] else str(k))
                bottom += probs[:, k]
            ax.set_ylabel("probability")
            ax.legend(fontsize=6, ncol=2)
        else:
            mean = np.array([c["mean"] for c in comps])
            std = np.array([c["std"] for c in comps])
            ax.plot(x, mean, "o-", color="#1f77b4", label="proposal mean")
            ax.fill_between(x, mean - std, mean + std, color="#1f77b4", alpha=0.2, label="± 1 std")
            ax.set_ylabel("value")
        for k, is_nominal in enumerate(nominal):
            if is_nominal:
                ax.axvspan(k + 0.6, k + 1.4, color="#cccccc", alpha=0.4, lw=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("round (grey: the nominal itself)", fontsize=8)
        ax.set_xticks(x)
    fig.suptitle("Proposal component per round (the sampled mixture also keeps the nominal's share)", fontsize=9)
    return save_png(fig, path)


def _natural(scores: np.ndarray, kind: str) -> np.ndarray:
    """Criticality back in the measure's units (min TTC and min gap were negated)."""
    return scores if kind == "max_drac" else -scores


__all__ = ["criticality_rounds", "pair_scatter", "proposal_evolution"]
