"""PPO from Stable-Baselines3 on a diffplatoon scenario, then `diffplatoon evaluate` of the saved model.

The Gymnasium view (`diffplatoon/<scenario>-v0`, `diffplatoon.envs.gym_env`) is one agent that drives
every platoon member: the joint observation in, the joint [acceleration, steering] action out. The
saved zip is evaluated as the `sb3:<model.zip>` policy (`diffplatoon.agents.sb3_policy`), next to the
CACC expert, on episodes the training never played (training plays the seed streams, evaluation
episodes 0, 1, ...).

How to run:
    pip install -e ".[sb3]"
    python examples/sb3_ppo.py --timesteps 20000 --out runs/sb3_ppo
    # writes runs/sb3_ppo/model.zip, then runs (and prints) the evaluation command:
    diffplatoon evaluate --policy sb3:runs/sb3_ppo/model.zip --policy cacc \\
        --scenarios highway_platoon --episodes 20 --out runs/sb3_ppo/eval

Results to expect (measured on a 2-core CPU at load average 10 from other jobs): 20,480 steps train
in about 2 minutes and the training return barely moves at this budget (mean of the first 20 episodes
-272, of the last 20 -261); the evaluation, 20 episodes per policy in about a minute, shows the
deterministic PPO policy colliding in 2/20 episodes at a mean speed of 27.2 m/s, against CACC's 0/20
at 25.0 m/s. The point is the plumbing; a useful policy needs a far larger budget.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import diffplatoon.envs  # noqa: F401  (registers the Gymnasium ids)
from diffplatoon.envs.registration import gym_id


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="highway_platoon", help="catalogue scenario to train and evaluate on")
    parser.add_argument("--timesteps", type=int, default=20_000, help="PPO environment steps (all copies together)")
    parser.add_argument("--n-envs", type=int, default=2, help="env copies, seeded seed, seed + 1, ...")
    parser.add_argument("--n-steps", type=int, default=512, help="PPO rollout length per copy")
    parser.add_argument("--seed", type=int, default=1, help="seed of PPO and of the copies' episode streams")
    parser.add_argument("--out", type=Path, default=Path("runs/sb3_ppo"), help="output folder")
    parser.add_argument("--eval-episodes", type=int, default=20, help="evaluation episodes per policy (0: skip)")
    parser.add_argument("--num-workers", type=int, default=None, help="evaluation workers (default: the CPUs)")
    return parser.parse_args(argv)


class EpisodeReturns(BaseCallback):
    """Every finished training episode's return (the "episode" info SB3's Monitor adds)."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []

    def _on_step(self) -> bool:
        self.returns += [info["episode"]["r"] for info in self.locals["infos"] if "episode" in info]
        return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # -- train ------------------------------------------------------------------------------------
    env = make_vec_env(gym_id(args.scenario), n_envs=args.n_envs, seed=args.seed)  # each copy in a Monitor
    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=64, seed=args.seed, device="cpu", verbose=0)
    returns = EpisodeReturns()
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps, callback=returns)
    model_path = args.out / "model.zip"
    model.save(model_path)
    print(f"trained {model.num_timesteps} steps in {time.perf_counter() - start:.0f} s; saved {model_path}")
    if returns.returns:
        k = max(1, len(returns.returns) // 5)
        first, last = returns.returns[:k], returns.returns[-k:]
        print(f"{len(returns.returns)} training episodes; mean return of the first {k}: {sum(first) / k:.1f}, "
              f"of the last {k}: {sum(last) / k:.1f}")

    # -- evaluate ----------------------------------------------------------------------------------
    if args.eval_episodes <= 0:
        return
    cli = ["evaluate", "--policy", f"sb3:{model_path}", "--policy", "cacc", "--scenarios", args.scenario,
           "--episodes", str(args.eval_episodes), "--out", str(args.out / "eval")]
    if args.num_workers is not None:
        cli += ["--num-workers", str(args.num_workers)]
    print("diffplatoon " + shlex.join(cli))
    subprocess.run([sys.executable, "-m", "diffplatoon.cli", *cli], check=True)


if __name__ == "__main__":
    main()
