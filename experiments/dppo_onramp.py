"""Experiment: DPPO fine-tuning of the pre-trained planner on onramp_merge, then pretrained vs fine-tuned vs MLP PPO vs CACC.

How to run (a pre-trained planner first: `diffplatoon pretrain configs/pretrain_planner.yaml`):
    .venv/bin/python experiments/dppo_onramp.py                                  # default budget (see --help)
    .venv/bin/python experiments/dppo_onramp.py --iterations 4 --batch 500 --episodes 10   # a quick look
    .venv/bin/python experiments/dppo_onramp.py --mlp runs/ppo_mlp_onramp        # reuse an MLP PPO run

Steps, each skipped when its output already exists under ``--out`` (so a rerun resumes):
1. DPPO: `configs/dppo_planner.yaml` (or ``--config``) with the planner checkpoint, ``--iterations`` × ``--batch`` policy steps
   (its action chunks of `act_steps` policy steps make ``--batch`` / act_steps RLlib env steps).
2. MLP PPO baseline on onramp_merge with the same policy-step budget (`configs/ppo_mlp.yaml` settings), unless
   ``--mlp`` names an existing run.
3. Evaluation with `diffplatoon.evaluation.runner.evaluate` on ``--episodes`` onramp_merge episodes:
   - ``pretrained``: the pre-trained planner as the ``diffusion:`` product policy (8 samples, replan every 5 steps);
   - ``pretrained-matched``: the same weights run like the RL module (1 sample, replan every act_steps steps, 5 DDIM
     steps from noise with no warm start, guidance and shield on, a plan per action chunk), the like-for-like
     baseline of the fine-tuned module;
   - ``fine-tuned``: the DPPO checkpoint (``rllib:``); ``mlp-ppo``; ``cacc``.
The table: collision rate with its Wilson 95% interval, mean speed [m/s] and merge success (share of
platoon members that end on the main road), with their episode counts.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]


def _find_planner() -> Path | None:
    """runs/pretrain/best.pt, else the newest runs/*/best.pt."""
    default = REPO / "runs" / "pretrain" / "best.pt"
    if default.is_file():
        return default
    found = sorted((REPO / "runs").glob("*/best.pt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planner", default=None, help="pre-trained planner (default: runs/pretrain/best.pt or newest runs/*/best.pt)")
    parser.add_argument("--iterations", type=int, default=10, help="DPPO iterations")
    parser.add_argument("--batch", type=int, default=1000, help="policy steps per iteration (both trainings)")
    parser.add_argument("--episodes", type=int, default=30, help="evaluation episodes per policy")
    parser.add_argument("--mlp", default=None, help="an existing MLP PPO run/checkpoint on onramp_merge")
    parser.add_argument("--config", default=str(REPO / "configs" / "dppo_planner.yaml"),
                        help="DPPO training config (its scenario, model and learner; the budget comes from here)")
    parser.add_argument("--out", default="runs/dppo_onramp")
    args = parser.parse_args()

    import ray
    from rich.console import Console
    from rich.table import Table

    from diffplatoon.agents.rllib.train import checkpoints, load_config, train
    from diffplatoon.evaluation import stats
    from diffplatoon.evaluation.runner import evaluate, load_records

    console = Console(width=140)
    planner = Path(args.planner) if args.planner else _find_planner()
    if planner is None or not planner.is_file():
        raise SystemExit("no pre-trained planner: run `diffplatoon pretrain configs/pretrain_planner.yaml` or pass --planner")
    out = Path(args.out)
    budget = args.iterations * args.batch
    console.print(f"planner {planner}; budget {args.iterations} iterations x {args.batch} policy steps = {budget} per method")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        timings = {}
        base = load_config(args.config)
        decisions = max(1, args.batch // base.act_steps)  # RLlib's env steps are chunks of act_steps policy steps
        dppo = base.model_copy(update={"model": {**base.model, "checkpoint": str(planner.resolve())},
                                       "iterations": args.iterations, "train_batch_size": decisions,
                                       "minibatch_size": min(base.minibatch_size, decisions),
                                       "checkpoint_every": args.iterations, "out": str(out / "dppo")})
        t0 = time.perf_counter()
        if not checkpoints(dppo.out):
            train(dppo, console=console)
        timings["dppo"] = time.perf_counter() - t0

        mlp_run = Path(args.mlp) if args.mlp else out / "mlp"
        if not args.mlp and not checkpoints(mlp_run):
            mlp_base = load_config(REPO / "configs" / "ppo_mlp.yaml")
            mlp = mlp_base.model_copy(update={"scenario": "onramp_merge", "duration": dppo.duration,
                                              "iterations": args.iterations, "train_batch_size": args.batch,
                                              "minibatch_size": min(mlp_base.minibatch_size, args.batch),
                                              "checkpoint_every": args.iterations, "out": str(mlp_run)})
            t0 = time.perf_counter()
            train(mlp, console=console)
            timings["mlp"] = time.perf_counter() - t0

        policies = {
            "pretrained": f"diffusion:{planner}",
            "pretrained-matched": f"diffusion:{planner},samples=1,replan_every={base.act_steps},steps=5,warm_steps=0",
            "fine-tuned": f"rllib:{out / 'dppo'}",
            "mlp-ppo": f"rllib:{mlp_run}",
            "cacc": "cacc",
        }
        t0 = time.perf_counter()
        evaluate(list(policies.values()), ["onramp_merge"], args.episodes, out / "eval", progress=False,
                 report=True, render_replays=False, console=console)
        timings["evaluation"] = time.perf_counter() - t0
    finally:
        ray.shutdown()

    records = [r for r in load_records(out / "eval") if not r.get("failed")]
    rows = {r["policy"]: r for r in stats.aggregate(records, by=("policy",), metrics=["mean_speed", "merge_success"],
                                                    rates=["collision"])}
    table = Table(title=f"onramp_merge, {args.episodes} episodes per policy; DPPO and MLP PPO budget {budget} policy steps")
    for col in ("policy", "collisions", "rate [95% CI]", "mean speed [m/s]", "merge success"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for label, name in policies.items():
        r = rows.get(name)
        if r is None:
            table.add_row(label, "—", "—", "—", "—")
            continue
        table.add_row(label, f"{r['collision_k']}/{r['collision_n']}",
                      f"{r['collision']:.3f} [{r['collision_lo']:.3f}, {r['collision_hi']:.3f}]",
                      f"{r['mean_speed_mean']:.2f} ± {r['mean_speed_half']:.2f}",
                      f"{r['merge_success_mean']:.2f} ± {r['merge_success_half']:.2f}")
    console.print(table)
    console.print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


if __name__ == "__main__":
    main()
