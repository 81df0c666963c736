"""Record fields of real episodes: members that reached their destination, near misses from
the scenario's ``safety.min_gap``, and time gaps that stay finite and non-negative."""

from __future__ import annotations

import pytest

from diffplatoon.evaluation.episode import run_episode
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import load_scenario


def _with_min_gap(spec, min_gap: float):
    return spec.model_copy(update={"safety": spec.safety.model_copy(update={"min_gap": min_gap})})


def test_reached_goal_lists_the_members_that_left_at_their_destination():
    """intersection has destinations: the members whose departure reason is "destination", in
    member order; a scenario without destination or route has no reached_goal (None)."""
    spec = load_scenario("intersection")
    rec = run_episode(spec, "idm", 0).record
    names = [n for p in spec.platoons for n in p.member_names()]
    assert rec["reached_goal"] == [n for n in names if rec["departed"].get(n) == "destination"]
    assert rec["reached_goal"]  # at least one member gets there in this episode
    plain = load_scenario("hard_brake").model_copy(update={"duration": 3.0})
    assert run_episode(plain, "idm", 0).record["reached_goal"] is None


def test_near_miss_follows_the_scenarios_min_gap():
    """The same collision-free episode is a near miss exactly when safety.min_gap is above its
    smallest member gap; the threshold is the one the record stores."""
    spec = load_scenario("hard_brake").model_copy(update={"duration": 12.0})
    base = run_episode(spec, "idm", 0).record
    assert base["collision"] is False and base["min_gap"] > 0.5
    assert base["thresholds"]["min_gap"] == spec.safety.min_gap == Thresholds.for_spec(spec).min_gap
    above = run_episode(_with_min_gap(spec, base["min_gap"] + 0.5), "idm", 0).record
    below = run_episode(_with_min_gap(spec, base["min_gap"] - 0.5), "idm", 0).record
    assert above["near_miss"] is True and below["near_miss"] is False
    assert above["thresholds"]["min_gap"] == pytest.approx(base["min_gap"] + 0.5)
    assert above["min_gap"] == base["min_gap"]


def test_collision_is_not_a_near_miss_and_time_gap_stays_defined():
    """intersection|idm|0 ends in a collision with overlapping boxes (negative min gap): it is a
    collision, not a near miss, and its minimum time gap is 0 (it was -1.23 s before the
    overlap was defined)."""
    rec = run_episode(load_scenario("intersection"), "idm", 0).record
    assert rec["collision"] is True and rec["min_gap"] < 0
    assert rec["near_miss"] is False
    assert rec["min_time_gap"] == 0.0
