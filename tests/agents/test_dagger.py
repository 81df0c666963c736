"""Closed-loop data aggregation: labels are what the expert does from each visited state, beta = 1 gives the
demonstrations, shards load in the dataset next to the demonstrations and a rerun skips finished shards;
perturbations are bounded, seeded and refused when they overlap a vehicle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.dagger import DaggerSettings, aggregate, clone_policy, rollout_episode
from diffplatoon.agents.diffusion.dataset import load_demos
from diffplatoon.agents.diffusion.demos import (SHARDS, collect_demos, collect_episode, demo_episodes, platoon_rows,
                                                scene_future)
from diffplatoon.agents.diffusion.perturb import PerturbBounds, perturb_members
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.cli import app
from diffplatoon.scenarios import load_scenario, parse_scenario
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

H = 8  # stored future steps
pytestmark = pytest.mark.usefixtures("restore_torch_threads")  # its policies set torch's thread count


@pytest.fixture(scope="module")
def spec():
    return load_scenario("onramp_merge").model_copy(update={"duration": 6.0, "name": "merge_short"})


@pytest.fixture(scope="module")
def planner(spec, tiny_planner) -> str:
    """The policy string of a tiny untrained planner (jittered weights, gentle steering)."""
    return f"diffusion:{tiny_planner(spec)},samples=2,steps=3"


def test_beta_one_labels_every_step_exactly_as_the_demonstrations(spec) -> None:
    episode = demo_episodes(0, 1)[0]
    demos = collect_episode(spec, "cacc", episode, H)
    run = rollout_episode(spec, episode, DaggerSettings(None, beta=1.0, horizon=H, label_every=1))
    assert run.by_expert.all() and not run.arrays["perturbed"].any()
    assert set(run.arrays) == set(demos) | {"perturbed"}
    for key, value in demos.items():
        assert run.arrays[key].dtype == value.dtype and np.array_equal(run.arrays[key], value), key


def test_labels_are_what_the_expert_does_from_each_visited_state(spec, planner) -> None:
    episode = demo_episodes(0, 1)[0]
    settings = DaggerSettings(planner, beta=0.5, horizon=H, label_every=4)
    run = rollout_episode(spec, episode, settings)
    assert 0 < run.by_expert.sum() < len(run.by_expert)  # both drove
    labelled = sorted(set(run.arrays["step"].tolist()))
    assert labelled == list(range(0, len(run.executed), 4))

    # A fresh episode replays the executed actions, the expert watching; from each labelled step a copy of
    # that expert drives on, with no snapshot involved.
    platoons = platoon_rows(spec)
    n_max = max(p.size for p in spec.platoons)
    for t in labelled[1:3]:
        sim = Simulation(spec, episode)
        obs_fn = Observer(sim)
        expert = make_policy("cacc", spec)
        expert.reset(SimInfo.from_spec(spec, episode))
        obs = obs_fn.observe()
        for a in run.executed[:t]:
            expert.act(obs)
            sim.step(a)
            obs = obs_fn.observe()
        start, acts, poses, speeds, alive = obs, [], [], [], []
        while len(acts) < H and not sim.done and obs.alive.any():
            acts.append(np.asarray(expert.act(obs), dtype=np.float64))
            sim.step(acts[-1])
            obs = obs_fn.observe()
            poses.append(obs.pose.astype(np.float64))
            speeds.append(obs.ego[:, 0].astype(np.float64))
            alive.append(obs.alive.copy())
        for i in np.flatnonzero(run.arrays["step"] == t):
            k = int(run.arrays["platoon"][i])
            rows = platoons[k]
            scene = features.platoon_inputs(start, rows, n_max, 16, length=features.member_lengths(spec)[rows])
            assert np.array_equal(run.arrays["obs"][i], scene.obs)
            a, s, m = scene_future(scene, platoons[k], np.stack(acts), np.stack(poses), np.stack(speeds),
                                   np.stack(alive), H)
            assert np.array_equal(run.arrays["actions"][i], a) and np.array_equal(run.arrays["states"][i], s)
            assert np.array_equal(run.arrays["future_mask"][i], m)


def test_forks_leave_the_driven_trajectory_untouched(spec, planner) -> None:
    episode = demo_episodes(0, 1)[0]
    forked = rollout_episode(spec, episode, DaggerSettings(planner, beta=0.5, horizon=H, label_every=2,
                                                           perturbations=1))
    plain = rollout_episode(spec, episode, DaggerSettings(planner, beta=0.5, horizon=H, label_every=10_000))
    assert np.array_equal(forked.executed, plain.executed) and np.array_equal(forked.by_expert, plain.by_expert)


def _side_by_side():
    return parse_scenario("""\
name: side_by_side
seed: 1
duration: 10
road: {type: highway, lanes: 2, length: 1000}
traffic: {count: 0}
platoons:
  - {id: p0, size: 2, lane: 1, start: 300, speed: 25}
vehicles:
  - {id: beside, lane: 0, start: 300, speed: 25, lane_changes: false}
