"""Evaluation throughput: episodes/s with 1 and 2 Ray workers, and the collision check's cost per step.

How to run:
    .venv/bin/python benchmarks/eval_throughput.py [--scenario hard_brake] [--policy cacc]
        [--episodes 8] [--vehicles 50] [--rounds 5]

Part 1 runs the same (scenario, episode, policy) jobs through `evaluate` twice, with one and
with two workers in one local Ray session of 2 CPUs (workers are warmed up first so imports
are not timed), checks that both runs wrote identical records (minus wall time), and prints
episodes/s and the speed-up (target >= 1.7 on 2 cores).

Part 2 times one all-vehicle collision check for N vehicles on the highway scene of
benchmarks/collision_cost.py: ours (broad phase + vectorized SAT), ours swept (the
sub-stepped check the evaluator runs once per simulation frame), shapely 2 (STRtree +
vectorized `intersects`) and a naive Python loop over highway-env's
`are_polygons_intersecting`. A policy step is `frames_per_step` (3) frames, so the evaluator's
cost per policy step is 3 x "ours swept". Medians over alternating rounds. The real
`CollisionEvaluator` (sub-stepped check, classification, off-road and wrong-way checks) is
then timed inside a `Simulation` of highway_platoon with traffic raised to N vehicles.

The same jobs also run on a plain process pool (no Ray) with 1 and 2 processes: that is the
ceiling the machine allows at the moment (another busy process on a 2-core machine caps any
speed-up well below 2), printed next to the load average.

Results to expect: a speed-up near 2 when episodes dominate the per-task overhead; the check
costs tens of µs for 50 vehicles, a few hundred times less than the naive loop.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
import collision_cost  # noqa: E402  (the scene builder and the naive reference loop)

from diffplatoon.cluster import remote  # noqa: E402
from diffplatoon import io  # noqa: E402
from diffplatoon.evaluation import runner  # noqa: E402
from diffplatoon.scenarios import load_scenario  # noqa: E402
from diffplatoon import geometry  # noqa: E402


def _records(out: Path) -> dict[str, dict]:
    return {r["job_id"]: {k: v for k, v in r.items() if k != "wall_time"} for r in io.read_jsonl(out / runner.RECORDS)}


def throughput(scenario: str, policy: str, episodes: int, console: Console) -> Table:
    """Episodes/s of the same jobs with 1 and 2 workers."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    load = os.getloadavg()
    spec = load_scenario(scenario)
    warm = spec.model_copy(update={"duration": 1.0})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        task = remote(runner.run_job)
        ray.get([task.remote(warm, policy, k) for k in range(4)])  # import torch/highway-env in both workers

        table = Table(title=f"Evaluation throughput: {episodes} episodes of {scenario} x {policy} "
                            f"({spec.duration:g} s each), local Ray, 2 CPUs")
        for col in ("runner", "workers", "wall [s]", "episodes/s", "speed-up"):
            table.add_column(col, justify="right")
        walls, outs = {}, {}
        with tempfile.TemporaryDirectory() as tmp:
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}"
                start = time.perf_counter()
                summary = runner.evaluate([policy], [spec], episodes, out, num_workers=workers,
                                          progress=False, report=False)
                walls[workers] = time.perf_counter() - start
                if summary.failed:
                    raise SystemExit(f"{summary.failed} episodes failed, see {out / runner.RECORDS}")
                outs[workers] = _records(out)
            if outs[1] != outs[2]:
                raise SystemExit("records differ between 1 and 2 workers")
        for workers in (1, 2):
            table.add_row("Ray", str(workers), f"{walls[workers]:.2f}", f"{episodes / walls[workers]:.2f}",
                          f"{walls[1] / walls[workers]:.2f}x")
        console.print("Records identical with 1 and 2 workers (minus wall_time).")
    finally:
        ray.shutdown()
    # The machine's own ceiling: the same jobs on plain processes (no Ray), warmed up the same way.
    plain = {}
    for workers in (1, 2):
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(runner.run_job, [warm] * workers, [policy] * workers, range(workers)))
            start = time.perf_counter()
            list(pool.map(runner.run_job, [spec] * episodes, [policy] * episodes, range(episodes)))
            plain[workers] = time.perf_counter() - start
    for workers in (1, 2):
        table.add_row("processes", str(workers), f"{plain[workers]:.2f}", f"{episodes / plain[workers]:.2f}",
                      f"{plain[1] / plain[workers]:.2f}x")
    table.caption = f"load average before the run: {load[0]:.2f} (1 min) on {os.cpu_count()} cores"
    return table


