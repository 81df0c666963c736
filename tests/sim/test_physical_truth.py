"""Physical truth: outcomes derived from the scenario numbers, then checked in closed loop.

hard_brake, comm_dropout and a string-stability platoon run with the expert policies through
`run_episode` (Simulation + Observer + CollisionEvaluator + measures).
"""

from __future__ import annotations

import numpy as np
import pytest

from diffplatoon.evaluation import measures
from diffplatoon.evaluation.episode import run_episode
from diffplatoon.scenarios import load_scenario
from diffplatoon.scenarios.schema import ScenarioSpec


def _with_platoon(spec: ScenarioSpec, **platoon) -> ScenarioSpec:
    data = spec.model_dump()
    data["platoons"][0].update(platoon)
    return ScenarioSpec.model_validate(data)


def _b_required(gap: float, tau: float) -> float:
    """Constant deceleration [m/s²] a follower at 25 m/s needs behind the hard_brake lead.

    The lead brakes at 6 m/s² from 25 to 7 m/s (3 s, 48 m) and is assumed to hold 7 m/s (it
    really speeds up again, so this is conservative). A follower at gap g that starts braking at
    b after a delay tau reaches 7 m/s at T = tau + 18/b; the gap is smallest then:
    g + [48 + 7(T - 3)] - [25 tau + (25² - 7²)/(2b)] = g + 27 - 18 tau - 162/b > 0.
    """
    return 162.0 / (gap + 27.0 - 18.0 * tau)


def test_hard_brake_outcome_follows_from_the_numbers():
    """hard_brake at a 0.5 s time gap: IDM (no V2V) and CACC (V2V) both avoid a collision.

    Numbers (scenarios/hard_brake.yaml with time_gap 0.5): members 5 m long at 25 m/s; the
    leader's bumper gap to `lead` is 328 - 300 - 5 = 23 m; followers spawn 2 + 0.5·25 = 14.5 m
    apart; `lead` brakes at 6 m/s² for 3 s at t = 5 s; members may brake at 8 m/s².
    With `_b_required`, a follower reacting within one policy step (tau = 0.2 s) needs
    162 / (14.5 + 27 - 3.6) = 4.27 m/s² (3.49 m/s² for the leader's 23 m), less than the 8 m/s²
    it has: the crash is avoidable. IDM brakes harder the closer it gets (the interaction term
    grows without bound) and CACC receives the braking over V2V, so physics says: no collision
    for either, and the first follower must have braked at least 162 / 41.5 = 3.9 m/s² (the
    bound for tau = 0). The claim that a 0.5 s IDM follower crashes does not hold here.
    Counter-check from the same formula: with only 2 m/s² of braking the leader loses
    (6·0.2²/2) + (1.2 + 12.4)/2·2.8 + 12.4²/(2·5) = 34.5 m even if `lead` speeds up again at
    its IDM maximum of 3 m/s² — more than the 23 m it has, or the 32 m its ACC gap
    (2 + 1.2·25) could open: both policies must collide.
    """
    spec = _with_platoon(load_scenario("hard_brake"), time_gap=0.5)
    assert _b_required(14.5, 0.2) == pytest.approx(4.27, abs=0.01)
    assert _b_required(23.0, 0.2) < _b_required(14.5, 0.2) < spec.platoons[0].vehicle.max_deceleration

    idm = run_episode(spec, "idm", 0, record_trace=True)
    cacc = run_episode(spec, "cacc", 0, record_trace=True)
    for res in (idm, cacc):
        assert not res.record["collision"], res.record["collisions"]
        peak = -np.nanmin(res.trace.accel[:, 1])  # first follower
        assert _b_required(14.5, 0.0) <= peak <= 8.0 + 1e-9
    # V2V lets the CACC followers brake with their predecessor instead of after it.
    assert cacc.record["min_ttc"] > idm.record["min_ttc"]

    weak = _with_platoon(spec, vehicle={"max_deceleration": 2.0})
    for policy in ("idm", "cacc"):
        rec = run_episode(weak, policy, 0).record
        assert rec["collision"]
        assert any("lead" in (c["a"], c["b"]) for c in rec["collisions"])


