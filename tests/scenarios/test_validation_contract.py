"""Validation is the whole contract: every case the robustness review found is refused at load time.

Each test feeds the real loader a document that used to crash the loader, validate and then crash
or hang the simulator, or be silently accepted, and asserts the one-line `file:line: field:
message` a user now sees. No other exception may escape.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from diffplatoon.scenarios import ScenarioError, load_scenario, parse_scenario

BASE = """\
name: base
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
    size: 3
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

LANE_GRAPH = """\
name: graph
duration: 10
road:
  type: lane_graph
  nodes: {a: [0, 0], b: [100, 0], c: [130, 30], d: [130, 130]}
  lanes:
    - {from: a, to: b, name: in}
    - {from: b, to: c, kind: arc, center: [100, 30], radius: 30, start_phase: -1.5707963267948966, end_phase: 0}
    - {from: c, to: d, kind: sine, amplitude: 0, name: out}
platoons:
  - {id: p0, size: 2, lane: in, start: 60, speed: 10}
"""


def errors_of(text: str, source: str = "bad.yaml") -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source)
    return info.value.lines


def edit(old: str, new: str, base: str = BASE) -> str:
    assert old in base
    return base.replace(old, new, 1)


def test_base_documents_are_valid() -> None:
    assert parse_scenario(BASE).platoons[0].size == 3
    assert parse_scenario(LANE_GRAPH).road.type == "lane_graph"


# --- the loader crashed ------------------------------------------------------------------------


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b"])
def test_control_characters_are_one_problem_with_a_line(char: str) -> None:
    (line,) = errors_of(edit("seed: 1", f"seed: 1{char}"))
    assert line.startswith("bad.yaml:2: <document>: ")
    assert "binary data" in line or f"control character #x{ord(char):04x}" in line


def test_integer_beyond_pythons_digit_limit() -> None:
    (line,) = errors_of(edit("seed: 1", "seed: " + "9" * 4301))
    assert line == "bad.yaml:2: seed: expected an integer of at most 40 digits, got 4301"


def test_roundabout_radius_that_overflows() -> None:
    text = edit("  type: highway\n  lanes: 3\n  length: 800", "  type: roundabout\n  radius: 1e308")
    lines = errors_of(text)  # PyYAML reads 1e308 as a string, pydantic as a number
    assert "bad.yaml:6: road.radius: expected a number between 1.0 and 1000.0, got '1e308'" in lines


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.yaml"
    path.write_bytes(os.urandom(4096) + b"\x00")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    (line,) = info.value.lines
    assert line.startswith(f"{path}:") and ("binary data" in line or "control character" in line
                                            or "invalid YAML" in line)


def test_training_configs_refuse_a_binary_file_in_one_line(tmp_path: Path) -> None:
    from diffplatoon.agents.diffusion.pretrain import load_config as load_pretrain
    from diffplatoon.agents.rllib.train import load_config as load_train

    path = tmp_path / "config.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    for load in (load_train, load_pretrain):
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert info.value.lines == [f"{path}:3: <document>: expected a YAML text file, got binary data (a NUL byte)"]


# --- validated, then crashed or hung the simulator ---------------------------------------------


@pytest.mark.parametrize("event", [
    "type: brake\n    at: 5\n    vehicle: p0",
    "type: speed_change\n    at: 5\n    speed: 10\n    vehicle: p0",
    "type: cut_in\n    at: 5\n    vehicle: p0\n    ahead_of: lead",
])
def test_event_naming_a_platoon_id_where_a_vehicle_is_needed(event: str) -> None:
    (line,) = errors_of(edit("type: brake\n    at: 5\n    vehicle: lead", event))
    assert line.startswith("bad.yaml:")
    assert "events[0].vehicle: expected" in line and line.endswith("got 'p0'")
    assert "lead" in line  # the valid targets are listed


def test_cut_in_ahead_of_a_platoon_id() -> None:
    text = edit("type: brake\n    at: 5\n    vehicle: lead", "type: cut_in\n    at: 5\n    vehicle: lead\n    ahead_of: p0")
    (line,) = errors_of(text)
    assert "events[0].ahead_of: expected a platoon member (e.g. p0.1) or a vehicle from `vehicles:`: " in line
    assert "lead, p0.0, p0.1, p0.2" in line and line.endswith("got 'p0'")


