"""Confidence intervals and aggregation of per-episode records for the safety report.

Owns the Wilson score interval for rates (collision indicator per episode), the rule of three
for zero events, Student-t quantiles and mean +/- CI for continuous measures, grouping of
episode records into table rows, and marking the best policy per row group. Pure Python and
numpy: the t quantile is computed here (exact finite series of the t CDF for integer degrees
of freedom, Abramowitz & Stegun 26.7.3/26.7.4, solved by safeguarded Newton) because scipy is
not a declared dependency. The episode is the sampling unit (agents within one episode are not
independent), so every count below is a count of episodes.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

# Above this many degrees of freedom the Cornish-Fisher expansion (A&S 26.7.5) is exact to
# far below float64 rounding of the quantities we report, and the O(df) series is skipped.
_CORNISH_FISHER_DF = 1000


# --------------------------------------------------------------------------------------------
# Rates
# --------------------------------------------------------------------------------------------


def normal_quantile(p: float) -> float:
    """Standard normal quantile (inverse CDF) at probability p."""
    return NormalDist().inv_cdf(p)


def wilson_interval(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Wilson score interval for a binomial proportion k/n.

    (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), with z the normal quantile at
    (1 + confidence)/2. Unlike the normal-approximation interval it does not collapse to
    [0, 0] when k = 0. Returns (nan, nan) for n = 0.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    z = normal_quantile(0.5 + confidence / 2.0)
    p, z2 = k / n, z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    denom = 1 + z2 / n
    low = 0.0 if k == 0 else max(0.0, (centre - half) / denom)
    high = 1.0 if k == n else min(1.0, (centre + half) / denom)
    return low, high


def rate_cell(k: int, n: int, *, confidence: float = 0.95) -> dict[str, Any]:
    """k of n episodes as a table cell: ``{"k", "n", "rate", "lo", "hi"}``, Wilson interval (NaN when n = 0)."""
    lo, hi = wilson_interval(k, n, confidence=confidence)
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "lo": lo, "hi": hi}


def rule_of_three(n: int, *, confidence: float = 0.95, exact: bool = False) -> float:
    """One-sided upper bound on a rate after 0 events in n trials: 3/n (95%), or exact 1 - alpha^(1/n).

    For other confidence levels the approximation is -ln(1 - confidence)/n.
    """
    if n <= 0:
        return float("nan")
    alpha = 1.0 - confidence
    if exact:
        return 1.0 - alpha ** (1.0 / n)
    return (3.0 if math.isclose(confidence, 0.95) else -math.log(alpha)) / n


# --------------------------------------------------------------------------------------------
# Student t
# --------------------------------------------------------------------------------------------


def _check_df(df: int) -> int:
    """Degrees of freedom as a positive int."""
    if int(df) != df or df < 1:
        raise ValueError(f"df must be a positive integer, got {df}")
    return int(df)


def t_cdf(t: float, df: int) -> float:
    """CDF of Student's t with integer df, from the exact finite series (A&S 26.7.3/26.7.4)."""
    df = _check_df(df)
    if t == 0:
        return 0.5
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    c2 = df / (df + t * t)  # cos^2(theta)
    if df % 2 == 0:
        # A = sin(theta) * sum_{k=0}^{df/2-1} prod_{m<=k} (2m-1)/(2m) * cos^(2k)(theta)
        k = np.arange(1, df // 2)
        terms = np.cumprod((2 * k - 1) / (2 * k) * c2)
        a = math.sin(theta) * (1.0 + terms.sum())
    elif df == 1:
        a = 2.0 * theta / math.pi
    else:
        # A = (2/pi) (theta + sin(theta) cos(theta) sum_{k=0}^{(df-3)/2} prod (2m)/(2m+1) cos^(2k))
        k = np.arange(1, (df - 1) // 2)
        terms = np.cumprod((2 * k) / (2 * k + 1) * c2)
        a = 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * (1.0 + terms.sum()))
    a = min(a, 1.0)
    return 0.5 + 0.5 * a if t > 0 else 0.5 - 0.5 * a


def _t_pdf(t: float, df: int) -> float:
    """Density of Student's t."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def _cornish_fisher(x: float, df: float) -> float:
    """t quantile from the normal quantile x by the A&S 26.7.5 expansion to 1/df^4."""
    g1 = (x ** 3 + x) / 4
    g2 = (5 * x ** 5 + 16 * x ** 3 + 3 * x) / 96
    g3 = (3 * x ** 7 + 19 * x ** 5 + 17 * x ** 3 - 15 * x) / 384
    g4 = (79 * x ** 9 + 776 * x ** 7 + 1482 * x ** 5 - 1920 * x ** 3 - 945 * x) / 92160
    return x + g1 / df + g2 / df ** 2 + g3 / df ** 3 + g4 / df ** 4


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with integer df at probability p in (0, 1)."""
    df = _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    x = normal_quantile(p)
    guess = _cornish_fisher(x, df)
    if df > _CORNISH_FISHER_DF:
        return guess
    # Safeguarded Newton on F(t) = p, keeping a bracket [lo, hi] with F(lo) < p < F(hi).
    lo, hi = 0.0, max(guess, 1.0)
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    t = min(max(guess, lo), hi)
    for _ in range(100):
        f = t_cdf(t, df) - p
        if f < 0:
            lo = t
        else:
            hi = t
        step = f / _t_pdf(t, df)
        nxt = t - step
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - t) <= 1e-13 * max(1.0, abs(t)):
            return nxt
        t = nxt
    return t


class MeanCI(NamedTuple):
    """Sample mean with a two-sided t confidence interval; n counts the finite values used."""

    mean: float
    half_width: float
    low: float
    high: float
    std: float
    n: int


