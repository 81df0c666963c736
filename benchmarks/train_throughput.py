"""Env steps per second of one RLlib PPO training iteration (sampling + learner update), per module kind.

How to run:
    .venv/bin/python benchmarks/train_throughput.py                       # onramp_merge, 2000 steps/iteration
    .venv/bin/python benchmarks/train_throughput.py --scenario highway_platoon --batch 4000 --iterations 3
    .venv/bin/python benchmarks/train_throughput.py --json out.json

"Env steps" are policy steps of simulated driving (0.2 s each on the catalogue scenarios): a DPPO config
with `act_steps` T > 1 makes each RLlib env step an action chunk of T policy steps, so its column samples
`--batch` / T RLlib steps per iteration and counts each as T; both columns then drive the same simulated
time per iteration. Each column builds a PPO algorithm from a `TrainConfig` (driver-process sampling,
`num_env_runners=0`, `num_learners=0`, torch threads 1, the same scenario, episode length, batch size
and env copies per runner) and runs one warm-up iteration; then `--iterations` rounds each time one
iteration of every column, in an order that alternates from round to round, all in this one process,
so that load from other jobs on a shared machine drifts over both columns alike (timing the columns
one after the other gave ratios 0.6-0.9 from one run to the next at load 3-7). Reported per column: env
steps/s over the whole iteration (wall clock), env steps per CPU second of this process (sampling and
learning both run in it, so this figure moves least with other jobs' load), and the share of the
iteration spent sampling (RLlib's smoothed `env_runner_sampling_timer` over its `training_iteration`
timer; the rest is the learner update); for the diffusion column also the share of steps the shield
overrode (the learner skips those rows, so a planner that the shield overrides more often trains
faster). The ratio line gives the ratio of the totals and the range of the per-round ratios.

Columns:
- "mlp": vehicle grouping, `SharedMLPModule`, minibatches of 250, 5 epochs (configs/ppo_mlp.yaml's PPO settings).
- "diffusion": platoon grouping, `DiffusionPlannerModule` + `DPPOLearner` with everything that
  configs/dppo_planner.yaml trains with (model, learner, minibatch size, epochs, env copies per runner)
  except the batch size, the scenario and the episode length, which are the benchmark's for both
  columns. That config runs 5 DDIM steps, all fine-tuned, one of them recomputed per minibatch
  (`update_steps: 1`), guidance on the final step, the shield on, action chunks of 2 policy steps
  (`act_steps: 2`), and 8 env copies per runner whose platoons are planned in one batched chain; the MLP
  column gets the same env copies per runner (`--envs` sets both). The planner is the config's checkpoint
  when that file exists, else `--planner`, else a random one of the default pre-training size
  (configs/pretrain_planner.yaml): the network's cost depends on its size, not its weights, but the
  shield's and the learner's depend on how often the shield overrides the plans.

Target from the issue: diffusion >= 0.8 x mlp (it was 0.67-0.73 x).

Measured on a 2-core AMD EPYC shared with other jobs (`OMP_NUM_THREADS=1 .venv/bin/python
benchmarks/train_throughput.py`, 3 rounds, code of 17:05 on 2026-12-03: the route and lane-end guidance
terms, curved corridors, the shield's lane-end checks): diffusion / mlp = 0.63 (rounds 0.60-0.70; per CPU
second 0.64) at load 1.7; 0.65 (0.62-0.69) and 0.66 (0.61-0.71) at load 3.3 in two more runs; 0.73
(0.71-0.74) at load 3.2 on the code just before its featurisation and learner speed-ups. Those save about
0.5 s of the diffusion column's 21-25 s per iteration, less than the spread between runs (two columns of
the diffusion config in one process, one on the earlier code, 6 alternating rounds: 1.01 x, rounds ranging
over +-10 %). With `--envs 16` (both columns): 0.67 (0.66-0.70) at load 1.4. At 10:29 the same command gave
0.71 (0.70-0.71) at load 6.0, with the guidance of that time.

Where the diffusion column's time went at 10:29 (one iteration of 2000 policy steps, 20.8 s wall, perf_counter
around each function): env stepping 10.5 s (the MLP column's: 11-12 s); the module's forward 5.2 s =
the 5 denoising steps 2.0 s + encoder 0.3 s (2.8 ms per step for 8 scenes, 1.4 ms for one: half is
per-call cost of the denoiser), guidance 0.8 s, shield 0.7 s, featurisation 0.7 s (`platoon_inputs`
0.45 s, lane corridors 0.13 s), guidance context 0.13 s, plan rollout 0.1 s, the module's own
bookkeeping (chain, log-probabilities, clipping, tensor conversions) about 0.3 s; the learner 3.7 s =
21 minibatches of forward 1.1 s + backward 2.1 s + Adam 0.3 s (about half of it matrix products at
roughly 60 GFLOP/s; the rest attention and elementwise work). The MLP column spends 0.2 s in its
forward and 1.8 s in its learner. More env copies per runner amortise the per-call cost of the
denoiser, guidance and shield (`--envs 16`: 3.2-3.4 ms of forward per scene instead of 4.2-5.6 ms).
On the code of 17:05 (two iterations, 24.4 s each, load 3.2): env stepping 11.4 s and resets 1.1 s; the
forward 6.3 s = denoising steps 2.1 s + encoder 0.2 s, guidance 1.6 s (its cost terms twice, their
gradient, the line search), shield 0.9 s, featurisation 0.8 s (`platoon_inputs` 0.4 s, corridors 0.2 s),
guidance context 0.2 s; the learner 5.0 s (21 minibatches of forward 1.6 s + backward 2.9 s; the encoder's
part of a forward and backward is about 30 %, its 96 -> 1920 modulation layer more than half of that).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from diffplatoon.agents.rllib.train import TrainConfig, build_ppo_config, load_config  # noqa: E402


REPO = Path(__file__).resolve().parents[1]
DPPO_CONFIG = REPO / "configs" / "dppo_planner.yaml"
ENVS_PER_RUNNER: int | None = None  # set by --envs (every column); None: the DPPO config's
PLANNER_CHECKPOINT: str | None = None  # set by --planner


def envs_per_runner() -> int:
    return ENVS_PER_RUNNER if ENVS_PER_RUNNER is not None else load_config(DPPO_CONFIG).envs_per_runner


def mlp_column(scenario: str, batch: int, duration: float) -> TrainConfig:
    return TrainConfig(name="bench_mlp", scenario=scenario, grouping="vehicle", module="mlp", duration=duration,
                       train_batch_size=batch, minibatch_size=min(250, batch), num_epochs=5, torch_threads=1,
                       envs_per_runner=envs_per_runner())


# Planner size of the default pre-training config (configs/pretrain_planner.yaml), used when no
# pre-trained checkpoint is found.
PRETRAIN_SIZE = {"horizon": 20, "d_model": 96, "n_layers": 2, "n_heads": 4, "chunk": 5, "num_train_steps": 100}


def diffusion_column(scenario: str, batch: int, duration: float) -> TrainConfig:
    base = load_config(DPPO_CONFIG)
    model = dict(base.model)
    checkpoint = PLANNER_CHECKPOINT or model.get("checkpoint")
    if checkpoint and not PLANNER_CHECKPOINT and not Path(checkpoint).is_absolute():
        checkpoint = str(REPO / checkpoint)
    if checkpoint and Path(checkpoint).is_file():
        model["checkpoint"] = checkpoint
    else:
        from diffplatoon.envs.rllib_env import resolve_scenario

        model.pop("checkpoint", None)
        model["planner"] = {**PRETRAIN_SIZE, "dt": 1.0 / resolve_scenario(scenario).policy_frequency}
    decisions = max(1, batch // base.act_steps)  # RLlib's env steps are action chunks of act_steps policy steps
    return base.model_copy(update={
        "name": "bench_diffusion", "scenario": scenario, "duration": duration, "model": model,
        "train_batch_size": decisions, "minibatch_size": min(base.minibatch_size, decisions), "env_runners": 0,
        "torch_threads": 1, "envs_per_runner": envs_per_runner(), "evaluation_every": 0})


COLUMNS: dict[str, Callable[[str, int, float], TrainConfig] | None] = {
    "mlp": mlp_column,
    "diffusion": diffusion_column,
}


def build(cfg: TrainConfig) -> Any:
    """The PPO algorithm of ``cfg`` after one warm-up iteration (env creation, first forward, optimiser state)."""
    import torch

    torch.set_num_threads(cfg.torch_threads)
    algo = build_ppo_config(cfg).build_algo()
    algo.train()
    return algo


def time_iteration(algo: Any, cfg: TrainConfig) -> tuple[float, float, float, dict[str, Any]]:
    """(policy steps, wall seconds, CPU seconds of this process, RLlib result) of one training iteration."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = algo.train()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return float(result["env_runners"]["num_env_steps_sampled"]) * cfg.act_steps, wall, cpu, result


