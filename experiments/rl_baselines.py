"""Experiment: RL baselines per scenario: DPPO fine-tuning of the pre-trained planner and MLP PPO (centralised
critic), each with the same reward and policy-step budget, against the pre-trained planner and CACC.

How to run (a pre-trained planner first, e.g. `diffplatoon pretrain configs/pretrain_planner.yaml`):
    .venv/bin/python experiments/rl_baselines.py --planner runs/planner_mix_r1_21k.pt          # default budget
    .venv/bin/python experiments/rl_baselines.py --planner P --iterations 3 --batch 1000 --episodes 20 \\
        --out runs/rl_baselines_small                                                         # a quick look
    .venv/bin/python experiments/rl_baselines.py --planner P --ray-address auto --env-runners 8   # on a cluster

Steps per scenario (``--scenarios``, default onramp_merge, cut_in, lane_drop), each skipped when its output
exists under ``--out`` (a rerun resumes: a training killed mid-way continues from its last checkpoint, an
evaluation runs only the episodes missing from its records):
1. ``<scenario>/dppo``: `configs/dppo_planner.yaml` (``--dppo-config``) with the planner checkpoint;
   ``<scenario>/mlp``: `configs/ppo_mlp.yaml` (``--mlp-config``), vehicle-level PPO with the centralised
   critic. Both train on the scenario for ``--iterations`` x ``--batch`` policy steps with the DPPO config's
   episode length (DPPO's action chunks of `act_steps` policy steps make ``--batch`` / act_steps RLlib env
   steps), a checkpoint every iteration, each iteration's return averaged over about its own episodes.
2. ``<scenario>/eval`` (`diffplatoon.evaluation.runner.evaluate`, the catalogue scenario as is):
   - every iteration's checkpoint of both methods on the first ``--curve-episodes`` episodes (the learning
     curves' merge success: the deterministic policy, as the table evaluates it);
   - ``--episodes`` episodes of ``pretrained`` (the planner as the ``diffusion:`` product policy),
     ``pretrained-matched`` (the same weights run like the RL module: 1 sample, a plan every act_steps steps,
     5 DDIM steps from noise without warm start: the like-for-like baseline of the fine-tuned module),
     ``fine-tuned`` (the last DPPO checkpoint), ``mlp-ppo`` (the last MLP checkpoint) and ``cacc``.
   The same episode indices for every policy, so the final checkpoints' curve points are the table's first
   episodes (not run twice). The folder's run.json describes the table's evaluation.
3. ``table.md`` and ``table.json`` (atomic): per scenario and policy, episodes, collision episodes with the
   Wilson 95% interval, at-fault collisions (count, and episodes with one with the Wilson interval), off-road
   episodes with the Wilson interval, mean speed [m/s] ± 95% CI and merge success ± 95% CI (scenarios with
   merges); ``learning_curves_<scenario>.png``: both methods' training return per member (`member_return_scale`:
   RLlib sums the return over its agents, members for MLP PPO, platoons for DPPO) and collisions per episode
   (training episodes, `metrics.jsonl`), and the merge success of each iteration's checkpoint.

A rerun with a larger ``--iterations`` continues the trainings from their last checkpoints and evaluates the new
ones; a different ``--batch`` or config needs another ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = ("onramp_merge", "cut_in", "lane_drop")
METHODS = {"dppo": "DPPO (fine-tuned planner)", "mlp": "MLP PPO (centralised critic)"}
LABELS = ("pretrained", "pretrained-matched", "fine-tuned", "mlp-ppo", "cacc")
COLUMNS = ("policy", "episodes", "collision episodes [95% CI]", "at-fault collisions (episodes [95% CI])",
           "off-road episodes [95% CI]", "mean speed [m/s]", "merge success")


# -- training --------------------------------------------------------------------------------------


def training_configs(scenario: str, planner: Path, iterations: int, batch: int, out: Path, *,
                     dppo_config: Path, mlp_config: Path, env_runners: int | None = None) -> dict[str, Any]:
    """The two `TrainConfig`s of a scenario ("dppo", "mlp"): the same scenario, episode length and policy-step
    budget (``iterations`` x ``batch``), run folders ``out/<scenario>/<method>``."""
    from diffplatoon.agents.rllib.train import load_config
    from diffplatoon.envs.episodes import resolve_scenario

    base = load_config(dppo_config)
    spec = resolve_scenario(scenario)
    duration = base.duration or spec.duration
    # metrics.jsonl's return is a moving average over `metrics_episodes`: about one iteration's episodes, so
    # that each point of the curve is that iteration's policy.
    episodes_per_iteration = max(1, round(batch / (duration * spec.policy_frequency)))
    runners = {} if env_runners is None else {"env_runners": env_runners}
    decisions = max(1, batch // base.act_steps)  # RLlib's env steps are chunks of act_steps policy steps
    dppo = base.model_copy(update={
        "name": f"dppo_{scenario}", "scenario": scenario, "model": {**base.model, "checkpoint": str(planner.resolve())},
        "iterations": iterations, "train_batch_size": decisions, "minibatch_size": min(base.minibatch_size, decisions),
        "checkpoint_every": 1, "metrics_episodes": episodes_per_iteration, "out": str(out / scenario / "dppo"),
        **runners})
    mlp_base = load_config(mlp_config)
    mlp = mlp_base.model_copy(update={
        "name": f"mlp_{scenario}", "scenario": scenario, "duration": duration, "iterations": iterations,
        "train_batch_size": batch, "minibatch_size": min(mlp_base.minibatch_size, batch), "checkpoint_every": 1,
        "metrics_episodes": episodes_per_iteration, "out": str(out / scenario / "mlp"), **runners})
    return {"dppo": dppo, "mlp": mlp}


def run_training(cfg: Any, console: Any) -> str:
    """Train, resume or skip one run; returns what was done ("trained", "resumed" or "skipped")."""
    from diffplatoon.agents.rllib.train import checkpoint_iteration, checkpoints, train

    found = checkpoints(cfg.out)
    if found and checkpoint_iteration(found[-1]) >= cfg.iterations:
        return "skipped"
    train(cfg, resume=cfg.out if found else None, console=console)
    return "resumed" if found else "trained"


# -- evaluation ------------------------------------------------------------------------------------


def table_policies(planner: Path, scenario_out: Path, act_steps: int) -> dict[str, str]:
    """Label -> policy string of the table's policies for one scenario folder."""
    from diffplatoon.agents.rllib.train import checkpoints

    def last(run: Path) -> str:
        found = checkpoints(run)
        if not found:
            raise FileNotFoundError(f"{run}: no checkpoint (its training did not finish)")
        return f"rllib:{found[-1]}"

    return {
        "pretrained": f"diffusion:{planner}",
        "pretrained-matched": f"diffusion:{planner},samples=1,replan_every={act_steps},steps=5,warm_steps=0",
        "fine-tuned": last(scenario_out / "dppo"),
        "mlp-ppo": last(scenario_out / "mlp"),
        "cacc": "cacc",
    }


