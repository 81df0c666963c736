"""The planner closed-loop evidence script: its table is what the records say, and its targets follow their rules
(a tiny real planner on real episodes through the Ray runner; the target rules on hand-made records)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from diffplatoon.agents.diffusion.shield import LEVELS, ShieldLevel
from diffplatoon.evaluation import runner, stats
from diffplatoon.scenarios import load_scenario

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("planner_closed_loop", ROOT / "experiments" / "planner_closed_loop.py")
pcl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pcl)

LABELS = pcl.policies({"bc": Path("bc.pt")}, guidance="both")
pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # its policies set torch's thread count


def _records(scenario: str, label: str, n: int, at_fault: int = 0, offroad: int = 0, speed: float = 25.0,
             merge: float | None = None, shield: dict[str, int] | None = None) -> list[dict]:
    """n records of one cell, the first ``at_fault`` with one at-fault collision, the first ``offroad`` off the road."""
    return [{"scenario": scenario, "policy": LABELS[label], "episode": e, "collision": e < at_fault,
             "collisions": [{"at_fault": True}] if e < at_fault else [], "at_fault_collisions": int(e < at_fault),
             "offroad": e < offroad, "mean_speed": speed, "merge_success": merge, "shield": shield or {}}
            for e in range(n)]


def _targets(cells: list[list[dict]], held_out: tuple[str, ...] = ()) -> dict[tuple[str, str], dict]:
    recs = [r for c in cells for r in c]
    names = list(dict.fromkeys(r["scenario"] for r in recs))
    return {(r["scenario"], r["policy"]): r["targets"] for r in pcl.table_rows(recs, LABELS, names, held_out)}


def test_unshielded_at_fault_target_is_cacc_plus_one_percent_or_a_wilson_bound_of_two():
    t = _targets([_records("hard_brake", "cacc", 200), _records("hard_brake", "bc", 200),
                  _records("cut_in", "cacc", 200), _records("cut_in", "bc", 200, at_fault=1),
                  _records("lane_drop", "cacc", 200, at_fault=2), _records("lane_drop", "bc", 200, at_fault=4),
                  _records("highway_platoon", "cacc", 200, at_fault=2),
                  _records("highway_platoon", "bc", 200, at_fault=5)])
    assert stats.wilson_interval(0, 200)[1] < 0.02 < stats.wilson_interval(1, 200)[1]
    assert t["hard_brake", "bc"]["at_fault_vs_cacc"] is True  # 0/200: upper bound 1.9%
    assert t["cut_in", "bc"]["at_fault_vs_cacc"] is False  # 1/200 where CACC has none: upper bound 2.8%
    assert t["lane_drop", "bc"]["at_fault_vs_cacc"] is True  # 2.0% <= 1.0% + 1%
    assert t["highway_platoon", "bc"]["at_fault_vs_cacc"] is False  # 2.5% > 2.0%
    assert t["hard_brake", "cacc"] == dict.fromkeys(pcl.TARGETS)  # experts have no targets
    assert t["hard_brake", "bc"]["held_out_offroad"] is None and t["hard_brake", "bc"]["overrides"] is None


def test_held_out_targets_use_off_road_and_cacc_plus_two_percent():
    t = _targets([_records("big", "cacc", 200, at_fault=1), _records("big", "bc", 200, at_fault=5, offroad=2),
                  _records("fast", "cacc", 200, at_fault=1), _records("fast", "bc", 200, at_fault=7, offroad=3)],
                 held_out=("big", "fast"))
    assert t["big", "bc"]["held_out_offroad"] is True  # 2/200 = 1%
    assert t["big", "bc"]["held_out_at_fault"] is True  # 2.5% <= 0.5% + 2%
    assert t["fast", "bc"]["held_out_offroad"] is False and t["fast", "bc"]["held_out_at_fault"] is False  # 1.5%, 3.5%
    assert t["big", "bc"]["at_fault_vs_cacc"] is None


def test_shielded_targets_stress_zero_overrides_speed_and_merge():
    ok = {"accepted_first": 95, "next_sample": 3, "emergency_brake": 2}  # 5 of 100 decisions overridden
    bad = {"accepted_first": 94, "lane_kept": 6}
    t = _targets([_records("hard_brake", "cacc", 10, speed=20.0),
                  _records("hard_brake", "bc+shield", 10, at_fault=1, speed=19.0, shield=ok),
                  _records("onramp_merge", "cacc", 10, speed=20.0, merge=0.9),
                  _records("onramp_merge", "bc+shield", 10, speed=18.9, merge=0.95, shield=bad),
                  _records("highway_platoon", "cacc", 10), _records("highway_platoon", "bc+shield", 10, at_fault=1,
                                                                    merge=None, shield=ok)])
    assert t["hard_brake", "bc+shield"] == {**dict.fromkeys(pcl.TARGETS), "stress_zero_at_fault": False,
                                            "overrides": True, "speed": True}  # 5% overrides, 95% of CACC's speed
    assert t["onramp_merge", "bc+shield"]["stress_zero_at_fault"] is True
    assert t["onramp_merge", "bc+shield"]["overrides"] is False and t["onramp_merge", "bc+shield"]["speed"] is False
    assert t["onramp_merge", "bc+shield"]["merge"] is True
    assert t["highway_platoon", "bc+shield"]["stress_zero_at_fault"] is None  # not a stress scenario
    assert t["highway_platoon", "bc+shield"]["at_fault_vs_cacc"] is None  # the 1% rule is the unshielded one's


def test_guidance_rows_and_expert_choice():
    labels = pcl.policies({"bc": Path("a.pt"), "dagger": Path("b.pt")}, "samples=2", guidance="both",
                          experts=["cacc"])
    assert list(labels) == ["bc", "bc+shield", "bc unguided", "bc unguided+shield", "dagger", "dagger+shield",
                            "dagger unguided", "dagger unguided+shield", "cacc"]
    assert labels["dagger unguided+shield"] == "diffusion:b.pt,samples=2,guidance=off,shield=on"
    assert labels["bc"] == "diffusion:a.pt,samples=2,shield=off"
    assert list(pcl.policies({"mix": Path("m.pt")}, guidance="off", experts=[])) == ["mix unguided",
                                                                                     "mix unguided+shield"]
    # unguided rows are judged like guided ones: a planner may ship without guidance
    t = _targets([_records("hard_brake", "cacc", 10), _records("hard_brake", "bc unguided", 10, at_fault=5),
                  _records("hard_brake", "bc unguided+shield", 10, at_fault=1, shield={"accepted_first": 1})])
    assert t["hard_brake", "bc unguided"]["at_fault_vs_cacc"] is False
    assert t["hard_brake", "bc unguided+shield"]["stress_zero_at_fault"] is False
    assert t["hard_brake", "bc unguided+shield"]["overrides"] is True
    with pytest.raises(ValueError, match="guidance must be one of"):
        pcl.policies({"bc": Path("a.pt")}, guidance="sometimes")


def test_table_matches_the_records(tmp_path, ray_session, tiny_planner):
    ckpt = tiny_planner(load_scenario("hard_brake"))
    out = tmp_path / "run"
    rows = pcl.main(["--bc", str(ckpt), "--episodes", "1", "--scenarios", "hard_brake", "--held-out", "cut_in",
                     "--duration", "6", "--params", "samples=2,steps=2", "--out", str(out), "--no-progress"])
    labels = pcl.policies({"bc": ckpt}, "samples=2,steps=2")
    records = runner.load_records(out)
    assert not [r for r in records if r.get("failed")]
    names = ("hard_brake--duration=6", "cut_in--duration=6")
    assert [(r["scenario"], r["policy"]) for r in rows] == [(s, p) for s in names for p in labels]
    for row in rows:
        recs = [r for r in records if (r["scenario"], r["policy"]) == (row["scenario"], labels[row["policy"]])]
        assert row["episodes"] == len(recs) == 1 and row["held_out"] == (row["scenario"] == names[1])
        assert row["collisions"] == sum(len(r["collisions"]) for r in recs)
        assert row["at_fault_collisions"] == sum(r["at_fault_collisions"] for r in recs)
        assert row["at_fault_episodes"]["k"] == sum(r["at_fault_collisions"] > 0 for r in recs)
        assert row["offroad_episodes"]["k"] == sum(r["offroad"] for r in recs)
        assert row["mean_speed"] == pytest.approx(recs[0]["mean_speed"])
        shield = recs[0]["shield"]
        assert bool(shield) == row["policy"].endswith("+shield")
        if shield:
            assert set(shield) == set(LEVELS) and row["shield_decisions"] == sum(shield.values()) > 0
            overridden = sum(v for k, v in shield.items() if ShieldLevel(k).overrides)
            assert row["override_share"] == overridden / sum(shield.values())
    by = {(r["scenario"], r["policy"]): r for r in rows}
    cacc, bc = by[names[0], "cacc"], by[names[0], "bc"]
    assert bc["speed_vs_cacc"] == pytest.approx(bc["mean_speed"] / cacc["mean_speed"])
    # One episode cannot show a Wilson upper bound under 2%: the 1% target fails unless CACC crashed.
    crashed = cacc["at_fault_episodes"]["k"] > 0
    assert bc["targets"]["at_fault_vs_cacc"] is (crashed and bc["at_fault_episodes"]["k"] == 0)
    held, shielded = by[names[1], "bc"], by[names[0], "bc+shield"]
    assert held["targets"]["held_out_offroad"] is (held["offroad_episodes"]["k"] == 0)
    assert shielded["targets"]["stress_zero_at_fault"] is (shielded["at_fault_collisions"] == 0)
    saved = json.loads((out / "planner_closed_loop.json").read_text())
    assert saved["policies"] == labels and saved["held_out"] == [names[1]] and len(saved["rows"]) == len(rows)
    md = (out / "planner_closed_loop.md").read_text()
    assert f"### {names[0]}" in md and f"### {names[1]}" in md
    assert "| " + " | ".join(pcl.cells(bc)) + " |" in md


@pytest.mark.parametrize("argv, message", [
    ([], "give a planner: --bc, --dagger and/or --planner NAME=CKPT"),
    (["--bc", "nosuch.pt"], "--bc: no planner checkpoint at nosuch.pt"),
    (["--planner", "mix=nosuch.pt"], "--planner mix: no planner checkpoint at nosuch.pt"),
    (["--planner", "nosuch.pt"], "--planner: expected NAME=CHECKPOINT"),
    (["--planner", "cacc={ckpt}"], "must not be an expert's name"),
    (["--bc", "{ckpt}", "--planner", "bc={ckpt}"], "the name 'bc' is given twice"),
    (["--bc", "{ckpt}", "--dagger", "{ckpt}"], "planners 'bc' and 'dagger' are the same file"),
    (["--bc", "{ckpt}", "--params", "shield=on"], "leave 'shield' out"),
    (["--bc", "{ckpt}", "--params", "samplez=2"], "unknown diffusion policy parameter(s) samplez"),
    (["--bc", "{ckpt}", "--params", "guidance=off"], "leave 'guidance' out"),
    (["--bc", "{ckpt}", "--duration", "0"], "--duration must be > 0 s"),
    (["--bc", "{ckpt}", "--scenarios"], "no scenarios: give --scenarios and/or --held-out"),
])
def test_bad_arguments_are_one_usage_error(argv, message, tiny_planner, capsys):
    ckpt = str(tiny_planner(load_scenario("hard_brake")))
    with pytest.raises(SystemExit) as info:
        pcl.main([a.format(ckpt=ckpt) for a in argv])
    assert info.value.code == 2 and message in capsys.readouterr().err
