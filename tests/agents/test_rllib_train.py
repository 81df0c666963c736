"""RLlib training driver: real MLP PPO iterations, metrics, checkpoints, `rllib:<checkpoint>` policies
(loaded from diffplatoon's own files only: a crafted folder's pickles never run), resume after SIGKILL,
config errors with file:line, and (slow) evidence that PPO learns."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from rich.console import Console
from rllib_checks import assert_rllib_policy_acts
from typer.testing import CliRunner

from diffplatoon.agents.policy import CheckpointError, SimInfo, make_policy
from diffplatoon.agents.rllib.policy import load_module, resolve_checkpoint
from diffplatoon.agents.rllib.train import TrainConfig, checkpoints, load_config, train, validate_config
from diffplatoon.cli import app
from diffplatoon.envs.pettingzoo_env import action_limits, to_si
from diffplatoon.io import read_jsonl
from diffplatoon.scenarios import ScenarioError, validate_data
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

REPO = Path(__file__).resolve().parents[2]

# 2-member platoon, 2 lanes, light traffic, 6 s episodes: cheap iterations.
TINY = {
    "name": "rllib_train_tiny", "seed": 5, "duration": 6,
    "road": {"type": "highway", "lanes": 2, "length": 600},
    "traffic": {"count": 2, "speed_range": [18, 22]},
    "platoons": [{"id": "p0", "size": 2, "lane": 0, "start": 100.0, "speed": 20.0, "time_gap": 1.0}],
}
SMALL_PPO = dict(scenario=TINY, train_batch_size=120, minibatch_size=60, num_epochs=1,
                 model={"actor_hiddens": [32], "critic_hiddens": [32]})


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


@pytest.fixture(scope="module")
def trained_run(ray_session, tmp_path_factory) -> Path:
    """Two real PPO iterations of the tiny config, checkpointed at the second."""
    out = tmp_path_factory.mktemp("rllib") / "run"
    cfg = TrainConfig(**SMALL_PPO, iterations=2, checkpoint_every=2, out=str(out))
    assert train(cfg, console=quiet()) == out
    return out


def test_training_episodes_with_merge_tasks_log_merge_success(ray_session, tmp_path: Path) -> None:
    """On lane_drop (a platoon on the dropped lane) every iteration's row has the training episodes' merge
    success, a share, and the learning curve gets its panel."""
    cfg = TrainConfig(**{**SMALL_PPO, "scenario": "lane_drop"}, duration=4, iterations=1, checkpoint_every=1,
                      out=str(tmp_path / "run"))
    out = train(cfg, console=quiet())
    (row,) = read_jsonl(out / "metrics.jsonl")
    assert row["merge_success"] is not None and 0.0 <= row["merge_success"] <= 1.0
    assert (out / "learning_curve.png").stat().st_size > 0


def test_a_remote_learner_actor_trains_the_same_config(ray_session, tmp_path: Path) -> None:
    """`learners: 1` moves the update into a Learner actor (the cluster layout; with `gpus_per_learner` it takes a
    GPU): one real iteration logs finite losses and saves a policy that loads; asking for the driver's GPU where
    torch sees none is refused before Ray does anything."""
    import torch

    cfg = TrainConfig(**SMALL_PPO, learners=1, iterations=1, checkpoint_every=1, out=str(tmp_path / "run"))
    out = train(cfg, console=quiet())
    (row,) = read_jsonl(out / "metrics.jsonl")
    assert math.isfinite(row["vehicle/policy_loss"]) and math.isfinite(row["vehicle/vf_loss"])
    assert [c.name for c in checkpoints(out)] == ["checkpoint_000001"]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="gpus_per_learner: 1.0 with learners: 0"):
            train(TrainConfig(**SMALL_PPO, gpus_per_learner=1, out=str(tmp_path / "gpu")), console=quiet())


def test_two_iterations_metrics_checkpoint_and_policy(trained_run: Path) -> None:
    out = trained_run
    rows = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["iteration"] for r in rows] == [1, 2]
    for row in rows:
        losses = [row[k] for k in ("vehicle/policy_loss", "vehicle/vf_loss", "vehicle/entropy", "vehicle/total_loss")]
        assert all(math.isfinite(v) for v in losses)
        assert row["env_steps"] >= 120 and row["env_steps_per_s"] > 0
        assert math.isfinite(row["return_mean"]) and row["episode_len_mean"] == 30
        assert row["collisions"] is not None and row["mean_speed"] is not None
        assert row["merge_success"] is None  # the tiny highway has no merge task
    assert [c.name for c in checkpoints(out)] == ["checkpoint_000002"]
    assert (out / "learning_curve.png").stat().st_size > 0
    assert any((out / "tb").iterdir())

    assert_rllib_policy_acts(out, TINY)


def test_policy_acts_like_the_module_rllib_trained(trained_run: Path) -> None:
    """diffplatoon's own weights file rebuilds the learner's module exactly: same tensors, same actions."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    checkpoint = resolve_checkpoint(trained_run)
    # RLlib's own (pickled) copy, trusted here because this test wrote it
    trained = RLModule.from_checkpoint(str(checkpoint / "learner_group" / "learner" / "rl_module" / "vehicle"))
    ours = load_module(checkpoint, "vehicle")
    assert type(ours) is type(trained) and not ours.training
    theirs = trained.state_dict()
    assert ours.state_dict().keys() == theirs.keys()
    assert all(torch.equal(value, theirs[name]) for name, value in ours.state_dict().items())

    spec = validate_data(dict(TINY), "<test>")
    policy = make_policy(f"rllib:{checkpoint}", spec)
    policy.reset(SimInfo.from_spec(spec, 0))
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    low, high = action_limits(spec)
    for _ in range(5):
        obs = observer.observe()
        with torch.no_grad():
            mean = trained.action_mean(torch.from_numpy(obs.flat())).numpy().astype(np.float64)
        expected = to_si(np.clip(mean, -1.0, 1.0), low, high, normalized=True)
        actions = policy.act(obs)
        np.testing.assert_array_equal(actions, expected)
        sim.step(actions)


