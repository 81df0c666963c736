"""The Ray-sharded runner: records appended and resumable, worker-count invariance, failures recorded once.

Real Ray (the shared session fixture), real episodes of a catalogue scenario shortened to a
few seconds so that every test stays small.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffplatoon import io
from diffplatoon.evaluation import episode_data, runner
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import load_scenario

POLICIES = ["idm", "cacc"]
EPISODES = 3


@pytest.fixture(scope="module")
def spec():
    """hard_brake cut to 7 s: the lead vehicle still brakes at t = 5 s."""
    return load_scenario("hard_brake").model_copy(update={"duration": 7.0})


@pytest.fixture(scope="module")
def two_worker_run(ray_session, spec, tmp_path_factory):
    """One 2-worker run: 2 policies x 3 episodes, no report."""
    out = tmp_path_factory.mktemp("eval2")
    summary = runner.evaluate(POLICIES, [spec], EPISODES, out, num_workers=2, progress=False, report=False)
    return out, summary


def _by_job(records):
    """Records keyed by job_id, without the wall-clock time (the only non-deterministic field)."""
    return {r["job_id"]: {k: v for k, v in r.items() if k != "wall_time"} for r in records}


def _lines(path):
    return path.read_bytes().splitlines(keepends=True)


def test_every_job_recorded_once_with_run_json(two_worker_run, spec):
    out, summary = two_worker_run
    records = list(io.read_jsonl(out / runner.RECORDS))
    ids = [r["job_id"] for r in records]
    expected = {runner.job_id(spec.name, p, e) for e in range(EPISODES) for p in POLICIES}
    assert sorted(ids) == sorted(expected)  # each job exactly once
    assert summary.completed == len(expected) and summary.skipped == 0 and summary.failed == 0
    assert not any(r.get("failed") for r in records)
    for r in records:
        assert r["scenario"] == spec.name and isinstance(r["collision"], bool) and r["seed"] == spec.seed
    run = json.loads((out / runner.RUN).read_text())
    assert run["arguments"]["policies"] == POLICIES and run["arguments"]["episodes"] == EPISODES
    (entry,) = run["scenarios"]
    assert entry["sha256"] == runner.spec_hash(spec) and entry["episodes"] == list(range(EPISODES))
    assert set(run["policy_versions"]) == set(POLICIES)
    assert [r["n"] for r in summary.rows] == [EPISODES] * len(POLICIES)
    # one threshold source: the runner's run.json and every record agree with Thresholds.for_spec
    want = Thresholds.for_spec(spec).as_dict()
    assert entry["thresholds"] == want and all(r["thresholds"] == want for r in records)
    assert want["disturbance_step"] == round(spec.events[0].at * spec.policy_frequency) > 0


def test_each_episode_stores_profiles_and_replay(two_worker_run, spec):
    """What the report draws is stored per episode: member profiles, string ratios, every vehicle's boxes."""
    out, _ = two_worker_run
    for r in io.read_jsonl(out / runner.RECORDS):
        data = episode_data.load(episode_data.data_path(out, r["job_id"]))
        members = sum(p.size for p in spec.platoons)
        assert data.names == tuple(n for p in spec.platoons for n in p.member_names())
        assert data.speed.shape == data.gap.shape == (r["steps"] + 1, members)
        assert data.speed.dtype == np.float32 and data.dt == pytest.approx(1 / spec.policy_frequency)
        assert np.isfinite(data.gap[0, 1:]).all()  # every follower starts behind its predecessor
        assert r["replay_stored"] and data.replay is not None
        assert data.replay.x.shape[0] == r["steps"] + 1 and data.replay.x.shape[1] > members
        assert list(data.replay.platoon[:members]) == [0] * members
        assert list(data.replay.member[:members]) == list(range(members))
        assert (data.replay.platoon[members:] == -1).all()
        assert np.isfinite(data.replay.x[:, :members]).all()
        assert [len(x) for x in r["string_error_ratios"]] == [p.size - 2 for p in spec.platoons]


def test_large_replays_kept_only_for_notable_episodes():
    rng = np.random.default_rng(0)
    t, n = 200, 120  # incompressible poses, well over the budget
    replay = episode_data.Replay(*(rng.normal(size=(t, n)).astype(np.float32) for _ in range(3)),
                                 crashed=np.zeros((t, n), bool), length=np.full(n, 5, np.float32),
                                 width=np.full(n, 2, np.float32), platoon=np.full(n, -1, np.int16),
                                 member=np.full(n, -1, np.int16))
    data = episode_data.EpisodeData(0.2, ("a",), ((0,),), np.ones((t, 1), np.float32),
                                    np.full((t, 1), np.nan, np.float32), replay)
    th = Thresholds(ttc=3.0)
    calm, kept = episode_data.compact(data, {"collision": False, "min_ttc": 4.0}, th)
    assert not kept and len(calm) < 10_000 and episode_data.load_bytes(calm).replay is None
    for notable in ({"collision": True, "min_ttc": 4.0}, {"collision": False, "min_ttc": 1.0}):
        full, kept = episode_data.compact(data, notable, th)
        assert kept and len(full) > episode_data.REPLAY_BUDGET_BYTES
        back = episode_data.load_bytes(full)
        assert np.array_equal(back.replay.x, replay.x) and back.platoons == ((0,),) and back.names == ("a",)


