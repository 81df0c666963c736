"""Event triggers are validated like the rest of the schema: one of `at`/`when`, `when:` names real vehicles."""

from __future__ import annotations

import pytest

from diffplatoon.scenarios import ScenarioError, parse_scenario

BASE = """\
name: base
duration: 20
road: {type: highway, lanes: 3, length: 800}
platoons:
  - {id: p0, size: 3, lane: 1, start: 200, speed: 25, time_gap: 0.8}
vehicles:
  - {id: lead, lane: 1, start: 240}
events:
  - type: brake
    vehicle: lead
"""
TARGETS = "lead, p0.0, p0.1, p0.2"


def errors_of(event_lines: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + event_lines, "bad.yaml")
    return info.value.lines


def test_a_valid_when_condition_loads() -> None:
    spec = parse_scenario(BASE + "    when: {time_gap: [p0.0, lead], below: 1.2}\n", "ok.yaml")
    (event,) = spec.events
    assert event.at is None and event.when.quantity == "time_gap" and event.when.vehicles == ["p0.0", "lead"]


@pytest.mark.parametrize("lines, expected", [
    ("    when: {gap: [lead, p0.9], below: 10}\n",
     f"bad.yaml:11: events[0].when.gap[1]: expected a platoon member (e.g. p0.1) or a vehicle from `vehicles:`: "
     f"{TARGETS}; got 'p0.9'"),
    ("    when:\n      distance:\n        - ghost\n        - lead\n      above: 3\n",
     f"bad.yaml:13: events[0].when.distance[0]: expected a platoon member (e.g. p0.1) or a vehicle from "
     f"`vehicles:`: {TARGETS}; got 'ghost'"),
    ("    when: {speed: p0, above: 10}\n",  # a platoon id has no speed
     f"bad.yaml:11: events[0].when.speed: expected a platoon member (e.g. p0.1) or a vehicle from `vehicles:`: "
     f"{TARGETS}; got 'p0'"),
    ("    when: {gap: [lead, lead], below: 10}\n",
     "bad.yaml:11: events[0].when.gap: expected two different vehicles, got 'lead' twice"),
    ("    when: {speed: lead}\n", "bad.yaml:11: events[0].when: give exactly one of below, above"),
    ("    when: {speed: lead, gap: [lead, p0.0], below: 3}\n",
     "bad.yaml:11: events[0].when: give exactly one of distance, gap, time_gap, speed, got gap, speed"),
    ("    when: {speed: lead, below: 3, colour: red}\n",
     "bad.yaml:11: events[0].when.colour: unknown field; expected one of: above, below, distance, gap, speed, "
     "time_gap"),
    ("    at: 3\n    when: {speed: lead, above: 10}\n",
     "bad.yaml:9: events[0]: give exactly one of at (a time) or when (a condition)"),
    ("", "bad.yaml:9: events[0]: give exactly one of at (a time) or when (a condition)"),
])
def test_bad_when_conditions_are_one_line_file_line_errors(lines: str, expected: str) -> None:
    assert errors_of(lines) == [expected]


def test_cut_in_min_gap_is_bounded() -> None:
    text = BASE.replace("  - type: brake\n    vehicle: lead\n",
                        "  - {type: cut_in, at: 2, vehicle: lead, ahead_of: p0.1, min_gap: -1}\n")
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "bad.yaml")
    assert info.value.lines == ["bad.yaml:9: events[0].min_gap: expected a number between 0 and 100, got -1"]
