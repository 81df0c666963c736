"""Scripted events on the real road and vehicles: cut-ins that wait for their gap, `when:` triggers, reports."""

from __future__ import annotations

import pytest

from diffplatoon.run import drive
from diffplatoon.scenarios import load_scenario, parse_scenario
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim import events
from diffplatoon.sim.simulation import Simulation

CUT_IN = """\
name: cut_in_case
seed: 5
duration: 20
road: {{type: highway, lanes: 3, length: 1200}}
traffic: {{count: 0}}
platoons:
  - {{id: p0, size: 4, lane: 1, start: 300, speed: 25, {gap}}}
vehicles:
  - {{id: cutter, lane: 0, start: {start}, speed: 25}}
events:
  - {{type: cut_in, at: 1, vehicle: cutter, ahead_of: p0.2{extra}}}
"""


def _cut_in(gap: str, start: float, extra: str = "") -> ScenarioSpec:
    return parse_scenario(CUT_IN.format(gap=gap, start=start, extra=extra))


def test_cut_in_waits_for_its_gap_instead_of_driving_into_a_members_side() -> None:
    # members 32 m apart (27 m bumper gaps); the cutter starts level with p0.1, not beside its gap
    spec = _cut_in("time_gap: 1.0", start=268)
    gaps: list[events.CutInGap] = []
    fired: list[tuple[str, float, float]] = []

    def watch(sim: Simulation) -> None:
        if abs(sim.time - 1.0) < 1e-6:
            gaps.append(events.cut_in_gap(sim, spec.events[0]))
        fired[:] = sim.event_state.cut_ins

    summary = drive(spec, "idm", None, 0, on_step=watch)
    assert gaps[0].front < 0  # at the trigger the cutter overlaps p0.1 along the lane: a lane change there hits it
    (report,) = summary.events
    assert report.startswith("cut_in@")
    t_fire = float(report.removeprefix("cut_in@").removesuffix("s"))
    assert t_fire > 3.0  # it first fell back towards the gap
    (cutter, t, smallest_gap), = fired
    assert cutter == "cutter" and t == pytest.approx(t_fire, abs=0.01)
    assert smallest_gap >= 5.0  # the default min_gap, both behind and ahead
    assert summary.collisions == []


def test_a_tightened_min_gap_fires_into_a_gap_the_default_refuses() -> None:
    # 9 m bumper gaps: a 5 m car leaves 2 m each side, less than the default 5 m
    default = drive(_cut_in("spacing: 9", start=286), "lane_keep", None, 0)
    assert default.events == ["cut_in: no gap by t=11s"]  # trigger at 1 s + `within` 10 s

    spec = _cut_in("spacing: 9", start=286, extra=", min_gap: 1.5")
    fired: list[tuple[str, float, float]] = []
    def watch(sim: Simulation) -> None:
        fired[:] = sim.event_state.cut_ins

    aggressive = drive(spec, "lane_keep", None, 0, on_step=watch)
    (report,) = aggressive.events
    assert report.startswith("cut_in@")
    (_, _, smallest_gap), = fired
    assert 1.5 <= smallest_gap < 5.0


WHEN = """\
name: when_case
seed: 2
duration: 12
road: {type: highway, lanes: 2, length: 1000}
traffic: {count: 0}
platoons:
  - {id: p0, size: 1, lane: 0, start: 100, speed: 25}
vehicles:
  - {id: lead, lane: 0, start: 160, speed: 20}
events:
  - type: brake
    vehicle: lead
    deceleration: 4
    duration: 1
    when: {gap: [p0.0, lead], below: 30}
  - type: speed_change
    vehicle: lead
    speed: 10
    when: {speed: p0.0, above: 30}
"""


def test_when_trigger_fires_on_its_condition_and_not_before() -> None:
    spec = parse_scenario(WHEN)
    sim = Simulation(spec)
    condition = spec.events[0].when
    before, fired_at = [], None
    for _ in range(spec.steps):
        gap = events.condition_value(sim, condition)
        result = sim.step(None)  # the member keeps 25 m/s: the 55 m gap closes at 5 m/s
        if result.events and fired_at is None:
            fired_at, fired_report = result.time, result.events
            break
        before.append(gap)
    assert fired_at is not None and all(g >= 30.0 for g in before)
    # the gap closes at about 5 m/s: 55 m -> 30 m takes 5 s; the step that crosses it reports the frame
    assert fired_report[0].startswith("brake@") and 4.9 < float(fired_report[0][6:-1]) < 5.3
    assert events.condition_value(sim, condition) < 30.0
    lead = sim.names["lead"]
    assert sim.world.accel[lead] == pytest.approx(-4.0)  # braking now
    for _ in range(spec.steps - sim.step_count):
        sim.step(None)
    # the member never drives faster than 25 m/s: the second event never fires, and says so
    assert sim.event_report() == [fired_report[0], "speed_change: condition not met by t=12s"]


def test_timed_event_reports_at_its_time() -> None:
    sim = Simulation(load_scenario("hard_brake"))
    while not sim.done:
        sim.step(None)
    assert sim.event_report() == ["brake@5s"]