def test_speed_change_on_a_platoon_member_it_cannot_act_on() -> None:
    text = edit("type: brake\n    at: 5\n    vehicle: lead", "type: speed_change\n    at: 5\n    vehicle: p0.1\n    speed: 10")
    assert errors_of(text) == [
        "bad.yaml:24: events[0].vehicle: expected a vehicle from `vehicles:` (platoon members follow their policy): "
        "lead; got 'p0.1'"
    ]


def test_comm_outage_of_infinite_duration() -> None:
    text = edit("type: brake\n    at: 5\n    vehicle: lead", "type: comm_outage\n    at: 5\n    vehicles: [p0]\n    duration: .inf")
    assert "bad.yaml:25: events[0].duration: expected a finite number, got inf" in errors_of(text)


@pytest.mark.parametrize("region", ["[500, 500]", "[500, 500.0001]", "[500, 400]", "[-10, 100]"])
def test_degenerate_spawn_region(region: str) -> None:
    (line,) = errors_of(edit("  count: 5", f"  count: 5\n  spawn_region: {region}"))
    assert line.startswith("bad.yaml:8: traffic: spawn_region must satisfy 0 <= start and end - start >= 10 m")


def test_count_squeezed_into_a_small_region_is_over_the_density_budget() -> None:
    (line,) = errors_of(edit("  count: 5", "  count: 500\n  spawn_region: [100, 120]"))
    assert line.startswith("bad.yaml:9: traffic.count: expected at most 150 vehicles/km/lane in the spawn region")


@pytest.mark.parametrize("value, message", [
    ("[20, .inf]", "traffic.speed_range[1]: expected a finite number, got inf"),
    ("[20, 80]", "traffic: speed_range must satisfy 0 <= lo <= hi <= 60, got [20.0, 80.0]"),
    ("[28, 20]", "traffic: speed_range must satisfy 0 <= lo <= hi <= 60, got [28.0, 20.0]"),
])
def test_speed_range(value: str, message: str) -> None:
    lines = errors_of(edit("  count: 5", f"  count: 5\n  speed_range: {value}"))
    assert any(line.endswith(message) for line in lines), lines


@pytest.mark.parametrize("value, message", [
    ("[4.5, 3.5]", "traffic.idm: delta_range must satisfy 0 < lo <= hi <= 10, got [4.5, 3.5]"),
    ("[.nan, 4]", "traffic.idm.delta_range[0]: expected a finite number, got nan"),
    ("[0, 4]", "traffic.idm: delta_range must satisfy 0 < lo <= hi <= 10, got [0.0, 4.0]"),
])
def test_idm_delta_range(value: str, message: str) -> None:
    lines = errors_of(edit("  count: 5", f"  count: 5\n  idm:\n    delta_range: {value}"))
    assert any(line.endswith(message) for line in lines), lines


@pytest.mark.parametrize("old, new, where", [
    ("b: [100, 0]", "b: [.nan, 0]", "bad.yaml:5: road.nodes.b[0]: expected a finite number, got nan"),
    ("c: [130, 30]", "c: [130, 1.0e+300]", "bad.yaml:5: road.nodes.c[1]: expected a number of magnitude at most 1e+09"),
    ("c: [130, 30]", "c: [130, .inf]", "bad.yaml:5: road.nodes.c[1]: expected a finite number, got inf"),
    ("radius: 30", "radius: .inf", "bad.yaml:8: road.lanes[1].radius: expected a finite number, got inf"),
    ("end_phase: 0", "end_phase: -.inf", "bad.yaml:8: road.lanes[1].end_phase: expected a finite number, got -inf"),
    ("amplitude: 0", "amplitude: .nan", "bad.yaml:9: road.lanes[2].amplitude: expected a finite number, got nan"),
    ("{from: a, to: b, name: in}", "{from: a, to: b, name: in, priority: 18446744073709551616}",
     "bad.yaml:7: road.lanes[0].priority: expected an integer between -1000 and 1000, got 18446744073709551616"),
    ("{from: a, to: b, name: in}", "{from: a, to: b, name: in, priority: 5000}",
     "bad.yaml:7: road.lanes[0].priority: expected an integer between -1000 and 1000, got 5000"),
    ("{from: a, to: b, name: in}", "{from: a, to: b, name: in, priority: true}",
     "bad.yaml:7: road.lanes[0].priority: expected an integer, got True"),
    ("radius: 30", "radius: nan", "bad.yaml:8: road.lanes[1].radius: expected a finite number, got 'nan'"),
    ("radius: 30", "radius: 1.0e-300", "bad.yaml:8: road.lanes[1].radius: expected a number between 1.0 and 1000.0"),
    ("b: [100, 0]", "b: [0, 0]", "bad.yaml:3: road: lanes.0.to: expected distinct positions for nodes 'a' and 'b'"),
    ("amplitude: 0", "amplitude: '-inf'", "bad.yaml:9: road.lanes[2].amplitude: expected a finite number, got '-inf'"),
])
def test_lane_graph_numbers(old: str, new: str, where: str) -> None:
    lines = errors_of(edit(old, new, LANE_GRAPH))
    assert any(line.startswith(where) for line in lines), lines


