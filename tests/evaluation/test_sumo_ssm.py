"""The car-following measures against SUMO's SSM device on SUMO's own trajectories.

Three IDM followers drive behind a leader that brakes at 8 m/s^2 to a stop on a straight
one-lane road. SUMO writes every vehicle's position and speed (fcd output) and, for every
follower, its SSM encounters with each vehicle ahead within range (TTC, DRAC, MDRAC per step)
and its SGAP/TGAP to the direct leader. Our measures, computed from the same trajectories and
the same vehicle pairs, must agree with SUMO's values to its 6-decimal output; the three
documented differences (`following_measures` docstring) are checked too: SGAP is the plain
bumper-to-bumper gap, SUMO's MDRAC is negative below the reaction time where ours is inf, and
SUMO also counts the car two ahead, which `ttc_ahead`/`drac_ahead` cover (the device's range
is set to 1 km here so that it traces every vehicle ahead, as the leader chain does).
SUMO writes 12 decimals here so that our inputs are exact; agreement is asserted to 1e-6.
Needs the ``sumo`` binary (``pip install eclipse-sumo``, in the ``dev`` extra).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from diffplatoon import geometry
from diffplatoon.evaluation import measures as m


def _sumo_binary() -> str | None:
    beside = Path(sys.executable).with_name("sumo")
    return str(beside) if beside.is_file() else shutil.which("sumo")


SUMO = _sumo_binary()
pytestmark = pytest.mark.skipif(SUMO is None, reason="the `sumo` binary is not installed (pip install eclipse-sumo)")

LENGTH = geometry.VEHICLE_LENGTH  # [m] every vehicle, SUMO's and ours
PRT = 2.0  # [s] MDRAC reaction time: above the encounters' smallest TTC, so both regimes occur
TOL = 1e-6  # SUMO's 6-decimal output
_FOLLOWING_FOLLOWER = "2"  # SUMO encounter type: the ego follows the foe
_MEASURE_SPANS = {"TTCSpan", "DRACSpan", "MDRACSpan", "SGAPSpan", "TGAPSpan"}

_NET = """<net version="1.20" junctionCornerDetail="5" limitTurnSpeed="5.50">
    <location netOffset="0.00,0.00" convBoundary="0.00,0.00,3000.00,0.00" origBoundary="0.00,0.00,3000.00,0.00" projParameter="!"/>
    <edge id="e" from="a" to="b" priority="-1">
        <lane id="e_0" index="0" speed="25.00" length="3000.00" shape="0.00,-1.60 3000.00,-1.60"/>
    </edge>
    <junction id="a" type="dead_end" x="0.00" y="0.00" incLanes="" intLanes="" shape="0.00,0.00 0.00,-3.20"/>
    <junction id="b" type="dead_end" x="3000.00" y="0.00" incLanes="e_0" intLanes="" shape="3000.00,-3.20 3000.00,0.00"/>
</net>
"""
# The leader brakes at its decel 8 m/s^2 into a stop at 700 m; IDM followers 30-35 m apart.
_ROUTES = f"""<routes>
    <vType id="lead" length="{LENGTH}" minGap="2.5" accel="2.6" decel="8" emergencyDecel="9" sigma="0"/>
    <vType id="idm" carFollowModel="IDM" length="{LENGTH}" minGap="2.0" accel="1.5" decel="4.5"
           emergencyDecel="9" tau="1.0" delta="4"/>
    <route id="r" edges="e"/>
    <vehicle id="L" type="lead" route="r" depart="0" departPos="300" departSpeed="25">
        <stop lane="e_0" endPos="700" duration="20"/>
    </vehicle>
    <vehicle id="F1" type="idm" route="r" depart="0" departPos="260" departSpeed="25"/>
    <vehicle id="F2" type="idm" route="r" depart="0" departPos="225" departSpeed="25"/>
    <vehicle id="F3" type="idm" route="r" depart="0" departPos="190" departSpeed="25"/>
