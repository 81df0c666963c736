"""Every class of scenario error produces the exact message a user sees: file:line: field: what."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from diffplatoon.scenarios import ScenarioError, load_scenario, parse_scenario

VALID = """\
name: tiny
description: A valid base scenario the error tests break one field at a time.
seed: 1
duration: 20
road:
  type: highway
  lanes: 3
  length: 800
traffic:
  count: 5
platoons:
  - id: p0
    size: 4
    lane: 1
    start: 200
    speed: 25
    time_gap: 0.8
vehicles:
  - id: lead
    lane: 1
    start: 240
events:
  - type: brake
    at: 5
    vehicle: lead
"""


def errors_of(text: str, source: str = "broken.yaml") -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source)
    return info.value.lines


def test_valid_base_loads() -> None:
    spec = parse_scenario(VALID, "ok.yaml")
    assert spec.platoons[0].size == 4 and spec.road.type == "highway"


def test_out_of_range_integer_names_file_line_field_and_range() -> None:
    text = VALID.replace("size: 4", "size: -2")
    assert errors_of(text) == ["broken.yaml:13: platoons[0].size: expected an integer between 1 and 16, got -2"]


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace("size: 4", "size: 40").replace("speed: 25", "speed: fast").replace("seed: 1", "sed: 1")
    lines = errors_of(text)
    assert lines == [
        "broken.yaml:3: sed: unknown field; expected one of: action, comms, description, duration, events, name, "
        "observation, platoons, policy_frequency, reward, road, safety, seed, simulation_frequency, sweep, traffic, "
        "vehicles",
        "broken.yaml:13: platoons[0].size: expected an integer between 1 and 16, got 40",
        "broken.yaml:16: platoons[0].speed: expected a number, got 'fast'",
    ]


def test_missing_required_field() -> None:
    text = VALID.replace("name: tiny\n", "")
    assert errors_of(text) == ["broken.yaml:1: name: expected this required field, found nothing"]


def test_unknown_road_type() -> None:
    text = VALID.replace("type: highway", "type: motorway")
    (line,) = errors_of(text)
    assert line.startswith("broken.yaml:6: road.type: expected one of 'highway', 'onramp_merge'")
    assert line.endswith("got 'motorway'")


def test_spawn_off_its_lane() -> None:
    text = VALID.replace("start: 200", "start: 900")
    assert errors_of(text) == [
        "broken.yaml:15: platoons[0].start: expected the leader fully on lane ['start', 'end', 1] "
        "(start at most 797.5 m), got 900.0"
    ]


def test_platoon_that_does_not_fit() -> None:
    text = VALID.replace("start: 200", "start: 30").replace("start: 240", "start: 100")
    (line,) = errors_of(text)
    assert line.startswith("broken.yaml:15: platoons[0].start: expected the whole platoon to fit on lane")
    assert "got 30.0" in line


def test_overlapping_spawn() -> None:
    text = VALID.replace("start: 240", "start: 203")
    (line,) = errors_of(text)
    assert line == (
        "broken.yaml:19: vehicles[0]: expected vehicles not to overlap at spawn, but lead overlaps p0.0"
    )


def test_event_naming_unknown_vehicle_and_time_after_end() -> None:
    text = VALID.replace("at: 5", "at: 25").replace("vehicle: lead", "vehicle: ghost")
    lines = errors_of(text)
    assert lines[0] == "broken.yaml:24: events[0].at: expected a time before the end of the scenario (duration 20 s), got 25"
    assert lines[1].startswith("broken.yaml:25: events[0].vehicle: expected a platoon member (e.g. p0.1) or a vehicle")
    assert lines[1].endswith("got 'ghost'")


def test_unreachable_destination() -> None:
    text = VALID.replace("time_gap: 0.8", "time_gap: 0.8\n    destination: nowhere")
    (line,) = errors_of(text)
    assert line.startswith("broken.yaml:18: platoons[0].destination: ")
    assert "nowhere" in line


def test_invalid_yaml_syntax() -> None:
    text = VALID.replace("  lanes: 3", "  lanes: [3")
    (line,) = errors_of(text)
    assert line.startswith("broken.yaml:") and ": <document>: invalid YAML syntax:" in line


def test_empty_file_and_non_mapping_document() -> None:
    assert errors_of("") == ["broken.yaml: <document>: expected a YAML mapping of scenario fields, got an empty file"]
    assert errors_of("# only a comment\n") == [
        "broken.yaml: <document>: expected a YAML mapping of scenario fields, got an empty document"
    ]
    assert errors_of("- a\n- b\n") == [
        "broken.yaml:1: <document>: expected a YAML mapping of scenario fields at the top level, got a list"
    ]


def test_unsafe_yaml_tags_are_rejected() -> None:
    (line,) = errors_of("name: !!python/object/apply:os.system ['true']\n")
    assert "invalid YAML" in line


def test_deeply_nested_document_is_bounded() -> None:
    text = "name: x\nplatoons: " + "[" * 5000 + "]" * 5000 + "\n"
    start = time.perf_counter()
    (line,) = errors_of(text)
    assert "expected at most 40 levels of nesting" in line
    assert time.perf_counter() - start < 5


def test_alias_bomb_is_bounded() -> None:
    rows = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        rows.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    text = "name: bomb\nplatoons: []\nbomb:\n" + "\n".join("  " + r for r in rows) + "\n"
    start = time.perf_counter()
    (line,) = errors_of(text)
    assert "YAML nodes after alias expansion" in line
    assert time.perf_counter() - start < 10


def test_huge_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    text = "name: huge\ndescription: '" + "x" * 1_200_000 + "'\n"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.lines == [
        f"{path}: <document>: expected a scenario file of at most 1000000 bytes, got {len(text)}"
    ]


def test_missing_file_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "nope.yaml")
    assert "expected an existing scenario file" in str(info.value)
    with pytest.raises(ScenarioError) as info:
        load_scenario("no_such_scenario")
    assert "expected a scenario file path or a catalogue name" in str(info.value)


def test_sweep_with_bad_path_and_bad_value() -> None:
    text = VALID + "sweep:\n  traffic.densty: [10, 20]\n"
    assert errors_of(text) == ["broken.yaml:27: sweep.traffic.densty: expected a dotted path to an existing field, got 'traffic.densty'"]
    text = VALID.replace("count: 5", "density: 5") + "sweep:\n  traffic.density: [10, -3]\n"
    (line,) = errors_of(text)
    assert line.startswith("broken.yaml:26: sweep: variant tiny--density=-3 is invalid: traffic.density")
