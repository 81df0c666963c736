"""Record fields of real episodes: members that reached their destination, near misses from
the scenario's ``safety.min_gap``, time gaps that stay finite and non-negative, and the DRAC
with the vehicle two ahead."""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.evaluation import measures
from diffplatoon.agents.policy import Policy
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
    """hard_brake|random|0 ends in a collision with overlapping boxes (negative min gap): it is a
    collision, not a near miss, and its minimum time gap is 0 (an overlap divided by a speed gave
    -1.23 s .. -3e8 s before the overlap was defined)."""
    rec = run_episode(load_scenario("hard_brake"), "random", 0).record
    assert rec["collision"] is True and rec["min_gap"] < 0
    assert rec["near_miss"] is False
    assert rec["min_time_gap"] == 0.0


def test_drac_ahead_sees_the_car_two_ahead_through_traffic():
    """lane_drop|cacc|1: the trace knows each traffic leader's own leader, so the chained gap to
    the vehicle two ahead matches the geometry (centre distance minus half lengths, to 0.5 m:
    the chained gap runs along the lanes, the centre distance across a lane change), including
    through a traffic car, and the DRAC with the car two ahead (2.4 m/s^2) exceeds the direct
    leader's (1.7 m/s^2), a conflict SUMO's device counts and the direct-leader DRAC misses."""
    res = run_episode(load_scenario("lane_drop"), "cacc", 1, record_trace=True)
    t, members = res.trace, 4
    (lead1, _), (lead2, gap2) = measures.vehicles_ahead(t.leader, t.gap, t.length, depth=2)
    k, i = np.nonzero(lead2[:, :members] >= 0)
    d = lead2[k, i]
    geometry = np.hypot(t.x[k, d] - t.x[k, i], t.y[k, d] - t.y[k, i]) - 0.5 * (t.length[i] + t.length[d])
    assert len(k) > 100 and np.all(np.abs(gap2[k, i] - geometry) < 0.5)
    assert np.any(lead1[k, i] >= members)  # through a traffic car
    assert res.record["max_drac_ahead"] > res.record["max_drac"] + 0.5


class _LaneKeeping(Policy):
    """Every member holds its speed and its wheel straight: platoon 0 of lane_drop drives off its lane's end."""

    name = "lane_keeping"

    def reset(self, info) -> None:
        pass

    def act(self, obs) -> np.ndarray:
        return np.tile([0.0, 0.0], (len(obs.ego), 1))


def test_driving_off_a_dropped_lanes_end_is_no_merge():
    """lane_drop without traffic: members that keep their dropped lane leave the road at its end, where
    the World maps them to the lane they should have merged into; merge success counts none of them."""
    spec = load_scenario("lane_drop")
    spec = spec.model_copy(update={"duration": 30.0, "traffic": spec.traffic.model_copy(
        update={"count": 0, "density": 0.0, "keep_density": False})})
    rec = run_episode(spec, _LaneKeeping(), 0).record
    assert not rec["collision"]
    assert set(rec["offroad_members"]) == {n for n in spec.platoons[0].member_names()}
    assert rec["merge_success"] == 0.0
