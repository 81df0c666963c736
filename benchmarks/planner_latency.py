"""Latency of ``JointDiffusionPlanner.plan()`` on CPU: p50/p95 ms per call and plans/s over a grid of sizes.

How to run:
    .venv/bin/python benchmarks/planner_latency.py --quick          # headline cells, ~1 min
    .venv/bin/python benchmarks/planner_latency.py                  # full grid (N, H, steps, samples, batch)
    .venv/bin/python benchmarks/planner_latency.py --checkpoint runs/pretrain/best.pt --json out.json
    .venv/bin/python benchmarks/planner_latency.py --warm-only --config configs/pretrain_planner.yaml  # trained size

Every cell is measured with torch.set_num_threads(1) and (2), each on an idle machine and with a busy-loop
process occupying a core ("busy"). Without a checkpoint the default PlannerConfig is built with random weights
(latency does not depend on the values). The target: p50 ≤ 15 ms for 8 members × H=20 × 10 steps ×
1 sample × batch 1, 1 thread.

The warm-start rows compare the diffusion policy's default plan (replan every step, warm-started from the
previous plan: 2 DDIM steps, 8 samples, 2 of them from pure noise, guided) with the cold full chain (10 steps
from noise) and a 4-step warm start; target: the default's p50 ≤ 10 ms for 8 members, 1 thread. Every row
also gives the process CPU time per call, which a loaded machine inflates much less than the wall time.

The scene rows (``--scene``, default ``configs/held_out/platoon8_lossy.yaml``: 8 members, traffic) time what the
synthetic rows leave out: the diffusion policy's whole decision, ``DiffusionPolicy.act`` on a real highway-env
scene (featurise, corridors, the guidance context with lane lines and predicted neighbours, the warm-started
sample, the shield), and its planner call alone, guided or not, shielded or not, and the default without the route
anchors and the other platoons' intents (they cost only where a route asks for a lane change or platoons hear
each other: ``--scene lane_drop``), each beside the synthetic default row of the same process (ratio). The planner is ``--checkpoint`` (its input widths must match the
scene's) or random weights sized for the scene; the first ``_SCENE_WARMUP`` decisions (the cold first plan) are
not timed.

    .venv/bin/python benchmarks/planner_latency.py --scene-only --checkpoint runs/planner_dagger_15k.pt
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.guidance import GuidanceConfig
from diffplatoon.agents.diffusion.model import DenoiserConfig
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig
from diffplatoon.agents.diffusion.policy import DiffusionPolicy
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig
from diffplatoon.agents.policy import SimInfo, parse_params
from diffplatoon.envs.episodes import resolve_scenario
from diffplatoon.scenarios import ScenarioSpec
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

OBS_DIM, MSG_DIM, INBOX = 40, 16, 6
HEADLINE = dict(n=8, horizon=20, steps=10, samples=1, batch=1)
# (label, warm start or None = cold, steps of the cold chain): 8 members, 8 samples, guided, as the policy plans
WARM_ROWS = [("cold, full chain", None, 10), ("warm k=4", WarmStartConfig(steps=4), 10),
             ("warm k=2 (default)", WarmStartConfig(steps=2), 10)]


def _busy_loop() -> None:
    while True:
        pass


@contextmanager
def _background_load(load: str) -> Iterator[None]:
    """'busy': one process spinning on a core beside the measurement while inside; 'idle': nothing."""
    busy = None
    if load == "busy":
        busy = mp.get_context("spawn").Process(target=_busy_loop, daemon=True)
        busy.start()
        time.sleep(0.5)
    try:
        yield
    finally:
        if busy is not None:
            busy.terminate()
            busy.join()


def _inputs(batch: int, n: int, obs_dim: int = OBS_DIM, msg_dim: int = MSG_DIM) -> dict[str, torch.Tensor]:
    """Random inputs of the planner's widths (latency does not depend on the values)."""
    g = torch.Generator().manual_seed(0)
    ego = torch.zeros(batch, n, 4)
    ego[..., 0] = -20.0 * torch.arange(n, dtype=torch.float32)
    ego[..., 3] = 25.0
    return dict(
        obs=torch.randn(batch, n, obs_dim, generator=g),
        inbox=torch.randn(batch, n, INBOX, msg_dim, generator=g),
        inbox_mask=torch.ones(batch, n, INBOX, dtype=torch.bool),
        comm_mask=torch.ones(batch, n, n, dtype=torch.bool),
        member_mask=torch.ones(batch, n, dtype=torch.bool),
        ego_state=ego,
        length=torch.full((batch, n), 5.0),
    )


