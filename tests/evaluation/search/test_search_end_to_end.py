"""The search end to end on a real Ray runtime, and a found failure replayed bit for bit from its YAML.

A tiny search (2 rounds of 3 episodes of CACC on `hard_brake`) over a space where long V2V
latencies make CACC collide: the files on disk, a rerun that runs nothing, the report, and the
failure YAML files, each of which loads with `load_scenario` and reproduces its episode exactly.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffplatoon.evaluation import episode_data
from diffplatoon.evaluation.episode import run_episode
from diffplatoon.evaluation.report import build_report
from diffplatoon.evaluation.runner import load_records, spec_hash
from diffplatoon.evaluation.search import SearchError, parse_space, run_search
from diffplatoon.scenarios import load_scenario

SPACE = """\
failure: collision
criticality: min_ttc
parameters:
  events.0.deceleration: {type: truncnormal, mean: 9, std: 1, low: 8, high: 12}
  comms.latency: {type: categorical, values: [0, 8], probs: [0.5, 0.5]}
search: {round_size: 3, seed: 4}
"""


@pytest.fixture(scope="module")
def search(ray_session, tmp_path_factory):
    out = tmp_path_factory.mktemp("search")
    space = parse_space(SPACE, load_scenario("hard_brake"), "tiny.yaml")
    run = run_search(space, "cacc", 6, out, num_workers=2, worst_k=1)
    return space, out, run


def test_search_writes_its_rounds_estimate_failures_and_report(search) -> None:
    space, out, run = search
    state = json.loads((out / "search.json").read_text())
    assert state["complete"] and [r["phase"] for r in state["rounds"]] == ["adapt", "estimate"]
    assert state["rounds"][0]["nominal"] and not state["rounds"][1]["nominal"]
    for k in range(2):
        folder = out / "rounds" / f"r{k:02d}"
        records = load_records(folder)
        assert sorted(r["scenario"] for r in records) == [f"hard_brake--r{k:02d}-{i:04d}" for i in range(3)]
        samples = json.loads((folder / "samples.json").read_text())
        assert samples["failed"] == [bool(r["collision"]) for r in sorted(records, key=lambda r: r["scenario"])]
    failures = sum(r["failures"] for r in state["rounds"])
    assert 0 < failures < 6  # latency 8 steps collides, no latency does not
    assert state["estimate"]["n"] == 3 and state["estimate"]["method"] == "importance"
    assert len(state["failure_files"]) == failures == len(run.failure_files)
    for name in ("report.md", "report.html", "plots/search_pairs.png", "plots/search_criticality.png",
                 "plots/search_proposal.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "replays").glob("*.gif"))) == 1
    assert "Failure probability under the nominal distribution" in (out / "report.md").read_text()


def test_rerun_runs_nothing_and_report_rebuilds(search) -> None:
    space, out, run = search
    before = (out / "search.json").read_text()
    again = run_search(space, "cacc", 6, out, num_workers=2, report=False)
    assert run.episodes_run == 6 and again.episodes_run == 0
    assert again.result.estimate == run.result.estimate
    assert json.loads((out / "search.json").read_text())["rounds"] == json.loads(before)["rounds"]
    assert build_report(out, render_replays=False) == out / "report.md"
    other = parse_space(SPACE.replace("seed: 4", "seed: 5"), load_scenario("hard_brake"), "tiny.yaml")
    with pytest.raises(SearchError, match="another space"):
        run_search(other, "cacc", 6, out, num_workers=2, report=False)


def test_failure_yaml_reproduces_its_collision_bit_for_bit(search) -> None:
    space, out, run = search
    assert run.failure_files
    for path in run.failure_files:
        spec = load_scenario(path)
        folder = out / "rounds" / spec.name.rsplit("-", 2)[-2]
        stored = {r["scenario"]: r for r in load_records(folder)}[spec.name]
        entry = next(e for e in json.loads((folder / "run.json").read_text())["scenarios"] if e["name"] == spec.name)
        assert spec_hash(spec) == entry["sha256"]  # the file is exactly the spec the search ran
        again = run_episode(spec, "cacc", 0)
        assert again.record["collision"] and stored["collision"]
        strip = ("wall_time", "replay_stored")
        assert {k: v for k, v in again.record.items() if k not in strip} == \
               {k: v for k, v in stored.items() if k not in strip}
        data = episode_data.load(episode_data.data_path(folder, stored["job_id"]))
        assert np.array_equal(data.speed, again.data.speed, equal_nan=True)
        assert np.array_equal(data.gap, again.data.gap, equal_nan=True)
        assert np.array_equal(data.replay.x, again.data.replay.x, equal_nan=True)
