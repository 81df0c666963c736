"""Rendering: frames are drawn (not blank), change over time, colour platoons, and GIFs are written;
headless runs summarise what happened."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.sim.run import run_scenario
from diffplatoon.scenarios import ScenarioSpec, load_scenario
from diffplatoon.sim.render import PLATOON_COLOURS, Renderer, render_frame, render_scenario
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


def test_render_scenario_writes_a_gif_with_one_frame_per_step(tmp_path) -> None:
    spec = load_scenario("hard_brake")
    out = render_scenario(spec, 2.0, tmp_path / "sub" / "brake.gif", controller="lane_keep", fps=10)
    assert out.exists()
    with Image.open(out) as gif:
        assert gif.n_frames == int(2.0 * spec.policy_frequency) + 1
        assert gif.info["duration"] == 100
    assert not list(out.parent.glob(".*.tmp"))  # written atomically, no temp file left


def test_run_scenario_summarises_steps_and_events() -> None:
    spec = load_scenario("hard_brake")
    summary = run_scenario(spec, "lane_keep", seconds=8.0)
    assert len(summary.steps) == 8 * spec.policy_frequency
    assert summary.events == ["brake@5s"]
    fired = [s.step for s in summary.steps if s.events]
    assert fired == [5 * spec.policy_frequency + 1]  # fires in the step that reaches t = 5 s
    # lane keeping at constant speed: the members keep 25 m/s until they hit the braking car
    assert summary.steps[0].mean_speed == pytest.approx(25.0, abs=1e-6)
    # the lead (23 m ahead) brakes at 6 m/s² from t = 5 s: ½·6·t² = 23 m → contact near t = 7.77 s
    assert [(a, b) for a, b, _ in summary.collisions] == [("p0.0", "lead")]
    assert summary.collisions[0][2] == pytest.approx(5.0 + np.sqrt(2 * 23.0 / 6.0), abs=0.1)
    assert summary.min_gap < 3.0
    data = summary.to_dict()
    assert data["n_steps"] == len(summary.steps) and data["scenario"] == "hard_brake"
    table = summary.table(every=1.0)
    assert table.row_count >= 8  # one row a second, plus the event and collision steps


def test_unknown_controller_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="lane_keep"):
        run_scenario(load_scenario("hard_brake"), "no_such_controller", seconds=1.0)