def curve_policies(run: Path) -> dict[int, str]:
    """Iteration -> ``rllib:`` policy string of each checkpoint of a run folder."""
    from diffplatoon.agents.rllib.train import checkpoint_iteration, checkpoints

    return {checkpoint_iteration(c): f"rllib:{c}" for c in checkpoints(run)}


def _mean_ci(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and 95% half-width of the finite values (None where there are none; NaN half-width for one)."""
    from diffplatoon.evaluation import stats

    ci = stats.mean_ci(v for v in values if v is not None)
    return (None, None) if ci.n == 0 else (ci.mean, ci.half_width)


def table_row(scenario: str, label: str, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The table's columns of one (scenario, policy) cell from its successful episode records."""
    from diffplatoon.evaluation import stats

    n = len(records)
    fault = [int(r.get("at_fault_collisions") or 0) for r in records]
    speed, speed_half = _mean_ci([r.get("mean_speed") for r in records])
    merge, merge_half = _mean_ci([r.get("merge_success") for r in records])
    return {
        "scenario": scenario, "policy": label, "episodes": n,
        "collision": stats.rate_cell(sum(bool(r["collision"]) for r in records), n),
        "at_fault_collisions": sum(fault), "at_fault": stats.rate_cell(sum(f > 0 for f in fault), n),
        "offroad": stats.rate_cell(sum(bool(r["offroad"]) for r in records), n),
        "mean_speed": speed, "mean_speed_half": speed_half,
        "merge_success": merge, "merge_success_half": merge_half,
    }


def scenario_rows(scenario: str, policies: dict[str, str], records: Sequence[dict[str, Any]],
                  episodes: int) -> list[dict[str, Any]]:
    """One row per label of ``policies`` from the records of its first ``episodes`` episodes (failed ones counted
    apart in ``failed``)."""
    rows = []
    for label, policy in policies.items():
        mine = [r for r in records if r["scenario"] == scenario and r["policy"] == policy and r["episode"] < episodes]
        row = table_row(scenario, label, [r for r in mine if not r.get("failed")])
        row["failed"] = sum(1 for r in mine if r.get("failed"))
        row["policy_string"] = policy
        rows.append(row)
    return rows


def cells(row: dict[str, Any]) -> list[str]:
    """A row's cells in `COLUMNS` order."""
    from diffplatoon.evaluation.formatting import fmt_pm, fmt_rate_cell

    episodes = str(row["episodes"]) + (f" ({row['failed']} failed)" if row.get("failed") else "")
    return [row["policy"], episodes, fmt_rate_cell(row["collision"]),
            f"{row['at_fault_collisions']} ({fmt_rate_cell(row['at_fault'])})", fmt_rate_cell(row["offroad"]),
            fmt_pm(row["mean_speed"], row["mean_speed_half"]), fmt_pm(row["merge_success"], row["merge_success_half"])]


def write_table(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> tuple[Path, Path]:
    """``table.md`` and ``table.json`` in ``out`` (atomic writes); returns both paths."""
    from diffplatoon import io
    from diffplatoon.evaluation.formatting import grouped_markdown

    header = [f"# RL baselines: {meta['budget']} policy steps per method and scenario "
              f"({meta['iterations']} iterations x {meta['batch']}), {meta['episodes']} evaluation episodes per policy",
              "", f"Planner: `{meta['planner']}`. Intervals: Wilson 95% for episode rates, t 95% for means. "
              "Merge success: share of the members with a merge task that end in their target lane "
              "('-': the scenario has none).", ""]
    figures = [f"![{s}](learning_curves_{s}.png)" for s in meta["scenarios"]]
    md = "\n".join(header) + "\n" + grouped_markdown(rows, COLUMNS, cells) + "\n" + "\n".join(figures) + "\n"
    return (io.atomic_write_text(out / "table.md", md),
            io.atomic_write_json(out / "table.json", {"meta": meta, "rows": io.json_safe(rows)}))


# -- learning curves -------------------------------------------------------------------------------


def member_return_scale(cfg: Any) -> float:
    """Factor that turns a run's RLlib episode return (summed over its agents) into a return per member: the
    vehicle grouping sums the members, the platoon grouping sums the platoons' mean (or summed) member rewards.
    Exact for equal platoons whose members all drive the whole episode, approximate otherwise."""
    from diffplatoon.envs.episodes import resolve_scenario

    spec = resolve_scenario(cfg.scenario)
    if cfg.grouping == "platoon" and cfg.platoon_reward == "mean":
        return 1.0 / len(spec.platoons)
    return 1.0 / spec.num_controlled


def curve_series(run: Path, records: Sequence[dict[str, Any]], curve_episodes: int,
                 return_scale: float = 1.0) -> dict[str, list]:
    """A run's per-iteration series: ``iteration``, ``return`` (times ``return_scale``) and ``collisions``
    (training episodes, from metrics.jsonl), and ``merge_iteration`` / ``merge_success`` (each checkpoint's
    first ``curve_episodes`` evaluation episodes; iterations whose episodes have no merge task are left out)."""
    from diffplatoon import io

    rows = list(io.read_jsonl(run / "metrics.jsonl")) if (run / "metrics.jsonl").is_file() else []
    series: dict[str, list] = {"iteration": [r["iteration"] for r in rows],
                               "return": [None if r.get("return_mean") is None else r["return_mean"] * return_scale
                                          for r in rows],
                               "collisions": [r.get("collisions") for r in rows],
                               "merge_iteration": [], "merge_success": []}
    for iteration, policy in sorted(curve_policies(run).items()):
        merge, _ = _mean_ci([r.get("merge_success") for r in records if r["policy"] == policy
                             and r["episode"] < curve_episodes and not r.get("failed")])
        if merge is not None:
            series["merge_iteration"].append(iteration)
            series["merge_success"].append(merge)
    return series


def plot_curves(scenario: str, series: dict[str, dict[str, list]], png: Path, curve_episodes: int) -> Path:
    """Both methods' return, collisions and merge success per iteration in one PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from diffplatoon.agents.rllib.run_folder import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    panels = (("return", "iteration", "training episode return per member"),
              ("collisions", "iteration", "collisions per training episode"),
              ("merge_success", "merge_iteration", f"merge success ({curve_episodes} eval. episodes)"))
    for ax, (key, x_key, title) in zip(axes, panels):
        for method, s in series.items():
            pts = [(x, y) for x, y in zip(s[x_key], s[key]) if y is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=METHODS[method])
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            why = "no merge task in these episodes" if key == "merge_success" else "no training episode finished"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.suptitle(scenario)
    fig.tight_layout()
    return save_figure(fig, png)


# -- driver ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--planner", type=Path, required=True, help="pre-trained planner checkpoint")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS))
    parser.add_argument("--iterations", type=int, default=10, help="training iterations per method and scenario")
    parser.add_argument("--batch", type=int, default=2000, help="policy steps per iteration (both methods)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy and scenario")
    parser.add_argument("--curve-episodes", type=int, default=5,
                        help="evaluation episodes per checkpoint for the merge-success curves (0: none)")
    parser.add_argument("--dppo-config", type=Path, default=REPO / "configs" / "dppo_planner.yaml")
    parser.add_argument("--mlp-config", type=Path, default=REPO / "configs" / "ppo_mlp.yaml")
    parser.add_argument("--env-runners", type=int, default=None,
                        help="remote env runners per training (default: the configs' value, 0 = the driver samples)")
    parser.add_argument("--ray-address", default=None, help="join this Ray cluster (e.g. auto) instead of a local one")
    parser.add_argument("--out", type=Path, default=Path("runs/rl_baselines"))
    args = parser.parse_args(argv)
    if min(args.iterations, args.batch, args.episodes) < 1 or args.curve_episodes < 0:
        parser.error("--iterations, --batch and --episodes must be >= 1, --curve-episodes >= 0")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the steps of the module docstring; returns ``{"steps": {step: what was done}, "rows": table rows,
    "table": (md, json), "figures": [png]}``."""
    import ray
    from rich.console import Console

    from diffplatoon.cluster import connect_ray
    from diffplatoon.evaluation.formatting import print_grouped
    from diffplatoon.evaluation.runner import evaluate, load_records

    args = parse_args(argv)
    console = Console(width=160)
    if not args.planner.is_file():
        raise SystemExit(f"{args.planner}: no such planner checkpoint")
    out: Path = args.out
    budget = args.iterations * args.batch
    console.print(f"planner {args.planner}; {args.iterations} iterations x {args.batch} policy steps = {budget} "
                  f"per method and scenario; scenarios {', '.join(args.scenarios)}")
    steps: dict[str, str] = {}
    rows: list[dict[str, Any]] = []
    figures: list[Path] = []
    timings: dict[str, float] = {}
    started_ray = connect_ray(args.ray_address)
    try:
        for scenario in args.scenarios:
            configs = training_configs(scenario, args.planner, args.iterations, args.batch, out,
                                       dppo_config=args.dppo_config, mlp_config=args.mlp_config,
                                       env_runners=args.env_runners)
            for method, cfg in configs.items():
                t0 = time.perf_counter()
                steps[f"{scenario}/{method}"] = run_training(cfg, console)
                if steps[f"{scenario}/{method}"] != "skipped":
                    timings[f"{scenario}/{method}"] = time.perf_counter() - t0

            eval_out = out / scenario / "eval"
            runs = {method: Path(cfg.out) for method, cfg in configs.items()}
            policies = table_policies(args.planner, out / scenario, configs["dppo"].act_steps)
            t0 = time.perf_counter()
            done = []
            if args.curve_episodes:
                curve = [p for run in runs.values() for p in curve_policies(run).values()]
                done.append(evaluate(curve, [scenario], min(args.curve_episodes, args.episodes), eval_out,
                                     progress=False, report=False, render_replays=False, console=console))
            done.append(evaluate(list(policies.values()), [scenario], args.episodes, eval_out, progress=False,
                                 report=False, render_replays=False, console=console))
            ran = sum(s.jobs - s.skipped for s in done)  # attempted now (completed or failed)
            steps[f"{scenario}/eval"] = f"{ran} episodes run" if ran else "skipped"
            if ran:
                timings[f"{scenario}/eval"] = time.perf_counter() - t0

            records = load_records(eval_out)
            rows += scenario_rows(scenario, policies, records, args.episodes)
            series = {m: curve_series(runs[m], records, args.curve_episodes, member_return_scale(cfg))
                      for m, cfg in configs.items()}
            figures.append(plot_curves(scenario, series, out / f"learning_curves_{scenario}.png", args.curve_episodes))
    finally:
        if started_ray:
            ray.shutdown()

    try:  # a resumed run keeps the wall times of the steps that earlier runs did
        timings = {**json.loads((out / "table.json").read_text())["meta"]["wall_s"], **timings}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    meta = {"planner": str(args.planner), "scenarios": list(args.scenarios), "iterations": args.iterations,
            "batch": args.batch, "budget": budget, "episodes": args.episodes, "curve_episodes": args.curve_episodes,
            "dppo_config": str(args.dppo_config), "mlp_config": str(args.mlp_config), "steps": steps,
            "wall_s": timings}
    table = write_table(out, rows, meta)
    print_grouped(console, rows, COLUMNS, cells)
    console.print("steps: " + ", ".join(f"{k} {v}" for k, v in steps.items()))
    console.print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    console.print(f"table: {table[0]}; figures: {', '.join(str(f) for f in figures)}")
    return {"steps": steps, "rows": rows, "table": table, "figures": figures}


if __name__ == "__main__":
    main()
