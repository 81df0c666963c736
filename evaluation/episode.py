"""One evaluation episode: (scenario, policy, episode index) → one JSON-serialisable record.

`run_episode` builds the `Simulation`, the `Observer` and a `CollisionEvaluator`, drives the
platoon members with the policy until the scenario's duration has elapsed (or every member has
crashed or left the road), samples a trace of the vehicles that matter at every policy step,
and summarises it with `measures.episode_summary`.

The trace holds the platoon members plus every vehicle that was, at some step, directly ahead
of or behind a member on its lane or on an adjacent lane, or directly ahead of a member's front
vehicle, or that collided with a member. A member's `leader`/`gap` is the vehicle ahead on its
own lane (World's lane index) and the bumper-to-bumper distance along the member's lane; a
traffic vehicle that is a member's front has its own front as `leader`/`gap`, so the measures
can chain them into the vehicle two ahead (`max_drac_ahead`); the platoon measures use these gaps with
the first platoon's desired time gap and standstill gap, and the string-stability window
starts at the first brake or speed-change event.

Record keys: scenario, policy, policy_version, seed, episode, job_id ("scenario|policy|episode"),
steps (policy steps taken; the summary's sample count T = steps + 1 is not kept), sim_time, wall_time, collision (a member was involved), collisions (member collisions:
time, a, b, type, at_fault, relative_speed, heading_difference, substep_only),
at_fault_collisions, traffic_collisions (collisions among traffic only), offroad,
offroad_members, wrong_way, wrong_way_members, departed ({member: reason}), reached_goal (the
members that left the road at their destination or route end, the World's departure reason
"destination"; None when no platoon has a destination or route), every key of
`episode_summary` (near_miss as a bool: a member's gap fell below ``safety.min_gap`` and no
member collided), string_error_ratios and string_speed_ratios (per platoon, the
`measures.StringStability` ratios down its members), thresholds, shield (a learned policy's
shield counters; {} for experts) and policy_stats. Undefined measures (NaN) and infinities are
stored as None.

Besides the record, every episode returns its `episode_data.EpisodeData` (member speed and gap
profiles, every vehicle's boxes for a replay), which the runner stores for the report.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from diffplatoon import io
from diffplatoon.agents.policy import Policy, SimInfo, make_policy
from diffplatoon.evaluation import episode_data, measures
from diffplatoon.evaluation.collisions import CollisionEvaluator
from diffplatoon.evaluation.thresholds import Thresholds
from diffplatoon.scenarios import load_scenario
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.merge_targets import MergeTargets
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

_FIELDS = ("x", "y", "heading", "speed", "accel")


@dataclass
class EpisodeResult:
    """A finished episode: its record, what the report draws of it, and the trace / rendered frames when asked for."""

    record: dict[str, Any]
    trace: measures.EpisodeTrace | None
    frames: list | None
    data: episode_data.EpisodeData | None = None


class _TraceRecorder:
    """Samples every live vehicle each policy step; keeps the member neighbourhood at the end."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.steps: list[dict[str, np.ndarray]] = []
        self.related: set[int] = set()  # vehicle ids seen next to a member
        self.member_vids = [int(sim.world.vid[r]) for r in sim.controlled]

    def sample(self) -> None:
        sim, w = self.sim, self.sim.world
        rows = w.active_rows()
        # lane -2 marks a crashed vehicle (it merges nowhere); -1 in the trace means absent
        snap = {"vid": w.vid[rows].copy(), "lane": np.where(w.crashed[rows], -2, w.lane[rows]),
                **{f: getattr(w, f)[rows].copy() for f in _FIELDS}}
        live = sim.live_members()
        members = sim.controlled[live]
        lead = np.full(len(sim.controlled), -1, dtype=np.int64)
        gap = np.full(len(sim.controlled), np.nan)
        if len(members):
            front, rear = w.neighbours(members)
            has = front >= 0
            f = np.where(has, front, members)
            sf, _ = w.table.local_coordinates(w.lane[members], w.x[f], w.y[f])
            g = sf - w.s[members] - 0.5 * (w.length[members] + w.length[f])
            lead[live] = np.where(has, w.vid[f], -1)
            gap[live] = np.where(has, g, np.nan)
            ahead = self._ahead_of(front[has])
            found = [front, rear, ahead[0]]
            for side in (w.table.left, w.table.right):
                lanes = side[w.lane[members]]
                ok = lanes >= 0
                if ok.any():
                    found.extend(w.neighbours(members[ok], lanes[ok]))
            near = np.concatenate(found)
            self.related.update(int(v) for v in w.vid[near[near >= 0]])
            snap["ahead"] = {int(w.vid[r]): (int(w.vid[a]), float(ga)) for r, a, ga in zip(front[has], *ahead)
                             if a >= 0}
        snap["lead_vid"], snap["gap"] = lead, gap
        self.steps.append(snap)

    def _ahead_of(self, fronts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row ahead, bumper gap) of each member's front vehicle on its own lane (-1, NaN: none).

        Recorded so the trace knows a traffic leader's own leader: the measures chain them into
        the vehicle two ahead of a member (`measures.vehicles_ahead`), as SUMO's SSM device does.
        """
        w = self.sim.world
        nxt, _ = w.neighbours(fronts)
        ok = nxt >= 0
        a = np.where(ok, nxt, fronts)
        s_a, _ = w.table.local_coordinates(w.lane[fronts], w.x[a], w.y[a])
        g = s_a - w.s[fronts] - 0.5 * (w.length[fronts] + w.length[a])
        return np.where(ok, nxt, -1), np.where(ok, g, np.nan)

    def trace(self, extra_vids: set[int]) -> tuple[measures.EpisodeTrace, list[int], np.ndarray]:
        """(trace, vehicle ids of its columns, lane ids (T, N): -1 absent, -2 crashed)."""
        vids = list(self.member_vids) + sorted((self.related | extra_vids) - set(self.member_vids))
        col = {v: k for k, v in enumerate(vids)}
        t, n = len(self.steps), len(vids)
        arrays = {f: np.full((t, n), np.nan) for f in _FIELDS}
        lane = np.full((t, n), -1, dtype=np.int64)
        length, width = np.full(n, np.nan), np.full(n, np.nan)
        leader = np.full((t, n), -1, dtype=np.intp)
        gap = np.full((t, n), np.nan)
        for k, snap in enumerate(self.steps):
            keep = np.array([v in col for v in snap["vid"]], dtype=bool)
            cols = np.array([col[v] for v in snap["vid"][keep]], dtype=np.intp)
            for f in _FIELDS:
                arrays[f][k, cols] = snap[f][keep]
            lane[k, cols] = snap["lane"][keep]
            m = len(self.member_vids)
            lv = snap["lead_vid"]
            has = lv >= 0
            leader[k, :m] = np.where(has, [col.get(int(v), -1) for v in lv], -1)
            gap[k, :m] = snap["gap"]
            for vid, (ahead, g) in snap.get("ahead", {}).items():  # traffic leaders' own leaders
                if col[vid] >= m and ahead in col:
                    leader[k, col[vid]], gap[k, col[vid]] = col[ahead], g
        length[:], width[:] = self._sizes(vids)
        return (measures.EpisodeTrace(**arrays, length=length, width=width, dt=1.0 / self.sim.spec.policy_frequency,
                                      leader=leader, gap=np.where(leader >= 0, gap, np.nan)), vids, lane)

    def replay(self) -> episode_data.Replay:
        """Every vehicle's box at every sampled step, members first (float32, NaN where absent)."""
        seen = {int(v) for snap in self.steps for v in snap["vid"]}
        vids = list(self.member_vids) + sorted(seen - set(self.member_vids))
        col = {v: k for k, v in enumerate(vids)}
        t, n = len(self.steps), len(vids)
        pose = {f: np.full((t, n), np.nan, dtype=np.float32) for f in ("x", "y", "heading")}
        crashed = np.zeros((t, n), dtype=bool)
        for k, snap in enumerate(self.steps):
            cols = np.array([col[int(v)] for v in snap["vid"]], dtype=np.intp)
            for f in pose:
                pose[f][k, cols] = snap[f]
            crashed[k, cols] = snap["lane"] == -2
        w, rows = self.sim.world, self.sim.controlled
        platoon = np.full(n, -1, dtype=np.int16)
        member = np.full(n, -1, dtype=np.int16)
        platoon[: len(rows)], member[: len(rows)] = w.platoon[rows], w.member[rows]
        length, width = self._sizes(vids)
        return episode_data.Replay(**pose, crashed=crashed, length=length.astype(np.float32),
                                   width=width.astype(np.float32), platoon=platoon, member=member)

    def _sizes(self, vids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(length, width) of each vehicle id: from the World if still on the road, else its spec."""
        w = self.sim.world
        on_road = {int(w.vid[r]): (w.length[r], w.width[r]) for r in range(w.capacity) if w.active[r]}
        sizes = np.array([on_road.get(v) or self._size_of(v) for v in vids], dtype=np.float64).reshape(-1, 2)
        return sizes[:, 0], sizes[:, 1]

    def _size_of(self, vid: int) -> tuple[float, float]:
        """Size of a vehicle that has left: members from their spec, traffic from the traffic spec."""
        spec = self.sim.spec
        if vid in self.member_vids:
            p = spec.platoons[int(self.sim.world.platoon[self.sim.controlled[self.member_vids.index(vid)]])]
            return p.vehicle.length, p.vehicle.width
        return spec.traffic.vehicle.length, spec.traffic.vehicle.width




def run_episode(scenario: str | ScenarioSpec, policy: str | Policy, episode: int, *,
                record_trace: bool = False, render: bool = False,
                policy_params: dict[str, Any] | None = None,
                evaluator: CollisionEvaluator | None = None) -> EpisodeResult:
    """Run episode `episode` of `scenario` under `policy` and return its record (module docstring)."""
    start = time.perf_counter()
    spec = scenario if isinstance(scenario, ScenarioSpec) else load_scenario(scenario)
    if isinstance(policy, Policy):
        pol, policy_label = policy, policy.name
    else:
        pol, policy_label = make_policy(policy, spec, **(policy_params or {})), policy
    sim = Simulation(spec, episode)
    targets = MergeTargets.of(sim)  # before members leave the road and free their rows
    observer = Observer(sim)
    ev = (evaluator or CollisionEvaluator()).attach(sim)
    pol.reset(SimInfo(spec, int(episode), tuple(sim.agent_names),
                      np.array([int(sim.world.platoon[r]) for r in sim.controlled], dtype=np.intp),
                      np.array([int(sim.world.member[r]) for r in sim.controlled], dtype=np.intp),
                      1.0 / spec.policy_frequency))
    recorder = _TraceRecorder(sim)
    recorder.sample()
    renderer = None
    if render:
        from diffplatoon.sim.render import Renderer  # pygame: loaded only when frames are wanted

        renderer = Renderer(sim)
    frames = [renderer.frame()] if renderer else None
    departed: dict[str, str] = {}
    while not sim.done:
        obs = observer.observe()
        if not obs.alive.any():
            break  # every member has crashed or left the road
        actions = pol.act(obs)
        summary = pol.plan_summary() if hasattr(pol, "plan_summary") else None
        if summary is not None:  # a planner's intent rides in the members' next V2V messages
            sim.plan_slots[:] = summary
        result = sim.step(actions)
        departed.update({d.name: d.reason for d in _member_departures(sim, result)})
        recorder.sample()
        if renderer:
            frames.append(renderer.frame())

    involved = {v for c in ev.collisions for v in c.vids}
    trace, vids, lanes = recorder.trace(involved)
    members = list(range(len(sim.agent_names)))
    platoons, offset = [], 0
    for p in spec.platoons:
        platoons.append(list(range(offset, offset + p.size)))
        offset += p.size
    th = Thresholds.for_spec(spec)
    left_road = {sim.agent_names.index(name): t for name, t in ev.offroad.items()}
    merge_kw = _merge_args(targets, lanes, left_road, float(trace.dt))
    member_collisions = ev.member_collisions()
    summary = measures.episode_summary(trace, subjects=members, platoons=platoons, thresholds=th,
                                       collided=bool(member_collisions), **merge_kw)
    strings = measures.platoon_string_stability(trace, platoons, th)

    stats = dict(pol.stats())
    shield = stats.pop("shield", {})
    routed = any(p.destination is not None or p.route is not None for p in spec.platoons)
    record: dict[str, Any] = {
        **summary,  # first, so that `steps` below is the number of policy steps, not of samples
        "scenario": spec.name,
        "policy": policy_label,
        "policy_version": getattr(pol, "version", "0"),
        "seed": spec.seed,
        "episode": int(episode),
        "job_id": f"{spec.name}|{policy_label}|{int(episode)}",
        "steps": int(sim.step_count),
        "sim_time": float(sim.time),
        "collision": bool(member_collisions),
        "collisions": [c.as_dict() for c in member_collisions],
        "at_fault_collisions": ev.at_fault_count(),
        "traffic_collisions": len(ev.collisions) - len(member_collisions),
        "offroad": bool(ev.offroad),
        "offroad_members": dict(ev.offroad),
        "wrong_way": bool(ev.wrong_way),
        "wrong_way_members": dict(ev.wrong_way),
        "departed": departed,
        "events": sim.event_report(),
        "reached_goal": [n for n in sim.agent_names if departed.get(n) == "destination"] if routed else None,
        "near_miss": None if math.isnan(summary["near_miss"]) else bool(summary["near_miss"]),
        "string_error_ratios": [ss.error_ratios.tolist() for ss in strings],
        "string_speed_ratios": [ss.speed_ratios.tolist() for ss in strings],
        "thresholds": th.as_dict(),
        "shield": shield,
        "policy_stats": stats,
    }
    record["wall_time"] = time.perf_counter() - start
    m = len(members)
    data = episode_data.EpisodeData(
        dt=float(trace.dt), names=tuple(sim.agent_names), platoons=tuple(tuple(p) for p in platoons),
        speed=np.asarray(trace.speed[:, :m], dtype=np.float32), gap=np.asarray(trace.gap[:, :m], dtype=np.float32),
        replay=recorder.replay())
    return EpisodeResult(io.json_safe(record), trace if record_trace else None, frames, data)


class _Departure(NamedTuple):
    name: str
    reason: str


def _member_departures(sim: Simulation, result: Any) -> list[_Departure]:
    """Members that left the road during the last step, with the World's reason."""
    members = set(sim.agent_names)
    return [_Departure(name, d.reason) for name, d in zip(result.departed, sim.world.departed) if name in members]


def _merge_args(targets: MergeTargets, lanes: np.ndarray, left_road: dict[int, float] | None = None,
                dt: float = 1.0) -> dict[str, Any]:
    """Merge-success inputs: who must merge and, per step and member, whether it is in a lane that counts
    (the rule of `diffplatoon.sim.merge_targets`, shared with the environments' merge bonus).

    The lane trace handed on is 1 where a member is in one of its own targets. A member that left
    the road keeps the lane of its last sample before it left (`left_road`: member column -> the
    time [s] the collision evaluator saw it outside the road; samples every `dt` s from 0): the
    World still maps an off-road vehicle to its nearest lane, which past a dropped lane's end is
    the lane it should have merged into, and driving off the end is no merge (the reward's merge
    bonus asks for the road too).
    """
    if not targets.mergers.any():
        return {}
    filled = lanes.copy()
    for col, t in (left_road or {}).items():
        first_out = int(np.ceil(t / dt - 1e-6))
        if 0 < first_out < len(filled):
            filled[first_out:, col] = filled[first_out - 1, col]
    for k in range(1, len(filled)):  # a member that left the World keeps its last lane
        filled[k] = np.where(filled[k] == -1, filled[k - 1], filled[k])
    m = len(targets.mergers)
    inside = np.zeros(filled.shape, dtype=np.intp)
    inside[:, :m] = targets.reached(filled[:, :m]) & targets.mergers
    return {"lane": inside, "target_lanes": [1], "mergers": np.flatnonzero(targets.mergers).tolist()}
