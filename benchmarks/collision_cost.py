"""Cost of one all-vehicle collision check: diffplatoon.geometry vs shapely vs highway-env.

How to run:
    .venv/bin/python benchmarks/collision_cost.py [--rounds 5] [--sizes 50 120 240]

Each size builds one highway-like scene (4 lanes of 4 m, cars and trucks at 0.6-2 s time gaps,
some vehicles mid lane change, two injected rear-end overlaps) and times, in alternating rounds
in this one process:
- ours: `overlapping_pairs` (sort-and-sweep on circles + vectorized SAT);
- ours swept: `swept_overlapping_pairs` over one 1/15 s simulation frame;
- shapely: `shapely_overlapping_pairs` (polygons + STRtree query, predicate "intersects");
- hw Road: a Python double loop over highway-env `Vehicle` objects calling `_is_colliding`
  (circle pre-check, then `are_polygons_intersecting`), as `Road.step` does every frame;
- hw naive (the reference): a Python double loop calling highway-env's
  `utils.are_polygons_intersecting` on every pair.
All methods must report the same overlapping pairs. Medians over rounds are printed; absolute
times are noisy on shared machines, the ratios are the result.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from highway_env import utils as hw_utils
from highway_env.vehicle.kinematics import Vehicle
from rich.console import Console
from rich.table import Table

from diffplatoon import geometry

_LANES = 4
_LANE_WIDTH = 4.0  # [m]
_SIM_DT = 1.0 / 15.0  # [s] highway-env's default simulation frame
_CAR = (5.0, 2.0)  # [m] length, width
_TRUCK = (12.0, 2.5)  # [m]


def highway_scene(n: int, rng: np.random.Generator) -> tuple[geometry.Boxes, np.ndarray]:
    """Boxes of n vehicles on a 4-lane straight highway, and their speeds [m/s]."""
    lane = np.arange(n) % _LANES
    truck = rng.random(n) < 0.1
    length = np.where(truck, _TRUCK[0], _CAR[0])
    width = np.where(truck, _TRUCK[1], _CAR[1])
    speed = rng.uniform(22.0, 32.0, n)
    x = np.zeros(n)
    for k in range(_LANES):
        rows = np.flatnonzero(lane == k)
        headway = rng.uniform(0.6, 2.0, len(rows))  # [s]
        x[rows] = np.cumsum(length[rows] + speed[rows] * headway)
    y = lane * _LANE_WIDTH + rng.normal(0.0, 0.15, n)
    heading = rng.normal(0.0, 0.005, n)
    changing = rng.random(n) < 0.1
    y[changing] += rng.uniform(-2.0, 2.0, changing.sum())
    heading[changing] = rng.choice([-1.0, 1.0], changing.sum()) * rng.uniform(0.03, 0.12, changing.sum())
    # Two rear-end crashes: a follower's centre 4 m behind its leader's, in the leader's lane.
    for leader in (n // 3, 2 * n // 3):
        follower = (leader + _LANES) % n
        x[follower], y[follower], heading[follower] = x[leader] - 4.0, y[leader], heading[leader]
        length[follower], width[follower] = _CAR
    return geometry.Boxes(x, y, heading, length, width), speed


def highway_env_vehicles(boxes: geometry.Boxes, speed: np.ndarray) -> list[Vehicle]:
    """highway-env Vehicle objects (no road) with the scene's poses and sizes."""
    vehicles = []
    for k in range(len(boxes.x)):
        v = Vehicle(None, [boxes.x[k], boxes.y[k]], heading=boxes.heading[k], speed=speed[k])
        v.LENGTH, v.WIDTH = boxes.length[k], boxes.width[k]
        v.diagonal = float(np.hypot(v.LENGTH, v.WIDTH))
        vehicles.append(v)
    return vehicles


