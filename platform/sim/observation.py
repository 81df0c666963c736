"""Per-vehicle observations of the controlled vehicles, computed vectorized from the World's arrays.

`Observation` is the structured form every consumer reads (experts by field, learned policies
through `flat()`); `Observer` fills it. Frames: "ego frame" = x forward along the vehicle's
heading, y to its right (highway-env's screen convention, y down). All arrays are float32
with M = number of controlled vehicles, in `Simulation.agent_names` order.

| field | shape | features |
|---|---|---|
| ego | (M, 10) | speed, acceleration, steering, heading error to lane, lateral offset r, lane width, distance to lane end, speed limit, platoon member index, is platoon leader |
| leader | (M, 4) | gap to the vehicle ahead in the lane (bumper to bumper; `range` if none), its speed, closing speed, present flag |
| side | (M, 2, 2, 4) | [left, right] × [front, rear]: gap, speed, closing speed, present flag (present=0 also when the side lane does not exist) |
| side_lane | (M, 2) | 1 if a left / right lane exists and may be entered |
| neighbours | (M, K, 9) | K nearest vehicles within `range` in the ego frame: dx, dy, dvx, dvy, cos Δψ, sin Δψ, length, width, same-platoon flag |
| neighbour_mask | (M, K) bool | valid neighbour slots |
| lane_ahead | (M, P, 2) | centre-line points ahead on the current lane/route, ego frame |
| route | (M, 3) | lanes to move to reach the route (−left/+right), distance left to do it (m), route progress 0..1 |
| inbox, inbox_mask, inbox_age | (M, Kc, D), (M, Kc) bool, (M, Kc) | V2V messages received (see `diffplatoon.sim.comms`) |
| predecessor_message | (M, D), (M,) bool | the newest message from the member just ahead in the platoon, if received |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EGO_FEATURES = (
    "speed",
    "acceleration",
    "steering",
    "heading_error",
    "lateral_offset",
    "lane_width",
    "distance_to_lane_end",
    "speed_limit",
    "member_index",
    "is_leader",
)
LEADER_FEATURES = ("gap", "speed", "closing_speed", "present")
SIDE_FEATURES = ("gap", "speed", "closing_speed", "present")
NEIGHBOUR_FEATURES = ("dx", "dy", "dvx", "dvy", "cos_dheading", "sin_dheading", "length", "width", "same_platoon")
ROUTE_FEATURES = ("lane_changes_needed", "distance_to_do_it", "progress")


@dataclass
class Observation:
    """Structured observation of all controlled vehicles (see the module table)."""

    ego: np.ndarray
    leader: np.ndarray
    side: np.ndarray
    side_lane: np.ndarray
    neighbours: np.ndarray
    neighbour_mask: np.ndarray
    lane_ahead: np.ndarray
    route: np.ndarray
    inbox: np.ndarray
    inbox_mask: np.ndarray
    inbox_age: np.ndarray
    predecessor_message: np.ndarray
    predecessor_mask: np.ndarray

    def __len__(self) -> int:
        return self.ego.shape[0]

    def flat(self) -> np.ndarray:
        """(M, obs_dim) float32: every field concatenated per vehicle (masks as 0/1)."""
        m = self.ego.shape[0]
        parts = [
            self.ego,
            self.leader,
            self.side.reshape(m, -1),
            self.side_lane,
            self.neighbours.reshape(m, -1),
            self.neighbour_mask.astype(np.float32),
            self.lane_ahead.reshape(m, -1),
            self.route,
            self.inbox.reshape(m, -1),
            self.inbox_mask.astype(np.float32),
            self.inbox_age.astype(np.float32),
        ]
        return np.concatenate([p.astype(np.float32, copy=False) for p in parts], axis=1)

    def select(self, rows: np.ndarray) -> "Observation":
        """The observation of a subset of vehicles (e.g. one platoon)."""
        return Observation(**{k: v[rows] for k, v in self.__dict__.items()})
