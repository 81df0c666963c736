r"""Per-member rewards of a platoon episode, from the scenario's `RewardSpec` weights.

Every term is computed for all M members at once after each policy step (dt = 1 /
policy_frequency) and multiplied by its weight; the reward is their sum. Weights are signed as
in the spec (penalties have negative weights), so each term below is a non-negative magnitude
except `progress` and `gap_keeping`. "Off the road" means the member's centre is outside
`diffplatoon.sim.roads.drivable_area(spec.road)` (the union of the lane surfaces).

| term | magnitude | when | default weight, and why that scale |
|---|---|---|---|
| progress | metres driven along the member's route this step (`Observer.route_position`) / the speed limit of the lane it drove on (the World's max speed where a lane has none), clipped to [−dt, dt]: seconds of driving at the limit; a member that left the road this step gets its last speed × dt / limit | every step, 0 for a step that starts or ends off the road | +1: one per second at the limit on any road (ramp or highway alike), nothing for the distance driven beyond it, so an episode pays at most `duration` |
| collision | 1 + `max_gain`: `max_gain` = the most the other terms can pay one member in an episode, \|progress\| × duration + max(merge, 0) + \|gap_keeping\| × 5 s | the step the member becomes `crashed` | −1 (the spec keeps it ≤ −1): a crash costs more than anything a member could gain by risking it, for every episode length and weights |
| gap_keeping | the increase over the step of the time-gap error min(abs(time gap − desired time gap), 5) [s]; time gap = bumper-to-bumper distance to member k−1 along the route / max(speed, 1 m/s) | every step while the member and its predecessor are on the road and not crashed; 0 from the first step either is not | −0.5: half a reward per second of time-gap error closed, the same lost per second fallen back |
| comfort | (jerk / 10)² + steering rate² with jerk = Δacceleration / dt [m/s³] and steering rate = Δsteering / dt [rad/s] | every step, members not crashed | −0.02 (per step, unchanged): a 4 m/s² brake applied at once (20 m/s³) costs 0.08 |
| lane_keeping | min(abs(lateral offset) / (lane width / 2), 2) | every step, members not crashed | −0.1 (per step, unchanged): at most 0.2 a step, a nudge towards the lane centre |
| offroad | dt: seconds off the road | every step the member is off the road (not only the step it leaves) | −5 (the spec keeps it ≤ −progress): each second off the road costs five times what a second at the limit earns, and earns no progress |
| lane_departure | dt × the fraction of the member's four body corners outside the drivable area (wheels on the verge) | every step, members on the road and not crashed, except while the front reaches past the end of a road without successor (its exit) | −2: a body half over the edge costs what a second at the limit earns, a body fully over it twice that, on top of `offroad` once the centre follows |
| merge | 1 | once per episode, the first step a member with a merge task (`diffplatoon.sim.merge_targets`, the rule of the evaluation's merge success) is on one of its target lanes, on the road and not crashed, or leaves the road at its destination | +10: ten seconds of progress at the limit, a quarter of a 40 s episode, so merging or completing the route matters beside progress; `collision` still outweighs it and all progress |

Why these terms make leaving the road and crashing never pay:
- progress is measured along the route and paid only on the road, so the part of the route a
  shortcut cuts off is never paid; every second off the road costs |offroad| ≥ |progress|, at
  least what the best second on it earns; getting there sooner earns no more than the progress
  of the time saved, and progress over a route is bounded by its length / limit, however fast
  it is driven (distance beyond the limit is not paid).
- gap_keeping pays the change of a potential Φ = −error with no discount (F = Φ(s') − Φ(s),
  γ = 1), so over an episode it sums to the error at the start minus the error at the last
  measured step: a platoon that splits and regroups nets nothing, one that closes a gap is paid
  as it closes, and none is punished on every step of a split. Unlike F = γΦ(s') − Φ(s) with
  Φ(terminal) = 0, which leaves the optimal policy unchanged and so would make formation
  irrelevant to it, the formation a member ends in still counts; it is bounded by 5 s × weight,
  and a discounting learner sees a faint preference for regrouping sooner.
- a crash ends the member's episode (with `safety.terminate_on_collision`) and costs 1 +
  `max_gain`, more than everything positive the member could have collected in the episode.
"""