def hw_naive_pairs(vehicles: list[Vehicle]) -> np.ndarray:
    """Every pair through highway-env's are_polygons_intersecting (no broad phase)."""
    polygons = [v.polygon() for v in vehicles]
    zero = np.zeros(2)
    out = []
    for i in range(len(polygons)):
        for j in range(i + 1, len(polygons)):
            if hw_utils.are_polygons_intersecting(polygons[i], polygons[j], zero, zero)[0]:
                out.append((i, j))
    return np.array(out, dtype=np.intp).reshape(-1, 2)


def hw_road_pairs(vehicles: list[Vehicle]) -> np.ndarray:
    """Every pair through Vehicle._is_colliding (circle pre-check + SAT), as Road.step does."""
    out = []
    for i, vi in enumerate(vehicles):
        for j in range(i + 1, len(vehicles)):
            if vi._is_colliding(vehicles[j], _SIM_DT)[0]:
                out.append((i, j))
    return np.array(out, dtype=np.intp).reshape(-1, 2)


def time_per_call(fn: Callable[[], object], budget_s: float) -> float:
    """Seconds per call, averaged over as many calls as fit in about budget_s (at least one)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 120, 240])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console(width=max(Console().width, 110))

    times_table = Table(title="µs per all-vehicle check (median over alternating rounds)")
    ratio_table = Table(title="Speed-up of ours (broad + SAT) = other µs / ours µs")
    for col in ("N", "pairs", "candidates", "overlaps", "ours", "ours swept", "shapely", "hw Road", "hw naive"):
        times_table.add_column(col, justify="right")
    for col in ("N", "vs hw naive (reference)", "vs hw Road loop", "vs shapely STRtree", "swept / ours"):
        ratio_table.add_column(col, justify="right")

    for n in args.sizes:
        rng = np.random.default_rng(args.seed + n)
        boxes, speed = highway_scene(n, rng)
        prev = geometry.Boxes(boxes.x - speed * np.cos(boxes.heading) * _SIM_DT,
                              boxes.y - speed * np.sin(boxes.heading) * _SIM_DT,
                              boxes.heading, boxes.length, boxes.width)
        vehicles = highway_env_vehicles(boxes, speed)
        methods: dict[str, Callable[[], object]] = {
            "ours": lambda: geometry.overlapping_pairs(*boxes),
            "ours swept": lambda: geometry.swept_overlapping_pairs(prev, boxes),
            "shapely": lambda: geometry.shapely_overlapping_pairs(*boxes),
            "hw Road": lambda: hw_road_pairs(vehicles),
            "hw naive": lambda: hw_naive_pairs(vehicles),
        }

        results = {name: fn() for name, fn in methods.items()}
        reference = results["hw naive"]
        for name in ("ours", "shapely", "hw Road"):
            if not np.array_equal(results[name], reference):
                raise SystemExit(f"N={n}: {name} found {results[name].tolist()}, reference {reference.tolist()}")
        swept_pairs = {tuple(p) for p in results["ours swept"].pairs}
        if not {tuple(p) for p in reference} <= swept_pairs:
            raise SystemExit(f"N={n}: swept check misses pairs overlapping at the frame's end")

        samples: dict[str, list[float]] = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, fn in methods.items():
                samples[name].append(time_per_call(fn, budget_s=0.05))
        us = {name: 1e6 * statistics.median(s) for name, s in samples.items()}

        radius = 0.5 * np.hypot(boxes.length, boxes.width)
        n_cand = len(geometry.candidate_pairs(boxes.x, boxes.y, radius))
        times_table.add_row(str(n), str(n * (n - 1) // 2), str(n_cand), str(len(reference)),
                            *(f"{us[name]:,.0f}" for name in methods))
        ratio_table.add_row(str(n), f"[bold]{us['hw naive'] / us['ours']:,.0f}×[/bold]",
                            f"[bold]{us['hw Road'] / us['ours']:,.0f}×[/bold]",
                            f"[bold]{us['shapely'] / us['ours']:.2f}×[/bold]",
                            f"{us['ours swept'] / us['ours']:.2f}×")

    console.print(times_table)
    console.print(ratio_table)
    console.print("All methods found the same overlapping pairs; the swept check found them too.")


if __name__ == "__main__":
    main()