def test_rerun_after_interruption_redoes_only_missing_jobs(two_worker_run, spec, tmp_path):
    """Half the lines kept plus a torn line: the rerun redoes the rest, each job ends up once."""
    src, _ = two_worker_run
    full = _by_job(io.read_jsonl(src / runner.RECORDS))
    lines = _lines(src / runner.RECORDS)
    keep = len(lines) // 2
    out = tmp_path / "resumed"
    out.mkdir()
    torn = lines[keep][: len(lines[keep]) // 2]  # a record cut mid-write, no newline
    (out / runner.RECORDS).write_bytes(b"".join(lines[:keep]) + torn)

    summary = runner.evaluate(POLICIES, [spec], EPISODES, out, num_workers=2, progress=False, report=False)
    assert summary.skipped == keep and summary.completed == len(lines) - keep
    raw = _lines(out / runner.RECORDS)
    assert len(raw) == len(full) and all(line.endswith(b"\n") for line in raw)
    redone = [json.loads(line) for line in raw]
    assert sorted(r["job_id"] for r in redone) == sorted(full)
    assert _by_job(redone) == full  # the redone episodes reproduce the originals

    again = runner.evaluate(POLICIES, [spec], EPISODES, out, num_workers=2, progress=False, report=False)
    assert again.completed == 0 and again.skipped == len(full)
    assert len(_lines(out / runner.RECORDS)) == len(full)


def test_one_and_two_workers_give_identical_records(two_worker_run, spec, tmp_path):
    src, _ = two_worker_run
    summary = runner.evaluate(POLICIES, [spec], EPISODES, tmp_path, num_workers=1, progress=False, report=False)
    assert summary.completed == EPISODES * len(POLICIES)
    one = _by_job(io.read_jsonl(tmp_path / runner.RECORDS))
    two = _by_job(io.read_jsonl(src / runner.RECORDS))
    assert one == two


def test_policy_that_cannot_be_built_stops_the_run_before_any_job(spec, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(runner.PolicyBuildError, match="no_such_policy"):
        runner.evaluate(["idm", "no_such_policy"], [spec], 1, out, num_workers=2, progress=False, report=False)
    assert not out.exists()


def test_failure_records_are_final_unless_retried(ray_session, spec, tmp_path):
    """A failure on file is skipped by a rerun; --retry-failed runs it again and the new record counts."""
    job = runner.Job(spec.name, "cacc", 0)
    io.append_jsonl(tmp_path / runner.RECORDS, runner.failure_record(job, spec.seed, "timed out after 1 s"))
    policies = ["idm", "cacc"]
    summary = runner.evaluate(policies, [spec], 1, tmp_path, num_workers=2, progress=False, report=False)
    assert summary.completed == 1 and summary.skipped == 1 and summary.failed == 1
    assert [r["policy"] for r in summary.rows] == ["idm"]  # failures are not counted in rates

    again = runner.evaluate(policies, [spec], 1, tmp_path, num_workers=2, progress=False, report=False,
                            retry_failed=True)
    assert again.completed == 1 and again.skipped == 1 and again.failed == 0
    lines = list(io.read_jsonl(tmp_path / runner.RECORDS))
    assert [(r["policy"], bool(r.get("failed"))) for r in lines] == [("cacc", True), ("idm", False), ("cacc", False)]
    assert sorted(r["policy"] for r in runner.load_records(tmp_path)) == ["cacc", "idm"]
    assert sorted((r["policy"], r["n"]) for r in again.rows) == [("cacc", 1), ("idm", 1)]


def test_sweep_variants_become_separate_scenarios():
    entries = runner.resolve_scenarios(["dense_highway_sweep"])
    names = [e.spec.name for e in entries]
    assert len(names) == 6 and len(set(names)) == 6
    assert all(e.source == "dense_highway_sweep.yaml" and not e.spec.sweep for e in entries)
    jobs = runner.make_jobs(entries, ["idm"], 2, seed_offset=10)
    assert [j.episode for j in jobs[:2]] == [10, 11] and len(jobs) == 12
    with pytest.raises(ValueError, match="unique"):
        runner.resolve_scenarios(["hard_brake", "hard_brake"])
