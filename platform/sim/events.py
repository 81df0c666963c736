"""Scripted events of a scenario: when they trigger, what they do to the World, and what is reported.

`EventState` is everything the events of one episode remember, as plain data (ints, floats,
names, strings) so that a Simulation can copy it; `apply(sim, state, log)` runs before every
simulation frame and `unfired(sim, state)` says, at the end of an episode, what never fired.

Triggers: ``at:`` fires in the first frame whose start time reaches it; ``when:`` in the
first frame whose start the condition holds (`condition_value`; a condition on a vehicle that
has left the road never holds). Actions:
- ``brake``: the vehicle's acceleration is overridden to -deceleration (never into reverse)
  for `duration`, then released;
- ``speed_change``: the vehicle's IDM desired speed becomes `speed`;
- ``comm_outage``: the named members (or every member of a named platoon) are silenced on the
  V2V channel for `duration`;
- ``cut_in``: the cutter first aligns with the gap in front of `ahead_of` (its IDM desired
  speed becomes that vehicle's speed plus a term that closes on the middle of the gap, so
  its own IDM still keeps it clear of its leader), then changes lane in the first frame the
  gap is there (`gap_open`), or gives up after `within` seconds and resumes its own speed (a
  `speed_change` of the cutter meanwhile sets the speed it resumes).

Report strings (the step result's `events`, the episode record's `events`):
``brake@5s`` / ``cut_in@12.33s`` when it fired (time rounded to 0.01 s),
``cut_in: no gap by t=14s``, ``brake: condition not met by t=30s``,
``brake: lead left the road by t=5s``.

Fired cut-ins are remembered with the gap they took (`EventState.cut_ins`): one into less
than the default `min_gap` (`SAFE_CUT_IN_GAP`) makes the cutter answerable for its collisions
in the next `CUT_IN_RESPONSIBILITY` seconds (`aggressive_cutter`, read by the collision evaluator).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from diffplatoon.scenarios.schema import (
    BrakeEvent,
    CommOutageEvent,
    Condition,
    CutInEvent,
    ScenarioSpec,
    SpeedChangeEvent,
)

if TYPE_CHECKING:  # the Simulation imports this module
    from diffplatoon.sim.simulation import Simulation

SAFE_CUT_IN_GAP = float(CutInEvent.model_fields["min_gap"].default)  # [m] the default min_gap
CUT_IN_RESPONSIBILITY = 3.0  # [s] after a cut-in into less than SAFE_CUT_IN_GAP, its collisions are the cutter's
ALIGN_GAIN = 0.25  # [1/s] desired-speed offset per metre from the middle of the gap
GAP_LOOKAHEAD = 1.0  # [s] the gap must hold this long at constant speeds for the cutter to go
_STANDING = 0.1  # [m/s] below this the rear vehicle of a time gap stands: the time gap is infinite


@dataclass
class Alignment:
    """A cut-in under way: the cutter is adjusting its speed towards its gap."""

    event: int  # index in spec.events
    give_up: float  # simulation time it stops looking [s]
    own_speed: float  # the cutter's desired speed before the event [m/s]


@dataclass
class EventState:
    """What the events of one episode remember (plain data; copy it to snapshot an episode)."""

    waiting: list[int]  # events not yet triggered: timed ones by time, then conditional ones
    aligning: list[Alignment] = field(default_factory=list)
    brakes: list[tuple[str, float, float]] = field(default_factory=list)  # vehicle, deceleration, end time
    # fired cut-ins: cutter, time [s], the smaller of its two gaps when it changed lane [m]
    cut_ins: list[tuple[str, float, float]] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # every report string so far, in order

    @classmethod
    def initial(cls, spec: ScenarioSpec) -> "EventState":
        events = spec.events
        order = sorted(range(len(events)), key=lambda i: (events[i].at is None, events[i].at or 0.0, i))
        return cls(waiting=order)


def _stamp(t: float) -> str:
    return f"{round(t, 2):g}s"


def apply(sim: "Simulation", state: EventState, log: list[str]) -> None:
    """Before a frame: trigger due events, advance cut-ins, hold active brakes; report into `log`."""
    if not (state.waiting or state.aligning or state.brakes):  # nothing pending (most frames)
        return

    def report(text: str) -> None:
        log.append(text)
        state.log.append(text)

    _trigger(sim, state, report)
    _align(sim, state, report)
    _hold_brakes(sim, state)


def _trigger(sim: "Simulation", state: EventState, report: Callable[[str], None]) -> None:
    """Fire the events whose time has come or whose condition holds; cut-ins start aligning."""
    world, events = sim.world, sim.spec.events
    still: list[int] = []
    for i in state.waiting:
        event = events[i]
        due = event.at <= world.time + 1e-9 if event.at is not None else condition_holds(sim, event.when)
        if not due:
            still.append(i)
            continue
        when = event.at if event.at is not None else world.time
        gone = [n for n in _vehicles_of(event) if not sim.is_live(n)]
        if gone:
            report(f"{event.type}: {gone[0]} left the road by t={_stamp(when)}")
        elif isinstance(event, CutInEvent):
            row = sim.names[event.vehicle]
            state.aligning.append(Alignment(i, world.time + event.within, float(world.target_speed[row])))
        else:
            _act(sim, state, event, when)
            report(f"{event.type}@{_stamp(when)}")
    state.waiting = still


def _align(sim: "Simulation", state: EventState, report: Callable[[str], None]) -> None:
    """Each aligning cutter changes lane if its gap is open, gives up, or steers its speed to the gap."""
    world, events = sim.world, sim.spec.events
    aligning: list[Alignment] = []
    for job in state.aligning:
        event = events[job.event]
        row = sim.names[event.vehicle]
        if not (sim.is_live(event.vehicle) and sim.is_live(event.ahead_of)):
            gone = event.vehicle if not sim.is_live(event.vehicle) else event.ahead_of
            report(f"cut_in: {gone} left the road by t={_stamp(world.time)}")
            continue
        if world.crashed[row]:
            report(f"cut_in: {event.vehicle} crashed by t={_stamp(world.time)}")
            continue
        gap = cut_in_gap(sim, event)
        if gap_open(gap, event.min_gap):
            state.cut_ins.append((event.vehicle, float(world.time), min(gap.rear, gap.front)))
            world.target_speed[row] = job.own_speed
            world.force_lane_change(row, int(world.lane[sim.names[event.ahead_of]]))
            report(f"cut_in@{_stamp(world.time)}")
        elif world.time + 1e-9 >= job.give_up:
            world.target_speed[row] = job.own_speed
            report(f"cut_in: no gap by t={_stamp(world.time)}")
        else:  # towards the middle of the gap, at the speed of the vehicle it will cut in front of
            world.target_speed[row] = max(0.0, gap.speed + ALIGN_GAIN * gap.middle_offset)
            aligning.append(job)
    state.aligning = aligning


def _hold_brakes(sim: "Simulation", state: EventState) -> None:
    """Override the acceleration of braking vehicles until their brake ends (then release it)."""
    world = sim.world
    brakes = []
    for name, decel, end in state.brakes:
        row = sim.names[name]
        live = sim.is_live(name)
        if world.time + 1e-9 < end and live and not world.crashed[row]:
            # brake to a stop, never into reverse
            world.set_accel_override(row, -min(decel, world.speed[row] * world.params.simulation_frequency))
            brakes.append((name, decel, end))
        elif live:
            world.set_accel_override(row, np.nan)
    state.brakes = brakes


def aggressive_cutter(state: EventState, name: str, time: float) -> bool:
    """Whether `name` cut in with a gap below `SAFE_CUT_IN_GAP` at most `CUT_IN_RESPONSIBILITY` s before `time`."""
    return any(cutter == name and 0.0 <= time - t <= CUT_IN_RESPONSIBILITY and gap < SAFE_CUT_IN_GAP
               for cutter, t, gap in state.cut_ins)


def unfired(sim: "Simulation", state: EventState) -> list[str]:
    """Report strings of the events that have not fired by now (the end of an episode)."""
    t = _stamp(sim.world.time)
    out = [f"cut_in: no gap by t={t}" for _ in state.aligning]
    out += [f"{sim.spec.events[i].type}: " + ("condition not met" if sim.spec.events[i].when is not None
                                              else "not reached") + f" by t={t}" for i in state.waiting]
    return out


def _act(sim: "Simulation", state: EventState, event: object, start: float) -> None:
    world = sim.world
    if isinstance(event, BrakeEvent):
        state.brakes.append((event.vehicle, event.deceleration, start + event.duration))
    elif isinstance(event, SpeedChangeEvent):
        jobs = [job for job in state.aligning if sim.spec.events[job.event].vehicle == event.vehicle]
        for job in jobs:  # the cutter takes the new speed once its cut-in ends
            job.own_speed = event.speed
        if not jobs:
            world.target_speed[sim.names[event.vehicle]] = event.speed
    elif isinstance(event, CommOutageEvent):
        ids = sim.comm_ids(event.vehicles)
        steps = int(round(event.duration * sim.spec.policy_frequency))
        begin = sim.step_count + 1  # messages of the step being simulated now
        sim.channel.silence(ids, until_step=begin + steps, from_step=begin)


def _vehicles_of(event: object) -> list[str]:
    """Vehicles an event acts on (that must still be on the road when it fires)."""
    if isinstance(event, CommOutageEvent):
        return []
    names = [event.vehicle]  # type: ignore[attr-defined]
    if isinstance(event, CutInEvent):
        names.append(event.ahead_of)
    return names


# -- conditions ------------------------------------------------------------------------------
def condition_value(sim: "Simulation", condition: Condition) -> float:
    """The condition's quantity now (`Condition` defines them); NaN when a vehicle has left the road."""
    names = condition.vehicles
    if not all(sim.is_live(n) for n in names):
        return float("nan")
    w = sim.world
    rows = [sim.names[n] for n in names]
    if condition.quantity == "speed":
        return float(w.speed[rows[0]])
    a, b = rows
    dx, dy = float(w.x[b] - w.x[a]), float(w.y[b] - w.y[a])
    if condition.quantity == "distance":
        return float(np.hypot(dx, dy))
    along = dx * np.cos(w.heading[a]) + dy * np.sin(w.heading[a])
    gap = abs(along) - 0.5 * float(w.length[a] + w.length[b])
    if condition.quantity == "gap":
        return float(gap)
    rear = a if along > 0 else b
    if gap <= 0:
        return 0.0
    speed = float(w.speed[rear])
    return gap / speed if speed > _STANDING else float("inf")


