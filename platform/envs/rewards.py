"""Per-member rewards of a platoon episode, from the scenario's `RewardSpec` weights.

Every term is computed for all M members at once after each policy step (dt = 1 /
policy_frequency) and multiplied by its weight; the reward is their sum. Weights are signed as
in the spec (penalties have negative weights), so each term below is a non-negative magnitude
except `progress`.

| term | magnitude | when |
|---|---|---|
| progress | metres driven along the member's route this step / 10 (route position from `Observer.route_position`; a member that left the road this step gets its last speed × dt) | every step |
| collision | 1 | the step the member becomes `crashed` |
| gap_keeping | min(abs(time gap − desired time gap), 2) [s]; time gap = bumper-to-bumper distance to member k−1 along the route / max(speed, 1 m/s) | every step, members k > 0 whose predecessor is on the road |
| comfort | (jerk / 10)² + steering rate² with jerk = Δacceleration / dt [m/s³] and steering rate = Δsteering / dt [rad/s] | every step, members not crashed |
| lane_keeping | min(abs(lateral offset) / (lane width / 2), 2) | every step, members not crashed |
| offroad | 1 | the step the member's centre leaves `diffplatoon.sim.roads.drivable_area(spec.road)` |
"""

from __future__ import annotations

import numpy as np
import shapely

from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.roads import drivable_area
from diffplatoon.sim.simulation import Simulation

REWARD_TERMS = ("progress", "collision", "gap_keeping", "comfort", "lane_keeping", "offroad")

_MAX_TIME_GAP_ERROR = 2.0  # [s]
_MAX_LANE_OFFSET = 2.0  # [half lane widths]
_MIN_SPEED = 1.0  # [m/s] floor of the speed a time gap is divided by


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
        self.weights = np.array([r.progress, r.collision, r.gap_keeping, r.comfort, r.lane_keeping, r.offroad])
        self.dt = 1.0 / spec.policy_frequency
        self.area = _drivable_area(spec)
        graph = sim.comm_graph
        m = len(sim.controlled)
        self.desired_gap = np.array([p.desired_time_gap for p in spec.platoons])[graph.platoon_of]  # (M,)
        self.pred = np.where(graph.member_of > 0, np.arange(m) - 1, -1)  # comm id of member k−1
        self._snapshot()

    def _snapshot(self) -> None:
        """The state the first step's terms are measured from (`__call__` keeps it up to date)."""
        w, rows = self.sim.world, self.sim.controlled
        live = self.observer.live()
        self._pos = self.observer.route_position(live)
        self._speed = np.where(live, w.speed[rows], 0.0)
        self._accel = np.where(live, w.accel[rows], 0.0)
        self._steer = np.where(live, w.steering[rows], 0.0)
        self._crashed = live & w.crashed[rows]
        self._offroad = live & self._outside()

    def _outside(self) -> np.ndarray:
        w, rows = self.sim.world, self.sim.controlled
        return ~shapely.contains_xy(self.area, w.x[rows], w.y[rows])

    def __call__(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """After a step: (reward (M,), weighted terms (M, 6) in `REWARD_TERMS` order, events).

        `events` holds (M,) bool arrays "crashed" and "offroad" (began this step) and "outside"
        (centre off the drivable area now).
        """
        w, rows = self.sim.world, self.sim.controlled
        m = len(rows)
        live = self.observer.live()
        crashed = live & w.crashed[rows]
        ok = live & ~crashed
        terms = np.zeros((m, len(REWARD_TERMS)))

        pos = self.observer.route_position(live)
        step_max = (w.params.max_speed + 1.0) * self.dt
        progress = np.where(live, np.minimum(np.maximum(pos - self._pos, -step_max), step_max), self._speed * self.dt)
        terms[:, 0] = np.where(np.isfinite(progress), progress, 0.0) / 10.0

        new_crash = crashed & ~self._crashed
        terms[:, 1] = new_crash

        pred = np.maximum(self.pred, 0)
        has_pred = (self.pred >= 0) & ok & live[pred]
        length = w.length[rows]
        gap = pos[pred] - pos - (length + length[pred]) / 2
        speed = w.speed[rows]
        time_gap = gap / np.maximum(speed, _MIN_SPEED)
        error = np.minimum(np.abs(time_gap - self.desired_gap), _MAX_TIME_GAP_ERROR)
        terms[:, 2] = np.where(has_pred, np.where(np.isfinite(error), error, _MAX_TIME_GAP_ERROR), 0.0)

        accel, steer = w.accel[rows], w.steering[rows]
        jerk = (accel - self._accel) / self.dt
        steer_rate = (steer - self._steer) / self.dt
        terms[:, 3] = np.where(ok, (jerk / 10.0) ** 2 + steer_rate**2, 0.0)

        half = w.table.width[w.lane[rows]] / 2
        terms[:, 4] = np.where(ok, np.minimum(np.abs(w.r[rows]) / half, _MAX_LANE_OFFSET), 0.0)

        outside = live & self._outside()
        new_off = outside & ~self._offroad
        terms[:, 5] = new_off

        weighted = terms * self.weights
        # the next step's reference state (as `_snapshot`), from the arrays read above
        self._pos = pos
        self._speed = np.where(live, speed, 0.0)
        self._accel = np.where(live, accel, 0.0)
        self._steer = np.where(live, steer, 0.0)
        self._crashed = crashed
        self._offroad = outside
        return weighted.sum(axis=1), weighted, {"crashed": new_crash, "offroad": new_off, "outside": outside}