def measure(planner, *, n, horizon, steps, samples, batch, budget_s, guidance=None, warm=None) -> dict:
    """p50/p95 latency [ms], p50 process CPU time [ms] and plans/s (scenes per second) of one plan() configuration."""
    net = planner.config.denoiser
    inputs = _inputs(batch, n, net.obs_dim, net.msg_dim)
    kw = dict(num_samples=samples, steps=steps, horizon=horizon, guidance=guidance, seed=0)
    if warm is not None:  # a previous plan as the prior: any (n, H, 2) actions cost the same
        kw.update(warm_start=planner.plan(**inputs, **kw).actions, warm=warm)
    t0 = time.perf_counter()
    planner.plan(**inputs, **kw)  # warm-up, also sizes the number of repetitions
    first = time.perf_counter() - t0
    if first < 0.1:
        planner.plan(**inputs, **kw)
    reps = int(min(200, max(3, budget_s / max(first, 1e-4))))
    times, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        planner.plan(**inputs, **kw)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    times.sort()
    p50 = statistics.median(times)
    p95 = times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))]
    return {"p50_ms": 1e3 * p50, "p95_ms": 1e3 * p95, "cpu_p50_ms": 1e3 * statistics.median(cpu),
            "plans_per_s": batch / p50, "reps": reps}


SCENE = "configs/held_out/platoon8_lossy.yaml"
# (label, diffusion policy parameters): the default decision first, then without guidance and/or shield
SCENE_ROWS = [("default (guided, shield)", ""), ("unguided, shield", "guidance=off"),
              ("guided, no shield", "shield=off"), ("unguided, no shield", "guidance=off,shield=off"),
              ("default without route anchors and intents", "warm_anchors=0,intents=off")]
_SCENE_WARMUP = 3


def scene_planner(spec: ScenarioSpec, checkpoint: str | None) -> JointDiffusionPlanner:
    """The checkpoint (ValueError if its input widths are not the scene's) or a random planner sized for it."""
    dims = (features.obs_dim(spec), features.msg_dim(spec))
    if checkpoint is None:
        return JointDiffusionPlanner.with_random_weights(
            PlannerConfig(DenoiserConfig(obs_dim=dims[0], msg_dim=dims[1])), std=0.02)
    planner = JointDiffusionPlanner.load(checkpoint)
    got = (planner.config.denoiser.obs_dim, planner.config.denoiser.msg_dim)
    if got != dims:
        raise ValueError(f"{checkpoint}: observation/message widths {got}, the scene {spec.name} needs {dims}")
    return planner


def measure_scene(spec: ScenarioSpec, planner: JointDiffusionPlanner, params: str, decisions: int) -> dict:
    """p50/p95 of ``DiffusionPolicy.act`` [ms] and of its planner calls over ``decisions`` steps of episode 0."""
    policy = DiffusionPolicy(spec, planner, version="latency", **parse_params(params))
    sim = Simulation(spec, 0)
    observer = Observer(sim)
    policy.reset(SimInfo.from_spec(spec, 0))
    act_ms, plan_ms = [], []
    for step in range(decisions + _SCENE_WARMUP):
        obs = observer.observe()
        if sim.done or not obs.alive.any():
            break
        plan_before = policy.plan_time
        t0 = time.perf_counter()
        action = policy.act(obs)
        elapsed = time.perf_counter() - t0
        if step >= _SCENE_WARMUP:
            act_ms.append(1e3 * elapsed)
            plan_ms.append(1e3 * (policy.plan_time - plan_before))
        sim.step(action)
    if not act_ms:
        raise RuntimeError(f"{spec.name}: the episode ended before any timed decision")

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]

    return {"decisions": len(act_ms), "act_p50_ms": statistics.median(act_ms), "act_p95_ms": pct(act_ms, 0.95),
            "plan_p50_ms": statistics.median(plan_ms), "plan_p95_ms": pct(plan_ms, 0.95),
            "members": int(max(p.size for p in spec.platoons))}


