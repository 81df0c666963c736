"""Planned intents over V2V: a broadcast plan summary read back as the sender's path, and a platoon's controller
predicting another platoon's members from their broadcast plans in a real two-platoon scenario."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.intents import broadcast_paths, summarise
from diffplatoon.agents.diffusion.policy import DiffusionPolicy
from diffplatoon.agents.policy import SimInfo
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim.comms import pack_messages
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

DT, H, PLAN_DIM = 0.2, 20, 8


def _lane_change(heading: float) -> np.ndarray:
    """(1, H, 3) a plan at 25 m/s that moves 3.5 m sideways over 3 s, in a frame rotated by ``heading``."""
    t = DT * np.arange(1, H + 1)
    u = np.clip(t / 3.0, 0.0, 1.0)
    x, y = 25.0 * t, 3.5 * (3 * u**2 - 2 * u**3)
    return np.stack((x, y, np.zeros_like(x)), axis=-1)[None]


@pytest.mark.parametrize("age", [0, 2])
def test_summary_read_back_is_the_plan_in_the_world(age):
    heading, origin = 0.4, np.array([100.0, -30.0])
    states = _lane_change(heading)
    summary = summarise(states, np.ones(1, bool), heading, PLAN_DIM)
    c, s = np.cos(heading), np.sin(heading)
    world = origin + states[0, :, :2] @ np.array([[c, s], [-s, c]])  # (H, 2) the plan in the world frame
    sent = world[0]  # the message goes out at the plan's first state
    message = pack_messages(*(np.array([v]) for v in (sent[0], sent[1], heading, 25.0, 0.0, 5.0)), plan=summary,
                            plan_dim=PLAN_DIM)
    obs = SimpleNamespace(inbox=message[None].astype(np.float32), inbox_mask=np.ones((1, 1), bool),
                          inbox_sender=np.array([[7]]), inbox_age=np.array([[age]]))
    # the receiver (comm id 0) sees the sender where its message puts it now
    now = world[age]
    neighbour = np.array([[now[0], now[1], heading, 25.0], [now[0] + 40.0, now[1], heading, 25.0]])
    paths, found = broadcast_paths(obs, np.array([0]), neighbour, np.ones(2, bool), horizon=H, dt=DT, interval=DT)
    assert found.tolist() == [True, False]  # the vehicle 40 m on sent nothing
    k = H - 1 - age  # receiver steps that the plan covers
    error = np.hypot(*(paths[0, :k, :2] - world[age + 1:age + 1 + k]).T)
    assert error.max() < 0.25  # knots every 1 s, linear between them
    assert paths[0, k:, 0].min() > world[-1, 0] - 1e-6  # continued past the plan's end, not frozen


def test_a_platoon_predicts_the_other_platoon_from_its_broadcast_plans(tiny_planner):
    """lane_drop: two platoons that hear each other (inter_platoon). After the first plans went out, platoon 0's
    controller predicts exactly the other platoon's observed members from their intents, and those paths start
    where the members are."""
    spec = load_scenario("lane_drop").model_copy(update={"duration": 3.0})
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    policy = DiffusionPolicy(spec, tiny_planner(spec), samples=2, steps=2)
    policy.reset(SimInfo(spec, 0, tuple(sim.agent_names), np.array([int(sim.world.platoon[r]) for r in sim.controlled]),
                         np.array([int(sim.world.member[r]) for r in sim.controlled]), 1.0 / spec.policy_frequency))
    for _ in range(3):
        actions = policy.act(observer.observe())
        sim.plan_slots[:] = policy.plan_summary()
        sim.step(actions)
    obs = observer.observe()
    rows0, rows1 = policy.platoon_rows
    scene = policy.controller.observe("probe", obs, rows0, policy._limits(rows0))
    assert scene.intents is not None
    paths, found = scene.intents
    frame = scene.inputs.frame.astype(np.float64)
    seen = features.to_world(scene.inputs.neighbours[:, :3].astype(np.float64), frame)[:, :2]
    others = obs.pose[rows1, :2]
    is_other = (np.hypot(*(seen[:, None] - others[None]).transpose(2, 0, 1)) < 0.5).any(axis=1)
    assert found.any()
    assert np.array_equal(found, is_other & scene.inputs.neighbour_mask)
    first = features.to_world(paths[found, 0], frame)[:, :2]
    speed = scene.inputs.neighbours[found, 3]
    # one plan step from where each is now, at about its speed
    assert np.allclose(np.hypot(*(first - seen[found]).T), speed * policy.planner.config.dt, atol=1.0)