def _window_figures(spec: ScenarioSpec, episode: int) -> tuple[float, float]:
    """RMS spacing error [m] and min 1-D TTC [s] of the followers during the outage window."""
    res = run_episode(spec, "cacc", episode, record_trace=True)
    assert not res.record["collision"]
    tr, f = res.trace, spec.policy_frequency
    window = slice(10 * f, 16 * f)  # the 5 s outage at t = 10 s, and one second to react
    e = measures.spacing_errors(tr.gap[:, :4], tr.speed[:, :4], time_gap=0.6, standstill=2.0)[window]
    ttc = measures.ttc_1d(tr.gap, tr.speed, tr.leader)[window, 1:4]
    return float(np.sqrt(np.mean(e ** 2))), float(ttc.min())


@pytest.mark.parametrize("episode", [0, 1, 2])
def test_comm_dropout_degrades_cacc(episode):
    """Without V2V from t = 10 to 15 s (the lead slows 25 → 18 m/s at 11 s) CACC loses the
    predecessor's acceleration and runs as ACC: it reacts to the slowdown only once the gap and
    relative speed show it, so spacing errors grow and the closing speeds (hence min TTC) get
    worse than in the same episode with the outage removed."""
    spec = load_scenario("comm_dropout")
    data = spec.model_dump()
    data["events"] = [e for e in data["events"] if e["type"] != "comm_outage"]
    connected = ScenarioSpec.model_validate(data)
    err_out, ttc_out = _window_figures(spec, episode)
    err_in, ttc_in = _window_figures(connected, episode)
    assert err_out > 2.0 * err_in
    assert ttc_out < ttc_in


def _string_spec(latency: int) -> ScenarioSpec:
    """Six CACC members at h = 0.6 s alone on a lane; the leader brakes at 3 m/s² for 2 s at t = 5 s."""
    return ScenarioSpec.model_validate(dict(
        name="string", seed=1, duration=40, road=dict(type="highway", lanes=1, length=2500),
        traffic=dict(count=0), comms=dict(topology="predecessor_follower", latency=latency, max_age=10),
        platoons=[dict(id="p0", size=6, lane=0, start=380, speed=25, time_gap=0.6)],
        events=[dict(type="brake", at=5, vehicle="p0.0", deceleration=3.0, duration=2.0)]))


def _string_stability(latency: int) -> measures.StringStability:
    spec = _string_spec(latency)
    res = run_episode(spec, "cacc", 0, record_trace=True)
    assert not res.record["collision"]
    tr = res.trace
    return measures.string_stability(tr.gap[:, :6], tr.speed[:, :6], time_gap=0.6, standstill=2.0,
                                     start=5 * spec.policy_frequency)


def test_cacc_string_stable_without_delay_unstable_with_large_latency():
    """Ploeg's CACC with a perfect feed-forward has Γ(s) = 1 / (h s + 1): |Γ| <= 1 at every
    frequency, string stable for any h > 0. A 5 Hz policy already delays the feed-forward by
    one step (0.2 s): at h = 0.6 s that still damps (ratios < 1). A channel latency of 3 steps
    (0.6 s, i.e. >= 0.5 s) delays it to 0.8 s, longer than h: the predecessor's acceleration
    arrives after the follower's gap has already reacted, and errors grow down the platoon."""
    stable = _string_stability(latency=0)
    assert stable.stable
    assert np.all(stable.error_ratios < 1.0)
    unstable = _string_stability(latency=3)
    assert not unstable.stable
    assert np.all(unstable.error_ratios > 1.0)
    assert unstable.error_norms[-1] > 2.0 * unstable.error_norms[0]
