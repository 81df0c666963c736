"""Fuzzing the scenario loader with mutated catalogue documents (generator in `fuzz.py`).

The contract: loading any document raises nothing but `ScenarioError`, and every document that
loads runs 200 random-action steps of `PlatoonParallelEnv` within 10 s with finite observations
and rewards. The default run checks a few hundred documents and simulates a sample of the
accepted ones; the slow run checks 2,000 and simulates every accepted one.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from diffplatoon.envs import PlatoonParallelEnv
from diffplatoon.scenarios import ScenarioError, ScenarioSpec, expand_sweep, parse_scenario

from fuzz import mutated_documents  # tests/scenarios is on sys.path (no __init__.py)

STEPS = 200
STEP_BUDGET_S = 10.0


def load_or_refuse(label: str, text: str) -> ScenarioSpec | None:
    """The spec, or None when the loader refused it with a `ScenarioError` (anything else fails)."""
    try:
        return parse_scenario(text, "fuzz.yaml")
    except ScenarioError as exc:
        assert exc.lines and all(line.startswith("fuzz.yaml") for line in exc.lines), label
        return None


def run_random(spec: ScenarioSpec, seed: int) -> float:
    """200 random-action steps (fewer when every agent is done); returns the wall time [s]."""
    env = PlatoonParallelEnv(spec)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    observations, _ = env.reset(seed=0)
    for _ in range(STEPS):
        if not env.agents:
            break
        actions = {a: rng.uniform(env.action_space(a).low, env.action_space(a).high) for a in env.agents}
        observations, rewards, _, _, _ = env.step(actions)
        assert all(np.all(np.isfinite(o)) for o in observations.values())
        assert all(np.isfinite(r) for r in rewards.values())
    env.close()
    return time.perf_counter() - start


def check(seed: int, count: int, simulate_every: int) -> tuple[int, int]:
    """Load `count` documents; simulate every `simulate_every`-th accepted one. Returns (accepted, run)."""
    accepted = simulated = 0
    for label, text in mutated_documents(seed, count):
        spec = load_or_refuse(label, text)
        if spec is None:
            continue
        accepted += 1
        if accepted % simulate_every:
            continue
        variants, _ = expand_sweep(spec)
        elapsed = run_random(variants[0], seed)
        simulated += 1
        assert elapsed <= STEP_BUDGET_S, f"{label}: {STEPS} steps took {elapsed:.1f} s"
    return accepted, simulated


def test_fuzz_loader_and_accepted_documents() -> None:
    accepted, simulated = check(seed=0, count=300, simulate_every=3)
    assert accepted >= 30 and simulated >= 10  # the generator keeps a share of documents valid


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_loader_slow() -> None:
    accepted, simulated = check(seed=1, count=2000, simulate_every=1)
    assert simulated == accepted >= 200