def test_explicit_topology_edge_out_of_range() -> None:
    text = edit("time_gap: 0.8", "time_gap: 0.8\ncomms:\n  topology: [[0, 1], [1, 3]]")
    assert errors_of(text) == [
        "bad.yaml:18: comms.topology[1]: expected an edge [i, j] of two different members 0..2 of platoon p0, got [1, 3]"
    ]
    text = edit("time_gap: 0.8", "time_gap: 0.8\n    topology: [[2, 2]]")
    assert errors_of(text) == [
        "bad.yaml:17: platoons[0].topology[0]: expected an edge [i, j] of two different members 0..2 of platoon p0, "
        "got [2, 2]"
    ]


def test_very_long_road_with_a_density() -> None:
    text = edit("  length: 800", "  length: 1000000").replace("count: 5", "density: 20")
    assert errors_of(text) == ["bad.yaml:7: road.length: expected a number between 1.0 and 20000.0, got 1000000"]
    far = edit("d: [130, 130]", "d: [130, 1000000]", LANE_GRAPH)  # a lane graph's lanes are as long as its nodes say
    assert errors_of(far) == ["bad.yaml:9: road.lanes[2]: expected lanes at most 20000 m long, got lane ['c', 'd', 0] "
                              "of 999970 m"]


def test_density_over_the_traffic_budget() -> None:
    text = edit("  length: 800", "  length: 15000").replace("count: 5", "density: 100")
    (line,) = errors_of(text)
    assert line.startswith("bad.yaml:9: traffic.density: expected at most 1250 traffic vehicles at the start, got about 4500")


@pytest.mark.parametrize("field, value", [
    ("progress", ".nan"), ("collision", "-.inf"), ("gap_keeping", ".nan"), ("progress", "1.0e6"),
])
def test_reward_weights_finite_and_bounded(field: str, value: str) -> None:
    (line,) = errors_of(edit("events:", f"reward:\n  {field}: {value}\nevents:"))
    assert line.startswith(f"bad.yaml:22: reward.{field}: expected a ")


def test_speed_limit_beyond_any_vehicle() -> None:
    lines = errors_of(edit("  length: 800", "  length: 800\n  speed_limit: 1e308"))
    assert "bad.yaml:8: road.speed_limit: expected a number > 0 and <= 60.0, got '1e308'" in lines
    assert errors_of(edit("  length: 800", "  length: 800\n  speed_limit: 100")) == [
        "bad.yaml:8: road.speed_limit: expected a number > 0 and <= 60.0, got 100"
    ]


# --- silently accepted -------------------------------------------------------------------------


def test_duplicate_keys_name_both_lines() -> None:
    text = BASE + "platoons:\n  - id: q\n    lane: 0\n"
    assert errors_of(text) == ["bad.yaml:25: platoons: duplicate key: given at line 10 and again at line 25"]
    nested = edit("  lanes: 3", "  lanes: 3\n  lanes: 2")
    assert errors_of(nested) == ["bad.yaml:7: road.lanes: duplicate key: given at line 6 and again at line 7"]


def test_lane_true_is_not_lane_one() -> None:
    lines = errors_of(edit("    lane: 1\n    start: 200", "    lane: true\n    start: 200"))
    assert lines == ["bad.yaml:13: platoons[0].lane: expected a lane: an integer id, a lane name or [from, to, id], got True"]
    (line,) = errors_of(edit("size: 3", "size: true"))
    assert line == "bad.yaml:12: platoons[0].size: expected an integer, got True"


def test_vehicle_half_off_the_road() -> None:
    assert errors_of(edit("start: 240", "start: 0")) == [
        "bad.yaml:20: vehicles[0].start: expected the vehicle fully on lane ['start', 'end', 1] "
        "(start between 2.5 and 797.5 m), got 0.0"
    ]
    (line,) = errors_of(edit("start: 240", "start: 799"))
    assert "vehicles[0].start: expected the vehicle fully on lane" in line


