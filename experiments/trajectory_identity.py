"""Are catalogue episodes the same before and after a change? Digests of whole trajectories.

Drives every catalogue scenario (each sweep variant too) with the built-in experts for a few
episodes and records, per episode, a SHA-256 of every live vehicle's state at every policy step
(id, position, heading, speed, lane, crash flag) and the episode's evaluation record (without its
wall time). `--write` stores them; `--check` recomputes and compares, bit for bit for the
digests and exactly for the records, and prints one row per episode.

    python experiments/trajectory_identity.py --write tests/data/trajectory_digests.json
    python experiments/trajectory_identity.py --check tests/data/trajectory_digests.json

The digests are exact on one machine; another CPU or numpy build may round transcendental
functions differently, so `tests/` compares the records with a tolerance instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

POLICIES = ("idm", "cacc")
STATE = ("vid", "x", "y", "heading", "speed", "lane", "crashed")


def _specs(names: list[str] | None = None) -> list[Any]:
    from diffplatoon.scenarios import catalogue_names, expand_sweep, load_scenario

    specs = []
    for name in names or catalogue_names():
        specs += expand_sweep(load_scenario(name))[0]
    return specs


def trajectory_digest(spec: Any, policy: str, episode: int, seconds: float | None = None) -> str:
    """SHA-256 over every live vehicle's state after every policy step of one episode."""
    from diffplatoon.agents.policy import SimInfo, make_policy
    from diffplatoon.sim.observation import Observer
    from diffplatoon.sim.simulation import Simulation

    sim = Simulation(spec, episode)
    observer = Observer(sim)
    pol = make_policy(policy, spec)
    pol.reset(SimInfo.from_spec(spec, episode))
    h = hashlib.sha256()
    steps = spec.steps if seconds is None else int(round(seconds * spec.policy_frequency))
    for _ in range(steps):
        obs = observer.observe()
        if not obs.alive.any():
            break
        sim.step(pol.act(obs))
        w = sim.world
        rows = np.flatnonzero(w.active)
        for name in STATE:
            h.update(np.ascontiguousarray(getattr(w, name)[rows]).tobytes())
    return h.hexdigest()


def episode_record(spec: Any, policy: str, episode: int) -> dict[str, Any]:
    """The evaluation record of one episode, without its wall time."""
    from diffplatoon.evaluation.episode import run_episode

    record = dict(run_episode(spec, policy, episode).record)
    record.pop("wall_time", None)
    return record


def collect(episodes: int, names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """{job id: {"digest": ..., "record": ...}} for every catalogue variant × expert × episode."""
    out = {}
    for spec in _specs(names):
        for policy in POLICIES:
            for ep in range(episodes):
                out[f"{spec.name}|{policy}|{ep}"] = {
                    "digest": trajectory_digest(spec, policy, ep),
                    "record": episode_record(spec, policy, ep),
                }
    return out


def same_value(a: Any, b: Any, rel: float = 0.0) -> bool:
    """Equal, recursively; floats within `rel` (0: exactly, NaN equal to NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() <= b.keys() and all(same_value(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        if math.isnan(a):
            return isinstance(b, float) and math.isnan(b)
        return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=rel * 1e-3)
    return a == b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", type=Path)
    mode.add_argument("--check", type=Path)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--scenarios", nargs="*", default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.write:
        data = collect(args.episodes, args.scenarios)
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        print(f"wrote {len(data)} episodes to {args.write}")
        return 0
    golden = json.loads(args.check.read_text())
    names = sorted({k.split("|")[0].split("--")[0] for k in golden}) if args.scenarios is None else args.scenarios
    now = collect(args.episodes, names)
    bad = 0
    print(f"{'episode':55s} {'trajectory':>10s} {'record':>8s}")
    for key in sorted(golden):
        if key not in now:
            print(f"{key:55s} {'missing':>10s}")
            bad += 1
            continue
        d = golden[key]["digest"] == now[key]["digest"]
        r = same_value(golden[key]["record"], now[key]["record"])
        bad += not (d and r)
        print(f"{key:55s} {'identical' if d else 'DIFFERS':>10s} {'same' if r else 'DIFFERS':>8s}")
    print(f"{len(golden) - bad}/{len(golden)} episodes identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
