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

Results to expect (2-core CPU, loaded): 20,000 steps train in about 2 minutes; the mean training episode
reward rises from about 26 over the first episodes to about 39 over the last, and the report
(runs/sb3_ppo/eval/report.md) shows the PPO platoon well behind CACC: a short budget learns to keep
going, not to drive as a platoon.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from stable_baselines3 import PPO
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


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # -- train ------------------------------------------------------------------------------------
    env = make_vec_env(gym_id(args.scenario), n_envs=args.n_envs, seed=args.seed)  # each copy in a Monitor
    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=64, seed=args.seed, device="cpu", verbose=0)
    start = time.perf_counter()
    model.learn(total_timesteps=args.timesteps)
    returns = [info["r"] for info in model.ep_info_buffer]
    model_path = args.out / "model.zip"
    model.save(model_path)
    print(f"trained {model.num_timesteps} steps in {time.perf_counter() - start:.0f} s; "
          f"{len(returns)} recent episodes, mean reward {sum(returns) / max(len(returns), 1):.1f}; saved {model_path}")

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