def test_lane_narrower_than_a_vehicle() -> None:
    lines = errors_of(edit("  length: 800", "  length: 800\n  lane_width: 1.0e-6"))
    assert lines == ["bad.yaml:8: road.lane_width: expected a number between 2.0 and 10.0, got 1e-06"]
    narrow = edit("{from: a, to: b, name: in}", "{from: a, to: b, name: in, width: 1.5}", LANE_GRAPH)
    assert errors_of(narrow) == ["bad.yaml:7: road.lanes[0].width: expected a number between 2.0 and 10.0, got 1.5"]


def test_vehicle_wider_than_its_lane() -> None:
    text = edit("  length: 800", "  length: 800\n  lane_width: 2.5").replace(
        "time_gap: 0.8", "time_gap: 0.8\n    vehicle: {width: 3}")
    assert errors_of(text) == [
        "bad.yaml:18: platoons[0].vehicle.width: expected vehicles at most as wide as lane ['start', 'end', 1] (2.5 m), got 3 m"
    ]


def test_overlap_on_crossing_lanes_is_found_by_geometry() -> None:
    text = """\
name: crossing
road: {type: intersection}
platoons:
  - {id: p0, size: 1, lane: south_in, start: 50, speed: 5}
vehicles:
  - {id: a, lane: [south_in, north_out, 0], start: 11}
  - {id: b, lane: [west_in, east_out, 0], start: 11}
"""
    assert errors_of(text) == ["bad.yaml:7: vehicles[1]: expected vehicles not to overlap at spawn, but b overlaps a"]
    assert parse_scenario(text.replace("east_out, 0], start: 11", "east_out, 0], start: 18"))


def test_empty_sweep_list_and_oversized_grid() -> None:
    text = BASE + "sweep:\n  traffic.count: []\n"
    (line,) = errors_of(text)
    assert line == "bad.yaml:26: sweep.traffic.count: expected at least 1 item, got []"
    grid = BASE + "sweep:\n  seed: [" + ", ".join(map(str, range(40))) + "]\n  duration: [" + ", ".join(
        str(10 + k) for k in range(30)) + "]\n"
    assert errors_of(grid) == ["bad.yaml:25: sweep: expected a grid of at most 1000 variants, got 1200"]


def test_every_problem_of_the_contract_in_one_pass() -> None:
    text = (BASE.replace("seed: 1", "seed: true")
            .replace("  count: 5", "  count: 5\n  speed_range: [20, .inf]")
            .replace("start: 240", "start: 0"))
    lines = errors_of(text)
    assert [line.split(": ")[0] + ": " + line.split(": ")[1] for line in lines] == [
        "bad.yaml:2: seed", "bad.yaml:10: traffic.speed_range[1]",
    ]  # placement is checked once the schema holds


# --- budgets that keep an accepted scenario runnable in seconds ---------------------------------


def test_frames_per_step_bounded() -> None:
    text = edit("duration: 20", "duration: 20\nsimulation_frequency: 200\npolicy_frequency: 1")
    assert errors_of(text) == [
        "bad.yaml:4: simulation_frequency: expected at most 20 simulation frames per policy step, "
        "got simulation_frequency 200 / policy_frequency 1"
    ]


def test_step_work_bounded() -> None:
    text = edit("duration: 20", "duration: 20\nsimulation_frequency: 15\npolicy_frequency: 1").replace(
        "count: 5", "count: 600").replace("length: 800", "length: 8000")
    (line,) = errors_of(text)
    assert line.startswith("bad.yaml:4: simulation_frequency: expected at most 7500 vehicle-frames per policy step, "
                           "got 15 frames x (")


def test_platoon_members_bounded() -> None:
    many = "".join(f"  - {{id: q{i}, size: 16, lane: 0, start: {300 + 400 * i}, speed: 20, spacing: 5}}\n" for i in range(5))
    text = edit("  length: 800", "  length: 5000").replace("platoons:\n", "platoons:\n" + many, 1)
    assert errors_of(text) == ["bad.yaml:10: platoons: expected at most 64 platoon members in all, got 83"]


# --- files the loader cannot read ----------------------------------------------------------------


def test_unreadable_paths_are_scenario_errors(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with open(big, "wb") as handle:
        handle.truncate(5_000_000)  # sparse: refused from its size, never read
    cases = {
        str(tmp_path): "expected an existing scenario file, found none",
        str(big): "expected a scenario file of at most 1000000 bytes, got 5000000",
        "a\x00b.yaml": "expected a readable file, got: embedded null byte",
        "x" * 5000 + ".yaml": "expected a readable file, got: File name too long",
    }
    for path, message in cases.items():
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert info.value.lines == [f"{path}: <document>: {message}"]
