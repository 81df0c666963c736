"""The safety report: files, self-contained HTML, numbers that match the records, rule of three,
no simulation, and the same metrics.json whatever the record order.

One small real evaluation (2 policies x 3 episodes of a shortened hard_brake) feeds every
test; the expected numbers are recomputed here from the records with the stats primitives.
"""

from __future__ import annotations

import json
import random
import re
import shutil

import imageio.v3 as iio
import numpy as np
import pytest

from diffplatoon import io
from diffplatoon.evaluation import aggregate, formatting, report, runner, stats
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim.simulation import Simulation

POLICIES = ["idm", "cacc"]
EPISODES = 3
WORST_K = 2


@pytest.fixture(scope="module")
def run(ray_session, tmp_path_factory):
    """An evaluation with its report, replays included."""
    spec = load_scenario("hard_brake").model_copy(update={"duration": 7.0})
    out = tmp_path_factory.mktemp("report")
    summary = runner.evaluate(POLICIES, [spec], EPISODES, out, num_workers=2, progress=False,
                              worst_k=WORST_K, render_replays=True)
    return out, summary


def test_report_files_exist(run):
    out, summary = run
    assert summary.report == out / "report.md"
    for name in ("metrics.json", "report.md", "report.html", "run.json", "records.jsonl"):
        assert (out / name).stat().st_size > 0, name
    for name in ("collision_rates", "ttc_distribution", "min_gap_cdf", "worst_episode_profiles", "string_stability"):
        png = (out / "plots" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG"), name
    gifs = sorted((out / "replays").glob("*.gif"))
    assert len(gifs) == WORST_K
    frames = iio.imread(gifs[0], index=None)
    assert frames.ndim == 4 and frames.shape[0] > 1


def test_html_is_self_contained(run):
    out, _ = run
    text = (out / "report.html").read_text()
    srcs = re.findall(r'\bsrc\s*=\s*"([^"]*)"', text)
    assert srcs and all(s.startswith(("data:image/png;base64,", "data:image/gif;base64,")) for s in srcs)
    assert sum(s.startswith("data:image/gif;base64,") for s in srcs) == WORST_K  # the replays, embedded
    hrefs = re.findall(r'\bhref\s*=\s*"([^"]*)"', text)
    assert len(hrefs) == WORST_K  # only the replay links
    for h in hrefs:
        assert h.startswith("replays/") and (out / h).is_file()
    assert "<link" not in text and "<script" not in text
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', text)


def test_report_numbers_match_records(run):
    out, _ = run
    md = (out / "report.md").read_text()
    records = [r for r in io.read_jsonl(out / runner.RECORDS)]
    assert len(records) == EPISODES * len(POLICIES)
    for pol in POLICIES:
        recs = [r for r in records if r["policy"] == pol]
        k, n = sum(bool(r["collision"]) for r in recs), len(recs)
        lo, hi = stats.wilson_interval(k, n)
        rate = f"{k}/{n} = {k / n:.3f} [{lo:.3f}, {hi:.3f}]"
        row = next(line for line in md.splitlines() if line.startswith(f"| {recs[0]['scenario']} | {pol} |"))
        assert rate in row
        rule3 = f"≤ 3/{n} = {3 / n:.3f}"
        assert (rule3 in row) == (k == 0)
        for key in ("min_ttc", "mean_speed"):
            ci = stats.mean_ci(r[key] for r in recs)
            assert formatting.fmt_pm(ci.mean, ci.half_width) in md, key
        # Traffic-only collisions: their total over the episodes, and the near-miss rate.
        assert row.endswith(f"| {sum(r['traffic_collisions'] for r in recs)} |")
        near = sum(bool(r["near_miss"]) for r in recs)
        lo, hi = stats.wilson_interval(near, n)
        assert f"{near}/{n} = {near / n:.3f} [{lo:.3f}, {hi:.3f}]" in row

    metrics = json.loads((out / "metrics.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert metrics["thresholds"] == {records[0]["scenario"]: records[0]["thresholds"]}
    rows = {r["policy"]: r for r in metrics["rows"]}
    for pol in POLICIES:
        recs = [r for r in records if r["policy"] == pol]
        assert rows[pol]["collision_n"] == len(recs)
        assert rows[pol]["mean_speed_mean"] == pytest.approx(sum(r["mean_speed"] for r in recs) / len(recs))


def test_report_states_thresholds_provenance_and_how_to_read(run):
    out, _ = run
    md = (out / "report.md").read_text()
    assert "## How to read this" in md and "Wilson" in md and "3/n" in md
    used = json.loads((out / "metrics.json").read_text())["thresholds"]
    (scenario,) = used
    for key, default in Thresholds().as_dict().items():
        assert f"| {key} | {used[scenario][key]} | {default} |" in md
    run_json = json.loads((out / "run.json").read_text())
    entry = run_json["scenarios"][0]
    assert entry["sha256"][:16] in md and f"| {entry['seed']} |" in md
    assert "diffplatoon evaluate --policy idm --policy cacc" in md
    for pol, versions in run_json["policy_versions"].items():
        assert f"| {pol} | {', '.join(versions)} |" in md


def test_rule_of_three_when_no_collisions():
    """Records with zero collisions: the report table shows Wilson [0, hi] and 3/n."""
    recs = [{"scenario": "s", "policy": "p", "collision": False, "min_ttc": 2.0 + i} for i in range(40)]
    rows, rates, _ = aggregate.report_rows(recs)
    (row,) = rows
    assert report.fmt_rate(row, "collision") == f"0/40 = 0.000 [0.000, {stats.wilson_interval(0, 40)[1]:.3f}]"
    assert report.fmt_rule3(row, "collision") == "≤ 3/40 = 0.075"
    assert row["collision_rule3"] == pytest.approx(3 / 40)


def test_worst_episode_order():
    recs = [
        {"job_id": "a", "scenario": "s", "policy": "p", "collision": False, "min_ttc": 0.5},
        {"job_id": "b", "scenario": "s", "policy": "p", "collision": True, "min_ttc": 3.0},
        {"job_id": "c", "scenario": "s", "policy": "p", "collision": False, "min_ttc": 0.2},
        {"job_id": "d", "scenario": "s", "policy": "p", "failed": True},
    ]
    assert [r["job_id"] for r in aggregate.worst_episodes(recs, 3)] == ["b", "c", "a"]


def test_rebuild_from_records_alone(run):
    out, _ = run
    before = json.loads((out / "metrics.json").read_text())["rows"]
    report.build_report(out, worst_k=1, render_replays=False)
    after = json.loads((out / "metrics.json").read_text())
    assert after["rows"] == before and len(after["worst"]) == 1


def test_report_never_simulates(run, monkeypatch, tmp_path):
    """A rebuild with replays and profile plots works while no `Simulation` can be constructed."""
    out, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "replays")
    (copy / "plots" / "worst_episode_profiles.png").unlink()
    built = []

    def refuse(self, *args, **kwargs):
        built.append(args)
        raise AssertionError("the report constructed a Simulation")

    monkeypatch.setattr(Simulation, "__init__", refuse)
    report.build_report(copy, worst_k=WORST_K, render_replays=True)
    assert built == []
    assert len(list((copy / "replays").glob("*.gif"))) == WORST_K
    assert (copy / "plots" / "worst_episode_profiles.png").read_bytes().startswith(b"\x89PNG")


def test_metrics_json_independent_of_record_order(run, tmp_path):
    """Shuffled records.jsonl (twice, with different seeds) rebuild byte-identical metrics.json."""
    out, _ = run
    built = []
    for seed in (None, 1, 2):
        copy = tmp_path / f"order{seed}"
        shutil.copytree(out, copy)
        lines = (copy / runner.RECORDS).read_bytes().splitlines(keepends=True)
        if seed is not None:
            random.Random(seed).shuffle(lines)
            (copy / runner.RECORDS).write_bytes(b"".join(lines))
        report.build_report(copy, worst_k=WORST_K, render_replays=False)
        built.append((copy / "metrics.json").read_bytes())
    assert built[1] == built[0] and built[2] == built[0]
    assert b"generated" not in built[0]


def test_string_stability_curves_are_the_records_mean(run):
    out, _ = run
    records = list(io.read_jsonl(out / runner.RECORDS))
    curves = json.loads((out / "metrics.json").read_text())["string_stability"]
    (scenario,) = curves
    for pol in POLICIES:
        rows = [r["string_error_ratios"][0] for r in records if r["policy"] == pol]
        assert all(len(x) == len(rows[0]) >= 1 for x in rows)  # one ratio per follower pair
        want = np.nanmean(np.array(rows, dtype=np.float64), axis=0)
        assert curves[scenario][pol] == pytest.approx(want.tolist())


def test_string_curves_label_platoons_and_skip_undefined():
    recs = [{"scenario": "s", "policy": "p", "string_error_ratios": [[1.0, None], [0.5]]},
            {"scenario": "s", "policy": "p", "string_error_ratios": [[3.0, 2.0], []]},
            {"scenario": "t", "policy": "p", "string_error_ratios": [[], [0.8, 0.9]]}]
    assert aggregate.string_curves(recs) == {"s": {"p · platoon 0": [2.0, 2.0], "p · platoon 1": [0.5]},
                                          "t": {"p": [0.8, 0.9]}}


def _side_by_side(md: str, label: str) -> str:
    return next(line for line in md.splitlines() if line.startswith(f"| {label}"))


def test_best_mark_only_where_intervals_are_separated(tmp_path):
    """Hand-made records: cacc is 5 m/s faster with 1 m/s of spread (intervals far apart: ★), its
    minimum TTC is a little higher but within the spread (no ★), both have no collision (a tie:
    no ★); 3 of 20 idm episodes had traffic-only crashes (4 in all), shown in the collision table."""
    recs = []
    for pol, speed, ttc in (("idm", 20.0, 2.0), ("cacc", 25.0, 2.2)):
        for ep in range(20):
            recs.append({"job_id": f"s|{pol}|{ep}", "scenario": "s", "policy": pol, "episode": ep,
                         "collision": False, "at_fault_collisions": 0, "near_miss": pol == "idm" and ep < 2,
                         "traffic_collisions": (2 if ep == 0 else 1 if ep < 3 else 0) if pol == "idm" else 0,
                         "mean_speed": speed + (ep % 5 - 2) * 0.5, "min_ttc": ttc + (ep % 2) * 1.0})
    io.atomic_write_text(tmp_path / runner.RECORDS, "".join(json.dumps(r) + "\n" for r in recs))
    md = report.build_report(tmp_path, render_replays=False).read_text()
    header = [c.strip() for c in _side_by_side(md, "measure").strip("|").split("|")]
    speed = dict(zip(header, (c.strip() for c in _side_by_side(md, "mean speed").strip("|").split("|"))))
    assert speed["cacc"] == "25.0 ± 0.3 ★" and speed["idm"] == "20.0 ± 0.3"
    assert "★" not in _side_by_side(md, "min TTC")
    assert "★" not in _side_by_side(md, "collision")
    idm = next(line for line in md.splitlines() if line.startswith("| s | idm |"))
    assert idm.endswith("| 4 |") and "3/20 = 0.150" in idm and "2/20 = 0.100" in idm
    assert next(line for line in md.splitlines() if line.startswith("| s | cacc |")).endswith("| 0 |")
