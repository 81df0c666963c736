"""Pre-training driver: outputs, checkpoints, exact resume, held-out metrics and config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion.demos import collect_demos
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
from diffplatoon.agents.diffusion.pretrain import ConfigError, PretrainConfig, load_config, pretrain, sample_collisions
from diffplatoon.scenarios import load_scenario


@pytest.fixture(scope="module")
def demos(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("demos")
    specs = [load_scenario(n).model_copy(update={"duration": 8.0}) for n in ("onramp_merge", "lane_drop")]
    collect_demos(specs, "cacc", 2, out, horizon=10, progress=False)
    return out


def _config(demos, out, steps: int) -> PretrainConfig:
    return PretrainConfig(
        demos=str(demos), out=str(out), device="cpu", torch_threads=1, validate_every=10, checkpoint_every=10,
        log_every=5, model=dict(horizon=10, d_model=32, n_layers=1, n_heads=2, num_train_steps=20),
        train=dict(steps=steps, batch_size=16), data=dict(val_fraction=0.25, val_scenes=64),
        eval=dict(scenes=12, samples=4, denoise_steps=3, batch_size=12),
    )


def _history(path):
    return torch.load(path, weights_only=True)["train_state"]["history"]


def test_pretrain_outputs_and_exact_resume(demos, tmp_path):
    full = tmp_path / "full"
    best = pretrain(_config(demos, full, 40), progress=False)
    assert best == full / "best.pt"
    for name in ("last.pt", "best.pt", "loss.png", "metrics.json", "config.yaml"):
        assert (full / name).stat().st_size > 0
    assert any((full / "tb").iterdir())
    assert (full / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = torch.load(full / "last.pt", weights_only=True)
    assert ckpt["train_state"]["step"] == 40 and ckpt["train_state"]["optimizer"]["state"]
    assert {"model", "ema", "normalizer", "config"} <= set(ckpt)
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["steps"] == 40 and len(metrics["val_loss"]) == 4
    q = metrics["quality"]
    for name in ("unguided", "guided"):
        assert q[name]["minADE"] > 0 and q[name]["minFDE"] >= 0 and 0 <= q[name]["collision_rate"] <= 1
        assert q[name]["plans"] == 12 * 4
    assert q["expert_collision_rate"] == 0.0
    assert q["expert_rollout_ade"] < 0.05  # the planner's bicycle model replays the simulator
    best_step = min(metrics["val_loss"], key=lambda v: v[1])[0]
    assert torch.load(full / "best.pt", weights_only=True)["train_state"]["step"] == best_step

    # stop at 20, then resume to 40: the same losses and weights as the uninterrupted run
    cut = tmp_path / "cut"
    pretrain(_config(demos, cut, 20), progress=False)
    assert len(_history(cut / "last.pt")["train"]) == 20
    pretrain(_config(demos, cut, 40), resume=True, progress=False)
    a, b = _history(full / "last.pt"), _history(cut / "last.pt")
    assert a["train"] == b["train"] and a["val"] == b["val"]
    wa, wb = (torch.load(p / "last.pt", weights_only=True) for p in (full, cut))
    for key in ("model", "ema"):
        for name, t in wa[key].items():
            assert torch.equal(t, wb[key][name]), name
    JointDiffusionPlanner.load(cut / "best.pt")  # loads with weights_only


def test_config_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("demos: runs/demos\ntrain:\n  steps: 10\n  lr: -1\n  stepz: 3\ndevise: cpu\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}:4: train.lr: expected a number > 0" in text
    assert f"{path}:5: train.stepz: unknown field" in text
    assert f"{path}:6: devise: unknown field" in text
    path.write_text("model:\n  d_model: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{path}:\d+: .*invalid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="expected an existing config file"):
        load_config(tmp_path / "missing.yaml")
    ok = tmp_path / "ok.yaml"
    ok.write_text("train:\n  steps: 5\n")
    assert load_config(ok).train.steps == 5 and load_config(ok).model.d_model == 128


def test_shipped_config_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "pretrain_planner.yaml")
    assert cfg.model.horizon % cfg.model.chunk == 0 and cfg.model.d_model % cfg.model.n_heads == 0


def test_sample_collisions_uses_exact_boxes():
    # two 5 m x 2 m boxes side by side: 2.1 m apart laterally is clear, 1.9 m overlaps; padding is ignored
    states = np.zeros((3, 3, 1, 4))
    states[:, 1, 0, 1] = [2.1, 1.9, 1.9]
    length = np.full(3, 5.0)
    mask = np.array([[True, True, False], [True, True, False], [True, False, True]])
    np.testing.assert_array_equal(sample_collisions(states, length, mask, 2.0), [False, True, True])


def test_closed_loop_selection_picks_best_pt_and_survives_resume(demos, tmp_path):
    """A selection block drives real episodes with the EMA weights every 10 steps, logs the metrics to metrics.json
    and TensorBoard, picks best.pt by the score (then the validation loss), and a resumed run keeps the history."""
    from diffplatoon.agents.diffusion.selection import METRICS, SelectionSection, score
    from diffplatoon.evaluation.episode import run_episode

    selection = SelectionSection(scenarios=["onramp_merge"], episodes=1, every=10, duration=1.0,
                                 policy={"samples": 2, "steps": 2})
    cfg = _config(demos, tmp_path / "sel", 20).model_copy(update={"selection": selection})
    with pytest.raises(ValueError, match="needs an episode runner"):
        pretrain(cfg, progress=False)
    typo = cfg.model_copy(update={"selection": selection.model_copy(update={"policy": {"sampels": 2}})})
    with pytest.raises(ValueError, match="selection.policy: unknown diffusion policy parameter.*sampels"):
        pretrain(typo, progress=False, run_episode=run_episode)
    cut = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 10})})
    pretrain(cut, progress=False, run_episode=run_episode)
    pretrain(cfg, resume=True, progress=False, run_episode=run_episode)
    metrics = json.loads((tmp_path / "sel" / "metrics.json").read_text())
    assert metrics["best_by"] == "closed_loop"
    entries = metrics["closed_loop"]
    assert [e["step"] for e in entries] == [10, 20]  # the step-10 evaluation came through the resume
    for e in entries:
        assert e["episodes"] == 1 and set(METRICS) <= set(e) and e["mean_speed"] > 0
        assert e["score"] == pytest.approx(score(e, selection.weights))
        assert e["val_loss"] == dict(map(tuple, metrics["val_loss"]))[e["step"]]
    best = max(entries, key=lambda e: (e["score"], -e["val_loss"]))
    assert metrics["best_closed_loop"] == best
    assert torch.load(tmp_path / "sel" / "best.pt", weights_only=True)["train_state"]["step"] == best["step"]
    events = b"".join(p.read_bytes() for p in (tmp_path / "sel" / "tb").iterdir())
    assert b"closed_loop/score" in events and b"closed_loop/shield_override_rate" in events


def test_validation_split_and_scenes_cover_every_scenario(demos):
    from diffplatoon.agents.diffusion.dataset import load_demos, spread
    from diffplatoon.agents.diffusion.demos import read_manifest

    scenario = {s["file"]: s["scenario"] for s in read_manifest(demos)["shards"]}
    data = load_demos(demos, horizon=10, val_fraction=0.25, seed=0)
    assert {scenario[n] for n in data.val.shards} == {"onramp_merge", "lane_drop"}
    assert not set(data.val.shards) & set(data.train.shards)
    idx = spread(100, 10)
    assert len(idx) == 10 and idx[0] == 0 and idx[-1] == 99 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(spread(5, 10), np.arange(5))


def test_oversample_repeats_matching_training_shards_only(demos):
    from diffplatoon.agents.diffusion.dataset import load_demos
    from diffplatoon.agents.diffusion.demos import read_manifest

    plain = load_demos(demos, horizon=10, val_fraction=0.25, seed=0)
    shards = read_manifest(demos)["shards"]
    onramp = [s["file"] for s in shards if s["scenario"] == "onramp_merge" and s["file"] in plain.train.shards]
    assert onramp
    weighted = load_demos(demos, horizon=10, val_fraction=0.25, seed=0, oversample={"onramp_merge": 3})
    extra = len(weighted.train) - len(plain.train)
    onramp_only = load_demos(demos, horizon=10, val_fraction=0.25, seed=0, oversample={"onramp_merge": 2})
    assert extra == 2 * (len(onramp_only.train) - len(plain.train)) > 0  # each extra copy adds the onramp scenes
    assert len(weighted.val) == len(plain.val)  # validation is never repeated


def test_several_demo_folders_load_as_their_union_each_shard_once(demos, tmp_path):
    """A DAgger round collected into a copy of the demonstrations: both folders together are that copy's shards,
    each read once; folders of other feature widths are refused by name."""
    import shutil

    from diffplatoon.agents.diffusion.dataset import load_demos
    from diffplatoon.agents.diffusion.demos import read_manifest

    more = tmp_path / "more"
    shutil.copytree(demos, more)
    spec = load_scenario("lane_drop").model_copy(update={"duration": 8.0})
    collect_demos([spec], "cacc", 3, more, horizon=10, progress=False)  # episode 2 of lane_drop is new
    new = {s["file"] for s in read_manifest(more)["shards"]} - {s["file"] for s in read_manifest(demos)["shards"]}
    assert len(new) == 1
    kw = dict(horizon=10, val_fraction=0.0, seed=0)
    union = load_demos([demos, more], **kw)
    alone = load_demos(more, **kw)
    assert union.train.shards == alone.train.shards and len(union.train) == len(alone.train)
    assert len(union.train) > len(load_demos(demos, **kw).train)
    np.testing.assert_array_equal(union.train.arrays["actions"], alone.train.arrays["actions"])
    assert len(load_demos([demos, demos], **kw).train) == len(load_demos(demos, **kw).train)
    manifest = json.loads((more / "manifest.json").read_text())
    manifest["dims"]["obs_dim"] += 1
    (more / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"more: obs_dim \d+ differs from .*demo folders trained together"):
        load_demos([demos, more], **kw)
    assert PretrainConfig.model_validate({"demos": [str(demos), str(more)]}).demos == [str(demos), str(more)]
    with pytest.raises(ValueError):
        PretrainConfig.model_validate({"demos": []})
