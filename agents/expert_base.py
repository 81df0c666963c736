"""What the built-in experts share: the `ExpertPolicy` base, IDM and braking laws, lane keeping.

The experts (`experts`: IDM, CACC, random) read only the `Observation` (no simulator access) and act on every controlled
vehicle at once. Shared pieces:

- Lane keeping: highway-env's `steering_control` cascade (lateral P → heading reference →
  heading P → bicycle-model steering) on the observed lateral offset and heading error;
  curvature inside the 0.1 s pursuit horizon is neglected, the lateral loop absorbs it. The law
  divides by the speed and saturates the steering near a standstill, where no steering can change
  the lane error yet; members evaluate it at no less than `LANE_KEEPING_MIN_SPEED`, so they creep
  off from a stop with moderate steering (`member_lane_keeping`, also used by the learned policies'
  fallbacks). The experts steer to the observation's path lane (``route``: path lateral offset and
  heading error), which is the route's next lane from the last half length of a lane on, so at a
  fork (a roundabout exit, an intersection turn) they take the route's branch.
- Right of way (observation ``right_of_way``): where the traffic's yielding rule says wait
  (``must_yield``), IDM and CACC stop at the yield line as the traffic does; platoon members decide
  one by one, so a platoon crossing a conflict either crosses together or splits at the line and
  the followers close up again behind it.
- Route lane changes (``lane_changes="route"``): a member whose route needs another lane
  (observation ``route``: lanes to move, distance left to do it) changes lanes when the
  target-lane gaps pass MOBIL's safety criterion, i.e. neither the new follower nor the
  member itself has to brake harder than ``b_safe`` (IDM accelerations; a standing follower's
  braking ends at a stop, so one letting a zipper merge in is no obstacle), with ``b_safe``
  relaxed from MOBIL's 2 m/s² to ``b_urgent`` as the distance left shrinks to 0, and to the
  traffic's comfortable deceleration (its IDM b) as the time waited grows to ``patience`` (a
  zipper merge, as the traffic's own). A change under way is given up while the member is still
  in its own lane if the new follower would by then have to brake beyond the traffic's
  comfortable deceleration (MOBIL's safety for the whole change). While it
  waits for a gap it follows the target lane's front vehicle (so it slips in behind it), and
  its speed is capped so that it can stop at 3 m/s² 8 m before the place where the change must
  be done, from where it can still steer out (merge behaviour of the on-ramp and lane drop). No discretionary (speed-gain) changes: a platoon
  member leaving its lane for speed would break up the platoon.
- Speeds never go negative: braking is limited to what stops the vehicle within one step.
- Actions are clipped to each platoon's `VehicleSpec` limits.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from diffplatoon.agents.policy import Policy, SimInfo
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim import traffic
from diffplatoon.sim.observation import EGO_FEATURES, RIGHT_OF_WAY_FEATURES, ROUTE_FEATURES, Observation

_E = {name: k for k, name in enumerate(EGO_FEATURES)}
LANE_KEEPING_MIN_SPEED = 5.0  # [m/s] speed floor of the members' lane-keeping law (module docstring)
_W = {name: k for k, name in enumerate(RIGHT_OF_WAY_FEATURES)}
_R = {name: k for k, name in enumerate(ROUTE_FEATURES)}
_LEFT, _RIGHT, _FRONT, _REAR = 0, 1, 0, 1
_GAP, _SPEED, _PRESENT = 0, 1, 3

# A leader further than this [m] does not constrain the gap controllers (cruise only).
FOLLOW_RANGE = 150.0
# A member waiting for a gap stops this far [m] (front bumper) before the lane-change deadline,
# braking at most _MERGE_BRAKE [m/s²]; the speed cap is tracked with time constant _CAP_TIME [s].
_STOP_MARGIN = 8.0
_MERGE_BRAKE = 3.0
_CAP_TIME = 0.5
# Route changes start considering the target lane once this close to the deadline [m].
_MERGE_HORIZON = 250.0
# Gap selection while waiting to change lanes: speed gain [1/s], position gain [1/s²] towards
# the middle of the gap beside, how much slower [m/s] to fall back when that gap is too small,
# and the time gap [s] the new follower should keep in a gap worth aiming for.
_GAP_SPEED_GAIN = 0.5
_GAP_POSITION_GAIN = 0.1
_GAP_FALL_BACK = 4.0
_GAP_FOLLOWER_TIME = 1.0
# A lane change that has not crossed into the new lane after this long is given up [s].
_LANE_CHANGE_TIMEOUT = 6.0


def check_params(cls: type, params: dict[str, Any]) -> Any:
    """Build the params dataclass `cls` from `params`; unknown keys name the valid ones, a value
    of the wrong type (or a non-finite number) names what its field expects."""
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    hints = typing.get_type_hints(cls)
    for key, value in params.items():
        hint = hints[key]
        if typing.get_origin(hint) is Literal:
            ok, expected = value in typing.get_args(hint), " or ".join(map(repr, typing.get_args(hint)))
        else:
            kinds = typing.get_args(hint) or (hint,)
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = (value is None and type(None) in kinds) or (bool in kinds and isinstance(value, bool)) \
                or (float in kinds and number) or (int in kinds and number and isinstance(value, int))
            expected = "true or false" if bool in kinds else "an integer" if int in kinds else "a finite number"
        if not ok:
            raise ValueError(f"parameter {key}: expected {expected}, got {value!r}")
    return cls(**params)


def named_params(kind: str, cls: type, params: dict[str, Any]) -> tuple[Any, str]:
    """An expert's checked parameters and its policy name: `kind`, plus ``:k=v,...`` of the fields
    that differ from the defaults."""
    checked, defaults = check_params(cls, params), cls()
    diff = [f"{f.name}={getattr(checked, f.name)}" for f in dataclasses.fields(checked)
            if getattr(checked, f.name) != getattr(defaults, f.name)]
    return checked, kind + (f":{','.join(diff)}" if diff else "")


def idm_acceleration(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, closing: np.ndarray,
                     present: np.ndarray, *, a: float | np.ndarray, b: float | np.ndarray,
                     time_gap: float | np.ndarray, s0: float | np.ndarray,
                     delta: float = 4.0) -> np.ndarray:
    """IDM acceleration [m/s²] with a bumper-to-bumper `gap` and closing speed v − v_leader."""
    v = np.maximum(v, 0.0)
    free = a * (1.0 - np.power(v / np.maximum(v0, 0.1), delta))
    s_star = s0 + np.maximum(0.0, v * time_gap + v * closing / (2.0 * np.sqrt(a * b)))
    inter = a * (s_star / np.maximum(gap, 0.05)) ** 2
    return free - np.where(present, inter, 0.0)


def required_deceleration(v: np.ndarray, v_lead: np.ndarray, b_lead: np.ndarray,
                          room: np.ndarray) -> np.ndarray:
    """Smallest constant deceleration [m/s²] that keeps a follower behind a leader braking at b_lead.

    Both brake to a stop at constant rates from speeds v (follower) and v_lead over a free
    distance `room`. If the follower may brake more gently than the leader, the closest
    approach is at the end: b = v² / (2·(room + v_lead² / (2·b_lead))). Otherwise it is when the
    speeds are equal: b = b_lead + (v − v_lead)² / (2·room). inf when `room` <= 0 and closing.
    """
    room = np.asarray(room, dtype=np.float64)
    v_lead = np.maximum(v_lead, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # A standing leader stops at once; one that does not brake never stops.
        stop_lead = np.where(v_lead <= 1e-6, 0.0,
                             np.where(b_lead > 1e-6, v_lead ** 2 / (2.0 * np.maximum(b_lead, 1e-6)), np.inf))
        at_stop = v ** 2 / (2.0 * (room + stop_lead))
        closing = np.maximum(v - v_lead, 0.0)
        at_equal = b_lead + np.where(closing > 0, closing ** 2 / (2.0 * np.maximum(room, 1e-9)), 0.0)
        b = np.where((at_stop <= b_lead) & np.isfinite(stop_lead), at_stop, at_equal)
    b = np.where((room <= 0) & (closing > 0), np.inf, b)
    return np.nan_to_num(np.maximum(b, 0.0), nan=0.0, posinf=1e9)


@dataclass(frozen=True)
class Members:
    """Per-agent constants of an episode, (M,) arrays."""

    time_gap: np.ndarray
    standstill: np.ndarray
    cruise: np.ndarray
    length: np.ndarray
    max_acc: np.ndarray
    max_dec: np.ndarray
    max_steer: np.ndarray


def members_of(info: SimInfo, time_gap: float | None) -> Members:
    spec = info.spec
    lo, hi = spec.traffic.speed_range
    rows = [spec.platoons[p] for p in info.platoon]
    # A platoon cruises at its own speed, or at the traffic's mean desired speed if that is
    # faster (a platoon starting slowly on a ramp speeds up to the stream it merges into).
    return Members(
        time_gap=np.array([time_gap if time_gap is not None else p.desired_time_gap for p in rows]),
        standstill=np.array([p.standstill_gap for p in rows]),
        cruise=np.array([max(p.speed, 0.5 * (lo + hi)) for p in rows]),
        length=np.array([p.vehicle.length for p in rows]),
        max_acc=np.array([p.vehicle.max_acceleration for p in rows]),
        max_dec=np.array([p.vehicle.max_deceleration for p in rows]),
        max_steer=np.array([p.vehicle.max_steering for p in rows]),
    )


class ExpertPolicy(Policy):
    """Lane keeping, route lane changes and action limits shared by the experts."""

    version = "1"
    lane_changes: Literal["none", "route"] = "none"

    def __init__(self, spec: ScenarioSpec) -> None:
        self.spec = spec
        mobil, idm = spec.traffic.mobil, spec.traffic.idm
        self._b_safe = mobil.max_braking_imposed
        # How the traffic behind judges a gap: its IDM (highway-env's bumper gap s0 = 5 m).
        self._traffic_idm = dict(a=idm.a, b=idm.b, time_gap=idm.T, s0=idm.s0, delta=idm.delta)
        self._traffic_speed = 0.5 * sum(spec.traffic.speed_range)  # its mean desired speed
        self.reset(SimInfo.from_spec(spec))

    def reset(self, info: SimInfo) -> None:
        m = len(info.agent_names)
        self.info = info
        self.dt = info.dt
        self.lc_dir = np.zeros(m, dtype=np.intp)  # lane change under way: -1 left, +1 right
        self.lc_time = np.zeros(m)
        self.wait_time = np.zeros(m)  # how long each member has waited for a gap [s]
        self.prev_r = np.zeros(m)
        self.lane_changes_done = 0

    def stats(self) -> dict[str, Any]:
        return {}

    # -- shared pieces -----------------------------------------------------------------------
    def _finish(self, obs: Observation, acc: np.ndarray, steer: np.ndarray,
                mem: Members) -> np.ndarray:
        """Clip to vehicle limits, never brake into reverse, pack (M, 2)."""
        v = np.maximum(obs.ego[:, _E["speed"]].astype(np.float64), 0.0)
        acc = np.clip(acc, -mem.max_dec, mem.max_acc)
        acc = np.maximum(acc, -v / self.dt)
        steer = np.clip(steer, -mem.max_steer, mem.max_steer)
        return np.stack([np.nan_to_num(acc), np.nan_to_num(steer)], axis=1)

    def _right_of_way(self, obs: Observation, acc: np.ndarray, v0: np.ndarray, route_changes: bool) -> np.ndarray:
        """`acc` lowered to stop at the yield line where the observation's `must_yield` says wait.

        The verdict is the traffic's yielding rule (observation ``right_of_way``); the stop is the
        traffic's too: IDM with the traffic's parameters behind a standing virtual vehicle whose
        jam distance ends at the yield line.
        """
        row = obs.right_of_way.astype(np.float64)
        # A member whose route leaves this lane sideways (an acceleration or dropped lane) does not
        # drive into the conflict at its end: its route lane change caps its speed instead.
        leaving = (np.rint(obs.route[:, _R["lane_changes_needed"]]) != 0) & (row[:, _W["yield_line_distance"]] > 0)
        wait = (row[:, _W["must_yield"]] > 0.5) & ~(route_changes & (leaving | (self.lc_dir != 0)))
        if not wait.any():
            return acc
        v = np.maximum(obs.ego[:, _E["speed"]].astype(np.float64), 0.0)
        s0 = self._traffic_idm["s0"]
        stop = idm_acceleration(v, v0, row[:, _W["yield_line_distance"]] + s0, v, np.ones(len(v), bool),
                                **self._traffic_idm)
        return np.where(wait, np.minimum(acc, stop), acc)

    def _steering(self, obs: Observation, mem: Members) -> np.ndarray:
        """Lane keeping towards the path lane (the route's next lane at a lane end, so a fork is
        taken by the route's branch), or the adjacent one during a lane change."""
        ego, route = obs.ego.astype(np.float64), obs.route.astype(np.float64)
        r, width = route[:, _R["path_lateral_offset"]], ego[:, _E["lane_width"]]
        return lane_keeping_law(r - self.lc_dir * width, route[:, _R["path_heading_error"]],  # offset from the target lane
                                ego[:, _E["speed"]], mem.length)

    def _follower_braking(self, speed: np.ndarray, gap: np.ndarray, closing: np.ndarray,
                          present: np.ndarray) -> np.ndarray:
        """The new follower's IDM acceleration behind the member, but never below what stops it
        within one step: a follower standing (as one letting a zipper merge in) just stays put."""
        follower = idm_acceleration(speed, np.maximum(speed, self._traffic_speed), gap, closing, present,
                                    **self._traffic_idm)
        return np.maximum(follower, -np.maximum(speed, 0.0) / self.dt)

    def _route_lane_changes(self, obs: Observation, acc: np.ndarray, mem: Members,
                            time_gap: np.ndarray, params: Any) -> np.ndarray:
        """Start/finish route lane changes; returns `acc` with the merge speed adaptation."""
        ego = obs.ego.astype(np.float64)
        v = np.maximum(ego[:, _E["speed"]], 0.0)
        r, width = ego[:, _E["lateral_offset"]], ego[:, _E["lane_width"]]
        # 1. finished: the lane id flips once the centre crosses the boundary, so r jumps by ~w.
        changing = self.lc_dir != 0
        crossed = changing & ((r - self.prev_r) * (-self.lc_dir) > 0.5 * width)
        self.lane_changes_done += int(crossed.sum())
        self.lc_time = np.where(changing, self.lc_time + self.dt, 0.0)
        give_up = changing & ~crossed & (self.lc_time > _LANE_CHANGE_TIMEOUT)
        # MOBIL's safety for the whole change: back out while still in the own lane when the new
        # follower would now have to brake beyond the traffic's comfortable deceleration.
        going = (changing & ~crossed).nonzero()[0]
        if len(going):
            k = np.where(self.lc_dir[going] < 0, _LEFT, _RIGHT)
            rear = obs.side[going, k, _REAR].astype(np.float64)
            r_speed = rear[:, _SPEED]
            follower = self._follower_braking(r_speed, rear[:, _GAP], r_speed - v[going], rear[:, _PRESENT] > 0.5)
            unsafe = (rear[:, _PRESENT] > 0.5) & (follower < -self._traffic_idm["b"]) \
                & (np.abs(r[going]) < 0.5 * width[going])
            give_up[going[unsafe]] = True
        self.lc_dir[crossed | give_up] = 0
        self.prev_r = r.copy()

        need = np.rint(obs.route[:, 0]).astype(np.intp)
        dist = np.maximum(obs.route[:, 1].astype(np.float64), 0.0)
        # Never drive past the place where the change must be done: a speed cap from which the
        # vehicle stops comfortably before it (waiting ones keep room to steer out from standstill).
        front = dist - 0.5 * mem.length
        room = np.where(self.lc_dir != 0, front, front - _STOP_MARGIN)
        v_cap = np.sqrt(2.0 * _MERGE_BRAKE * np.maximum(room, 0.0))
        capped = (need != 0) & (dist < _MERGE_HORIZON)
        acc = np.where(capped, np.minimum(acc, (v_cap - v) / _CAP_TIME), acc)
        wants = (need != 0) & (self.lc_dir == 0) & (dist < _MERGE_HORIZON)
        if not wants.any():
            self.wait_time[:] = 0.0
            return acc
        d = np.sign(need)
        k = np.where(d < 0, _LEFT, _RIGHT)
        rows = np.arange(len(need))
        side = obs.side[rows, k].astype(np.float64)  # (M, 2 front/rear, 4)
        exists = obs.side_lane[rows, k] > 0.5
        f_gap, f_speed, f_on = side[:, _FRONT, _GAP], side[:, _FRONT, _SPEED], side[:, _FRONT, _PRESENT] > 0.5
        r_gap, r_speed, r_on = side[:, _REAR, _GAP], side[:, _REAR, _SPEED], side[:, _REAR, _PRESENT] > 0.5

        urgency = np.clip(1.0 - dist / params.urgent_distance, 0.0, 1.0)
        b_safe = self._b_safe + (params.b_urgent - self._b_safe) * urgency
        # Zipper: the longer it has waited, the more braking it may ask of the new follower, up
        # to the traffic's comfortable deceleration after `patience` seconds (as traffic does).
        b_safe = np.maximum(b_safe, self._b_safe + (self._traffic_idm["b"] - self._b_safe)
                            * np.minimum(self.wait_time / params.patience, 1.0))
        v0 = np.minimum(mem.cruise, ego[:, _E["speed_limit"]])
        own = idm_acceleration(v, v0, f_gap, v - f_speed, f_on, a=params.a, b=params.b,
                               time_gap=time_gap, s0=mem.standstill)
        follower = self._follower_braking(r_speed, r_gap, r_speed - v, r_on)
        clear = (~f_on | (f_gap > mem.standstill)) & (~r_on | (r_gap > mem.standstill))
        ok = wants & exists & clear & (own >= -b_safe) & (~r_on | (follower >= -b_safe))
        self.lc_dir[ok] = d[ok]
        self.lc_time[ok] = 0.0
        self.wait_time = np.where(wants & ~ok, self.wait_time + self.dt, 0.0)

        # 2. still waiting: gap selection. Match the target lane's speed; where the gap beside is
        # large enough move to its middle, else fall back so that the next gap comes alongside.
        wait = wants & ~ok
        v_lane = np.where(f_on, f_speed, np.where(r_on, r_speed, v0))
        needed = mem.standstill + time_gap * v_lane + self._traffic_idm["s0"] + _GAP_FOLLOWER_TIME * v_lane
        free = np.where(f_on, f_gap, FOLLOW_RANGE) + np.where(r_on, r_gap, FOLLOW_RANGE)
        centre = 0.5 * (np.where(f_on, f_gap, free) - np.where(r_on, r_gap, free))  # > 0: ahead is roomier
        align = np.where(free >= needed, _GAP_SPEED_GAIN * (v_lane - v) + _GAP_POSITION_GAIN * centre,
                         _GAP_SPEED_GAIN * (v_lane - _GAP_FALL_BACK - v))
        align = np.maximum(align, -params.b_urgent)  # a wish, not a safety need
        return np.where(wait & (f_on | r_on), np.minimum(acc, align), acc)


def member_lane_keeping(ego: np.ndarray, length: np.ndarray, lateral: np.ndarray | None = None) -> np.ndarray:
    """Lane-keeping steering [rad] of members from their ego features (M, len(EGO_FEATURES)).

    ``lateral`` is each member's offset from the lane centre it steers to (default: its current
    lane's, the observed ``lateral_offset``).
    """
    ego = np.asarray(ego, dtype=np.float64)
    r = ego[:, _E["lateral_offset"]] if lateral is None else np.asarray(lateral, dtype=np.float64)
    return lane_keeping_law(r, ego[:, _E["heading_error"]], ego[:, _E["speed"]], length)


def lane_keeping_law(lateral: np.ndarray, heading_error: np.ndarray, speed: np.ndarray,
                     length: np.ndarray) -> np.ndarray:
    """The members' lane-keeping steering [rad] from lane coordinates: highway-env's law with the speed
    floored at `LANE_KEEPING_MIN_SPEED` (module docstring)."""
    lateral = np.asarray(lateral, dtype=np.float64)
    return traffic.lane_keeping_steering(lateral, np.zeros_like(lateral), np.asarray(heading_error, np.float64),
                                         np.maximum(np.asarray(speed, np.float64), LANE_KEEPING_MIN_SPEED),
                                         np.asarray(length, dtype=np.float64))
