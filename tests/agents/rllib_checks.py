"""Checks shared by the RLlib test files: a trained run acts as an `rllib:` policy in the simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios import validate_data
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation


def assert_rllib_policy_acts(run: Path, scenario: dict) -> None:
    """`rllib:<run folder>` loads, acts within the vehicle limits for every member, deterministically."""
    spec = validate_data(dict(scenario), "<test>")
    policy = make_policy(f"rllib:{run}", spec)  # a run folder resolves to its newest checkpoint
    policy.reset(SimInfo.from_spec(spec, 0))
    sim = Simulation(spec, 0)
    obs = Observer(sim).observe()
    actions = policy.act(obs)
    assert actions.shape == (spec.num_controlled, 2) and np.isfinite(actions).all()
    v = spec.platoons[0].vehicle
    assert (actions[:, 0] >= -v.max_deceleration).all() and (actions[:, 0] <= v.max_acceleration).all()
    policy.reset(SimInfo.from_spec(spec, 0))  # deterministic (a reset drops an action chunk still queued)
    np.testing.assert_array_equal(actions, policy.act(obs))
    sim.step(actions)
