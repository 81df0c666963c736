"""The `sb3:` policy adapter and the Stable-Baselines3 example: foreign or corrupt zips are refused in one
line without unpickling; (slow, `sb3` extra) the adapter acts exactly as the trained model's `predict`,
and the example trains PPO on a Gymnasium id and evaluates the saved model with `diffplatoon evaluate`."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from diffplatoon.agents.policy import CheckpointError, SimInfo, make_policy
from diffplatoon.envs.gym_env import joint_observation
from diffplatoon.envs.pettingzoo_env import action_limits, to_si
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sb3_ppo.py"


def test_foreign_files_are_refused_in_one_line(tmp_path: Path) -> None:
    spec = load_scenario("highway_platoon")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    no_policy = tmp_path / "no_policy.zip"
    with zipfile.ZipFile(no_policy, "w") as archive:
        archive.writestr("data", json.dumps({}))
    pickled = tmp_path / "pickled.zip"
    with zipfile.ZipFile(pickled, "w") as archive:  # a pickle stream where the weights belong: never run
        archive.writestr("data", json.dumps({}))
        archive.writestr("policy.pth", b"\x80\x04cos\nsystem\n(S'echo hacked'\ntR.")
    cases = {junk: "BadZipFile", no_policy: "no policy.pth in it", pickled: "never loaded",
             tmp_path / "missing.zip": "no such file"}
    for path, why in cases.items():
        with pytest.raises(CheckpointError) as err:
            make_policy(f"sb3:{path}", spec)
        assert str(err.value).startswith(str(path)) and why in str(err.value) and "\n" not in str(err.value)


def _train_tiny(out: Path, scenario: str = "highway_platoon") -> Path:
    subprocess.run([sys.executable, str(EXAMPLE), "--scenario", scenario, "--timesteps", "128", "--n-steps", "64",
                    "--eval-episodes", "0", "--out", str(out)], check=True, timeout=300)
    return out / "model.zip"


@pytest.mark.slow
def test_adapter_acts_as_the_model_predicts(tmp_path: Path) -> None:
    sb3 = pytest.importorskip("stable_baselines3")
    model_path = _train_tiny(tmp_path / "run")
    spec = load_scenario("highway_platoon")
    policy = make_policy(f"sb3:{model_path}", spec)
    policy.reset(SimInfo.from_spec(spec, 3))
    model = sb3.PPO.load(model_path, device="cpu")  # SB3's own loader: a file this test just wrote
    sim = Simulation(spec, 3)
    observer = Observer(sim)
    low, high = action_limits(spec)
    for _ in range(5):
        obs = observer.observe()
        expected, _ = model.predict(joint_observation(obs), deterministic=True)
        actions = policy.act(obs)
        np.testing.assert_allclose(actions, to_si(expected.reshape(-1, 2).astype(np.float64), low, high,
                                                  normalized=True), rtol=1e-6, atol=1e-6)
        sim.step(actions)
    # a model of 4 members cannot drive a scenario of another size
    with pytest.raises(CheckpointError, match="for scenario 'lane_drop' with 7 members"):
        make_policy(f"sb3:{model_path}", load_scenario("lane_drop"))


@pytest.mark.slow
def test_example_trains_and_evaluates(tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, str(EXAMPLE), "--timesteps", "256", "--n-steps", "64",
                             "--eval-episodes", "2", "--num-workers", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "trained 256 steps" in result.stdout
    assert f"diffplatoon evaluate --policy sb3:{out / 'model.zip'} --policy cacc" in result.stdout
    records = [json.loads(line) for line in (out / "eval" / "records.jsonl").read_text().splitlines()]
    assert sorted(r["policy"] for r in records) == sorted([f"sb3:{out / 'model.zip'}"] * 2 + ["cacc"] * 2)
    assert not any(r.get("failed") for r in records) and all(r["steps"] > 0 for r in records)
    assert {r["policy_version"] for r in records if r["policy"].startswith("sb3:")} == {"1"}
    assert (out / "eval" / "report.md").is_file()
