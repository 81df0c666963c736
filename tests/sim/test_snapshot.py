"""Snapshots of a running episode: restore + the same actions = the same trajectory, bit for bit; other
actions diverge; every attribute of every simulator object is either copied or provably fixed."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest

from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios import load_scenario
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim import snapshot
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation
from diffplatoon.sim.vehicles import STATE_FIELDS

K, N = 10, 60  # steps before the snapshot, steps compared after it


def _spec(name: str) -> ScenarioSpec:
    spec = load_scenario(name)
    if name == "comm_dropout":  # random drops on top of the outage: the channel's generator is drawn every step
        spec = spec.model_copy(update={"comms": spec.comms.model_copy(update={"drop_probability": 0.3})})
    return spec


def _frame(sim: Simulation, obs: Observer, result) -> dict[str, object]:
    """Everything one step shows: every vehicle array, the observation, the step result, the event reports."""
    w = sim.world
    out: dict[str, object] = {f: getattr(w, f)[: w.vehicles.hi].copy() for f in STATE_FIELDS}
    o = obs.observe()
    out.update({f"obs.{f.name}": getattr(o, f.name) for f in dataclasses.fields(o)
                if isinstance(getattr(o, f.name), np.ndarray)})
    out.update(time=w.time, result=dataclasses.astuple(result), events=sim.event_report(), inbox=sim.inbox.data.copy())
    return out


def _same(a: list[dict], b: list[dict]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        for key, u in x.items():
            v = y[key]
            if isinstance(u, np.ndarray):
                if u.shape != v.shape or u.dtype != v.dtype or not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
                    return False
            elif u != v:
                return False
    return True


def _drive(sim: Simulation, obs: Observer, actions: list[np.ndarray]) -> list[dict]:
    return [_frame(sim, obs, sim.step(a)) for a in actions if not sim.done]


def _episode(name: str) -> tuple[Simulation, Observer, list[np.ndarray]]:
    """The scenario after K expert steps, and the expert's next N actions (recorded on a twin episode)."""
    spec = _spec(name)
    twin = Simulation(spec, 7)
    twin_obs = Observer(twin)
    expert = make_policy("cacc", spec)
    expert.reset(SimInfo.from_spec(spec, 7))
    actions = []
    for _ in range(K + N):
        a = expert.act(twin_obs.observe())
        actions.append(a)
        twin.step(a)
    sim = Simulation(spec, 7)
    obs = Observer(sim)
    _drive(sim, obs, actions[:K])
    return sim, obs, actions[K:]


@pytest.mark.parametrize("name", ["hard_brake", "cut_in", "onramp_merge", "comm_dropout", "roundabout"])
def test_restore_and_the_same_actions_give_the_same_trajectory_bit_for_bit(name: str) -> None:
    sim, obs, actions = _episode(name)
    state, obs_state = sim.snapshot(), snapshot.take(obs)
    first = _drive(sim, obs, actions)
    assert len(first) == N
    fired = first[-1]["events"]
    for _ in range(2):  # a snapshot restores as often as needed
        sim.restore(state)
        snapshot.restore(obs, obs_state)
        assert sim.step_count == K and sim.world.time == pytest.approx(K / sim.spec.policy_frequency)
        assert _same(_drive(sim, obs, actions), first)
    if name in ("hard_brake", "cut_in", "comm_dropout"):  # their events fire after the snapshot
        assert any("@" in e for e in fired), fired

    # other actions from the same state diverge, and the snapshot still brings the first trajectory back
    sim.restore(state)
    snapshot.restore(obs, obs_state)
    other = _drive(sim, obs, [a + np.array([1.0, 0.0]) for a in actions])
    assert not np.array_equal(other[-1]["x"], first[-1]["x"])
    sim.restore(state)
    snapshot.restore(obs, obs_state)
    assert _same(_drive(sim, obs, actions), first)


def test_collisions_after_the_snapshot_replay_bit_for_bit() -> None:
    """Members that keep accelerating into the braking lead crash: crash flags, collision onsets, the
    crashed vehicles' stop and the channel's view of them replay exactly."""
    sim, obs, actions = _episode("hard_brake")
    reckless = [np.column_stack([np.full(len(a), 4.0), a[:, 1]]) for a in actions]
    state, obs_state = sim.snapshot(), snapshot.take(obs)
    first = _drive(sim, obs, reckless)
    assert any(f["result"][1] for f in first) and first[-1]["crashed"].any()  # collisions were recorded
    sim.restore(state)
    snapshot.restore(obs, obs_state)
    assert not sim.world.crashed.any()
    assert _same(_drive(sim, obs, reckless), first)


