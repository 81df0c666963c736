"""Running and rendering a scenario with a controller (`diffplatoon.run`): headless runs summarise
what happened, renders write one GIF frame per step."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from diffplatoon.run import run_scenario, render_scenario
from diffplatoon.scenarios import load_scenario


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


@pytest.mark.parametrize("seconds", [-5.0, 0.0, float("nan"), float("inf")])
def test_run_refuses_a_duration_that_is_not_a_positive_time(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds: expected a positive, finite simulated time"):
        run_scenario(load_scenario("hard_brake"), "lane_keep", seconds=seconds)