def collision_cost_table(n: int, rounds: int, seed: int) -> Table:
    """µs per all-vehicle check for n vehicles: ours, ours swept, shapely, naive loop."""
    rng = np.random.default_rng(seed + n)
    boxes, speed = collision_cost.highway_scene(n, rng)
    dt = 1.0 / 15.0
    prev = geometry.Boxes(boxes.x - speed * np.cos(boxes.heading) * dt, boxes.y - speed * np.sin(boxes.heading) * dt,
                          boxes.heading, boxes.length, boxes.width)
    vehicles = collision_cost.highway_env_vehicles(boxes, speed)
    methods = {
        "ours (broad phase + SAT)": lambda: geometry.overlapping_pairs(*boxes),
        "ours swept (evaluator, per frame)": lambda: geometry.swept_overlapping_pairs(prev, boxes),
        "shapely 2 (STRtree + intersects)": lambda: geometry.shapely_overlapping_pairs(*boxes),
        "naive loop (highway-env SAT, all pairs)": lambda: collision_cost.hw_naive_pairs(vehicles),
    }
    reference = methods["naive loop (highway-env SAT, all pairs)"]()
    for name in ("ours (broad phase + SAT)", "shapely 2 (STRtree + intersects)"):
        if not np.array_equal(methods[name](), reference):
            raise SystemExit(f"{name} disagrees with the naive loop")
    samples = {name: [] for name in methods}
    for _ in range(rounds):
        for name, fn in methods.items():
            samples[name].append(collision_cost.time_per_call(fn, budget_s=0.05))
    us = {name: 1e6 * statistics.median(s) for name, s in samples.items()}
    base = us["ours (broad phase + SAT)"]
    table = Table(title=f"Collision check, {n} vehicles ({len(reference)} overlapping pairs), µs per check")
    for col in ("method", "µs / frame", "µs / policy step (3 frames)", "vs ours"):
        table.add_column(col, justify="right")
    for name, t in us.items():
        table.add_row(name, f"{t:,.1f}", f"{3 * t:,.1f}", f"{t / base:.2f}x")
    return table


class _TimedListener:
    """Stands in for the evaluator in the frame-listener list and times its two hooks."""

    def __init__(self, inner: object) -> None:
        self.inner, self.seconds, self.frames = inner, 0.0, 0

    def before_frame(self, sim: object) -> None:
        start = time.perf_counter()
        self.inner.before_frame(sim)
        self.seconds += time.perf_counter() - start

    def after_frame(self, sim: object) -> None:
        start = time.perf_counter()
        self.inner.after_frame(sim)
        self.seconds += time.perf_counter() - start
        self.frames += 1


def evaluator_in_simulation(n: int, steps: int) -> Table:
    """µs per policy step of the real CollisionEvaluator in a Simulation holding about n vehicles."""
    from diffplatoon.evaluation.collisions import CollisionEvaluator
    from diffplatoon.sim.simulation import Simulation

    base = load_scenario("highway_platoon")
    members = base.num_controlled
    spec = base.model_copy(update={
        "duration": steps / base.policy_frequency,
        "traffic": base.traffic.model_copy(update={"count": n - members, "keep_density": True}),
        "road": base.road.model_copy(update={"length": 4000.0}),
    })
    sim = Simulation(spec, 0)
    evaluator = CollisionEvaluator().attach(sim)
    timed = _TimedListener(evaluator)
    sim.frame_listeners[sim.frame_listeners.index(evaluator)] = timed
    alive = []
    start = time.perf_counter()
    while not sim.done:
        sim.step(None)
        alive.append(int(sim.world.active.sum()))
    total = time.perf_counter() - start
    per_step = 1e6 * timed.seconds / max(1, len(alive))
    table = Table(title=f"CollisionEvaluator in a real Simulation (highway_platoon, {np.mean(alive):.0f} vehicles "
                        f"on average, {len(alive)} policy steps of {spec.frames_per_step} frames)")
    for col in ("what", "µs / policy step", "share of the step"):
        table.add_column(col, justify="right")
    table.add_row("evaluator (before + after every frame)", f"{per_step:,.0f}", f"{timed.seconds / total:.0%}")
    table.add_row("whole simulation step incl. evaluator", f"{1e6 * total / max(1, len(alive)):,.0f}", "100%")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="hard_brake")
    parser.add_argument("--policy", default="cacc")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--vehicles", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sim-steps", type=int, default=150, help="policy steps of the in-simulation timing")
    parser.add_argument("--skip-ray", action="store_true", help="only the collision-check part")
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))
    console.print(collision_cost_table(args.vehicles, args.rounds, args.seed))
    console.print(evaluator_in_simulation(args.vehicles, args.sim_steps))
    if not args.skip_ray:
        console.print(throughput(args.scenario, args.policy, args.episodes, console))


if __name__ == "__main__":
    main()
