"""Semantic validation: what a schema-valid scenario must also satisfy for the simulator to run it.

The schema (`diffplatoon.scenarios.schema`) checks each field alone; this module checks what
needs several fields or the built road, so that a scenario that validates always builds and
runs in seconds:
- raw numbers (before the schema sees them): finite, integers within 64 bits, floats of a
  size the road builders can compute with;
- the road: it builds, its lanes are finite, not absurdly long, at least a vehicle wide and
  have a speed limit a vehicle can drive;
- placement: every platoon member and named vehicle lies fully on its lane, fits its lane's
  width and overlaps no other vehicle (on any lane); routes connect and destinations exist;
- traffic and time: the vehicles it would place at the start, and the frames per policy step
  times the vehicles each frame moves, stay within budgets;
- references: each event names a vehicle of the kind it acts on (`brake`: a member or a
  `vehicles:` entry, never a platoon id; `speed_change` and the cutter of `cut_in`: a `vehicles:`
  entry, since members follow their policy; `comm_outage`: members or platoon ids), and a `when:`
  condition reads two different members or `vehicles:` entries; explicit V2V topology edges
  name members of the platoon.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from diffplatoon.scenarios.errors import Path, Problem
from diffplatoon.scenarios.limits import (
    FRAME_OVERHEAD,
    MAX_CONTROLLED,
    MAX_DENSITY,
    MAX_FRAMES_PER_STEP,
    MAX_INT,
    MAX_LANE_LENGTH,
    MAX_NUMBER,
    MAX_PLACED,
    MAX_ROAD_LENGTH,
    MAX_SPEED,
    MAX_STEP_WORK,
)
from diffplatoon.scenarios.schema import (
    BrakeEvent,
    CommOutageEvent,
    Condition,
    CutInEvent,
    ScenarioSpec,
    SpeedChangeEvent,
)
from diffplatoon.scenarios.yaml_source import line_of
from diffplatoon.geometry import VEHICLE_WIDTH, overlapping_pairs

Add = Callable[[Path, str], None]
_EXPONENT = re.compile(r"^[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)[eE][-+]?\d+$")


def number_problems(data: Any, lines: dict[Path, int], path: Path = ()) -> list[Problem]:
    """Non-finite or oversized numbers anywhere in parsed YAML data (bools are not numbers).

    PyYAML reads ``1e308`` (no dot, no exponent sign) as a string, which pydantic then reads as a
    number: such strings are checked as the numbers they become."""
    if isinstance(data, str) and _EXPONENT.match(data):
        data = float(data)
    if isinstance(data, dict):
        return [p for key, value in data.items() for p in number_problems(value, lines, path + (str(key),))]
    if isinstance(data, list):
        return [p for i, value in enumerate(data) for p in number_problems(value, lines, path + (i,))]
    message = None
    if isinstance(data, bool):
        return []
    if isinstance(data, int) and abs(data) > MAX_INT:
        message = f"expected an integer within 64 bits (|n| <= {MAX_INT}), got {data}"
    elif isinstance(data, float) and not math.isfinite(data):
        message = f"expected a finite number, got {data}"
    elif isinstance(data, float) and abs(data) > MAX_NUMBER:
        message = f"expected a number of magnitude at most {MAX_NUMBER:g}, got {data:g}"
    return [Problem(path, message, line_of(lines, path))] if message else []


def semantic_problems(spec: ScenarioSpec, lines: dict[Path, int] | None = None) -> list[Problem]:
    """Everything wrong with a schema-valid spec that only the built road or several fields reveal."""
    lines = lines or {}
    problems: list[Problem] = []

    def add(path: Path, message: str) -> None:
        problems.append(Problem(path, message, line_of(lines, path)))

    _road_problems(spec.road, add)
    if problems:
        return problems  # lanes cannot be resolved on a broken road
    _placement_problems(spec, add)
    _budget_problems(spec, add)
    _reference_problems(spec, add)
    _topology_problems(spec, add)
    return problems


def _road_problems(road: Any, add: Add) -> None:
    with np.errstate(all="ignore"):  # degenerate geometry is reported below, not warned about
        _lane_problems(road, add)


def _lane_problems(road: Any, add: Add) -> None:
    try:
        found = road.problems()
    except (ArithmeticError, ValueError) as exc:  # lane maths on extreme but finite geometry
        add(("road",), f"expected a road that can be built, but building it failed: {exc}")
        return
    for field_path, message in found:
        add(("road",) + _parse_path(field_path), message)
    if found:
        return
    graph = road.lane_graph()
    lanes = road.lane_shapes()
    for idx, lane in lanes.items():
        ends = (*lane.position(0.0, 0.0), *lane.position(lane.length, 0.0), lane.length)
        if not all(math.isfinite(v) for v in ends):
            add(("road",) + _parse_path(road._lane_path(idx)), f"expected finite lane geometry, got lane {list(idx)} "
                f"with non-finite positions or length")
            return
    checks = [
        (lambda i, ln: graph.nodes[i]["length"] <= MAX_LANE_LENGTH,
         f"expected lanes at most {MAX_LANE_LENGTH:g} m long, got lane {{lane}} of {{length:.0f}} m"),
        (lambda i, ln: graph.nodes[i]["width"] >= VEHICLE_WIDTH,
         f"expected lanes at least {VEHICLE_WIDTH:g} m wide (a vehicle's width), got lane {{lane}} {{width:g}} m wide"),
        (lambda i, ln: graph.nodes[i]["speed_limit"] <= MAX_SPEED,
         f"expected speed limits of at most {MAX_SPEED:g} m/s, got {{speed_limit:g}} m/s on lane {{lane}}"),
    ]
    failed = False
    for ok, message in checks:  # one problem per kind: the first lane that fails it
        bad = next((idx for idx, lane in lanes.items() if not ok(idx, lane)), None)
        if bad is not None:
            path = ("road",) + _parse_path(road._lane_path(bad))
            add(path, message.format(lane=list(bad), **graph.nodes[bad]))
            failed = True
    total = sum(graph.nodes[i]["length"] for i in graph.nodes)
    if total > MAX_ROAD_LENGTH and not failed:
        add(("road",), f"expected at most {MAX_ROAD_LENGTH / 1000:g} km of lanes in all, got {total / 1000:.0f} km")


def _placement_problems(spec: ScenarioSpec, add: Add) -> None:
    """Spawns on their lanes, fully on the road, fitting the lane, not overlapping; routes connect."""
    road = spec.road
    shapes = road.lane_shapes()
    boxes: list[tuple[float, float, float, float, float]] = []  # x, y, heading, length, width
    owners: list[tuple[Path, str]] = []

    def place(lane: tuple[str, str, int], s: float, length: float, width: float, path: Path, name: str) -> None:
        geometry = shapes[lane]
        x, y = geometry.position(s, 0.0)
        boxes.append((float(x), float(y), float(geometry.heading_at(s)), length, width))
        owners.append((path, name))

    def fits(lane: tuple[str, str, int], width: float, path: Path) -> bool:
        lane_width = road.lane_graph().nodes[lane]["width"]
        if width > lane_width:
            add(path, f"expected vehicles at most as wide as lane {list(lane)} ({lane_width:g} m), got {width:g} m")
        return width <= lane_width

    for i, platoon in enumerate(spec.platoons):
        lane = _lane(road, platoon.lane, ("platoons", i, "lane"), add)
        if lane is None:
            continue
        length, veh = road.lane_length(lane), platoon.vehicle
        head = platoon.start + veh.length / 2
        tail = platoon.start - (platoon.size - 1) * (veh.length + platoon.spawn_gap) - veh.length / 2
        if head > length:
            add(("platoons", i, "start"), f"expected the leader fully on lane {list(lane)} (start at most "
                f"{length - veh.length / 2:.1f} m), got {platoon.start}")
            continue
        if tail < 0:
            add(("platoons", i, "start"),
                f"expected the whole platoon to fit on lane {list(lane)}: {platoon.size} members need "
                f"start >= {platoon.start - tail:.1f} m, got {platoon.start}")
            continue
        if not fits(lane, veh.width, ("platoons", i, "vehicle", "width")):
            continue
        for k in range(platoon.size):
            s = platoon.start - k * (veh.length + platoon.spawn_gap)
            place(lane, s, veh.length, veh.width, ("platoons", i), f"{platoon.id}.{k}")
        _check_route(spec, road, i, lane, add)

    for i, vehicle in enumerate(spec.vehicles):
        lane = _lane(road, vehicle.lane, ("vehicles", i, "lane"), add)
        if lane is None:
            continue
        length, veh = road.lane_length(lane), vehicle.vehicle
        if not veh.length / 2 <= vehicle.start <= length - veh.length / 2:
            add(("vehicles", i, "start"), f"expected the vehicle fully on lane {list(lane)} (start between "
                f"{veh.length / 2:g} and {length - veh.length / 2:.1f} m), got {vehicle.start}")
            continue
        if fits(lane, veh.width, ("vehicles", i, "vehicle", "width")):
            place(lane, vehicle.start, veh.length, veh.width, ("vehicles", i), vehicle.id)

    if boxes:
        x, y, heading, length, width = np.array(boxes, dtype=np.float64).T
        for a, b in overlapping_pairs(x, y, heading, length, width).tolist():
            add(owners[b][0], f"expected vehicles not to overlap at spawn, but {owners[b][1]} overlaps {owners[a][1]}")


def _budget_problems(spec: ScenarioSpec, add: Add) -> None:
    """Bound the agents, the frames per policy step, what `Simulation._spawn_traffic` places (it
    turns a count into a density the same way) and the work of one policy step: frames per step
    times the vehicles each frame moves."""
    if spec.num_controlled > MAX_CONTROLLED:
        add(("platoons",), f"expected at most {MAX_CONTROLLED} platoon members in all, got {spec.num_controlled}")
        return
    if spec.frames_per_step > MAX_FRAMES_PER_STEP:
        add(("simulation_frequency",), f"expected at most {MAX_FRAMES_PER_STEP} simulation frames per policy step, "
            f"got simulation_frequency {spec.simulation_frequency} / policy_frequency {spec.policy_frequency}")
        return
    traffic, graph = spec.traffic, spec.road.lane_graph()
    lengths = [graph.nodes[i]["length"] for i in graph.nodes]
    lane_km = sum(lengths) / 1000.0
    density = traffic.density or 0.0
    if traffic.density is None and traffic.count:
        share = 1.0
        if traffic.spawn_region is not None:
            share = min(1.0, (traffic.spawn_region[1] - traffic.spawn_region[0]) / max(max(lengths), 1.0))
        density = 1.25 * traffic.count / (lane_km * share)
        if density > MAX_DENSITY:
            add(("traffic", "count"), f"expected at most {MAX_DENSITY:g} vehicles/km/lane in the spawn region, got "
                f"{traffic.count} vehicles there ({density:.0f} vehicles/km/lane)")
            return
    placed = density * lane_km
    if placed > MAX_PLACED:
        add(("traffic", "density"), f"expected at most {MAX_PLACED:g} traffic vehicles at the start, got about "
            f"{placed:.0f} ({density:g} vehicles/km/lane on {lane_km:.1f} km of lanes)")
        return
    vehicles = round(placed) + len(spec.vehicles) + spec.num_controlled
    work = spec.frames_per_step * (vehicles + FRAME_OVERHEAD)
    if work > MAX_STEP_WORK:
        add(("simulation_frequency",), f"expected at most {MAX_STEP_WORK} vehicle-frames per policy step, got "
            f"{spec.frames_per_step} frames x ({vehicles} vehicles + {FRAME_OVERHEAD} for a frame's fixed cost) = "
            f"{work}: lower simulation_frequency / policy_frequency or the traffic")


def _reference_problems(spec: ScenarioSpec, add: Add) -> None:
    """Unique ids; every event fires in time and names a vehicle of the kind it acts on."""
    ids = [p.id for p in spec.platoons] + [v.id for v in spec.vehicles]
    for dup in sorted({x for x in ids if ids.count(x) > 1}):
        add(("platoons",), f"expected unique platoon and vehicle ids, got '{dup}' more than once")
    members = [n for p in spec.platoons for n in p.member_names()]
    scripted = [v.id for v in spec.vehicles]
    kinds = {  # what each reference may name, and how to say it
        "member_or_vehicle": (set(members + scripted), "a platoon member (e.g. p0.1) or a vehicle from `vehicles:`"),
        "vehicle": (set(scripted), "a vehicle from `vehicles:` (platoon members follow their policy)"),
        "comm": (set(members + [p.id for p in spec.platoons]), "a platoon member or platoon id (only they use V2V)"),
    }

    def check(ref: str, kind: str, path: Path) -> None:
        valid, what = kinds[kind]
        if ref not in valid:
            listed = _short_list(sorted(valid)) if valid else "there are none"
            add(path, f"expected {what}: {listed}; got '{ref}'")

    for i, event in enumerate(spec.events):
        if event.at is not None and event.at >= spec.duration:
            add(("events", i, "at"), f"expected a time before the end of the scenario (duration {spec.duration:g} s), "
                f"got {event.at:g}")
        if event.when is not None:
            _condition_problems(event.when, ("events", i, "when"), check, add)
        if isinstance(event, CommOutageEvent):
            for ref in event.vehicles:
                check(ref, "comm", ("events", i, "vehicles"))
        elif isinstance(event, BrakeEvent):
            check(event.vehicle, "member_or_vehicle", ("events", i, "vehicle"))
        elif isinstance(event, (SpeedChangeEvent, CutInEvent)):
            check(event.vehicle, "vehicle", ("events", i, "vehicle"))
        if isinstance(event, CutInEvent):
            check(event.ahead_of, "member_or_vehicle", ("events", i, "ahead_of"))


def _condition_problems(condition: Condition, path: Path, check: Callable[[str, str, Path], None],
                        add: Add) -> None:
    """A `when:` condition reads vehicles on the road: members or `vehicles:` entries, two different ones."""
    quantity = condition.quantity
    refs = condition.vehicles
    if len(refs) == 1:
        check(refs[0], "member_or_vehicle", path + (quantity,))
        return
    for k, ref in enumerate(refs):
        check(ref, "member_or_vehicle", path + (quantity, k))
    if refs[0] == refs[1]:
        add(path + (quantity,), f"expected two different vehicles, got '{refs[0]}' twice")


def _topology_problems(spec: ScenarioSpec, add: Add) -> None:
    """Explicit [sender, receiver] edges must name two different members of each platoon using them."""
    for i, platoon in enumerate(spec.platoons):
        own = platoon.topology is not None
        topology = platoon.topology if own else spec.comms.topology
        if isinstance(topology, str):
            continue
        for k, (sender, receiver) in enumerate(topology):
            path = ("platoons", i, "topology", k) if own else ("comms", "topology", k)
            if not (0 <= sender < platoon.size and 0 <= receiver < platoon.size) or sender == receiver:
                add(path, f"expected an edge [i, j] of two different members 0..{platoon.size - 1} of platoon "
                    f"{platoon.id}, got {[sender, receiver]}")


def _parse_path(text: str) -> Path:
    """'lanes[2].to' -> ('lanes', 2, 'to')."""
    parts = text.replace("]", "").replace("[", ".").split(".")
    return tuple(int(p) if p.isdigit() else p for p in parts if p)


def _lane(road: Any, ref: Any, path: Path, add: Add) -> tuple[str, str, int] | None:
    try:
        return road.resolve_lane(ref)
    except ValueError as exc:
        add(path, str(exc))
        return None


def _check_route(spec: ScenarioSpec, road: Any, i: int, lane: tuple[str, str, int], add: Add) -> None:
    platoon = spec.platoons[i]
    if platoon.destination is not None:
        try:
            road.route(lane, platoon.destination)
        except ValueError as exc:
            add(("platoons", i, "destination"), str(exc))
    if platoon.route is not None:
        graph = road.lane_graph()
        previous = lane
        for j, ref in enumerate(platoon.route):
            nxt = _lane(road, ref, ("platoons", i, "route", j), add)
            if nxt is None:
                return
            if nxt != previous and not graph.has_edge(previous, nxt):
                add(("platoons", i, "route", j), f"expected a lane connected to {list(previous)}, got {list(nxt)}")
                return
            previous = nxt


def _short_list(items: list[str], limit: int = 8) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")