""")


def test_perturbations_are_bounded_seeded_and_refused_on_overlap() -> None:
    spec = _side_by_side()
    sim = Simulation(spec, 0)
    rows = sim.controlled
    before = {k: getattr(sim.world, k)[rows].copy() for k in ("r", "heading", "speed")}
    state = sim.snapshot()
    bounds = PerturbBounds(lateral=0.4, heading=0.03, speed=1.5)
    outcomes = []
    for seed in range(3):
        sim.restore(state)
        assert perturb_members(sim, np.random.default_rng(seed), bounds)
        w = sim.world
        assert np.all(np.abs(w.r[rows] - before["r"]) <= 0.4 + 1e-9)
        assert np.all(np.abs(w.heading[rows] - before["heading"]) <= 0.03 + 1e-12)
        assert np.all(np.abs(w.speed[rows] - before["speed"]) <= 1.5 + 1e-12)
        outcomes.append(np.stack([w.x[rows], w.y[rows], w.speed[rows]]))
        sim.restore(state)
        perturb_members(sim, np.random.default_rng(seed), bounds)
        assert np.array_equal(np.stack([w.x[rows], w.y[rows], w.speed[rows]]), outcomes[-1])
    assert not np.array_equal(outcomes[0], outcomes[1])
    # 4 m sideways reaches the vehicle level with p0.0 in the next lane about half the time
    refused = []
    for seed in range(20):
        sim.restore(state)
        refused.append(not perturb_members(sim, np.random.default_rng(seed), PerturbBounds(4.0, 0.0, 0.0)))
    assert any(refused) and not all(refused)


def test_perturbed_scenes_start_off_the_visited_state(spec) -> None:
    episode = demo_episodes(0, 1)[0]
    run = rollout_episode(spec, episode, DaggerSettings(None, beta=1.0, horizon=H, label_every=5, perturbations=2))
    a = run.arrays
    assert a["perturbed"].sum() == 2 * (~a["perturbed"]).sum() - run.refused * len(spec.platoons)
    for t in np.unique(a["step"]):
        here = a["step"] == t
        plain = np.flatnonzero(here & ~a["perturbed"])[0]
        for i in np.flatnonzero(here & a["perturbed"]):
            assert not np.array_equal(a["ego_state"][i], a["ego_state"][plain])
            assert a["future_mask"][i].any()


def test_the_expert_copy_is_independent(spec) -> None:
    expert = make_policy("cacc", spec)
    expert.reset(SimInfo.from_spec(spec, 3))
    sim = Simulation(spec, 3)
    obs = Observer(sim)
    twin = clone_policy(expert)
    assert twin.spec is expert.spec
    o = obs.observe()
    first = expert.act(o)
    again = twin.act(o)  # the copy starts from the original's state before that call
    assert np.array_equal(first, again)


def test_aggregate_adds_shards_the_dataset_loads_and_a_rerun_skips_them(spec, planner, tmp_path, ray_session) -> None:
    out = tmp_path / "demos"
    collect_demos([spec], "cacc", 1, out, horizon=H, progress=False)
    checkpoint = planner.split(":", 1)[1].split(",")[0]
    args = ["demos", "aggregate", "--planner", checkpoint, "--planner-params", "samples=2,steps=3", "--scenario",
            str(_spec_file(spec, tmp_path)), "--beta", "0.5", "--episodes", "2", "--out", str(out), "--horizon",
            str(H), "--label-every", "3", "--perturbations", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    kinds = [s.get("kind", "expert") for s in manifest["shards"]]
    assert kinds.count("expert") == 1 and kinds.count("dagger") == 2
    assert manifest["dagger"]["0"]["beta"] == 0.5 and manifest["dagger"]["0"]["perturbations"] == 1
    data = load_demos(out, val_fraction=0.0, full_horizon_only=False)
    assert len(data.train) == manifest["counts"]["scenes"]
    dagger_scenes = sum(s["scenes"] for s in manifest["shards"] if s.get("kind") == "dagger")
    assert dagger_scenes > 0

    stamps = {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).iterdir()}
    again = aggregate([spec], DaggerSettings(planner, beta=0.5, horizon=H, label_every=3, perturbations=1), out,
                      episodes=2, progress=False)
    assert (again.completed, again.skipped) == (0, 2)
    demos_again = collect_demos([spec], "cacc", 1, out, horizon=H, progress=False)  # dagger shards are not demos
    assert (demos_again.completed, demos_again.skipped) == (0, 1)
    assert {p.name: p.stat().st_mtime_ns for p in (out / SHARDS).iterdir()} == stamps
    with pytest.raises(ValueError, match="round 0"):
        aggregate([spec], DaggerSettings(planner, beta=0.25, horizon=H, label_every=3, perturbations=1), out,
                  episodes=2, progress=False)


def _spec_file(spec, tmp_path):
    import yaml

    path = tmp_path / f"{spec.name}.yaml"
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
    return path


def test_a_planner_that_is_not_a_checkpoint_is_one_line(tmp_path) -> None:
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["demos", "aggregate", "--planner", str(bad), "--scenario", "hard_brake",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "not a diffplatoon planner checkpoint" in result.output and "Traceback" not in result.output