def scene_rows(args: argparse.Namespace) -> list[dict]:
    """The scene table (module docstring), one block per thread count, each beside the synthetic default plan."""
    spec = resolve_scenario(args.scene)
    planner = scene_planner(spec, args.checkpoint)
    budget = args.budget or 0.6
    print(f"\n| threads | decision on {spec.name} | decisions | act p50 ms | act p95 ms | plan p50 ms | "
          f"plan p95 ms | act / synthetic default |")
    print("|---|---|---|---|---|---|---|---|")
    out = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        n = int(max(p.size for p in spec.platoons))
        synthetic = measure(planner, n=n, horizon=planner.config.horizon, steps=10, samples=8,
                            batch=1, budget_s=budget, guidance=GuidanceConfig(), warm=WarmStartConfig(steps=2))
        for label, params in SCENE_ROWS:
            res = measure_scene(spec, planner, ",".join(x for x in (params, f"threads={threads}") if x),
                                args.scene_decisions)
            res.update(threads=threads, decision=label, synthetic_p50_ms=synthetic["p50_ms"])
            out.append(res)
            print(f"| {threads} | {label} | {res['decisions']} | {res['act_p50_ms']:.2f} | {res['act_p95_ms']:.2f} | "
                  f"{res['plan_p50_ms']:.2f} | {res['plan_p95_ms']:.2f} | "
                  f"{res['act_p50_ms'] / synthetic['p50_ms']:.2f} |", flush=True)
    return out