from __future__ import annotations

import numpy as np
import shapely

from diffplatoon.scenarios.schema import RewardSpec, ScenarioSpec
from diffplatoon.sim.merge_targets import MergeTargets
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.roads import drivable_area
from diffplatoon.sim.simulation import Simulation

REWARD_TERMS = ("progress", "collision", "gap_keeping", "comfort", "lane_keeping", "offroad", "lane_departure",
                "merge")

MAX_TIME_GAP_ERROR = 5.0  # [s] the gap-keeping potential's range
_MAX_LANE_OFFSET = 2.0  # [half lane widths]
_MIN_SPEED = 1.0  # [m/s] floor of the speed a time gap is divided by
_CORNERS = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, 0.5], [-0.5, -0.5]])  # (4, 2) × (length, width)


def max_gain(reward: RewardSpec, duration: float) -> float:
    """The most all terms but `collision` can pay one member in an episode of `duration` seconds."""
    return abs(reward.progress) * duration + max(reward.merge, 0.0) + abs(reward.gap_keeping) * MAX_TIME_GAP_ERROR


def _drivable_area(spec: ScenarioSpec) -> shapely.Geometry:
    area = drivable_area(spec.road)
    shapely.prepare(area)  # idempotent; makes contains_xy fast
    return area


class RewardFunction:
    """Stateful per-episode reward of the members of `sim` (see the module table)."""

    def __init__(self, sim: Simulation, observer: Observer):
        self.sim = sim
        self.observer = observer
        spec = sim.spec
        r = spec.reward
        self.dt = 1.0 / spec.policy_frequency
        self.crash_cost = 1.0 + max_gain(r, spec.steps * self.dt)
        self.weights = np.array([r.progress, r.collision * self.crash_cost, r.gap_keeping, r.comfort,
                                 r.lane_keeping, r.offroad, r.lane_departure, r.merge])
        self.area = _drivable_area(spec)
        w, rows = sim.world, sim.controlled
        tab = w.table
        self.limit = np.where(np.isfinite(tab.speed_limit), tab.speed_limit, w.params.max_speed)  # (lanes,)
        graph = sim.comm_graph
        m = len(rows)
        self.desired_gap = np.array([p.desired_time_gap for p in spec.platoons])[graph.platoon_of]  # (M,)
        self.pred = np.where(graph.member_of > 0, np.arange(m) - 1, -1)  # comm id of member k−1
        self.targets = MergeTargets.of(sim)
        self.vids = w.vid[rows].copy()
        self._snapshot()

    def _snapshot(self) -> None:
        """The state the first step's terms are measured from (`__call__` keeps it up to date)."""
        w, rows = self.sim.world, self.sim.controlled
        live = self.observer.live()
        self._pos = self.observer.route_position(live)
        self._speed = np.where(live, w.speed[rows], 0.0)
        self._limit = self.limit[w.lane[rows]]
        self._accel = np.where(live, w.accel[rows], 0.0)
        self._steer = np.where(live, w.steering[rows], 0.0)
        self._crashed = live & w.crashed[rows]
        self._outside = live & self._off_road()
        self._gap_error = np.where(self._has_pred(live), self._time_gap_error(self._pos, live), np.nan)
        self._merged = self.targets.reached(w.lane[rows]) | ~self.targets.mergers

    def _off_road(self) -> np.ndarray:
        w, rows = self.sim.world, self.sim.controlled
        return ~shapely.contains_xy(self.area, w.x[rows], w.y[rows])

    def _has_pred(self, live: np.ndarray) -> np.ndarray:
        """(M,) bool: the member is on the road, not crashed, and so is its predecessor."""
        crashed = self.sim.world.crashed[self.sim.controlled]
        ok = live & ~crashed
        pred = np.maximum(self.pred, 0)
        return (self.pred >= 0) & ok & ok[pred]

    def _time_gap_error(self, pos: np.ndarray, live: np.ndarray) -> np.ndarray:
        """(M,) min(abs(time gap − desired), MAX_TIME_GAP_ERROR) [s] (the cap where not finite)."""
        w, rows = self.sim.world, self.sim.controlled
        pred = np.maximum(self.pred, 0)
        length = w.length[rows]
        gap = pos[pred] - pos - (length + length[pred]) / 2
        time_gap = gap / np.maximum(np.where(live, w.speed[rows], 0.0), _MIN_SPEED)
        error = np.minimum(np.abs(time_gap - self.desired_gap), MAX_TIME_GAP_ERROR)
        return np.where(np.isfinite(error), error, MAX_TIME_GAP_ERROR)

    def _corners_off_road(self, ok: np.ndarray) -> np.ndarray:
        """(M,) fraction of each member's body corners off the drivable area (0 where not `ok`)."""
        w, rows = self.sim.world, self.sim.controlled
        tab = w.table
        c, s = np.cos(w.heading[rows]), np.sin(w.heading[rows])
        lon = _CORNERS[:, :1] * w.length[rows]  # (4, M)
        lat = _CORNERS[:, 1:] * w.width[rows]
        off = ~shapely.contains_xy(self.area, w.x[rows] + lon * c - lat * s, w.y[rows] + lon * s + lat * c)
        at_exit = w.s[rows] + w.length[rows] / 2 > tab.exit_at[w.lane[rows]]
        return np.where(ok & ~at_exit, off.mean(axis=0), 0.0)

    def _destination(self) -> np.ndarray:
        """(M,) bool: members that left the road at their destination during the last step."""
        vids = [d.vid for d in self.sim.world.departed if d.reason == "destination"]
        return np.isin(self.vids, vids) if vids else np.zeros(len(self.vids), dtype=bool)

    def __call__(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """After a step: (reward (M,), weighted terms (M, len(REWARD_TERMS)) in `REWARD_TERMS` order, events).

        `events` holds (M,) bool arrays "crashed", "offroad" and "merged" (began this step) and
        "outside" (off the road now).
        """
        w, rows = self.sim.world, self.sim.controlled
        m, dt = len(rows), self.dt
        live = self.observer.live()
        crashed = live & w.crashed[rows]
        ok = live & ~crashed
        lane = w.lane[rows]
        outside = live & self._off_road()
        terms = np.zeros((m, len(REWARD_TERMS)))

        pos = self.observer.route_position(live)
        seconds = np.where(live, pos - self._pos, self._speed * dt) / self._limit
        seconds = np.minimum(np.maximum(seconds, -dt), dt)
        on_road = ~self._outside & ~outside
        terms[:, 0] = np.where(on_road & np.isfinite(seconds), seconds, 0.0)

        new_crash = crashed & ~self._crashed
        terms[:, 1] = new_crash

        has_pred = self._has_pred(live)
        error = np.where(has_pred, self._time_gap_error(pos, live), np.nan)
        measured = has_pred & ~np.isnan(self._gap_error)
        terms[:, 2] = np.where(measured, error - self._gap_error, 0.0)

        speed, accel, steer = w.speed[rows], w.accel[rows], w.steering[rows]
        jerk = (accel - self._accel) / dt
        steer_rate = (steer - self._steer) / dt
        terms[:, 3] = np.where(ok, (jerk / 10.0) ** 2 + steer_rate**2, 0.0)

        half = w.table.width[lane] / 2
        terms[:, 4] = np.where(ok, np.minimum(np.abs(w.r[rows]) / half, _MAX_LANE_OFFSET), 0.0)

        terms[:, 5] = outside * dt
        terms[:, 6] = self._corners_off_road(ok) * dt

        arrived = (ok & ~outside & self.targets.reached(np.where(live, lane, -1))) | self._destination()
        merged = arrived & ~self._merged
        terms[:, 7] = merged

        weighted = terms * self.weights
        # the next step's reference state (as `_snapshot`), from the arrays read above
        self._pos = pos
        self._speed = np.where(live, speed, 0.0)
        self._limit = np.where(live, self.limit[lane], self._limit)
        self._accel = np.where(live, accel, 0.0)
        self._steer = np.where(live, steer, 0.0)
        new_off = outside & ~self._outside
        self._crashed = crashed
        self._outside = outside
        self._gap_error = np.where(has_pred, error, self._gap_error)
        self._merged = self._merged | merged
        events = {"crashed": new_crash, "offroad": new_off, "merged": merged, "outside": outside}
        return weighted.sum(axis=1), weighted, events
