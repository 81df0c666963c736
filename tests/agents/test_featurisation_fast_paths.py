"""`features.platoon_inputs`' vectorised pieces against the straightforward versions they replaced: the inbox-free
flat rows, the comm graph and the de-duplication of neighbours seen by several members (real observations of
onramp_merge, where members see the same vehicles, and constructed chains of near-duplicates)."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.agents.diffusion import features
from diffplatoon.envs.rllib_env import resolve_scenario
from diffplatoon.sim.observation import Observer, flat_layout
from diffplatoon.sim.simulation import Simulation


def _reference_obs_without_inbox(obs, rows: np.ndarray) -> np.ndarray:
    flat = obs.select(rows).flat()
    k, p = obs.neighbours.shape[1], obs.lane_ahead.shape[1]
    kc, d = obs.inbox.shape[1], obs.inbox.shape[2]
    keep = [sl for name, sl in flat_layout(k, p, kc, d).slices.items()
            if name not in ("inbox", "inbox_mask", "inbox_age")]
    return np.concatenate([flat[:, sl] for sl in keep], axis=1)


def _reference_distinct_others(seen: np.ndarray, member_xy: np.ndarray) -> np.ndarray:
    if len(seen) and len(member_xy):
        near = np.hypot(member_xy[None, :, 0] - seen[:, None, 0], member_xy[None, :, 1] - seen[:, None, 1])
        seen = seen[~(near.min(axis=1) < features._SAME_VEHICLE)]
    same = np.hypot(seen[:, None, 0] - seen[None, :, 0], seen[:, None, 1] - seen[None, :, 1]) < features._SAME_VEHICLE
    kept: list[int] = []
    for i in range(len(seen)):
        if not same[i, kept].any():
            kept.append(i)
    return seen[kept]


def _reference_comm_mask(obs, rows: np.ndarray, n_max: int) -> np.ndarray:
    n = len(rows)
    alive = obs.alive[rows].astype(bool)
    mask = obs.inbox_mask[rows].astype(bool) & alive[:, None]
    sender = np.where(mask, obs.inbox_sender[rows], -1)
    out = np.zeros((n_max, n_max), bool)
    member_of = {int(r): j for j, r in enumerate(rows)}
    for i, j in zip(*np.nonzero(sender >= 0)):
        col = member_of.get(int(sender[i, j]))
        if col is not None:
            out[i, col] = True
    out[:n, :n] &= alive[None, :]
    out[np.arange(n), np.arange(n)] = alive
    return out


@pytest.fixture(scope="module")
def observations() -> list:
    sim = Simulation(resolve_scenario("onramp_merge"), 0)
    observer = Observer(sim)
    out = []
    for _ in range(12):
        out.append(observer.observe())
        sim.step(np.zeros((len(sim.agent_names), 2)))
    return out


def test_inbox_free_rows_and_comm_graph_match_the_reference(observations: list) -> None:
    checked_links = 0
    for obs in observations:
        for rows in (np.arange(len(obs)), np.arange(len(obs))[::-1], np.array([len(obs) - 1, 0])):
            np.testing.assert_array_equal(features._obs_without_inbox(obs, rows),
                                          _reference_obs_without_inbox(obs, rows))
            scene = features.platoon_inputs(obs, rows, n_max=len(obs) + 1)
            reference = _reference_comm_mask(obs, rows, len(obs) + 1)
            np.testing.assert_array_equal(scene.comm_mask, reference)
            checked_links += int(reference.sum() - np.trace(reference))
    assert checked_links > 0  # members did hear each other


def test_neighbour_deduplication_matches_the_sequential_rule(observations: list) -> None:
    # real sightings: members see the same vehicles
    duplicates = 0
    for obs in observations:
        rows = np.arange(len(obs))
        seen = features._observed_vehicles(obs, rows)
        member_xy = obs.pose[rows, :2].astype(np.float64)
        got, want = features._distinct_others(seen, member_xy), _reference_distinct_others(seen, member_xy)
        np.testing.assert_array_equal(got, want)
        duplicates += len(seen) - len(want)
    assert duplicates > 0
    # chains of near-duplicates: a ~ b and b ~ c but not a ~ c keeps a and c (b is dropped as a's duplicate)
    rng = np.random.default_rng(0)
    for trial in range(200):
        v = int(rng.integers(0, 12))
        xy = np.cumsum(rng.choice([0.3, 0.45, 2.0], size=(v, 1)), axis=0) * np.array([[1.0, 0.0]])
        seen = np.concatenate([xy, rng.normal(size=(v, 3))], axis=1)[rng.permutation(v)]
        member_xy = rng.uniform(-1, 10, size=(int(rng.integers(0, 3)), 2))
        np.testing.assert_array_equal(features._distinct_others(seen, member_xy),
                                      _reference_distinct_others(seen, member_xy))
    chain = np.array([[0.0, 0, 0, 0, 5], [0.4, 0, 0, 0, 5], [0.8, 0, 0, 0, 5]])
    np.testing.assert_array_equal(features._distinct_others(chain, np.zeros((0, 2))), chain[[0, 2]])
