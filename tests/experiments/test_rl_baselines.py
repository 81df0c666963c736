"""The RL baselines script: a real tiny run (both trainings, the evaluation, the table, the figures) and its
resume, and the table's columns on hand-made records."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from diffplatoon.evaluation import stats
from diffplatoon.evaluation.runner import load_records
from diffplatoon.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("rl_baselines", ROOT / "experiments" / "rl_baselines.py")
rlb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rlb)

pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # training and the policies set torch's threads


def test_table_row_counts_episodes_with_wilson_intervals():
    recs = [{"collision": e < 3, "at_fault_collisions": 2 if e < 1 else 0, "offroad": e == 9,
             "mean_speed": 20.0 + e % 2, "merge_success": 1.0 if e % 2 else 0.5} for e in range(10)]
    row = rlb.table_row("onramp_merge", "mlp-ppo", recs)
    assert row["collision"] == stats.rate_cell(3, 10)
    assert row["at_fault_collisions"] == 2 and row["at_fault"]["k"] == 1 and row["offroad"]["k"] == 1
    assert row["mean_speed"] == pytest.approx(20.5) and row["merge_success"] == pytest.approx(0.75)
    no_merge = rlb.table_row("cut_in", "cacc", [{**r, "merge_success": None} for r in recs])
    assert no_merge["merge_success"] is None and rlb.cells(no_merge)[-1] == "-"


def _png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_run_writes_table_and_curves_and_resumes(tmp_path, ray_session, tiny_planner):
    scenario = "onramp_merge"
    planner = tiny_planner(load_scenario(scenario))
    out = tmp_path / "rl"
    argv = ["--planner", str(planner), "--scenarios", scenario, "--iterations", "1", "--batch", "40",
            "--episodes", "2", "--curve-episodes", "1", "--out", str(out)]
    first = rlb.main(argv)
    assert first["steps"] == {f"{scenario}/dppo": "trained", f"{scenario}/mlp": "trained",
                              f"{scenario}/eval": "10 episodes run"}  # 5 policies x 2 episodes

    table = json.loads((out / "table.json").read_text())
    rows = {r["policy"]: r for r in table["rows"]}
    assert list(rows) == list(rlb.LABELS)
    for row in rows.values():
        assert row["episodes"] == 2 and row["failed"] == 0 and row["scenario"] == scenario
        for key in ("collision", "offroad", "at_fault"):
            cell = row[key]
            assert (cell["lo"], cell["hi"]) == pytest.approx(stats.wilson_interval(cell["k"], 2))
            assert 0.0 <= cell["lo"] <= cell["rate"] <= cell["hi"] <= 1.0
        assert row["merge_success"] is not None  # the ramp's members have a merge task
    assert rows["fine-tuned"]["policy_string"] == f"rllib:{out / scenario / 'dppo' / 'checkpoint_000001'}"
    md = (out / "table.md").read_text()
    assert f"### {scenario}" in md and "fine-tuned" in md and f"learning_curves_{scenario}.png" in md
    assert first["figures"] == [out / f"learning_curves_{scenario}.png"] and _png(first["figures"][0])
    series = rlb.curve_series(out / scenario / "dppo", load_records(out / scenario / "eval"), 1)
    assert series["iteration"] == [1] and series["merge_iteration"] == [1]

    trained = {m: (out / scenario / m / "metrics.jsonl").stat().st_mtime_ns for m in rlb.METHODS}
    records = (out / scenario / "eval" / "records.jsonl").read_text()
    again = rlb.main(argv)
    assert set(again["steps"].values()) == {"skipped"}
    assert {m: (out / scenario / m / "metrics.jsonl").stat().st_mtime_ns for m in rlb.METHODS} == trained
    assert (out / scenario / "eval" / "records.jsonl").read_text() == records
    assert again["rows"] == first["rows"]
