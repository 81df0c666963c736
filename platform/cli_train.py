"""`diffplatoon demos …`, `pretrain` and `train`: demonstrations, planner pre-training and RLlib training.

`demos collect` rolls out an expert, `demos aggregate` runs a DAgger round (the planner drives,
the expert labels), `pretrain` fits the diffusion planner on the demonstrations and `train`
fine-tunes with RLlib. Arguments are checked before Ray starts (`diffplatoon.cli_errors`);
`diffplatoon.cli` registers the demos group and the two commands on the root command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from diffplatoon.cli_errors import UserError, check_controller, check_output, check_timeout, load_spec, user_errors
from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT
from diffplatoon.scenarios import expand_sweep

console = Console()

demos_app = typer.Typer(help="Expert demonstrations for pre-training the diffusion planner.", no_args_is_help=True)


@demos_app.command("collect")
def demos_collect(
    scenarios: list[str] = typer.Option(..., "--scenarios", help="Scenario names or files; several may follow one --scenarios."),
    expert: str = typer.Option("cacc", "--expert", help="Expert policy that drives the platoons."),
    episodes: int = typer.Option(50, "--episodes", min=1, help="Episodes per scenario."),
    out: Path = typer.Option(Path("runs/demos"), "--out", help="Folder for the shards and manifest.json."),
    horizon: int = typer.Option(20, "--horizon", min=1, help="Future steps stored per sample."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]; an episode past it is stopped (its worker killed) and counted as failed."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Roll out an expert over scenarios and store (observation, inbox, future plan) shards; resumable.

    Exits with status 1 when any episode failed (crashed or timed out); rerunning the same command
    runs those again (only collected episodes are listed in the manifest).
    """
    from diffplatoon.agents.diffusion.demos import check_expert, collect_demos

    scenarios = scenarios + (more_scenarios or [])
    specs = [load_spec(name) for name in scenarios]  # every argument checked before Ray starts
    check_controller("--expert", expert, specs[0])
    with user_errors("--expert", (ValueError,)):  # every sweep variant too
        check_expert(expert, [variant for spec in specs for variant in expand_sweep(spec)[0]])
    check_output("--out", out, folder=True)
    with user_errors():
        check_timeout(episode_timeout)
        summary = collect_demos(scenarios, expert, episodes, out, horizon=horizon, ray_address=ray_address,
                                timeout=episode_timeout)
        if summary.failed:
            raise UserError(f"{summary.failed} of {summary.jobs} demo episodes failed (reasons above); "
                            f"rerun the same command to collect them")


@demos_app.command("aggregate")
def demos_aggregate(
    planner: Path = typer.Option(..., "--planner", help="Planner checkpoint to roll out (e.g. runs/pretrain/best.pt)."),
    scenarios: list[str] = typer.Option(..., "--scenarios", "--scenario", help="Scenario names or files."),
    beta: float = typer.Option(0.5, "--beta", min=0.0, max=1.0, help="Probability that a step executes the expert's action instead of the planner's (lower it each round, e.g. 0.5**round)."),
    round_: int = typer.Option(0, "--round", min=0, help="DAgger iteration: names the shards and seeds the draws."),
    expert: str = typer.Option("cacc", "--expert", help="Expert policy that labels the visited states."),
    episodes: int = typer.Option(20, "--episodes", min=1, help="Episodes per scenario."),
    out: Path = typer.Option(Path("runs/demos"), "--out", help="Demo folder to add the labelled shards to (created if new)."),
    horizon: int = typer.Option(20, "--horizon", min=1, help="Future steps stored per sample (the folder's)."),
    label_every: int = typer.Option(5, "--label-every", min=1, help="Policy steps between labelled states."),
    perturbations: int = typer.Option(0, "--perturbations", min=0, help="Perturbed copies labelled per state (members offset sideways, in heading and speed)."),
    planner_params: str = typer.Option("", "--planner-params", help="diffusion policy parameters, e.g. 'samples=4,steps=5'."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
    episode_timeout: float = typer.Option(DEFAULT_JOB_TIMEOUT, "--episode-timeout", help="Wall-clock limit per episode [s]."),
    more_scenarios: Optional[list[str]] = typer.Argument(None, hidden=True),
) -> None:
    """Closed-loop data aggregation: the planner drives, the expert labels the visited states; resumable."""
    from diffplatoon.agents.diffusion.dagger import DaggerSettings, aggregate, check_planner
    from diffplatoon.agents.diffusion.demos import check_expert

    scenarios = scenarios + (more_scenarios or [])
    specs = [variant for name in scenarios for variant in expand_sweep(load_spec(name))[0]]
    check_controller("--expert", expert, specs[0])
    with user_errors("--expert", (ValueError,)):
        check_expert(expert, specs)
    policy = f"diffusion:{planner}" + (f",{planner_params}" if planner_params else "")
    with user_errors(f"--planner {planner}", (ValueError,)):
        check_planner(policy, specs)
    check_output("--out", out, folder=True)
    with user_errors("--out", (ValueError,)):  # a folder of other settings, or a round of other settings
        check_timeout(episode_timeout)
        settings = DaggerSettings(policy, expert, beta, round_, horizon, label_every=label_every,
                                  perturbations=perturbations)
        summary = aggregate(scenarios, settings, out, episodes=episodes, ray_address=ray_address,
                            timeout=episode_timeout)
        if summary.failed:
            raise UserError(f"{summary.failed} of {summary.jobs} episodes failed (reasons above); rerun to retry them")


def pretrain_command(
    config: Path = typer.Argument(..., help="Pre-training config (YAML), e.g. configs/pretrain_planner.yaml."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last.pt."),
) -> None:
    """Pre-train the joint diffusion planner on demonstrations (DDPM, EMA, checkpoints, loss curve)."""
    from diffplatoon.agents.diffusion.pretrain import pretrain
    from diffplatoon.evaluation.episode import run_episode  # closed-loop checkpoint selection drives episodes

    with user_errors():
        out = pretrain(config, resume=resume, run_episode=run_episode)
    console.print(f"run folder: {out}")


def train_command(
    config: Path = typer.Argument(..., help="Training config (YAML), e.g. configs/ppo_mlp.yaml."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its last checkpoint. RLlib restores it by unpickling its own files, which can run code: resume only runs you trust (an rllib: policy never unpickles)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address ('auto' to join a running cluster)."),
) -> None:
    """Train cooperative driving policies with RLlib (MLP PPO baseline or DPPO fine-tuning of the planner)."""
    from diffplatoon.agents.rllib.train import train

    try:
        with user_errors():
            out = train(config, resume=resume, ray_address=ray_address)
    except FileExistsError as exc:  # a fresh run into a folder that already has checkpoints
        raise UserError(f"{exc}; pass --resume to continue it, or choose another 'out' folder") from None
    except FileNotFoundError as exc:  # --resume on a folder without a checkpoint
        raise UserError(str(exc)) from None
    console.print(f"run folder: {out}")
