"""Rendering: frames are drawn (not blank), change over time, colour platoons and follow new episodes."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.scenarios import ScenarioSpec, load_scenario
from diffplatoon.sim.render import PLATOON_COLOURS, Renderer, render_frame
from diffplatoon.sim.simulation import Simulation


def colour_count(frame: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int(np.all(frame == np.array(colour, dtype=np.uint8), axis=-1).sum())


@pytest.mark.parametrize("name", ["onramp_merge", "intersection"])
def test_frames_are_drawn_and_change_over_time(name: str) -> None:
    sim = Simulation(load_scenario(name), 0)
    renderer = Renderer(sim)
    first = renderer.frame()
    for _ in range(5):
        sim.step(np.zeros((len(sim.controlled), 2)))
    later = renderer.frame()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    background = np.bincount(first[..., 0].ravel()).argmax()
    assert (first[..., 0] != background).mean() > 0.01  # lane markings, vehicles, text
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 10
    assert not np.array_equal(first, later)
    # every platoon's colour is on screen
    for p in range(len(sim.spec.platoons)):
        assert colour_count(later, PLATOON_COLOURS[p]) > 20


def test_env_render_returns_rgb_frames() -> None:
    env = PlatoonParallelEnv(load_scenario("highway_platoon"), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (260, 800, 3) and frame.dtype == np.uint8
    env.step({a: np.zeros(2) for a in env.agents})
    assert not np.array_equal(frame, env.render())
    env.reset(seed=1)  # the renderer follows the new episode
    assert env.render().shape == frame.shape
    assert PlatoonParallelEnv(load_scenario("highway_platoon")).render() is None


def test_render_frame_keeps_one_renderer_per_simulation() -> None:
    sim = Simulation(load_scenario("roundabout"), 0)
    first = render_frame(sim)
    sim.step(np.zeros((len(sim.controlled), 2)))
    assert first.shape == render_frame(sim).shape == (560, 560, 3)  # fitted road: square frame


def test_crashed_vehicles_are_red() -> None:
    spec = ScenarioSpec.model_validate({
        "name": "crash", "road": {"type": "highway", "lanes": 2, "length": 500}, "traffic": {"count": 0},
        "platoons": [{"id": "p0", "size": 2, "lane": 0, "start": 100.0, "speed": 20.0}],
        "vehicles": [{"id": "wall", "lane": 0, "start": 107.0, "speed": 0.0}],
    })
    sim = Simulation(spec, 0)
    renderer = Renderer(sim)
    assert colour_count(renderer.frame(), (230, 40, 40)) == 0
    sim.step(np.zeros((2, 2)))
    assert colour_count(renderer.frame(), (230, 40, 40)) > 20