def test_random_streams_resume_where_the_snapshot_was_taken() -> None:
    sim, obs, actions = _episode("comm_dropout")
    state = sim.snapshot()
    world_draw, channel_draw = sim.world.rng.random(), sim.channel._rng.random()
    _drive(sim, obs, actions[:5])
    sim.restore(state)
    assert sim.world.rng.random() == world_draw and sim.channel._rng.random() == channel_draw


def test_the_snapshot_is_immutable_and_independent_of_the_episode() -> None:
    sim, obs, actions = _episode("hard_brake")
    state = sim.snapshot()
    vehicles = state.state["world"].state["vehicles"].state
    x0 = vehicles["x"].copy()
    with pytest.raises(ValueError):
        vehicles["x"][0] = 1.0
    _drive(sim, obs, actions[:10])
    assert np.array_equal(vehicles["x"], x0)
    sim.restore(state)
    sim.world.x[0] += 5.0  # writing into the restored World leaves the snapshot as it was
    assert np.array_equal(vehicles["x"], x0)


def _registered(sim: Simulation, obs: Observer) -> list[object]:
    """Every object of a registered class reachable from the Simulation and the Observer (but the frame
    cache, which is replaced, never patched)."""
    rules, found, todo, seen = snapshot.rules(), [], [sim, obs], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen or type(obj) not in rules or rules[type(obj)].replaced:
            continue
        seen.add(id(obj))
        found.append(obj)
        todo.extend(vars(obj).values())
    return found


def _fingerprint(value: object) -> object:
    if isinstance(value, np.ndarray):
        return (value.shape, value.dtype.str, value.tobytes())
    if isinstance(value, (int, float, str, bool, type(None), tuple, list, dict, np.generic)):
        return pickle.dumps(value)
    return id(value)  # an object: the same one (its own state is checked where it is registered)


def test_kept_attributes_never_change_while_episodes_run() -> None:
    """The systematic check: what a restore keeps must stay fixed; every other attribute is copied."""
    for name in ("cut_in", "comm_dropout", "onramp_merge", "roundabout", "lane_drop"):
        spec = _spec(name)
        sim = Simulation(spec, 3)
        obs = Observer(sim)
        expert = make_policy("cacc", spec)
        expert.reset(SimInfo.from_spec(spec, 3))
        objects = _registered(sim, obs)
        assert {type(o).__name__ for o in objects} >= {"Simulation", "World", "Vehicles", "Contacts", "TrafficEntry",
                                                       "CommGraph", "Channel", "Observer", "PathLanes"}
        rules = snapshot.rules()
        for obj in objects:
            rule = rules[type(obj)]
            assert rule.kept | rule.derived <= set(vars(obj)), f"{type(obj).__name__}: a rule names a missing attribute"
        before = [(obj, {k: _fingerprint(vars(obj)[k]) for k in rules[type(obj)].kept}) for obj in objects]
        for _ in range(80):
            sim.step(expert.act(obs.observe()))
        for obj, prints in before:
            for key, value in prints.items():
                assert _fingerprint(vars(obj)[key]) == value, f"{name}: {type(obj).__name__}.{key} changed"


def test_a_new_attribute_is_copied_or_refused() -> None:
    sim, obs, actions = _episode("hard_brake")
    sim.world.extra = np.zeros(3)
    sim.world.extra_log = [("a", 1.0)]
    state = sim.snapshot()
    sim.world.extra[:] = 7.0
    sim.world.extra_log.append(("b", 2.0))
    sim.world.later = 1  # gained after the snapshot: gone after the restore
    sim.restore(state)
    assert np.array_equal(sim.world.extra, np.zeros(3)) and sim.world.extra_log == [("a", 1.0)]
    assert not hasattr(sim.world, "later")
    sim.world.helper = object()
    with pytest.raises(TypeError, match="World.helper"):
        sim.snapshot()


def test_a_snapshot_restores_only_its_own_kind() -> None:
    sim, obs, _ = _episode("hard_brake")
    with pytest.raises(TypeError, match="Simulation"):
        sim.world.restore(sim.snapshot())