def summarize(steps: float, wall: float, cpu: float, iterations: int, result: dict[str, Any]) -> dict[str, Any]:
    """A column's figures from its timed iterations and its last RLlib result."""
    timers = result.get("timers", {})  # RLlib's smoothed per-iteration timers
    share = (timers["env_runner_sampling_timer"] / timers["training_iteration"]
             if "env_runner_sampling_timer" in timers and timers.get("training_iteration") else None)
    shield = [float(m["shield_rate"]) for m in result.get("learners", {}).values()
              if isinstance(m, dict) and "shield_rate" in m]
    return {"env_steps_per_s": steps / wall, "env_steps_per_cpu_s": steps / cpu, "iteration_s": wall / iterations,
            "sampling_share": share, "env_steps": steps, "shield_rate": shield[0] if shield else None}


def measure_interleaved(configs: dict[str, TrainConfig], iterations: int,
                        builder: Callable[[TrainConfig], Any] = build) -> tuple[dict[str, dict[str, Any]],
                                                                                  list[dict[str, float]]]:
    """Every column's figures over ``iterations`` rounds; a round times one iteration of each column, in
    alternating order, so that load from other jobs drifts over all columns alike.

    Returns the per-column summaries and, per round, each column's policy steps/s."""
    algos: dict[str, Any] = {}
    try:
        for name, cfg in configs.items():
            algos[name] = builder(cfg)
        totals = {name: [0.0, 0.0, 0.0] for name in configs}
        last: dict[str, dict[str, Any]] = {}
        rounds: list[dict[str, float]] = []
        names = list(configs)
        for r in range(iterations):
            this_round: dict[str, float] = {}
            for name in (names if r % 2 == 0 else names[::-1]):
                steps, wall, cpu, last[name] = time_iteration(algos[name], configs[name])
                for k, v in enumerate((steps, wall, cpu)):
                    totals[name][k] += v
                this_round[name] = steps / wall
            rounds.append(this_round)
    finally:
        for algo in algos.values():
            algo.stop()
    return {name: summarize(*totals[name], iterations, last[name]) for name in configs}, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="onramp_merge")
    parser.add_argument("--batch", type=int, default=2000, help="env steps per iteration")
    parser.add_argument("--duration", type=float, default=20.0, help="episode length [s]")
    parser.add_argument("--iterations", type=int, default=3, help="timed rounds (one iteration per column each)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--planner", default=None, help="pre-trained planner checkpoint for the diffusion column")
    parser.add_argument("--only", choices=sorted(COLUMNS), default=None, help="measure one column")
    parser.add_argument("--envs", type=int, default=None,
                        help="vectorized env copies per runner, every column (default: the DPPO config's)")
    args = parser.parse_args()
    global PLANNER_CHECKPOINT, ENVS_PER_RUNNER
    PLANNER_CHECKPOINT, ENVS_PER_RUNNER = args.planner, args.envs

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    results: dict[str, Any] = {"scenario": args.scenario, "batch": args.batch, "duration": args.duration,
                               "envs_per_runner": envs_per_runner(),
                               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"}
    configs = {name: column(args.scenario, args.batch, args.duration) for name, column in COLUMNS.items()
               if column is not None and (not args.only or name == args.only)}
    try:
        measured, rounds = measure_interleaved(configs, args.iterations)
    finally:
        ray.shutdown()
    results.update({name: measured.get(name) for name in COLUMNS})
    results["rounds"] = rounds
    results["load"] = " ".join(f"{v:.2f}" for v in os.getloadavg())  # 1, 5, 15 min, at the end

    print(f"\n{args.scenario}, {args.batch} env steps/iteration, {args.duration:g} s episodes, "
          f"{envs_per_runner()} env(s) per runner, {results['machine']}")
    if results.get("diffusion"):
        m = diffusion_column(args.scenario, args.batch, args.duration).model
        print("diffusion: " + ", ".join(f"{k}={m.get(k)}" for k in ("denoising_steps", "ft_steps", "update_steps",
                                                                   "guidance", "shield"))
              + f", act_steps={load_config(DPPO_CONFIG).act_steps} (env steps below are policy steps)")
    print(f"{'module':<10} {'env steps/s':>12} {'per CPU s':>10} {'s/iteration':>12} {'sampling share':>15} "
          f"{'shield rate':>12}")
    for name in COLUMNS:
        r = results[name]
        if r is None:
            print(f"{name:<10} {'(not measured)':>12}")
            continue
        share = "—" if r["sampling_share"] is None else f"{100 * r['sampling_share']:.0f}%"
        shield = "—" if r.get("shield_rate") is None else f"{100 * r['shield_rate']:.0f}%"
        print(f"{name:<10} {r['env_steps_per_s']:>12.0f} {r['env_steps_per_cpu_s']:>10.0f} {r['iteration_s']:>12.2f} "
              f"{share:>15} {shield:>12}")
    if results.get("diffusion") and results.get("mlp"):
        ratio = results["diffusion"]["env_steps_per_s"] / results["mlp"]["env_steps_per_s"]
        per_round = [r["diffusion"] / r["mlp"] for r in rounds]
        cpu_ratio = results["diffusion"]["env_steps_per_cpu_s"] / results["mlp"]["env_steps_per_cpu_s"]
        results.update({"ratio": ratio, "round_ratios": per_round, "cpu_ratio": cpu_ratio})
        print(f"diffusion / mlp = {ratio:.2f} (rounds {min(per_round):.2f}–{max(per_round):.2f}; target >= 0.8); "
              f"per CPU second {cpu_ratio:.2f}")
    print(f"load average {results['load']}")
    if args.json:
        from diffplatoon.io import atomic_write_json

        atomic_write_json(args.json, results)


if __name__ == "__main__":
    main()