def mean_ci(values: Iterable[float], *, confidence: float = 0.95) -> MeanCI:
    """Mean +/- t_{(1+c)/2, n-1} * s / sqrt(n) over the finite values (NaN and inf are skipped).

    With one value the half-width is NaN; with none everything is NaN and n = 0.
    """
    v = np.asarray([float(a) for a in values if a is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        nan = float("nan")
        return MeanCI(nan, nan, nan, nan, nan, 0)
    mean = float(v.mean())
    if n == 1:
        nan = float("nan")
        return MeanCI(mean, nan, nan, nan, nan, 1)
    std = float(v.std(ddof=1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return MeanCI(mean, half, mean - half, mean + half, std, n)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def _is_bool(v: Any) -> bool:
    """True for Python and numpy booleans."""
    return isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    """True for real numbers that are not booleans."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not _is_bool(v)


def aggregate(records: Sequence[Mapping[str, Any]], by: Sequence[str] = ("scenario", "policy"),
              metrics: Sequence[str] | None = None, rates: Sequence[str] | None = None, *,
              confidence: float = 0.95) -> list[dict[str, Any]]:
    """Group per-episode records by the ``by`` keys into one row per group.

    ``rates`` are per-episode indicators (bool or 0/1); each gives, over the episodes that have
    it, ``{name}`` = k/n, ``{name}_k``, ``{name}_n``, the Wilson interval ``{name}_lo`` /
    ``{name}_hi``, and ``{name}_rule3`` = 3/n when k = 0 (else NaN). ``metrics`` are continuous;
    each gives ``{name}_mean``, ``{name}_half`` (CI half-width), ``{name}_lo``, ``{name}_hi``,
    ``{name}_std`` and ``{name}_n`` (finite values used). Every row also has the ``by`` keys
    and ``n`` (episodes in the group). With both lists None, boolean-valued keys are rates and
    other numeric keys are metrics. Rows keep the order in which groups first appear.
    """
    by = tuple(by)
    if metrics is None or rates is None:
        seen: dict[str, set[str]] = {}
        for rec in records:
            for key, val in rec.items():
                if key in by or val is None:
                    continue
                kind = "bool" if _is_bool(val) else "num" if _is_number(val) else "other"
                seen.setdefault(key, set()).add(kind)
        auto_rates = [k for k, kinds in seen.items() if kinds == {"bool"}]
        auto_metrics = [k for k, kinds in seen.items() if kinds == {"num"}]
        rates = auto_rates if rates is None else rates
        metrics = [k for k in auto_metrics if k not in rates] if metrics is None else metrics

    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for rec in records:
        groups.setdefault(tuple(rec.get(k) for k in by), []).append(rec)

    rows = []
    for key, recs in groups.items():
        row: dict[str, Any] = dict(zip(by, key))
        row["n"] = len(recs)
        for name in rates:
            vals = [rec[name] for rec in recs if rec.get(name) is not None
                    and not (isinstance(rec[name], float) and math.isnan(rec[name]))]
            k, n = int(sum(bool(v) for v in vals)), len(vals)
            lo, hi = wilson_interval(k, n, confidence=confidence)
            row[name] = k / n if n else float("nan")
            row.update({f"{name}_k": k, f"{name}_n": n, f"{name}_lo": lo, f"{name}_hi": hi,
                        f"{name}_rule3": rule_of_three(n, confidence=confidence) if k == 0 else float("nan")})
        for name in metrics:
            ci = mean_ci((rec.get(name) for rec in recs), confidence=confidence)
            row.update({f"{name}_mean": ci.mean, f"{name}_half": ci.half_width, f"{name}_lo": ci.low,
                        f"{name}_hi": ci.high, f"{name}_std": ci.std, f"{name}_n": ci.n})
        rows.append(row)
    return rows


def best_marker(rows: Sequence[Mapping[str, Any]], metric: str, higher_is_better: bool, *,
                within: Sequence[str] = ("scenario",)) -> list[bool]:
    """Mark the row whose ``metric`` is best among rows sharing the ``within`` keys, when the difference is established.

    ``metric`` is a row key (a rate such as "collision") or a metric name whose ``_mean`` is
    compared; its 95% interval is ``{metric}_lo`` .. ``{metric}_hi`` (Wilson for rates, Student
    t for means). A row is marked only when its interval lies strictly on the better side of
    every other row's interval in the group, i.e. it does not overlap the runner-up's: a tie, a
    row without an interval (one episode) or overlapping intervals mark nothing. NaN values are
    never best; a group with a single valued row marks nothing (there is nothing to beat).
    """
    def value(row: Mapping[str, Any], key: str) -> float:
        v = row.get(key)
        return float("nan") if v is None else float(v)

    def centre(row: Mapping[str, Any]) -> float:
        return value(row, metric) if metric in row else value(row, f"{metric}_mean")

    sign = 1.0 if higher_is_better else -1.0
    groups: dict[tuple, list[int]] = {}
    for k, row in enumerate(rows):
        if not math.isnan(centre(row)):
            groups.setdefault(tuple(row.get(key) for key in within), []).append(k)
    marks = [False] * len(rows)
    for members in groups.values():
        if len(members) < 2:
            continue
        best = max(members, key=lambda k: sign * centre(rows[k]))
        # The best row's worse end and every other row's better end, oriented so that larger is better.
        lo, hi = value(rows[best], f"{metric}_lo"), value(rows[best], f"{metric}_hi")
        best_worst_end = sign * (lo if higher_is_better else hi)
        others_best_end = [sign * value(rows[k], f"{metric}_hi" if higher_is_better else f"{metric}_lo")
                           for k in members if k != best]
        if math.isnan(best_worst_end) or any(math.isnan(e) for e in others_best_end):
            continue
        marks[best] = all(best_worst_end > e for e in others_best_end)
    return marks
