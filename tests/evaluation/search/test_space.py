"""Space files are validated like scenarios: every problem at once, each as file:line: field: message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from diffplatoon.evaluation.search.distributions import Beta, TruncNormal
from diffplatoon.evaluation.search.space import load_space, parse_space
from diffplatoon.scenarios import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[3]

GOOD = """\
failure: collision
criticality: min_ttc
parameters:
  events.0.deceleration: {type: truncnormal, mean: 6, std: 1.5, low: 2, high: 12}
  comms.latency: {type: categorical, values: [0, 2, 6], probs: [0.5, 0.3, 0.2]}
  vehicles.0.start: {type: uniform, low: 322, high: 334}
  comms.drop_probability: {type: beta, a: 1, b: 9, low: 0, high: 0.5}
"""


@pytest.fixture(scope="module")
def hard_brake():
    return load_scenario("hard_brake")


def problems(text: str, scenario) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_space(text, scenario, "space.yaml")
    return info.value.lines


def test_shipped_spaces_load(hard_brake) -> None:
    for name in ("hard_brake.yaml", "hard_brake_rare.yaml"):
        space = load_space(ROOT / "configs" / "search" / name, hard_brake)
        assert space.paths == ["events.0.deceleration", "comms.latency"]
        assert space.integer == (False, True)  # comms.latency is an integer field: draws are rounded
    space = load_space(ROOT / "configs" / "search" / "cut_in.yaml", load_scenario("cut_in"))
    assert "events.0.min_gap" in space.paths
    for base in ("hard_brake", "cut_in"):  # the planner variants: the same space in rounds of 25
        scenario = load_scenario(base)
        planner = load_space(ROOT / "configs" / "search" / f"{base}_planner.yaml", scenario)
        nominal = load_space(ROOT / "configs" / "search" / f"{base}.yaml", scenario)
        assert planner.paths == nominal.paths and planner.integer == nominal.integer
        assert planner.spec.search.round_size == 25 and planner.spec.parameters == nominal.spec.parameters
    assert sorted(p.name for p in (ROOT / "configs" / "search").glob("*.yaml")) == [
        "cut_in.yaml", "cut_in_planner.yaml", "hard_brake.yaml", "hard_brake_planner.yaml", "hard_brake_rare.yaml"]


def test_draws_become_valid_scenarios_with_the_drawn_values(hard_brake) -> None:
    space = parse_space(GOOD, hard_brake, "space.yaml")
    x = space.sample(np.random.default_rng(3), 20)
    assert x.shape == (20, 4) and np.all(np.isfinite(space.log_pdf(x)))
    for i, row in enumerate(x):
        spec = space.make_spec(row, name=f"hard_brake--t-{i}", seed=100 + i)
        values = space.values(row)
        assert spec.events[0].deceleration == values["events.0.deceleration"]
        assert spec.comms.latency == values["comms.latency"] in (0, 2, 6)
        assert spec.vehicles[0].start == values["vehicles.0.start"]
        assert spec.seed == 100 + i and spec.name == f"hard_brake--t-{i}"


def test_unknown_path_and_bad_parameters_name_their_lines(hard_brake) -> None:
    text = GOOD.replace("vehicles.0.start", "vehicles.0.strat").replace("std: 1.5", "std: -1")
    lines = problems(text, hard_brake)
    assert any(line.startswith("space.yaml:4: parameters.events.0.deceleration.std: expected a number > 0")
               for line in lines), lines
    text = GOOD.replace("vehicles.0.start", "vehicles.0.strat")
    assert problems(text, hard_brake) == [
        "space.yaml:6: parameters.vehicles.0.strat: expected a dotted path to an existing field of scenario "
        "hard_brake, got 'vehicles.0.strat'"]
    assert problems(GOOD.replace("events.0.deceleration", "events.3.deceleration"), hard_brake)[0].startswith(
        "space.yaml:4: parameters.events.3.deceleration: expected a dotted path to an existing field")
    assert problems(GOOD.replace("comms.latency", "seed"), hard_brake)[0].startswith("space.yaml:5: parameters.seed:")


def test_schema_errors(hard_brake) -> None:
    lines = problems(GOOD.replace("type: uniform", "type: uniformm").replace("criticality: min_ttc",
                                                                           "criticality: ttc"), hard_brake)
    assert any(line.startswith("space.yaml:2: criticality: expected one of") for line in lines), lines
    assert any(line.startswith("space.yaml:6: parameters.vehicles.0.start.type: expected one of") for line in lines)
    lines = problems(GOOD.replace("probs: [0.5, 0.3, 0.2]", "probs: [0.5, 0.3]"), hard_brake)
    assert lines == ["space.yaml:5: parameters.comms.latency: expected one probability per value (3), got 2"]
    assert problems(GOOD + "extra: 1\n", hard_brake)[0].startswith("space.yaml:8: extra: unknown field")


def test_a_range_that_gives_invalid_scenarios_is_refused(hard_brake) -> None:
    # the scenario schema allows at most 15 m/s² of braking
    lines = problems(GOOD.replace("low: 2, high: 12", "low: 2, high: 20"), hard_brake)
    assert len(lines) == 1 and lines[0].startswith("space.yaml:4: parameters.events.0.deceleration: the value 20.0")
    assert "events[0].deceleration" in lines[0]
    # a string field cannot take a continuous distribution
    lines = problems(GOOD.replace("vehicles.0.start", "vehicles.0.id"), hard_brake)
    assert lines[0].startswith("space.yaml:6: parameters.vehicles.0.id: expected a numeric field")


def test_distributions_are_normalised() -> None:
    rng = np.random.default_rng(0)
    for dist in (TruncNormal(type="truncnormal", mean=9.0, std=1.0, low=2.0, high=4.0),
                 Beta(type="beta", a=2.0, b=5.0, low=1.0, high=3.0)):
        lo, hi = dist.support()
        grid = np.linspace(lo, hi, 20001)
        assert np.trapezoid(np.exp(dist.log_pdf(grid)), grid) == pytest.approx(1.0, abs=2e-3)
        x = dist.sample(rng, 2000)
        assert np.all((x >= lo) & (x <= hi))
    far = TruncNormal(type="truncnormal", mean=0.0, std=1.0, low=8.0, high=9.0)  # a tail CDF rounds to 1
    assert 8.0 <= far.sample(rng, 100).min() and far.sample(rng, 100).mean() == pytest.approx(8.12, abs=0.05)


def test_cli_refuses_a_bad_space_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "space.yaml"
    bad.write_text(GOOD.replace("vehicles.0.start", "vehicles.0.strat"))
    exe = Path(sys.executable).with_name("diffplatoon")
    env = dict(os.environ, COLUMNS="80", OMP_NUM_THREADS="1")
    out = subprocess.run([str(exe), "search", "--policy", "cacc", "--scenario", "hard_brake", "--space", str(bad),
                          "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"{bad}:6: parameters.vehicles.0.strat: expected a dotted path to an existing field of scenario hard_brake, "
        "got 'vehicles.0.strat'"]
