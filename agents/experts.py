"""Built-in expert policies: IDM, constant-time-gap CACC (Ploeg) with ACC fallback, and random.

The shared pieces (lane keeping, right of way, route lane changes, action limits) are
`expert_base`'s.

IDM (Treiber): a·[1 − (v/v0)^δ − (s*/s)²], s* = s0 + max(0, v·T + v·Δv / (2√(ab))), on the
observed leader; T defaults to the platoon's time gap, s0 to its standstill gap, a, b, δ to
the scenario's traffic IDM. Route lane changes are on, as for CACC (``lane_changes="none"`` keeps
every member in its lane: it then drives to the end of a ramp or dropped lane and steers into the
next lane without checking the gap).

CACC (Ploeg et al. 2011, as in Plexe): h·u̇_i = −u_i + k_p·e_i + k_d·ė_i + u_{i−1} with
e_i = gap − (r + h·v_i), ė_i = v_{i−1} − v_i − h·a_i, u_{i−1} the predecessor's acceleration
*as received over V2V* (so latency, drops and outages reach the controller). The ODE is
integrated exactly over each policy step with u_i held (zero-order hold). Without a fresh
predecessor message, or when the vehicle ahead is not the predecessor (a cut-in), it runs as
ACC (the same law without feed-forward, the "degraded CACC" of safety.md §3) with the larger
``acc_time_gap``; the effective time gap moves between the two at ``time_gap_rate`` s/s so a
switch does not demand a jump in spacing. The platoon leader runs ACC on whatever is ahead.
Cruise control v0 − v caps the output (the usual ACC min-selection). An emergency layer
brakes at the kinematically required constant deceleration (both braking to a stop) when
that exceeds ``emergency_decel`` (see `required_deceleration`). Defaults: k_p = 0.2, k_d = 0.7 (Plexe), h = the platoon's
time gap, r = its standstill gap, ACC h = 1.2 s (safety.md §3: 1.0–1.5 s for ACC).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from diffplatoon.agents.expert_base import (FOLLOW_RANGE, LANE_KEEPING_MIN_SPEED, ExpertPolicy, idm_acceleration,
                                            lane_keeping_law, member_lane_keeping, members_of, named_params,
                                            required_deceleration)
from diffplatoon.agents.policy import SimInfo
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.comms import FIELD_INDEX
from diffplatoon.sim.observation import EGO_FEATURES, LEADER_FEATURES, NEIGHBOUR_FEATURES, Observation

__all__ = ["LANE_KEEPING_MIN_SPEED", "CACCParams", "CACCPolicy", "IDMParams", "IDMPolicy", "RandomParams",
           "RandomPolicy", "idm_acceleration", "lane_keeping_law", "member_lane_keeping", "required_deceleration"]

_E = {name: k for k, name in enumerate(EGO_FEATURES)}
_L = {name: k for k, name in enumerate(LEADER_FEATURES)}
# Slack [m] the emergency layer keeps to the vehicle ahead.
_EMERGENCY_MARGIN = 1.0


@dataclass(frozen=True)
class IDMParams:
    """IDM policy parameters (None: from the scenario, see the module docstring)."""

    time_gap: float | None = None  # T [s]
    standstill: float | None = None  # s0 [m]
    a: float | None = None  # max acceleration [m/s²]
    b: float | None = None  # comfortable deceleration [m/s²]
    delta: float = 4.0
    urgent_distance: float = 100.0  # [m] route changes accept b_urgent at the deadline
    b_urgent: float = 4.0  # [m/s²]
    patience: float = 10.0  # [s] waiting this long for a gap accepts the traffic's comfortable braking
    lane_changes: Literal["none", "route"] = "route"


class IDMPolicy(ExpertPolicy):
    """IDM car following on the observed leader, lane keeping (and optional route changes)."""

    def __init__(self, spec: ScenarioSpec, **params: Any) -> None:
        p, self.name = named_params("idm", IDMParams, params)
        idm = spec.traffic.idm
        self.params = dataclasses.replace(p, a=p.a if p.a is not None else idm.a,
                                          b=p.b if p.b is not None else idm.b)
        super().__init__(spec)

    def reset(self, info: SimInfo) -> None:
        super().reset(info)
        self.mem = members_of(info, self.params.time_gap)
        if self.params.standstill is not None:
            self.mem = dataclasses.replace(self.mem, standstill=np.full(len(self.mem.standstill),
                                                                        float(self.params.standstill)))

    def act(self, obs: Observation) -> np.ndarray:
        p, mem = self.params, self.mem
        ego, lead = obs.ego.astype(np.float64), obs.leader.astype(np.float64)
        v = ego[:, _E["speed"]]
        v0 = np.minimum(mem.cruise, ego[:, _E["speed_limit"]])
        acc = idm_acceleration(v, v0, lead[:, _L["gap"]], lead[:, _L["closing_speed"]],
                               lead[:, _L["present"]] > 0.5, a=p.a, b=p.b,
                               time_gap=mem.time_gap, s0=mem.standstill, delta=p.delta)
        if p.lane_changes == "route":
            acc = self._route_lane_changes(obs, acc, mem, mem.time_gap, p)
        acc = self._right_of_way(obs, acc, v0, p.lane_changes == "route")
        return self._finish(obs, acc, self._steering(obs, mem), mem)


@dataclass(frozen=True)
class CACCParams:
    """CACC policy parameters (None: from the scenario, see the module docstring)."""

    time_gap: float | None = None  # h with V2V [s]; default the platoon's time gap
    standstill: float | None = None  # r [m]; default the platoon's standstill gap
    kp: float = 0.2  # [1/s²]
    kd: float = 0.7  # [1/s]
    acc_time_gap: float = 1.2  # h without V2V (degraded CACC / ACC) and for the platoon leader [s]
    time_gap_rate: float = 0.1  # how fast the effective h moves between the two [s/s]
    cruise_gain: float = 0.5  # cruise control v0 - v gain [1/s]
    emergency_decel: float = 4.0  # the emergency layer acts when this much braking is needed [m/s²]
    a: float = 3.0  # IDM a used to judge lane-change gaps [m/s²]
    b: float = 5.0  # IDM b used to judge lane-change gaps [m/s²]
    lane_changes: Literal["none", "route"] = "route"
    urgent_distance: float = 100.0  # [m]
    b_urgent: float = 4.0  # [m/s²]
    patience: float = 10.0  # [s]


class CACCPolicy(ExpertPolicy):
    """Ploeg CACC on V2V with ACC fallback, route lane changes and lane keeping."""

    def __init__(self, spec: ScenarioSpec, **params: Any) -> None:
        self.params, self.name = named_params("cacc", CACCParams, params)
        super().__init__(spec)

    def reset(self, info: SimInfo) -> None:
        super().reset(info)
        p = self.params
        self.mem = members_of(info, p.time_gap)
        if p.standstill is not None:
            self.mem = dataclasses.replace(self.mem, standstill=np.full(len(self.mem.standstill),
                                                                        float(p.standstill)))
        m = len(info.agent_names)
        self.u = np.zeros(m)  # Ploeg's controller state: the commanded acceleration
        self.h_eff = self.mem.time_gap.copy()
        self.prev_leader_speed = np.full(m, np.nan)
        self.cacc_steps = 0
        self.acc_steps = 0
        self.emergency_steps = 0

    def stats(self) -> dict[str, Any]:
        total = max(self.cacc_steps + self.acc_steps, 1)
        return {"cacc_fraction": self.cacc_steps / total, "emergency_steps": self.emergency_steps,
                "lane_changes": self.lane_changes_done}

    def _predecessor_ahead(self, obs: Observation) -> np.ndarray:
        """(M,) whether the observed leader is this member's platoon predecessor (not a cut-in).

        The neighbour list marks platoon members; the leader is the predecessor when a
        same-platoon neighbour sits ahead in the lane at the leader's distance.
        """
        nb = obs.neighbours.astype(np.float64)
        i = {n: NEIGHBOUR_FEATURES.index(n) for n in ("dx", "dy", "length", "same_platoon")}
        gap = obs.leader[:, _L["gap"]].astype(np.float64)
        width = obs.ego[:, _E["lane_width"]].astype(np.float64)
        centre = gap[:, None] + 0.5 * (self.mem.length[:, None] + nb[..., i["length"]])
        match = (obs.neighbour_mask & (nb[..., i["same_platoon"]] > 0.5) & (nb[..., i["dx"]] > 0)
                 & (np.abs(nb[..., i["dy"]]) < 0.5 * width[:, None])
                 & (np.abs(nb[..., i["dx"]] - centre) < 2.0))
        # ... and it is the predecessor itself, not another member (after a merge the order may
        # change): its last message places it at the leader's distance, within what it may have
        # driven since it was sent.
        if obs.pose is None:
            return match.any(axis=1)
        msg, pose = obs.predecessor_message.astype(np.float64), obs.pose.astype(np.float64)
        dist = np.hypot(msg[:, FIELD_INDEX["x"]] - pose[:, 0], msg[:, FIELD_INDEX["y"]] - pose[:, 1])
        expected = gap + 0.5 * (self.mem.length + msg[:, FIELD_INDEX["length"]])
        age = obs.predecessor_age.astype(np.float64) * self.dt if obs.predecessor_age is not None else 0.0
        slack = 3.0 + (np.abs(msg[:, FIELD_INDEX["speed"]]) + obs.ego[:, _E["speed"]]) * age
        return match.any(axis=1) & (np.abs(dist - expected) < slack)

    def act(self, obs: Observation) -> np.ndarray:
        p, mem, dt = self.params, self.mem, self.dt
        ego, lead = obs.ego.astype(np.float64), obs.leader.astype(np.float64)
        v, a_ego = np.maximum(ego[:, _E["speed"]], 0.0), ego[:, _E["acceleration"]]
        gap, closing = lead[:, _L["gap"]], lead[:, _L["closing_speed"]]
        v_lead = lead[:, _L["speed"]]
        following = (lead[:, _L["present"]] > 0.5) & (gap < FOLLOW_RANGE)
        is_leader = ego[:, _E["is_leader"]] > 0.5

        msg = obs.predecessor_message.astype(np.float64)
        cacc = ~is_leader & obs.predecessor_mask & following & self._predecessor_ahead(obs)
        u_pred = np.where(cacc, msg[:, FIELD_INDEX["acceleration"]], 0.0)
        self.cacc_steps += int(cacc.sum())
        self.acc_steps += int((~cacc).sum())

        # Effective time gap, rate-limited between the CACC and the ACC value.
        h_target = np.where(cacc, mem.time_gap, np.maximum(mem.time_gap, p.acc_time_gap))
        step = p.time_gap_rate * dt
        self.h_eff = np.where(following, self.h_eff + np.clip(h_target - self.h_eff, -step, step), h_target)
        h = self.h_eff

        # Ploeg: h·u' = -u + kp·e + kd·e' + u_pred, integrated exactly over dt with inputs held.
        e = gap - (mem.standstill + h * v)
        e_dot = -closing - h * a_ego
        target = p.kp * e + p.kd * e_dot + u_pred
        u_gap = target + (self.u - target) * np.exp(-dt / h)

        # The platoon leader cruises at the platoon's speed; followers may go up to the speed
        # limit to close a gap (capping them at the cruise speed would leave a standing error).
        limit = ego[:, _E["speed_limit"]]
        v0 = np.where(is_leader, np.minimum(mem.cruise, limit), limit)
        u_cruise = p.cruise_gain * (v0 - v)
        acc = np.where(following, np.minimum(u_gap, u_cruise), u_cruise)

        # Emergency layer: the constant deceleration that avoids contact if the leader keeps
        # braking as it does now until it stops.
        a_lead = np.where(cacc, u_pred, (v_lead - self.prev_leader_speed) / dt)
        a_lead = np.minimum(np.nan_to_num(a_lead, nan=0.0), 0.0)
        self.prev_leader_speed = np.where(following, v_lead, np.nan)
        b_req = required_deceleration(v, v_lead, -a_lead, gap - _EMERGENCY_MARGIN)
        emergency = following & (b_req > p.emergency_decel) & (-b_req < acc)
        self.emergency_steps += int(emergency.sum())
        acc = np.where(emergency, -b_req, acc)

        if p.lane_changes == "route":
            acc = self._route_lane_changes(obs, acc, mem, h, p)
        acc = self._right_of_way(obs, acc, v0, p.lane_changes == "route")
        out = self._finish(obs, acc, self._steering(obs, mem), mem)
        self.u = out[:, 0].copy()  # the command actually applied is the controller's state
        return out


@dataclass(frozen=True)
class RandomParams:
    """Random policy parameters."""

    steering: float = 0.05  # steering is uniform in ±this [rad] (capped by the vehicle limit)
    lane_keeping: bool = True  # add the lane-keeping steering to the random steering


class RandomPolicy(ExpertPolicy):
    """Uniformly random acceleration within the vehicle limits, small random steering."""

    def __init__(self, spec: ScenarioSpec, **params: Any) -> None:
        self.params, self.name = named_params("random", RandomParams, params)
        super().__init__(spec)

    def reset(self, info: SimInfo) -> None:
        super().reset(info)
        self.mem = members_of(info, None)
        seq = np.random.SeedSequence([int(info.spec.seed), int(info.episode), 0x5EED])
        self.rng = np.random.default_rng(seq)

    def act(self, obs: Observation) -> np.ndarray:
        mem, m = self.mem, len(obs)
        acc = self.rng.uniform(-mem.max_dec, mem.max_acc, size=m)
        steer = self.rng.uniform(-1.0, 1.0, size=m) * np.minimum(self.params.steering, mem.max_steer)
        if self.params.lane_keeping:
            steer = steer + self._steering(obs, mem)
        return self._finish(obs, acc, steer, mem)