class _Payload:
    """Unpickling this creates `marker` (what a hostile checkpoint could do with a shell command)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _crafted(folder: Path, marker: Path, meta: dict) -> Path:
    payload = pickle.dumps(_Payload(marker))
    module_dir = folder / "learner_group" / "learner" / "rl_module" / "vehicle"
    module_dir.mkdir(parents=True)
    for name in ("class_and_ctor_args.pkl", "module_state.pkl"):
        (module_dir / name).write_bytes(payload)
    (folder / "class_and_ctor_args.pkl").write_bytes(payload)
    (folder / "diffplatoon.json").write_text(json.dumps(meta))
    return folder


def test_crafted_checkpoint_is_refused_without_running_its_pickles(trained_run: Path, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(_Payload(marker)))  # the payload works when unpickled
    assert marker.exists()
    marker.unlink()
    real = json.loads((resolve_checkpoint(trained_run) / "diffplatoon.json").read_text())
    old_style = {k: v for k, v in real.items() if k != "modules"}  # RLlib's files only, as before this format
    old = _crafted(tmp_path / "old" / "checkpoint_000001", marker, old_style)
    spec = validate_data(dict(TINY), "<test>")
    for folder in (old, old.parent):  # checkpoint folder or run folder
        with pytest.raises(CheckpointError, match=r"not a diffplatoon RLlib checkpoint \(diffplatoon.json lists no "
                                                  r"module weights"):
            make_policy(f"rllib:{folder}", spec)
    # diffplatoon's metadata, but the weights file is a pickle with code: torch's weights-only loader refuses it
    with_weights = _crafted(tmp_path / "weights", marker, real)
    (with_weights / "diffplatoon_vehicle.pt").write_bytes(pickle.dumps({"w": _Payload(marker)}))
    with pytest.raises(CheckpointError, match=r"diffplatoon_vehicle.pt: not a diffplatoon weights file \(corrupt, or "
                                              r"holding pickled objects, which are never loaded\)"):
        make_policy(f"rllib:{with_weights}", spec)
    bad_config = _crafted(tmp_path / "config", marker, {**real, "module": "os.system"})
    with pytest.raises(CheckpointError, match="module: Input should be 'mlp' or 'diffusion'"):
        make_policy(f"rllib:{bad_config}", spec)
    with pytest.raises(CheckpointError, match="no such folder"):
        make_policy(f"rllib:{tmp_path / 'nothing'}", spec)
    assert not marker.exists()

    # the CLI's policy check (before Ray starts): one line, exit 1, nothing unpickled
    for folder in (old, with_weights):
        out = tmp_path / "eval"
        result = CliRunner().invoke(app, ["evaluate", "--policy", f"rllib:{folder}", "--scenarios", "hard_brake",
                                          "--out", str(out)])
        assert result.exit_code == 1, result.output
        assert len(result.output.strip().splitlines()) == 1 and "not a diffplatoon" in result.output
        assert "Traceback" not in result.output and not out.exists()
    assert not marker.exists()


def test_resume_after_sigkill_continues_without_gaps(ray_session, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump({**SMALL_PPO, "iterations": 6, "checkpoint_every": 2, "out": str(out)}))
    address = ray_session.get_runtime_context().gcs_address
    child = subprocess.Popen(
        [sys.executable, "-m", "diffplatoon.agents.rllib.train", str(config), "--ray-address", address],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # kill once checkpoint 2 exists and iteration 3 is logged: its row has no checkpoint behind it
        while not ((out / "checkpoint_000002").exists() and len(list(read_jsonl(out / "metrics.jsonl"))) >= 3):
            assert child.poll() is None, "the training process ended before it was killed"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    restored = checkpoints(out)[-1]
    restored_iter = int(restored.name.split("_")[1])
    logged = [r["iteration"] for r in read_jsonl(out / "metrics.jsonl")]
    assert restored_iter < 6 and logged[-1] >= restored_iter, (restored_iter, logged)

    console = quiet()
    train(config, resume=out, console=console)
    log = console.file.getvalue()
    assert f"resumed {restored} at iteration {restored_iter}" in log
    assert f"iter {restored_iter + 1:>4d}/6" in log and f"iter {restored_iter:>4d}/6" not in log
    rows = list(read_jsonl(out / "metrics.jsonl"))
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5, 6]
    lifetime = [r["env_steps_lifetime"] for r in rows]
    assert all(b > a for a, b in zip(lifetime, lifetime[1:])), "step counters restored with the checkpoint"
    assert checkpoints(out)[-1].name == "checkpoint_000006"
    with pytest.raises(FileExistsError):  # a fresh run never overwrites one that has checkpoints
        train(config, console=quiet())


def test_config_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "scenario: hard_brake\n"
        "lr_rate: 0.1\n"
        "minibatch_size: -4\n"
        "module: transformer\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_config(path)
    lines = info.value.lines
    assert any(line.startswith(f"{path}:3: lr_rate: unknown field") for line in lines), lines
    assert any(line.startswith(f"{path}:4: minibatch_size:") for line in lines), lines
    assert any(line.startswith(f"{path}:5: module: expected one of mlp") for line in lines), lines

    inline = tmp_path / "inline.yaml"
    inline.write_text(
        "scenario:\n"
        "  name: x\n"
        "  platoons:\n"
        "    - id: p0\n"
        "      size: 0\n"
    )
    with pytest.raises(ScenarioError) as info:
        load_config(inline)
    assert any(line.startswith(f"{inline}:5: scenario.platoons[0].size:") for line in info.value.lines)

    model = tmp_path / "model.yaml"
    model.write_text("scenario: hard_brake\nmodel:\n  actor_hiddens: [64]\n  actor_hidden: [64]\n")
    with pytest.raises(ScenarioError) as info:
        load_config(model)
    assert info.value.lines == [f"{model}:4: model.actor_hidden: unknown field; expected one of: actor_hiddens, "
                                "critic_hiddens, init_log_std, min_log_std"]

    with pytest.raises(ScenarioError, match="grouping"):
        validate_config({"scenario": "hard_brake", "grouping": "platoon", "module": "mlp"})
    with pytest.raises(ScenarioError, match="minibatch_size"):
        validate_config({"scenario": "hard_brake", "train_batch_size": 100, "minibatch_size": 200})
    with pytest.raises(ScenarioError, match=r"act_steps \(2\) needs grouping 'platoon'"):
        validate_config({"scenario": "hard_brake", "act_steps": 2})  # action chunks are platoon plans


def test_shipped_config_is_valid() -> None:
    cfg = load_config(REPO / "configs" / "ppo_mlp.yaml")
    assert cfg.module == "mlp" and cfg.grouping == "vehicle" and cfg.env_runners == 0


LEARN = {
    "name": "rllib_learn", "seed": 3, "duration": 15,
    "road": {"type": "highway", "lanes": 2, "length": 800},
    "traffic": {"count": 3, "speed_range": [18, 22]},
    "platoons": [{"id": "p0", "size": 2, "lane": 0, "start": 100.0, "speed": 20.0, "time_gap": 1.0}],
}


@pytest.mark.slow
def test_mlp_ppo_improves_return(ray_session, tmp_path: Path) -> None:
    """20 iterations × 1000 env steps (about a minute on 2 cores) lift the mean return well above the first."""
    cfg = TrainConfig(scenario=LEARN, train_batch_size=1000, minibatch_size=250, num_epochs=5, lr=3e-4,
                      iterations=20, checkpoint_every=20, metrics_episodes=10, seed=0, out=str(tmp_path / "learn"))
    train(cfg, console=quiet())
    returns = [r["return_mean"] for r in read_jsonl(tmp_path / "learn" / "metrics.jsonl")]
    first, last = returns[0], float(np.mean(returns[-3:]))
    print(f"MLP PPO mean return: first iteration {first:.1f}, mean of last 3 {last:.1f}, all {np.round(returns, 1)}")
    assert last > first + 30.0, returns