</routes>
"""
IDS = ("F3", "F2", "F1", "L")  # column order, back to front


def _floats(text: str) -> np.ndarray:
    return np.array([np.nan if v == "NA" else float(v) for v in text.split()])


@pytest.fixture(scope="module")
def sumo_run(tmp_path_factory):
    """Run SUMO once: (time (T,), pos (T, N) front bumper, speed (T, N), accel (T, N), ssm root)."""
    d = tmp_path_factory.mktemp("sumo_ssm")
    (d / "net.net.xml").write_text(_NET)
    (d / "routes.rou.xml").write_text(_ROUTES)
    cmd = [SUMO, "-n", "net.net.xml", "-r", "routes.rou.xml", "--step-length", "0.1", "--end", "30",
           "--precision", "12", "--fcd-output", "fcd.xml", "--fcd-output.acceleration",
           "--device.ssm.probability", "1", "--device.ssm.measures", "TTC DRAC MDRAC SGAP TGAP",
           "--device.ssm.trajectories", "--device.ssm.range", "1000", "--device.ssm.mdrac.prt", str(PRT),
           "--device.ssm.file", "ssm.xml", "--no-step-log", "--seed", "1"]
    subprocess.run(cmd, cwd=d, check=True, capture_output=True, timeout=120)
    steps = ET.parse(d / "fcd.xml").getroot().findall("timestep")
    time = np.array([float(s.get("time")) for s in steps])
    arrays = {k: np.full((len(steps), len(IDS)), np.nan) for k in ("pos", "speed", "acceleration")}
    for t, step in enumerate(steps):
        for v in step.findall("vehicle"):
            for k, a in arrays.items():
                a[t, IDS.index(v.get("id"))] = float(v.get(k))
    return time, arrays["pos"], arrays["speed"], arrays["acceleration"], ET.parse(d / "ssm.xml").getroot()


def _columns(time: np.ndarray, spans: ET.Element) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Step indices of an encounter's timeSpan and its other spans as float arrays."""
    steps = np.rint(_floats(spans.find("timeSpan").get("values")) / 0.1).astype(int)
    assert np.allclose(time[steps], steps * 0.1)
    return steps, {c.tag: _floats(c.get("values")) for c in spans if c.tag in _MEASURE_SPANS}


def _following(time: np.ndarray, ssm: ET.Element):
    """Every (follower column, foe column, steps, spans) of SUMO's following encounters, ego behind."""
    out = []
    for c in ssm.findall("conflict"):
        steps, spans = _columns(time, c)
        follow = np.array(c.find("typeSpan").get("values").split()) == _FOLLOWING_FOLLOWER
        if follow.any():
            out.append((IDS.index(c.get("ego")), IDS.index(c.get("foe")), steps[follow],
                        {k: v[follow] for k, v in spans.items()}))
    return out


def _trace(pos: np.ndarray):
    """Direct leader (the next column, everyone in one lane in this order) and bumper gap."""
    t, n = pos.shape
    leader = np.tile(np.append(np.arange(1, n), -1), (t, 1))
    gap = np.full((t, n), np.nan)
    gap[:, :-1] = pos[:, 1:] - LENGTH - pos[:, :-1]
    return leader, gap


def test_scenario_is_the_braking_leader(sumo_run):
    """The leader brakes at exactly 8 m/s^2 and the followers close in without colliding."""
    time, pos, speed, accel, _ = sumo_run
    assert accel[:, IDS.index("L")].min() == pytest.approx(-8.0, abs=1e-9)
    leader, gap = _trace(pos)
    assert np.nanmin(gap) > 0 and np.nanmin(m.ttc_1d(gap, speed, leader)) < PRT


