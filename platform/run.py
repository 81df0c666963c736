"""Run or render a scenario with a controller: the library side of `diffplatoon scenario run`
and `diffplatoon scenario render`.

Application layer: it drives a `Simulation` with a controller resolved by name, either a
built-in one or a policy of `diffplatoon.agents`, and is the one place that joins the
simulator to the agents (the simulator itself never imports them). `run_scenario` returns a
step summary; `render_scenario` writes a top-down GIF with `diffplatoon.sim.render`. The
agents package is imported when a policy is asked for, so a `lane_keep` run does not load it.

Controllers:
- ``lane_keep`` (built in): zero acceleration, highway-env's lane-keeping steering towards the
  lane each member is on;
- any policy string `diffplatoon.agents.policy.make_policy` resolves (``idm``, ``cacc``,
  ``random``, ``cacc:time_gap=0.6``, ...), or a `Policy` object.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import LEADER_FEATURES, Observation, Observer
from diffplatoon.sim.simulation import Simulation

BUILTIN_CONTROLLERS = ("lane_keep",)

_GAP, _PRESENT = LEADER_FEATURES.index("gap"), LEADER_FEATURES.index("present")


class _LaneKeep:
    """Zero acceleration; steering that holds each member on the lane it is on."""

    def reset(self, sim: Simulation) -> None:
        self.sim = sim

    def act(self, obs: Observation) -> np.ndarray:
        sim = self.sim
        rows = sim.controlled
        actions = np.zeros((len(rows), 2))
        live = sim.live_members()
        if live.any():
            actions[live, 1] = sim.world.lane_keeping_steering(rows[live], sim.world.lane[rows[live]])
        return actions


class _PolicyDriver:
    """Adapter giving an `agents` policy the reset(sim) / act(obs) shape used here."""

    def __init__(self, policy: Any):
        self.policy = policy

    def reset(self, sim: Simulation) -> None:
        from diffplatoon.agents.policy import SimInfo

        self.policy.reset(SimInfo.from_spec(sim.spec, sim.episode))

    def act(self, obs: Observation) -> np.ndarray:
        return np.asarray(self.policy.act(obs), dtype=np.float64)


def make_controller(controller: str | Any, spec: ScenarioSpec) -> _LaneKeep | _PolicyDriver:
    """A driver for `controller`: a built-in name, a policy string, or a `Policy` object."""
    if not isinstance(controller, str):
        return _PolicyDriver(controller)
    if controller == "lane_keep":
        return _LaneKeep()
    try:
        from diffplatoon.agents.policy import make_policy
    except ImportError as err:  # agents not installed or broken: only the built-ins work
        raise ValueError(f"unknown controller {controller!r}; built-in controllers: "
                         f"{', '.join(BUILTIN_CONTROLLERS)} ({err})") from err
    try:
        return _PolicyDriver(make_policy(controller, spec))
    except ValueError as err:
        raise ValueError(f"{err}; built-in controllers: {', '.join(BUILTIN_CONTROLLERS)}") from err


@dataclass
class StepRecord:
    """What happened in one policy step of a run."""

    step: int
    time: float  # [s] at the end of the step
    collisions: int  # collisions that began during the step (any vehicles)
    departures: int  # platoon members that left the road during the step
    events: list[str]  # scripted events fired, "type@time"
    members_alive: int
    mean_speed: float  # [m/s] over alive members (NaN if none)
    min_gap: float  # [m] smallest bumper-to-bumper gap of an alive member to its leader (NaN if none)


@dataclass
class RunSummary:
    """A headless run: per-step records and totals."""

    scenario: str
    controller: str
    episode: int
    seconds: float
    steps: list[StepRecord] = field(default_factory=list)
    collisions: list[tuple[str, str, float]] = field(default_factory=list)  # (a, b, time)
    departures: list[tuple[str, float]] = field(default_factory=list)  # (member, time): members only
    events: list[str] = field(default_factory=list)
    wall_time: float = 0.0  # [s]

    @property
    def mean_speed(self) -> float:
        """Mean over steps of the members' mean speed [m/s]."""
        v = np.array([s.mean_speed for s in self.steps], dtype=float)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    @property
    def min_gap(self) -> float:
        """Smallest gap of any member to its leader over the run [m]."""
        g = np.array([s.min_gap for s in self.steps], dtype=float)
        return float(np.nanmin(g)) if np.isfinite(g).any() else float("nan")

    @property
    def steps_per_second(self) -> float:
        return len(self.steps) / self.wall_time if self.wall_time > 0 else float("nan")

    def table(self, every: float = 1.0) -> Any:
        """A `rich` table of the steps every `every` seconds (plus steps with collisions or events)."""
        from rich.table import Table

        from diffplatoon.evaluation.formatting import fmt_num

        table = Table(title=f"{self.scenario} · {self.controller} · episode {self.episode}",
                      caption=(f"{len(self.steps)} steps, {len(self.collisions)} collisions, "
                               f"{len(self.departures)} members left, mean speed {fmt_num(self.mean_speed)} m/s, "
                               f"min gap {fmt_num(self.min_gap)} m, {fmt_num(self.steps_per_second)} steps/s"))
        for name in ("t (s)", "alive", "mean v (m/s)", "min gap (m)", "collisions", "left"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("events", min_width=12)
        last = -np.inf
        for s in self.steps:
            if s.time - last < every - 1e-9 and not (s.collisions or s.events or s.departures):
                continue
            last = s.time
            table.add_row(f"{s.time:.1f}", str(s.members_alive), fmt_num(s.mean_speed), fmt_num(s.min_gap),
                          str(s.collisions or ""), str(s.departures or ""), ", ".join(s.events))
        return table

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-serialisable) including the totals."""
        out = asdict(self)
        out.update(mean_speed=self.mean_speed, min_gap=self.min_gap, n_steps=len(self.steps))
        return out


def drive(spec: ScenarioSpec, controller: str | Any, seconds: float | None, episode: int,
          on_step: Callable[[Simulation], None] | None = None) -> RunSummary:
    """Run the loop of `run_scenario`, calling `on_step(sim)` at the start and after every step."""
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds: expected a positive, finite simulated time, got {seconds}")
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    driver = make_controller(controller, spec)
    driver.reset(sim)
    seconds = spec.duration if seconds is None else float(seconds)
    n_steps = int(round(seconds * spec.policy_frequency))
    summary = RunSummary(spec.name, controller if isinstance(controller, str) else type(controller).__name__,
                         episode, seconds)
    if on_step is not None:
        on_step(sim)
    obs = observer.observe()
    start = time.perf_counter()
    members = set(sim.agent_names)
    for k in range(n_steps):
        result = sim.step(driver.act(obs))
        left = [name for name in result.departed if name in members]
        obs = observer.observe()
        alive = obs.alive
        speeds = obs.ego[alive, 0]
        gaps = obs.leader[alive, _GAP][obs.leader[alive, _PRESENT] > 0]
        summary.steps.append(StepRecord(
            step=k + 1, time=result.time, collisions=len(result.collisions), departures=len(left),
            events=list(result.events), members_alive=int(alive.sum()),
            mean_speed=float(speeds.mean()) if len(speeds) else float("nan"),
            min_gap=float(gaps.min()) if len(gaps) else float("nan"),
        ))
        summary.collisions += [(a, b, result.time) for a, b in result.collisions]
        summary.departures += [(name, result.time) for name in left]
        summary.events += result.events
        if on_step is not None:
            on_step(sim)
        if not sim.live_members().any():
            break
    summary.wall_time = time.perf_counter() - start
    return summary


def run_scenario(spec: ScenarioSpec, controller: str | Any = "lane_keep", seconds: float | None = None,
                 episode: int = 0) -> RunSummary:
    """Run `spec` headless for `seconds` (default: its duration) with `controller`; returns the summary.

    Stops early once no platoon member is left on the road.
    """
    return drive(spec, controller, seconds, episode)


def render_scenario(spec: ScenarioSpec, seconds: float | None, out_path: str | os.PathLike[str],
                    controller: str | Any = "idm", episode: int = 0, fps: float | None = None,
                    size: tuple[int, int] | None = None) -> Path:
    """Run `spec` with `controller` and write a top-down GIF atomically.

    One frame at the start and one per policy step; `fps` is the playback rate (default the
    policy frequency: real time). `seconds` defaults to the scenario's duration.
    """
    from diffplatoon.sim.render import Renderer, write_gif  # pygame: loaded only when rendering

    frames: list[np.ndarray] = []
    renderer: list[Renderer] = []

    def grab(sim: Simulation) -> None:
        if not renderer:
            renderer.append(Renderer(sim, size))
        frames.append(renderer[0].frame())

    drive(spec, controller, seconds, episode, on_step=grab)
    return write_gif(frames, out_path, fps or spec.policy_frequency)
