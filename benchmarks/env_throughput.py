"""Policy steps/s of `PlatoonParallelEnv` against highway-env's own multi-agent highway, and scaling.

How to run:  python benchmarks/env_throughput.py [--steps 300] [--rounds 3] [--profile] [--cpu]
(--cpu times with the process's CPU clock instead of the wall clock: steadier on a machine that
other processes share; both environments are timed the same way.)

1. Head to head, in one process, alternating rounds: highway-env `highway-v0` with 4 controlled
   vehicles, vehicles_count 30, 15 Hz simulation, 5 Hz policy, MultiAgentAction(ContinuousAction),
   MultiAgentObservation(Kinematics), rendering off (references/sims.md §2: 32 steps/s on the
   2-core reference machine), and our env on a 4-lane straight highway with a 4-member platoon
   and 30 traffic vehicles at the same frequencies. Both get uniform random actions over their
   normalized action boxes ([-1, 1]²: highway-env maps them to ±5 m/s², ±π/4; ours to the
   platoon's vehicle limits). Only `step()` is timed; resets (after a crash or the time limit)
   and action sampling are not.
2. Ours at 30, 60, 120 and 240 vehicles (4 controlled), traffic held at a constant density.
3. Agent-steps/s with 4, 10 and 20 controlled vehicles and 30 traffic vehicles.
Rows 2 and 3 use "steady" actions (lane keeping + a constant-time-gap follower, computed
outside the timed region) so that the vehicle count stays put; row 1 is also shown with them.
Targets: ≥ 30× highway-env; ≥ 10,000 agent-steps/s with 20 controlled; ≤ 5× per-step cost
from 60 to 240 vehicles.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
import warnings

import numpy as np

from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.scenarios import ScenarioSpec
from diffplatoon.sim.observation import LEADER_FEATURES

LANES = 4
EPISODE_SECONDS = 40.0  # a platoon at 25 m/s starting at 400 m stays on a 2 km road (1.4 km)
FREQ = dict(simulation_frequency=15, policy_frequency=5)
clock = time.perf_counter  # time.process_time with --cpu


def highway_spec(n_traffic: int, platoon_sizes: tuple[int, ...] = (4,), length: float = 2000.0) -> ScenarioSpec:
    """A straight highway with platoons on lanes 1, 2, ... and traffic at a density giving n_traffic vehicles."""
    density = n_traffic / (LANES * length / 1000.0)
    platoons = [
        {"id": f"p{i}", "size": size, "lane": 1 + i % (LANES - 1), "start": 400.0 + 10 * i, "speed": 25.0,
         "time_gap": 1.0}
        for i, size in enumerate(platoon_sizes)
    ]
    return ScenarioSpec.model_validate({
        "name": f"bench_{n_traffic}_{'_'.join(map(str, platoon_sizes))}",
        "duration": 3600, **FREQ,
        "road": {"type": "highway", "lanes": LANES, "length": length},
        "traffic": {"density": density, "speed_range": [22, 28]},
        "platoons": platoons,
        "action": {"normalized": True},
    })


# -- drivers ---------------------------------------------------------------------------------------
def random_actions(env: PlatoonParallelEnv, rng: np.random.Generator) -> dict:
    return {a: rng.uniform(-1, 1, 2).astype(np.float32) for a in env.agents}


def steady_actions(env: PlatoonParallelEnv, rng: np.random.Generator) -> dict:
    """Lane keeping and a 1 s time-gap follower on the observed leader, in normalized units."""
    sim, obs = env.sim, env.observation
    rows = sim.controlled
    gap = obs.leader[:, LEADER_FEATURES.index("gap")]
    v = obs.ego[:, 0]
    accel = np.clip(0.5 * (gap - (2.0 + 1.0 * v)) + 0.3 * (25.0 - v), -8.0, 4.0)
    live = sim.live_members()
    steer = np.zeros(len(rows))
    steer[live] = sim.world.lane_keeping_steering(rows[live], sim.world.lane[rows[live]])
    norm = np.stack([np.where(accel < 0, accel / 8.0, accel / 4.0), steer / 0.6], axis=1)
    return {a: norm[env._index[a]].astype(np.float32) for a in env.agents}


def time_ours(spec: ScenarioSpec, steps: int, driver, seed: int = 0) -> dict:
    """Timed env.step() calls: steps/s, agent-steps/s, mean vehicles on the road."""
    env = PlatoonParallelEnv(spec)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    elapsed, agent_steps, vehicles, episode = 0.0, 0, 0, seed
    for _ in range(steps):
        if not env.agents or env.sim.time >= EPISODE_SECONDS:
            episode += 1
            env.reset(seed=episode)
        actions = driver(env, rng)
        t0 = clock()
        env.step(actions)
        elapsed += clock() - t0
        agent_steps += len(actions)
        vehicles += env.sim.world.n_active
    return {"steps_s": steps / elapsed, "agent_steps_s": agent_steps / elapsed, "vehicles": vehicles / steps,
            "ms_step": 1e3 * elapsed / steps}


def make_highway_env():
    import gymnasium as gym
    import highway_env  # noqa: F401  (registers the envs)

    config = {
        "controlled_vehicles": 4,
        "vehicles_count": 30,
        **FREQ,
        "action": {"type": "MultiAgentAction", "action_config": {"type": "ContinuousAction"}},
        "observation": {"type": "MultiAgentObservation", "observation_config": {"type": "Kinematics"}},
    }
    return gym.make("highway-v0", config=config, render_mode=None)


def time_highway_env(env, steps: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    elapsed, episode, vehicles = 0.0, seed, 0
    for _ in range(steps):
        action = tuple(rng.uniform(-1, 1, 2).astype(np.float32) for _ in range(4))
        t0 = clock()
        _, _, terminated, truncated, _ = env.step(action)
        elapsed += clock() - t0
        vehicles += len(env.unwrapped.road.vehicles)
        if terminated or truncated:
            episode += 1
            env.reset(seed=episode)
    return {"steps_s": steps / elapsed, "agent_steps_s": 4 * steps / elapsed, "vehicles": vehicles / steps,
            "ms_step": 1e3 * elapsed / steps}


def profile_ours(spec: ScenarioSpec, steps: int, top: int = 18) -> str:
    env = PlatoonParallelEnv(spec)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    prof = cProfile.Profile()
    for _ in range(steps):
        if not env.agents or env.sim.time >= EPISODE_SECONDS:
            env.reset()
        actions = steady_actions(env, rng)
        prof.enable()
        env.step(actions)
        prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top + 10)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--cpu", action="store_true", help="time with the process CPU clock")
    args = parser.parse_args()
    global clock
    clock = time.process_time if args.cpu else time.perf_counter
    warnings.filterwarnings("ignore")

    print("1. 4 controlled + 30 traffic, 15 Hz sim / 5 Hz policy, random actions (alternating rounds)")
    spec = highway_spec(30)
    henv = make_highway_env()
    ours, theirs, steady = [], [], []
    for r in range(args.rounds):
        theirs.append(time_highway_env(henv, max(args.steps // 5, 30), seed=r))
        ours.append(time_ours(spec, args.steps, random_actions, seed=r))
        steady.append(time_ours(spec, args.steps, steady_actions, seed=r))
    med = lambda rows, key: float(np.median([x[key] for x in rows]))  # noqa: E731
    print(f"{'env':34s} {'steps/s':>9s} {'ms/step':>8s} {'vehicles':>8s}")
    print(f"{'highway-env highway-v0 (MA)':34s} {med(theirs, 'steps_s'):9.1f} {med(theirs, 'ms_step'):8.2f} "
          f"{med(theirs, 'vehicles'):8.1f}")
    print(f"{'PlatoonParallelEnv, random':34s} {med(ours, 'steps_s'):9.1f} {med(ours, 'ms_step'):8.2f} "
          f"{med(ours, 'vehicles'):8.1f}")
    print(f"{'PlatoonParallelEnv, steady':34s} {med(steady, 'steps_s'):9.1f} {med(steady, 'ms_step'):8.2f} "
          f"{med(steady, 'vehicles'):8.1f}")
    print(f"ratio (random vs random): {med(ours, 'steps_s') / med(theirs, 'steps_s'):.1f}x   "
          f"(steady vs random: {med(steady, 'steps_s') / med(theirs, 'steps_s'):.1f}x)")

    print("\n2. scaling, 4 controlled, steady actions")
    print(f"{'vehicles':>8s} {'(measured)':>10s} {'steps/s':>9s} {'ms/step':>8s}")
    cost = {}
    for n in (30, 60, 120, 240):
        res = time_ours(highway_spec(n - 4, length=max(2000.0, 10.0 * n)), args.steps, steady_actions)
        cost[n] = res["ms_step"]
        print(f"{n:8d} {res['vehicles']:10.1f} {res['steps_s']:9.1f} {res['ms_step']:8.3f}")
    print(f"cost 240 / 60 vehicles: {cost[240] / cost[60]:.2f}x")

    print("\n3. agent-steps/s, 30 traffic, steady actions")
    print(f"{'controlled':>10s} {'steps/s':>9s} {'agent-steps/s':>14s} {'ms/step':>8s}")
    for sizes in ((4,), (10,), (10, 10)):
        res = time_ours(highway_spec(30, sizes), args.steps, steady_actions)
        print(f"{sum(sizes):10d} {res['steps_s']:9.1f} {res['agent_steps_s']:14.0f} {res['ms_step']:8.3f}")

    if args.profile:
        print("\n4. profile of PlatoonParallelEnv.step, 4 + 30 vehicles, steady actions")
        print(profile_ours(spec, args.steps))


if __name__ == "__main__":
    main()