def grid(quick: bool) -> list[dict]:
    """The cells to measure."""
    if quick:
        cells = [HEADLINE, dict(HEADLINE, n=4), dict(HEADLINE, horizon=40), dict(HEADLINE, steps=5),
                 dict(HEADLINE, steps=1), dict(HEADLINE, samples=16), dict(HEADLINE, batch=32)]
        return [dict(c) for c in cells]
    keys = ("n", "horizon", "steps", "samples", "batch")
    return [dict(zip(keys, v)) for v in itertools.product((4, 8), (20, 40), (1, 5, 10, 20), (1, 16), (1, 32))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="headline cell and one-factor variations only")
    ap.add_argument("--checkpoint", help="planner checkpoint; default: random weights, default config")
    ap.add_argument("--config", help="pretrain config (YAML) whose model section sizes the random planner, "
                                     "e.g. configs/pretrain_planner.yaml")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--loads", nargs="+", default=["idle", "busy"], choices=["idle", "busy"])
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per cell")
    ap.add_argument("--no-guided", action="store_true", help="skip the guided headline rows")
    ap.add_argument("--warm-only", action="store_true", help="only the warm-start rows (cold vs warm k=4/2)")
    ap.add_argument("--scene", default=SCENE, help="scenario (name or YAML) of the real-scene decision rows")
    ap.add_argument("--scene-decisions", type=int, default=40, help="timed decisions per scene row")
    ap.add_argument("--scene-only", action="store_true", help="only the real-scene decision rows")
    ap.add_argument("--no-scene", action="store_true", help="skip the real-scene decision rows")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    budget = args.budget or (0.6 if args.quick else 0.4)

    if args.scene_only:
        print(f"# planner latency on a real scene — {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}")
        rows = scene_rows(args)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"scene": args.scene, "rows": rows}, f, indent=1)
        return
    if args.checkpoint:
        planner = JointDiffusionPlanner.load(args.checkpoint)
    elif args.config:
        from diffplatoon.agents.diffusion.pretrain import load_config

        m = load_config(args.config).model
        planner = JointDiffusionPlanner.with_random_weights(PlannerConfig(
            DenoiserConfig(obs_dim=OBS_DIM, msg_dim=MSG_DIM, d_model=m.d_model, n_layers=m.n_layers, n_heads=m.n_heads,
                           mlp_ratio=m.mlp_ratio, chunk=m.chunk), horizon=m.horizon, num_train_steps=m.num_train_steps),
            std=0.02)
    else:
        planner = JointDiffusionPlanner.with_random_weights(PlannerConfig(DenoiserConfig(obs_dim=OBS_DIM, msg_dim=MSG_DIM)),
                                                            std=0.02)
    cfg = planner.config
    print(f"# planner latency — {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    net = cfg.denoiser
    print(f"model: d_model={net.d_model} layers={net.n_layers} heads={net.n_heads} chunk={net.chunk} "
          f"params={planner.num_parameters() / 1e6:.2f}M\n")
    print("| load | threads | N | H | steps | samples | batch | guided | p50 ms | p95 ms | plans/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    cells = [] if args.warm_only else grid(args.quick)
    guided_cells = [] if args.no_guided or args.warm_only else [dict(HEADLINE), dict(HEADLINE, samples=16)]
    for load in args.loads:
        with _background_load(load):
            for threads in args.threads:
                torch.set_num_threads(threads)
                for cell, guided in [(c, False) for c in cells] + [(c, True) for c in guided_cells]:
                    guidance = GuidanceConfig() if guided else None
                    res = measure(planner, **cell, budget_s=budget, guidance=guidance)
                    row = dict(load=load, threads=threads, guided=guided, **cell, **res)
                    rows.append(row)
                    print(f"| {load} | {threads} | {cell['n']} | {cell['horizon']} | {cell['steps']} | {cell['samples']} | "
                          f"{cell['batch']} | {'yes' if guided else 'no'} | {res['p50_ms']:.2f} | {res['p95_ms']:.2f} | "
                          f"{res['plans_per_s']:.1f} |", flush=True)

    warm_rows = []
    print("\n| load | threads | plan (8 members, H=20, 8 samples, guided) | p50 ms | p95 ms | CPU p50 ms | vs cold |")
    print("|---|---|---|---|---|---|---|")
    for load in args.loads:
        with _background_load(load):
            for threads in args.threads:
                torch.set_num_threads(threads)
                cold = None
                for label, warm, steps in WARM_ROWS:
                    res = measure(planner, n=8, horizon=20, steps=steps, samples=8, batch=1, budget_s=budget,
                                  guidance=GuidanceConfig(), warm=warm)
                    cold = cold or res["p50_ms"]
                    warm_rows.append(dict(load=load, threads=threads, plan=label, **res))
                    print(f"| {load} | {threads} | {label} | {res['p50_ms']:.2f} | {res['p95_ms']:.2f} | "
                          f"{res['cpu_p50_ms']:.2f} | {res['p50_ms'] / cold:.2f} |", flush=True)
    if cells:
        print("\nheadline (8 members, H=20, 10 steps, 1 sample, batch 1; target p50 <= 15 ms):")
        for r in rows:
            if not r["guided"] and all(r[k] == v for k, v in HEADLINE.items()):
                print(f"  {r['load']:>4}, {r['threads']} thread(s): p50 {r['p50_ms']:.2f} ms, p95 {r['p95_ms']:.2f} ms")
    print("default policy plan (warm k=2, 8 samples, guided; target p50 <= 10 ms, 1 thread):")
    for r in warm_rows:
        if r["plan"].endswith("(default)"):
            print(f"  {r['load']:>4}, {r['threads']} thread(s): p50 {r['p50_ms']:.2f} ms (CPU {r['cpu_p50_ms']:.2f} ms)")
    rows = rows + warm_rows
    if not args.no_scene:
        rows = rows + scene_rows(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"params": planner.num_parameters(), "config": cfg.to_dict(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