def condition_holds(sim: "Simulation", condition: Condition) -> bool:
    """Whether `condition` holds now (never while one of its vehicles is off the road)."""
    value = condition_value(sim, condition)
    if condition.below is not None:
        return bool(value < condition.below)
    return bool(value > condition.above)


# -- cut-in ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class CutInGap:
    """The gap a cutter aims at, on the lane of the vehicle it cuts in front of (all [m], [m/s])."""

    rear: float  # bumper-to-bumper gap from that vehicle's front to the cutter's rear
    front: float  # from the cutter's front to the rear of that vehicle's leader (inf without one)
    rear_closing: float  # speed at which `rear` shrinks
    front_closing: float  # speed at which `front` shrinks
    middle_offset: float  # how far the middle of the gap is ahead of the cutter's centre
    speed: float  # speed of the vehicle it cuts in front of


def cut_in_gap(sim: "Simulation", event: CutInEvent) -> CutInGap:
    """The cutter's position in its gap, measured along the lane of `event.ahead_of`."""
    w = sim.world
    cutter, behind = sim.names[event.vehicle], sim.names[event.ahead_of]
    front_row = int(w.neighbours(np.array([behind]))[0][0])
    rows = np.array([cutter, behind] + ([front_row] if front_row >= 0 else []))
    lane = np.full(len(rows), w.lane[behind])
    s, _ = w.table.local_coordinates(lane, w.x[rows], w.y[rows])
    half = 0.5 * w.length[rows]
    v = w.speed[rows]
    rear = float((s[0] - half[0]) - (s[1] + half[1]))
    if front_row >= 0:
        front = float((s[2] - half[2]) - (s[0] + half[0]))
        middle = 0.5 * ((s[1] + half[1]) + (s[2] - half[2]))
        front_closing = float(v[0] - v[2])
    else:
        front, front_closing = float("inf"), 0.0
        middle = s[1] + half[1] + event.min_gap + 2.0 * half[0]
    return CutInGap(rear, front, float(v[1] - v[0]), front_closing, float(middle - s[0]), float(v[1]))


def gap_open(gap: CutInGap, min_gap: float) -> bool:
    """Both gaps are at least `min_gap` now and `GAP_LOOKAHEAD` seconds ahead at constant speeds."""
    rear = min(gap.rear, gap.rear - gap.rear_closing * GAP_LOOKAHEAD)
    front = min(gap.front, gap.front - gap.front_closing * GAP_LOOKAHEAD)
    return rear >= min_gap and front >= min_gap
