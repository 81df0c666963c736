"""Cost of forking an episode: `Simulation.snapshot()` + `restore()` (and the Observer's) against one policy step.

How to run:  python benchmarks/snapshot_cost.py [--steps 60]
Per catalogue scenario, an expert (cacc) drives `--steps` policy steps; at every step the Simulation and its
Observer are snapshot and restored once, timed apart from the step. Printed: the median µs of one
`Simulation.step` (simulation frames, events, V2V channel; no observation), of one snapshot (Simulation +
Observer) and of one restore, the vehicles on the road, and "fork / step": snapshot + restore as a fraction of a
step.
Closed-loop data aggregation forks once per labelled state and then drives H expert steps, so the fork
itself should stay a small fraction of one step.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table

from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.evaluation.formatting import fmt_num, print_table
from diffplatoon.scenarios import load_scenario
from diffplatoon.sim import snapshot
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

SCENARIOS = ("highway_platoon", "hard_brake", "cut_in", "onramp_merge", "comm_dropout", "lane_drop", "roundabout",
             "intersection")


def measure(name: str, steps: int) -> dict[str, float]:
    """Median µs of a step, a snapshot and a restore over `steps` expert steps of `name`, episode 0."""
    spec = load_scenario(name)
    sim = Simulation(spec)
    obs = Observer(sim)
    expert = make_policy("cacc", spec)
    expert.reset(SimInfo.from_spec(spec))
    step_us, take_us, restore_us, vehicles = [], [], [], []
    for _ in range(steps):
        if sim.done:
            break
        action = expert.act(obs.observe())
        t0 = time.perf_counter()
        state, obs_state = sim.snapshot(), snapshot.take(obs)
        t1 = time.perf_counter()
        sim.restore(state)
        snapshot.restore(obs, obs_state)
        t2 = time.perf_counter()
        sim.step(action)
        t3 = time.perf_counter()
        take_us.append(1e6 * (t1 - t0))
        restore_us.append(1e6 * (t2 - t1))
        step_us.append(1e6 * (t3 - t2))
        vehicles.append(sim.world.n_active)
    step, take, back = (statistics.median(v) for v in (step_us, take_us, restore_us))
    return {"step": step, "snapshot": take, "restore": back, "vehicles": statistics.mean(vehicles),
            "ratio": (take + back) / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="policy steps per scenario")
    args = parser.parse_args()
    table = Table(title="Fork cost: snapshot + restore (Simulation + Observer) vs one policy step, medians")
    for col in ("scenario", "vehicles", "step µs", "snapshot µs", "restore µs", "fork / step"):
        table.add_column(col, justify="left" if col == "scenario" else "right", no_wrap=True)
    for name in SCENARIOS:
        r = measure(name, args.steps)
        table.add_row(name, fmt_num(r["vehicles"]), fmt_num(r["step"]), fmt_num(r["snapshot"]), fmt_num(r["restore"]),
                      fmt_num(r["ratio"]))
    print_table(Console(), table)


if __name__ == "__main__":
    main()
