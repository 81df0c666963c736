"""Runtime guards of `evaluate`: per-job wall-clock limits, --retry-failed, exit statuses.

Real Ray and real episodes. The hang is a test-only policy whose act() sleeps: it is registered
through the real policy registry in a CLI subprocess that starts its own small Ray instance
with a worker setup hook, so that the Ray workers know the policy too.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffplatoon import cluster, io
from diffplatoon.cli import app
from diffplatoon.evaluation import runner
from diffplatoon.scenarios import load_scenario

REPO = Path(__file__).resolve().parents[2]

# The CLI with two extra policies: "stuck" (IDM whose act() sleeps when GUARD_TEST_HANG=1) and
# "boom" (IDM whose act() raises). The hook registers them in every Ray worker process.
DRIVER = '''
import os, sys

import ray


def register():
    import time

    from diffplatoon.agents import policy as registry
    from diffplatoon.agents.experts import IDMPolicy

    class Stuck(IDMPolicy):
        def act(self, obs):
            if os.environ.get("GUARD_TEST_HANG") == "1":
                time.sleep(1e6)  # a hang inside the episode's step loop, never returning
            return super().act(obs)

    class Boom(IDMPolicy):
        def act(self, obs):
            raise RuntimeError("boom")

    registry.FACTORIES["stuck"] = lambda spec, argument, **params: Stuck(spec)
    registry.FACTORIES["boom"] = lambda spec, argument, **params: Boom(spec)


register()
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
         object_store_memory=100 * 1024**2, runtime_env={"worker_process_setup_hook": register})
from diffplatoon.cli import app

app(sys.argv[1:], prog_name="diffplatoon")
'''


def _cli(args: list[str], hang: bool, tmp_path: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    env = {**os.environ, "GUARD_TEST_HANG": "1" if hang else "0", "OMP_NUM_THREADS": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def short_scenario(tmp_path):
    """hard_brake cut to 7 s, as a file the CLI reads."""
    text = (REPO / "scenarios" / "hard_brake.yaml").read_text()
    assert "\nduration: 30\n" in text
    path = tmp_path / "hard_brake_short.yaml"
    path.write_text(text.replace("\nduration: 30\n", "\nduration: 7\n"))
    return path


def test_run_bounded_kills_an_overdue_task_and_finishes_the_others(ray_session):
    def work(seconds: float) -> float:  # defined here so that Ray ships it by value
        time.sleep(seconds)  # not cooperative: only killing the worker stops it
        return seconds

    task = ray_session.remote(num_cpus=1, max_retries=0)(work)
    jobs = [0.1, 1e6, 0.2, 0.3]
    started = time.monotonic()
    got = {}
    for job, ref in cluster.run_bounded(jobs, task.remote, workers=2, timeout=4.0):
        got[job] = ref if isinstance(ref, cluster.Overdue) else ray_session.get(ref)
    assert time.monotonic() - started < 60
    assert got == {0.1: 0.1, 1e6: cluster.Overdue(4.0), 0.2: 0.2, 0.3: 0.3}
    assert got[1e6].reason == "timed out after 4 s"
    with pytest.raises(ValueError, match="positive"):
        next(cluster.run_bounded(jobs, task.remote, workers=2, timeout=0))


def test_hang_becomes_a_timed_out_record_and_retry_failed_reruns_it(short_scenario, tmp_path):
    out = tmp_path / "eval"
    args = ["evaluate", "--policy", "idm", "--policy", "stuck", "--policy", "boom", "--scenarios",
            str(short_scenario), "--episodes", "1", "--num-workers", "2", "--episode-timeout", "15",
            "--worst-k", "0", "--out", str(out)]
    first = _cli(args, hang=True, tmp_path=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "Traceback" not in first.stderr
    assert "2 of 3 episodes failed" in first.stderr and "--retry-failed" in first.stderr
    by_policy = {r["policy"]: r for r in io.read_jsonl(out / runner.RECORDS)}
    assert len(by_policy) == 3 and not by_policy["idm"].get("failed")
    assert by_policy["stuck"]["failed"] and by_policy["stuck"]["timed_out"]
    assert by_policy["stuck"]["error"] == "timed out after 15 s"
    assert by_policy["boom"]["failed"] and "RuntimeError: boom" in by_policy["boom"]["error"]

    second = _cli([*args, "--retry-failed"], hang=False, tmp_path=tmp_path)
    assert second.returncode == 1 and "1 of 3 episodes failed" in second.stderr, second.stderr[-3000:]
    lines = list(io.read_jsonl(out / runner.RECORDS))
    assert len(lines) == 5 and sorted(r["policy"] for r in lines[3:]) == ["boom", "stuck"]  # audit trail kept
    records = runner.load_records(out)
    assert sorted(r["policy"] for r in records) == ["boom", "idm", "stuck"]  # each episode once
    stuck = next(r for r in records if r["policy"] == "stuck")
    assert not stuck.get("failed") and "collision" in stuck
    rows = runner.summary_rows(records)
    assert sorted((r["policy"], r["n"]) for r in rows) == [("idm", 1), ("stuck", 1)]


@pytest.mark.parametrize("args, expected", [
    (["--policy", "cacc:time_gap=abc"], "--policy: policy 'cacc:time_gap=abc' cannot be built for scenario "
                                        "'hard_brake': parameter time_gap: expected a finite number, got 'abc'"),
    (["--policy", "nosuch"], "unknown policy 'nosuch'; valid policies:"),
    (["--policy", "idm", "--num-workers", "-1"], "--num-workers -1: expected a positive number of workers"),
    (["--policy", "idm", "--episode-timeout", "0"], "--episode-timeout 0: expected a positive number of seconds"),
])
def test_bad_evaluate_arguments_are_one_line_errors_before_ray(args, expected, tmp_path):
    out = tmp_path / "never"
    result = CliRunner().invoke(app, ["evaluate", *args, "--scenarios", "hard_brake", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()  # nothing started, nothing written


def test_policy_check_covers_every_scenario_of_the_run():
    entries = runner.resolve_scenarios(["hard_brake", "dense_highway_sweep"])
    runner.check_policies(["idm", "cacc:time_gap=0.6"], entries)
    with pytest.raises(runner.PolicyBuildError, match="random:lane_keeping=1.*expected true or false"):
        runner.check_policies(["idm", "random:lane_keeping=1"], entries)


def test_newest_record_of_a_job_wins(tmp_path):
    spec = load_scenario("hard_brake")
    job = runner.Job(spec.name, "idm", 0)
    other = runner.Job(spec.name, "cacc", 0)
    io.append_jsonl(tmp_path / runner.RECORDS, runner.failure_record(job, spec.seed, "timed out after 1 s"))
    io.append_jsonl(tmp_path / runner.RECORDS, runner.failure_record(other, spec.seed, "RuntimeError: x"))
    io.append_jsonl(tmp_path / runner.RECORDS, {"job_id": job.job_id, "policy": "idm", "collision": False})
    records = runner.load_records(tmp_path)
    assert [r["job_id"] for r in records] == [job.job_id, other.job_id]
    assert records[0] == {"job_id": job.job_id, "policy": "idm", "collision": False}


def test_unreachable_cluster_is_one_line_within_seconds(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "diffplatoon.cli", "evaluate", "--policy", "idm", "--scenarios",
                             "hard_brake", "--episodes", "1", "--out", str(tmp_path / "eval"), "--ray-address",
                             f"127.0.0.1:{port}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and time.monotonic() - started < 60
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"could not join the Ray cluster at '127.0.0.1:{port}': nothing accepts connections")
