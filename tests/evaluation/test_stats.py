"""Confidence intervals, t quantiles and record aggregation against published and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffplatoon.evaluation import stats

Z = 1.959963984540054  # normal quantile at 0.975


def test_wilson_hand_computed():
    """Wilson: (p + z^2/2n -/+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.959964, z^2 = 3.841459.

    0/10: p = 0, the root is z^2/2n, so low = 0 and high = (z^2/n) / (1 + z^2/n)
          = 0.3841459 / 1.3841459 = 0.277533.
    5/10: p = 0.5, centre (0.5 + 0.192073) / 1.384146 = 0.5; half-width
          z sqrt(0.025 + 0.00960365) / 1.384146 = 1.959964 * 0.186020 / 1.384146 = 0.263407,
          so [0.236593, 0.763407].
    1/100: centre 0.01 + 0.0192073 = 0.0292073; root sqrt(0.000099 + 0.0000960365) = 0.0139656,
          times z = 0.0273721; divided by 1.0384146: [0.0017674, 0.0544862].
    """
    assert stats.wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=2e-6)
    assert stats.wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=2e-6)
    assert stats.wilson_interval(1, 100) == pytest.approx((0.0017674, 0.0544862), abs=2e-7)
    assert stats.wilson_interval(0, 10)[0] == 0.0 and stats.wilson_interval(10, 10)[1] == 1.0


def test_wilson_published_values():
    """Newcombe (1998, Stat. Med. 17:857), score interval without continuity correction:
    81/263 -> 0.2553-0.3662, 15/148 -> 0.0624-0.1605, 0/20 -> 0-0.1611, 1/29 -> 0.0061-0.1718."""
    published = {(81, 263): (0.2553, 0.3662), (15, 148): (0.0624, 0.1605),
                 (0, 20): (0.0, 0.1611), (1, 29): (0.0061, 0.1718)}
    for (k, n), ci in published.items():
        assert stats.wilson_interval(k, n) == pytest.approx(ci, abs=6e-5), (k, n)


def test_wilson_symmetry_and_errors():
    """The interval for n - k events mirrors the one for k; invalid counts raise; n = 0 is NaN."""
    for k, n in [(0, 7), (3, 11), (40, 1000)]:
        lo, hi = stats.wilson_interval(k, n)
        lo2, hi2 = stats.wilson_interval(n - k, n)
        assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
        assert lo <= k / n <= hi
    with pytest.raises(ValueError):
        stats.wilson_interval(5, 3)
    assert all(math.isnan(v) for v in stats.wilson_interval(0, 0))


def test_rule_of_three():
    """3/n for 95%; exact one-sided bound 1 - 0.05^(1/n): 0.029513 for n = 100. Showing a rate
    below 1e-2 needs n >= ln 0.05 / ln 0.99 = 298.07, so the exact bound crosses 0.01 between
    n = 298 and 299."""
    assert stats.rule_of_three(100) == pytest.approx(0.03)
    assert stats.rule_of_three(100, exact=True) == pytest.approx(1 - 0.05 ** 0.01)
    assert stats.rule_of_three(100, exact=True) == pytest.approx(0.029513, abs=1e-6)
    assert stats.rule_of_three(298, exact=True) > 0.01 > stats.rule_of_three(299, exact=True)
    assert stats.rule_of_three(100, confidence=0.99) == pytest.approx(-math.log(0.01) / 100)


# Student t table (two-sided 95%, 99% and one-sided 95%, 90% critical values, 3 decimals).
T_TABLE = {
    (0.975, 1): 12.706, (0.975, 2): 4.303, (0.975, 3): 3.182, (0.975, 4): 2.776,
    (0.975, 5): 2.571, (0.975, 10): 2.228, (0.975, 20): 2.086, (0.975, 30): 2.042,
    (0.975, 60): 2.000, (0.975, 120): 1.980,
    (0.995, 2): 9.925, (0.995, 10): 3.169, (0.995, 30): 2.750,
    (0.95, 5): 2.015, (0.95, 10): 1.812, (0.9, 10): 1.372,
}


@pytest.mark.parametrize("p,df", sorted(T_TABLE))
def test_t_quantile_table(p, df):
    """Quantiles agree with the printed table to its rounding (5e-4), and are antisymmetric."""
    assert stats.t_quantile(p, df) == pytest.approx(T_TABLE[p, df], abs=5e-4)
    assert stats.t_quantile(1 - p, df) == pytest.approx(-stats.t_quantile(p, df), abs=1e-12)


def test_t_closed_forms_and_limits():
    """df = 1 is Cauchy: F(1) = 3/4, quantile tan(pi (p - 1/2)). df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    df = 3: F(t) = 1/2 + (u / (1 + u^2) + atan u) / pi with u = t / sqrt 3. Large df tends to
    the normal quantile 1.959964, and the series and expansion branches meet at df = 1000."""
    assert stats.t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-15)
    for t in (-4.0, -0.7, 0.3, 2.0, 9.0):
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
        u = t / math.sqrt(3)
        assert stats.t_cdf(t, 3) == pytest.approx(0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi, abs=1e-14)
    for p in (0.6, 0.975, 0.9995):
        for df in (3, 7, 25, 400, 1000, 1001):
            assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)
    assert stats.t_quantile(0.975, 10**6) == pytest.approx(Z, abs=1e-5)
    assert stats.t_quantile(0.975, 1000) == pytest.approx(stats.t_quantile(0.975, 1001), abs=1e-5)
    with pytest.raises(ValueError):
        stats.t_quantile(0.975, 2.5)


def test_t_quantile_matches_scipy_if_installed():
    """Where scipy happens to be installed, agree with scipy.stats.t.ppf to 1e-8."""
    sps = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 8, 13, 29, 64, 199, 999, 1000, 1001, 5000):
        for p in (0.55, 0.8, 0.95, 0.975, 0.99, 0.999):
            assert stats.t_quantile(p, df) == pytest.approx(float(sps.t.ppf(p, df)), rel=1e-8), (p, df)


def test_mean_ci():
    """[1, 2, 3, 4, 5]: mean 3, s = sqrt(2.5), t(0.975, 4) = 2.776445, half = 2.776445 * sqrt(2.5) / sqrt(5)
    = 1.963243. NaN and inf are skipped; one value has no interval; none gives n = 0."""
    ci = stats.mean_ci([1.0, 2.0, float("nan"), 3.0, 4.0, float("inf"), 5.0])
    assert ci.n == 5 and ci.mean == pytest.approx(3.0)
    assert ci.std == pytest.approx(math.sqrt(2.5))
    assert ci.half_width == pytest.approx(2.776445 * math.sqrt(2.5) / math.sqrt(5), abs=1e-6)
    assert (ci.low, ci.high) == pytest.approx((3 - ci.half_width, 3 + ci.half_width))
    one = stats.mean_ci([2.0])
    assert one.mean == 2.0 and one.n == 1 and math.isnan(one.half_width)
    assert stats.mean_ci([]).n == 0 and math.isnan(stats.mean_ci([]).mean)


def _records():
    """Two scenarios x two policies; collisions: hard_brake/idm 2 of 4, the others 0."""
    rows = []
    for scenario in ("hard_brake", "cut_in"):
        for policy in ("idm", "cacc"):
            for seed in range(4):
                collided = scenario == "hard_brake" and policy == "idm" and seed < 2
                rows.append({"scenario": scenario, "policy": policy, "seed": seed,
                             "collision": collided,
                             "min_ttc": (1.0 if policy == "idm" else 2.0) + 0.5 * seed,
                             "mean_speed": 20.0 + seed + (5.0 if policy == "cacc" else 0.0),
                             "note": "x"})
    rows[5]["min_ttc"] = float("nan")  # hard_brake/cacc seed 1 undefined
    return rows


def test_aggregate_rates_and_means():
    """Rows per (scenario, policy) in first-seen order, with Wilson intervals for the
    collision rate (rule of three when zero) and t intervals for the means."""
    rows = stats.aggregate(_records(), by=("scenario", "policy"), metrics=["min_ttc", "mean_speed"],
                           rates=["collision"])
    assert [(r["scenario"], r["policy"]) for r in rows] == [
        ("hard_brake", "idm"), ("hard_brake", "cacc"), ("cut_in", "idm"), ("cut_in", "cacc")]
    hb_idm, hb_cacc = rows[0], rows[1]
    assert hb_idm["n"] == 4 and hb_idm["collision_k"] == 2 and hb_idm["collision"] == 0.5
    assert (hb_idm["collision_lo"], hb_idm["collision_hi"]) == stats.wilson_interval(2, 4)
    assert math.isnan(hb_idm["collision_rule3"])
    assert hb_cacc["collision"] == 0.0 and hb_cacc["collision_rule3"] == pytest.approx(3 / 4)
    # idm min_ttc values 1.0, 1.5, 2.0, 2.5: mean 1.75, s = sqrt(5/12), t(0.975, 3) = 3.182446.
    assert hb_idm["min_ttc_mean"] == pytest.approx(1.75)
    assert hb_idm["min_ttc_half"] == pytest.approx(3.182446 * math.sqrt(5 / 12) / 2, abs=1e-6)
    # The NaN record is skipped: cacc uses 2.0, 3.0, 3.5.
    assert hb_cacc["min_ttc_n"] == 3 and hb_cacc["min_ttc_mean"] == pytest.approx(8.5 / 3)


def test_aggregate_auto_detects_kinds_and_groups():
    """Without lists, bools become rates, numbers means; strings are skipped; grouping by
    policy alone pools both scenarios."""
    rows = stats.aggregate(_records(), by=("policy",))
    assert len(rows) == 2
    idm = rows[0]
    assert idm["policy"] == "idm" and idm["n"] == 8 and idm["collision_k"] == 2
    assert "min_ttc_mean" in idm and "seed_mean" in idm and "note_mean" not in idm
    assert "collision_mean" not in idm


def test_best_marker_needs_separated_intervals():
    """★ only where the best row's 95% interval does not overlap any other row's in its group.

    mean_speed: cacc is 5 m/s faster in both scenarios with a t half-width of 3.18 * 1.29 / 2
    = 2.05 m/s, so the intervals [19.45, 23.55] and [24.45, 28.55] are apart: cacc marked.
    Collisions: 2/4 vs 0/4 have overlapping Wilson intervals ([0.15, 0.85] vs [0, 0.49]), and
    0/4 vs 0/4 is a tie: nothing marked. min_ttc: 1.75 ± 1.03 vs 2.83 ± 1.90 overlap.
    """
    rows = stats.aggregate(_records(), metrics=["min_ttc", "mean_speed"], rates=["collision"])
    assert stats.best_marker(rows, "mean_speed", higher_is_better=True) == [False, True, False, True]
    assert stats.best_marker(rows, "collision", higher_is_better=False) == [False] * 4
    assert stats.best_marker(rows, "min_ttc", higher_is_better=True) == [False] * 4
    # Lower is better with separated intervals: the lower row is marked.
    assert stats.best_marker(rows, "mean_speed", higher_is_better=False) == [True, False, True, False]
    # NaN is never best and leaves nothing to compare within the group.
    rows[1]["mean_speed_mean"] = float("nan")
    assert stats.best_marker(rows, "mean_speed", higher_is_better=True) == [False, False, False, True]
    # Without an interval (half-width NaN from a single episode) the difference is not established.
    rows[3]["mean_speed_lo"] = float("nan")
    assert stats.best_marker(rows, "mean_speed", higher_is_better=True) == [False] * 4


def test_best_marker_rates_with_many_episodes():
    """0/200 vs 40/200 collisions: Wilson [0, 0.019] vs [0.150, 0.261], so the 0/200 row is best;
    at 0/20 vs 2/20 ([0, 0.161] vs [0.028, 0.301]) the intervals overlap and nothing is marked."""
    def rates(k_a: int, k_b: int, n: int) -> list[dict]:
        recs = [{"scenario": "s", "policy": p, "collision": i < k} for p, k in (("a", k_a), ("b", k_b))
                for i in range(n)]
        return stats.aggregate(recs, metrics=[], rates=["collision"])

    assert stats.best_marker(rates(0, 40, 200), "collision", higher_is_better=False) == [True, False]
    assert stats.best_marker(rates(0, 2, 20), "collision", higher_is_better=False) == [False, False]