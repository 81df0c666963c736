"""Planner featurisation (platoon frame, comm mask, padding) and expert demonstration collection over Ray
(bad experts and scenarios refused before Ray starts, per-episode timeouts, exit status on failures)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from diffplatoon.agents.diffusion import features
from typer.testing import CliRunner

from diffplatoon.agents.diffusion.demos import (SHARDS, check_expert, collect_demos, collect_episode, demo_episodes,
                                                shard_name)
from diffplatoon.agents.diffusion.dataset import load_demos
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.cli import app
from diffplatoon.scenarios import ScenarioError, expand_sweep, load_scenario
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation


def _short(name: str, duration: float = 6.0, **comms):
    spec = load_scenario(name)
    update = {"duration": duration}
    if comms:
        update["comms"] = spec.comms.model_copy(update=comms)
    return spec.model_copy(update=update)


def _run(spec, episode: int, steps: int):
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    pol = make_policy("cacc", spec)
    pol.reset(SimInfo.from_spec(spec, episode))
    for _ in range(steps):
        sim.step(pol.act(observer.observe()))
    return sim, observer.observe()


# ------------------------------------------------------------------------------------------------ features


def test_observation_pose_and_senders_match_the_simulator():
    sim, obs = _run(_short("lane_drop"), 3, 5)
    rows = sim.controlled
    w = sim.world
    np.testing.assert_allclose(obs.pose, np.stack([w.x[rows], w.y[rows], w.heading[rows]], 1).astype(np.float32))
    np.testing.assert_array_equal(obs.inbox_sender, np.where(sim.inbox.mask, sim.inbox.sender, -1))
    assert obs.astype32().inbox_sender.dtype == np.int64


def test_platoon_frame_is_exact():
    sim, obs = _run(_short("highway_platoon"), 0, 3)
    pose = obs.pose.copy()
    pose[:4] = np.array([[10.0, 20.0, np.pi / 2], [10.0, 10.0, np.pi / 2], [13.0, 20.0, np.pi / 2 + 0.25],
                         [10.0, 20.0, np.pi / 2]], np.float32)
    obs = dataclasses.replace(obs, pose=pose)
    p = features.platoon_inputs(obs, np.arange(4), n_max=4)
    np.testing.assert_array_equal(p.ego_state[0, :3], 0.0)  # the origin member maps to zeros
    np.testing.assert_array_equal(p.ego_state[3, :3], 0.0)  # so does any member at the origin's pose
    # rotation by the leader heading (π/2): 10 m behind along the heading → x = −10; 3 m in world x → y = −3
    np.testing.assert_allclose(p.ego_state[1, :3], [-10.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(p.ego_state[2, :3], [0.0, -3.0, 0.25], atol=1e-6)
    np.testing.assert_array_equal(p.ego_state[:, 3], obs.ego[:4, 0])
    np.testing.assert_allclose(p.frame, obs.pose[0])
    back = features.to_world(p.ego_state, p.frame)
    np.testing.assert_allclose(back[:, :2], obs.pose[:4, :2], atol=1e-5)
    np.testing.assert_allclose(np.cos(back[:, 2] - obs.pose[:4, 2]), 1.0, atol=1e-6)
    back_t = features.to_world(torch.as_tensor(p.ego_state, dtype=torch.float64), p.frame)
    np.testing.assert_allclose(back_t.numpy(), back, atol=1e-9)
    # inbox positions are in the same frame: the message of member 0 sits at the origin
    sent_by_0 = obs.inbox_sender[:4] == 0
    assert sent_by_0.any()
    raw = obs.inbox[:4][sent_by_0]
    x, y, _ = features.to_frame(raw[:, 0], raw[:, 1], raw[:, 2], p.frame)
    np.testing.assert_allclose(p.inbox[:4][sent_by_0][:, :2], np.stack([x, y], 1), atol=1e-4)


def test_comm_mask_equals_the_channel_deliveries():
    spec = _short("highway_platoon", drop_probability=0.7, max_age=1)
    sim, obs = _run(spec, 2, 4)
    rows = np.arange(4)
    p = features.platoon_inputs(obs, rows, n_max=6)
    expected = np.zeros((6, 6), bool)
    for i in rows:
        for k in range(sim.inbox.sender.shape[1]):
            if sim.inbox.mask[i, k]:
                expected[i, sim.inbox.sender[i, k]] = True
        expected[i, i] = True
    np.testing.assert_array_equal(p.comm_mask, expected)
    # with half of the messages dropped the mask is not the topology's
    topology = sim.comm_graph.adjacency()[:4, :4] | np.eye(4, dtype=bool)
    seen = [features.platoon_inputs(_run(spec, ep, 4)[1], rows, 4).comm_mask for ep in range(2, 6)]
    assert any((m != topology).any() for m in seen)


def test_padding_and_missing_leader():
    sim, obs = _run(_short("lane_drop"), 1, 2)
    rows = np.arange(4, 7)  # the second platoon (3 members), padded to 5
    p = features.platoon_inputs(obs, rows, n_max=5, m_max=8)
    assert p.obs.shape == (5, features.obs_dim(sim.spec)) and p.inbox.shape[2] == features.msg_dim(sim.spec)
    np.testing.assert_array_equal(p.member_mask, [True, True, True, False, False])
    assert not p.comm_mask[3:].any() and not p.comm_mask[:, 3:].any()
    assert not p.obs[3:].any() and not p.inbox[3:].any() and not p.ego_state[3:].any()
    np.testing.assert_allclose(p.frame, obs.pose[4])
    # non-platoon neighbours: real vehicles (world positions), never a live member of this platoon
    w = sim.world
    world = features.to_world(p.neighbours[p.neighbour_mask], p.frame)
    act = w.active_rows()
    for x, y in world[:, :2]:
        d = np.hypot(w.x[act] - x, w.y[act] - y)
        assert d.min() < 1e-2
        assert act[np.argmin(d)] not in sim.controlled[rows]
    # member 0 gone: the frame moves to the first live member and member 0 is masked everywhere
    alive = obs.alive.copy()
    alive[4] = False
    obs = dataclasses.replace(obs, alive=alive)
    q = features.platoon_inputs(obs, rows, n_max=5)
    np.testing.assert_allclose(q.frame, obs.pose[5])
    np.testing.assert_array_equal(q.ego_state[1, :3], 0.0)
    assert not q.member_mask[0] and not q.comm_mask[0].any() and not q.comm_mask[:, 0].any()
    batch = features.stack([p, q])
    assert batch["inbox"].shape[:3] == (2, 5, obs.inbox.shape[1]) and batch["comm_mask"].dtype == torch.bool
    ctx = features.scene_context([p, q], horizon=4, dt=0.2)
    nb = p.neighbours[0]
    np.testing.assert_allclose(ctx.neighbours[0, 0, -1, :2].numpy(),
                               nb[:2] + 0.8 * nb[3] * np.array([np.cos(nb[2]), np.sin(nb[2])]), rtol=1e-5)


# ------------------------------------------------------------------------------------------------ demos


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("demos")
    specs = [_short("highway_platoon", 8.0), _short("lane_drop", 8.0)]
    summary = collect_demos(specs, "cacc", 2, out, horizon=10, progress=False)
    return out, specs, summary


def test_shards_manifest_and_resume(demo_run):
    out, specs, summary = demo_run
    assert summary.completed == 4 and summary.failed == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["shards"]) == 4 and manifest["expert"] == "cacc" and manifest["horizon"] == 10
    assert manifest["counts"]["scenes"] == summary.scenes == sum(s["scenes"] for s in manifest["shards"])
    # 40 steps per episode; highway_platoon has one platoon, lane_drop two
    assert summary.per_scenario["highway_platoon"]["scenes"] == 80
    assert summary.per_scenario["lane_drop"]["scenes"] <= 160
    eps = demo_episodes(0, 2)
    files = {shard_name(s.name, e) for s in specs for e in eps}
    assert {s["file"] for s in manifest["shards"]} == files
    before = {f: (out / SHARDS / f).stat().st_mtime_ns for f in files}
    victim = shard_name("lane_drop", eps[1])
    (out / SHARDS / victim).unlink()
    again = collect_demos(specs, "cacc", 2, out, horizon=10, progress=False)
    assert (again.completed, again.skipped) == (1, 3)
    after = {f: (out / SHARDS / f).stat().st_mtime_ns for f in files}
    assert all(after[f] == before[f] for f in files if f != victim)
    assert json.loads((out / "manifest.json").read_text())["counts"] == manifest["counts"]
    with pytest.raises(ValueError, match="other settings"):
        collect_demos(specs, "cacc", 2, out, horizon=5, progress=False)


def test_stored_arrays_shapes_and_masks(demo_run):
    out, specs, _ = demo_run
    with np.load(out / SHARDS / shard_name("lane_drop", demo_episodes(0, 2)[0])) as z:
        a = dict(z)
    s = len(a["step"])
    assert a["obs"].shape == (s, 4, features.obs_dim(specs[1]))
    assert a["actions"].shape == (s, 4, 10, 2) and a["states"].shape == (s, 4, 10, 4)
    assert a["future_mask"].shape == (s, 4, 10) and a["future_mask"].dtype == bool
    # the 3-member platoon's 4th slot is padding; the last steps run past the episode end
    second = a["platoon"] == 1
    assert not a["member_mask"][second][:, 3].any() and not a["future_mask"][second][:, 3].any()
    last = a["step"] == a["step"].max()
    assert not a["future_mask"][last][:, :, 1:].any() and a["future_mask"][last][:, :3, 0].all()
    assert not a["actions"][~a["future_mask"]].any()
    # states start next to the current state (one 0.2 s step away)
    ok = a["future_mask"][:, :, 0]
    step = np.linalg.norm(a["states"][:, :, 0, :2] - a["ego_state"][..., :2], axis=-1)[ok]
    assert (step < 0.2 * 40).all() and (step > 0).all()
    data = load_demos(out, val_fraction=0.5, seed=0)
    assert set(data.train.shards).isdisjoint(data.val.shards) and len(data.train.shards) == 2
    assert data.train.arrays["future_mask"].all(axis=2)[data.train.arrays["member_mask"]].all()
    b1, b2 = data.train.batch_at(3, 8, seed=1), data.train.batch_at(3, 8, seed=1)
    assert torch.equal(b1.actions, b2.actions) and b1.actions.shape == (8, 4, 10, 2)


def test_future_actions_are_the_experts_executed_actions(demo_run):
    out, specs, _ = demo_run
    spec, episode = specs[1], demo_episodes(0, 2)[0]
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    pol = make_policy("cacc", spec)
    pol.reset(SimInfo.from_spec(spec, episode))
    actions, poses = [], []
    obs = observer.observe()
    while not sim.done:
        act = pol.act(obs)
        actions.append(act)
        sim.step(act)
        obs = observer.observe()
        poses.append(obs.pose.copy())
    actions = np.stack(actions)
    with np.load(out / SHARDS / shard_name(spec.name, episode)) as z:
        a = dict(z)
    rows_of = [np.arange(0, 4), np.arange(4, 7)]
    checked = 0
    for i in range(len(a["step"])):
        t, rows = int(a["step"][i]), rows_of[int(a["platoon"][i])]
        fm = a["future_mask"][i, :len(rows)]
        for k in range(10):
            live = fm[:, k]
            if live.any():
                np.testing.assert_array_equal(a["actions"][i, :len(rows), k][live],
                                              actions[t + k, rows][live].astype(np.float32))
                pose = poses[t + k][rows][live]
                x, y, h = features.to_frame(pose[:, 0], pose[:, 1], pose[:, 2], a["frame"][i])
                np.testing.assert_allclose(a["states"][i, :len(rows), k][live][:, :2], np.stack([x, y], 1), atol=1e-3)
                checked += int(live.sum())
    assert checked > 1000
    assert (actions != 0).any()  # the expert did something in this episode
    # the in-process collector gives the same arrays as the Ray task
    again = collect_episode(spec, "cacc", episode, horizon=10)
    for key in ("actions", "states", "future_mask", "obs", "comm_mask"):
        np.testing.assert_array_equal(again[key], a[key])


def test_platoon_inputs_fields_are_stored(demo_run):
    out, _, _ = demo_run
    with np.load(out / SHARDS / shard_name("highway_platoon", demo_episodes(0, 2)[0])) as z:
        keys = set(z.files)
    assert {f.name for f in dataclasses.fields(features.PlatoonInputs)} <= keys


# ------------------------------------------------------------------------------------------------ refusals


@pytest.mark.parametrize("expert, scenario, expected", [
    ("nosuch", "hard_brake", "unknown policy 'nosuch'"),
    ("cacc:time_gap=abc", "hard_brake", "time_gap: expected a finite number, got 'abc'"),
    ("cacc", "nosuch_scenario", "nosuch_scenario: <document>: expected a scenario file path or a catalogue name"),
])
def test_bad_expert_or_scenario_is_refused_before_ray(tmp_path, expert, scenario, expected):
    import ray

    running = ray.is_initialized()
    out = tmp_path / "demos"
    with pytest.raises((ValueError, ScenarioError)):
        collect_demos([scenario], expert, 1, out, progress=False)
    result = CliRunner().invoke(app, ["demos", "collect", "--scenarios", scenario, "--expert", expert,
                                      "--out", str(out)])
    assert result.exit_code == 1 and expected in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert ray.is_initialized() == running and not out.exists()  # nothing started, nothing written


def test_check_expert_covers_every_sweep_variant():
    specs = expand_sweep(load_scenario("dense_highway_sweep"))[0]
    check_expert("idm", specs)
    with pytest.raises(ValueError, match=r"expert 'random:lane_keeping=1' cannot be built for scenario "):
        check_expert("random:lane_keeping=1", specs)


def test_episode_past_its_timeout_is_a_failure_and_the_command_exits_1(ray_session, tmp_path):
    out = tmp_path / "demos"
    result = CliRunner().invoke(app, ["demos", "collect", "--scenarios", "hard_brake", "--episodes", "1",
                                      "--episode-timeout", "0.05", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "timed out after 0.05 s" in result.output and "1 of 1 demo episodes failed" in result.output
    assert "Traceback" not in result.output
    assert json.loads((out / "manifest.json").read_text())["shards"] == []  # a rerun collects it
