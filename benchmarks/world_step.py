"""World step cost: µs per simulation frame at 34, 60, 120 and 240 vehicles, plus a profile.

How to run:  python benchmarks/world_step.py [--profile]
A 4-lane 10 km highway-env straight road; 4 controlled vehicles (lane keeping, a
constant-time-gap follower) and N−4 IDM/MOBIL traffic vehicles about 40 m apart per lane; 15 Hz simulation,
5 Hz policy, collisions on. Reference: highway-env's multi-agent highway (4 + 30 vehicles,
15/5 Hz) runs ≈ 32 policy steps/s ≈ 10 ms per frame on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
from highway_env.road.road import RoadNetwork

from diffplatoon.sim.world import World, WorldParams


def make_world(n_vehicles: int, seed: int = 0) -> World:
    """A 4-lane highway with 4 controlled vehicles and n_vehicles − 4 traffic vehicles."""
    rng = np.random.default_rng(seed)
    world = World(RoadNetwork.straight_road_network(4, length=10000), WorldParams(), rng)
    for k in range(4):
        world.spawn(("0", "1", 1), 300.0 - 25.0 * k, 25.0, controlled=True, platoon=0, member=k)
    per_lane = int(np.ceil((n_vehicles - 4) / 4))
    placed = 0
    for lane in range(4):
        s = 400.0 if lane == 1 else 0.0
        for _ in range(per_lane):
            if placed == n_vehicles - 4:
                break
            world.spawn(("0", "1", lane), s, float(rng.uniform(22, 28)))
            s += float(rng.uniform(30, 50))
            placed += 1
    return world


def time_world(n_vehicles: int, steps: int = 200) -> float:
    """Mean µs per simulation frame over `steps` policy steps."""
    world = make_world(n_vehicles)
    for _ in range(5):
        world.step(_actions(world))
    t0 = time.perf_counter()
    for _ in range(steps):
        world.step(_actions(world))
    elapsed = time.perf_counter() - t0
    return elapsed / (steps * world.params.frames_per_step) * 1e6


def _actions(world: World) -> np.ndarray:
    """Lane keeping plus a constant-time-gap follower (1.5 s + 10 m) for the controlled rows."""
    rows = world.controlled_rows()
    front, _ = world.neighbours(rows)
    v = world.speed[rows]
    f = np.where(front >= 0, front, rows)
    gap = np.where(front >= 0, world.s[f] - world.s[rows], 1e3)
    acc = 0.3 * (gap - 10.0 - 1.5 * v) + np.where(front >= 0, world.speed[f] - v, 25.0 - v)
    return np.stack([np.clip(acc, -6.0, 3.0), world.lane_keeping_steering(rows)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="store_true", help="cProfile 34 vehicles")
    args = parser.parse_args()
    print("vehicles  us/frame  policy steps/s")
    for n in (34, 60, 120, 240):
        us = time_world(n)
        print(f"{n:8d}  {us:8.1f}  {1e6 / (3 * us):10.0f}")
    if args.profile:
        world = make_world(34)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(300):
            world.step(_actions(world))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