def test_ttc_drac_mdrac_agree_with_sumo_for_every_vehicle_ahead(sumo_run):
    """Per following encounter (ego, foe) and step: SUMO's TTC, DRAC and MDRAC equal ours for
    the same pair (the k-th vehicle ahead from `vehicles_ahead`), for moving followers; below
    the reaction time SUMO's MDRAC is negative and ours is inf."""
    time, pos, speed, _, ssm = sumo_run
    leader, gap = _trace(pos)
    chain = m.vehicles_ahead(leader, gap, np.full(len(IDS), LENGTH), depth=len(IDS) - 1)
    encounters = _following(time, ssm)
    assert {(IDS[e], IDS[f]) for e, f, _, _ in encounters} >= {("F1", "L"), ("F2", "F1"), ("F3", "F1")}
    compared = below_prt = 0
    for ego, foe, steps, spans in encounters:
        k = foe - ego - 1  # foe is the (k+1)-th vehicle ahead
        lead_k, gap_k = chain[k]
        assert np.all(lead_k[steps, ego] == foe)
        moving = speed[steps, ego] >= m.STANDSTILL_SPEED
        ttc = m.ttc_1d(gap_k, speed, lead_k)[steps, ego]
        drac = m.drac(gap_k, speed, lead_k)[steps, ego]
        mdrac = m.mdrac(gap_k, speed, lead_k, prt=PRT)[steps, ego]
        has = moving & np.isfinite(spans["TTCSpan"])
        np.testing.assert_allclose(ttc[has], spans["TTCSpan"][has], rtol=0, atol=TOL)
        np.testing.assert_allclose(drac[has], spans["DRACSpan"][has], rtol=0, atol=TOL)
        above = has & (spans["TTCSpan"] > PRT)
        np.testing.assert_allclose(mdrac[above], spans["MDRACSpan"][above], rtol=0, atol=TOL)
        below = has & (spans["TTCSpan"] < PRT)
        assert np.all(spans["MDRACSpan"][below] < 0) and np.all(np.isinf(mdrac[below]))
        # Where SUMO has no TTC (not closing) ours is inf and our DRAC 0.
        none = moving & np.isnan(spans["TTCSpan"])
        assert np.all(np.isinf(ttc[none])) and np.all(drac[none] == 0)
        compared += int(has.sum())
        below_prt += int(below.sum())
    assert compared > 300 and below_prt > 5


def test_drac_ahead_is_sumos_worst_encounter(sumo_run):
    """Per follower and step, `drac_ahead` over every vehicle ahead equals the largest DRAC of
    SUMO's following encounters (SUMO counts the car two ahead too); the direct-leader DRAC
    alone is smaller at some steps, where the conflict is with a vehicle further ahead."""
    time, pos, speed, _, ssm = sumo_run
    leader, gap = _trace(pos)
    lengths = np.full(len(IDS), LENGTH)
    worst = np.zeros(pos.shape)
    for ego, _, steps, spans in _following(time, ssm):
        d = np.nan_to_num(spans["DRACSpan"], nan=0.0)
        worst[steps, ego] = np.maximum(worst[steps, ego], d)
    ours = m.drac_ahead(gap, speed, leader, lengths, depth=len(IDS) - 1)
    moving = speed >= m.STANDSTILL_SPEED
    np.testing.assert_allclose(ours[moving], worst[moving], rtol=0, atol=TOL)
    direct = m.drac(gap, speed, leader)
    assert np.any(worst[moving] > direct[moving] + 0.1)


def test_space_gap_and_time_gap_agree_with_sumo(sumo_run):
    """SUMO's SGAP is the plain bumper-to-bumper gap (no minGap subtracted: the followers' minGap
    is 2 m) and TGAP = SGAP / follower speed; ours agree for moving followers."""
    time, pos, speed, _, ssm = sumo_run
    leader, gap = _trace(pos)
    sgap, tgap = m.space_gap(gap, leader), m.time_gap(gap, speed, leader)
    checked = 0
    for g in ssm.findall("globalMeasures"):
        ego = IDS.index(g.get("ego"))
        steps, spans = _columns(time, g)
        has = np.isfinite(spans["SGAPSpan"]) & (speed[steps, ego] >= m.STANDSTILL_SPEED)
        np.testing.assert_allclose(sgap[steps, ego][has], spans["SGAPSpan"][has], rtol=0, atol=TOL)
        np.testing.assert_allclose(tgap[steps, ego][has], spans["TGAPSpan"][has], rtol=0, atol=TOL)
        checked += int(has.sum())
    assert checked > 500
    # At t = 0, F1 (front at 260 m) is 300 - 5 - 260 = 35 m behind the leader: SUMO says 35.
    f1 = ssm.find("globalMeasures[@ego='F1']")
    assert _floats(f1.find("SGAPSpan").get("values"))[0] == 35.0
