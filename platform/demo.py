"""`make demo`: a few-minute tour of the platform on small defaults.

Stages, each printing what it does and where its output went:
1. the scenario catalogue, every entry validated;
2. a top-down GIF of the on-ramp merge driven by the CACC expert;
3. a baseline safety evaluation (CACC vs IDM on the stress scenarios) with its report;
4. the diffusion workflow at toy scale: CACC demonstrations → pre-training the joint planner →
   evaluating it (guided + shielded) against CACC;
5. a short DPPO fine-tuning run of that planner under RLlib on the on-ramp merge, then an
   evaluation report comparing it with the pre-trained planner and the experts.
Sizes are toys so the tour fits in minutes; the configs in configs/ are the real starting points.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from diffplatoon.scenarios import catalogue_names, load_scenario

STRESS_SCENARIOS = ["hard_brake", "cut_in", "comm_dropout"]


def run_demo(out: Path, console: Console, *, episodes: int = 20) -> None:
    """Run every demo stage, writing outputs under `out`."""
    from diffplatoon.cli_scenario import one_line_summary

    out.mkdir(parents=True, exist_ok=True)
    console.print(Rule("1. The scenario catalogue"))
    for name in catalogue_names():
        console.print(f"  [green]OK[/green] {one_line_summary(load_scenario(name))}", highlight=False)

    console.print(Rule("2. A rendered scenario"))
    from diffplatoon.run import render_scenario

    gif = render_scenario(load_scenario("onramp_merge"), seconds=20, out_path=out / "onramp_merge.gif", controller="cacc")
    console.print(f"  top-down replay of onramp_merge (CACC platoon): {gif}")

    console.print(Rule("3. Baseline safety evaluation: CACC vs IDM"))
    from diffplatoon.evaluation.runner import evaluate

    evaluate(["cacc", "idm"], STRESS_SCENARIOS, episodes, out / "eval-baselines", worst_k=2)
    console.print(f"  report: {out / 'eval-baselines' / 'report.md'} (and report.html)")

    console.print(Rule("4. Joint diffusion planner: demonstrations → pre-training → evaluation"))
    from diffplatoon.agents.diffusion.demos import collect_demos
    from diffplatoon.agents.diffusion.pretrain import PretrainConfig, pretrain

    demos = out / "demos"
    collect_demos(["highway_platoon", "hard_brake", "cut_in"], "cacc", 6, demos)
    config = PretrainConfig.model_validate(
        {
            "demos": str(demos),
            "out": str(out / "pretrain"),
            "validate_every": 100,
            "checkpoint_every": 200,
            "model": {"d_model": 64, "n_layers": 2},
            "train": {"steps": 400, "batch_size": 32},
            "eval": {"scenes": 64},
        }
    )
    best = pretrain(config)
    console.print(f"  planner checkpoint: {best} (loss curve and held-out quality next to it)")
    evaluate([f"diffusion:{best}", "cacc"], ["hard_brake", "cut_in"], 3, out / "eval-diffusion", worst_k=1)
    console.print(f"  report: {out / 'eval-diffusion' / 'report.md'}")

    console.print(Rule("5. DPPO fine-tuning of the planner under RLlib, then a comparison"))
    from diffplatoon.agents.rllib.train import train, validate_config

    dppo = validate_config(
        {
            "name": "demo_dppo",
            "scenario": "onramp_merge",
            "grouping": "platoon",
            "module": "diffusion",
            "model": {"checkpoint": str(best), "denoising_steps": 5, "ft_steps": 5, "update_steps": 2},
            "duration": 10,
            "envs_per_runner": 4,
            "act_steps": 2,
            "train_batch_size": 200,  # decisions: 400 policy steps
            "minibatch_size": 100,
            "num_epochs": 2,
            "iterations": 2,
            "checkpoint_every": 1,
            "out": str(out / "dppo"),
        },
        source="demo DPPO config",
    )
    run = train(dppo, resume=out / "dppo" if (out / "dppo" / "run.json").exists() else None)
    console.print(f"  fine-tuned run: {run} (metrics.jsonl, learning curve, checkpoints)")
    evaluate(
        [f"rllib:{run}", f"diffusion:{best}", "cacc", "idm"], ["onramp_merge"], 3, out / "eval-dppo", worst_k=1
    )
    console.print(f"  report: {out / 'eval-dppo' / 'report.md'}")

    console.print(f"\n[bold]Done.[/bold] Outputs are under {out}/")
