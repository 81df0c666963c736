"""Lane corridors: the band of road each platoon member may drive in, for the shield's road check.

A member's corridor is the centre line of its current lane/route as it observes it — its own
projection on the lane (position minus the lateral offset r along the lane normal) followed by the
``lane_ahead`` points, with points on the smooth curve through them added between each two
(`_densify`) — together with lateral bounds measured from that centre line: half a lane on each side,
widened by one lane towards a side lane that exists, may be entered (``Observation.side_lane``) and —
unless discretionary changes are allowed — is where the route asks the member to go
(``Observation.route``). Lateral offsets are positive towards the lane's
right, as the observation's ``lateral_offset`` (highway-env's lateral coordinate).

`Corridor.deviation` measures, for planned poses, how far a vehicle's outermost corner is outside the
bounds [m] and how far its heading is off the centre line's direction beyond ``max_heading_error`` [rad],
so the shield can reject plans that leave the road or turn across it. `Corridor.end_excess` measures how
far a member still in its own lane would pass that lane's end (the observation's ``distance_to_lane_end``,
where its route asks it to leave the lane before then) if it braked at full deceleration from each planned
pose, so the shield can reject plans that drive past the end of an acceleration lane or a dropped lane (the
centre line continues beyond it, the bounds do not end).
Everything is in one frame (the platoon frame of the planner or the world frame), as for the shield.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffplatoon.geometry import wrap_angle
from diffplatoon.sim.observation import EGO_FEATURES, Observation

_E = {name: k for k, name in enumerate(EGO_FEATURES)}
# Pieces each segment between two observed centre-line points is cut into (`_densify`).
_SUBDIVISIONS = 4


@dataclass
class Corridor:
    """Per member: centre-line points (N, P, 2) ordered along travel, the line's direction at each point
    (N, P) [rad] and the bounds [low, high] (N, 2) [m]; optionally the distance along the line to where the
    member's lane ends (N,) [m] and the lane's width (N,) [m] (`end_excess`)."""

    points: np.ndarray
    tangents: np.ndarray
    bounds: np.ndarray
    end: np.ndarray | None = None
    lane_width: np.ndarray | None = None

    def locate(self, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed lateral offset [m] and heading error [rad] of poses (..., N, R, ≥3) → two (..., N, R).

        Each pose is projected on the nearest segment of its member's centre line; the first segment
        extends backwards and the last forwards without end, so poses beyond the points still get an
        offset from the line's continuation. The reference heading is the line's direction
        interpolated between the segment's end points (exact on circular arcs).
        """
        p = np.asarray(poses, dtype=np.float64)[..., None, :2]  # (..., N, R, 1, 2)
        a = self.points[:, None, :-1]  # (N, 1, P-1, 2)
        d = self.points[:, None, 1:] - a
        length = np.maximum(np.linalg.norm(d, axis=-1), 1e-9)  # (N, 1, P-1)
        u = d / length[..., None]
        rel = p - a  # (..., N, R, P-1, 2)
        along = (rel * u).sum(-1)
        lo = np.where(np.arange(length.shape[-1]) == 0, -np.inf, 0.0)
        hi = np.where(np.arange(length.shape[-1]) == length.shape[-1] - 1, np.inf, length)
        t = np.clip(along, lo, hi)
        foot = a + t[..., None] * u
        dist = np.linalg.norm(p - foot, axis=-1)  # (..., N, R, P-1)
        k = dist.argmin(-1)[..., None]
        u_k = np.take_along_axis(np.broadcast_to(u, rel.shape), k[..., None], axis=-2)[..., 0, :]  # (..., N, R, 2)
        rel_k = np.take_along_axis(rel, k[..., None], axis=-2)[..., 0, :]
        lateral = u_k[..., 0] * rel_k[..., 1] - u_k[..., 1] * rel_k[..., 0]  # along the normal (−u_y, u_x)
        frac = np.clip(np.take_along_axis(t / np.broadcast_to(length, t.shape), k, axis=-1)[..., 0], 0.0, 1.0)
        k = k[..., 0]
        start = np.take_along_axis(np.broadcast_to(self.tangents[:, None, :-1], t.shape), k[..., None], -1)[..., 0]
        end = np.take_along_axis(np.broadcast_to(self.tangents[:, None, 1:], t.shape), k[..., None], -1)[..., 0]
        reference = start + frac * wrap_angle(end - start)
        heading_error = wrap_angle(np.asarray(poses, dtype=np.float64)[..., 2] - reference)
        return lateral, heading_error

    def deviation(self, poses: np.ndarray, length: np.ndarray, width: np.ndarray, max_heading_error: float,
                  located: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """How far outside the corridor poses (..., N, R, ≥3) are → (side excess [m], heading excess [rad]).

        Side excess: how far the vehicle's outermost corner (box ``length`` × ``width``, turned by its
        heading error) lies beyond the bounds, else 0; heading excess: max(0, |heading error| −
        ``max_heading_error``). Both are 0 for a pose inside the corridor. ``located``: `locate` of the
        poses when the caller has it.
        """
        lateral, heading_error = self.locate(poses) if located is None else located
        length = np.asarray(length, dtype=np.float64)[:, None]  # (N, 1)
        width = np.asarray(width, dtype=np.float64)[:, None]
        half = 0.5 * (length * np.abs(np.sin(heading_error)) + width * np.abs(np.cos(heading_error)))
        low, high = self.bounds[:, 0, None], self.bounds[:, 1, None]
        side = np.maximum(np.maximum(low - (lateral - half), (lateral + half) - high), 0.0)
        return side, np.maximum(np.abs(heading_error) - max_heading_error, 0.0)

    def end_excess(self, states: np.ndarray, lateral: np.ndarray, length: np.ndarray, decel: np.ndarray,
                   margin: float, width: np.ndarray | None = None) -> np.ndarray:
        """(..., N, R) how far [m] each member's front would pass its lane's end, braking at ``decel`` (N,)
        [m/s²] from each of the consecutive states (..., N, R, 4) [x, y, heading, speed] — the distance
        driven from the first state plus the stopping distance plus half the ``length`` (N,) and ``margin``,
        against `end` — while some of its body is in its lane: its centre within half a lane plus half its
        ``width`` (N,; default 2 m) of the lane's centre line (``lateral``: `locate`'s offsets of the states),
        since past the end a car straddling the line is off the road; 0 once it is wholly in another lane,
        and 0 without `end`."""
        states = np.asarray(states, dtype=np.float64)
        if self.end is None:
            return np.zeros(states.shape[:-1])
        step = np.linalg.norm(np.diff(states[..., :2], axis=-2), axis=-1)
        driven = np.concatenate([np.zeros(step.shape[:-1] + (1,)), np.cumsum(step, axis=-1)], axis=-1)
        speed = np.maximum(states[..., 3], 0.0)
        decel = np.maximum(np.asarray(decel, dtype=np.float64), 1e-3)[:, None]
        front = driven + speed ** 2 / (2.0 * decel) + 0.5 * np.asarray(length, dtype=np.float64)[:, None] + margin
        excess = np.maximum(front - self.end[:, None], 0.0)
        lane = self.lane_width if self.lane_width is not None else self.bounds[:, 1] - self.bounds[:, 0]
        car = np.full(lane.shape, 2.0) if width is None else np.asarray(width, dtype=np.float64)
        return np.where(np.abs(lateral) < 0.5 * (lane + car)[:, None], excess, 0.0)


def member_corridors(obs: Observation, rows: np.ndarray, frame: np.ndarray | None = None, *,
                     lane_changes: bool = False) -> Corridor:
    """The corridors of members ``rows`` of ``obs`` (needs ``obs.pose``), in the frame [x0, y0, ψ0] (None: world).

    With ``lane_changes`` False (the default) a corridor widens only towards a side lane the member's
    route asks it to move to, as the experts drive (no discretionary lane changes: a member leaving its
    lane for speed breaks up the platoon); True admits every side lane that may be entered.

    Absent members get a corridor too (from their zeroed fields); callers mask them.
    """
    rows = np.asarray(rows, dtype=np.intp)
    if obs.pose is None:
        raise ValueError("observation lacks pose (build it with diffplatoon.sim.observation.Observer)")
    pose = obs.pose[rows].astype(np.float64)
    ego = obs.ego[rows].astype(np.float64)
    x, y, h = pose[:, 0], pose[:, 1], pose[:, 2]
    c, s = np.cos(h), np.sin(h)
    lane_heading = h - ego[:, _E["heading_error"]]
    r = ego[:, _E["lateral_offset"]]
    centre = np.stack([x + r * np.sin(lane_heading), y - r * np.cos(lane_heading)], axis=1)  # p − r·n
    ahead = obs.lane_ahead[rows].astype(np.float64)  # (n, P, 2) ego frame
    ax = x[:, None] + c[:, None] * ahead[..., 0] - s[:, None] * ahead[..., 1]
    ay = y[:, None] + s[:, None] * ahead[..., 0] + c[:, None] * ahead[..., 1]
    points = np.concatenate([centre[:, None], np.stack([ax, ay], axis=-1)], axis=1)  # (n, P+1, 2)
    if points.shape[1] == 1:  # no lane points observed: the lane's tangent stands in
        tangent = centre + 10.0 * np.stack([np.cos(lane_heading), np.sin(lane_heading)], axis=1)
        points = np.concatenate([points, tangent[:, None]], axis=1)
    if frame is not None:
        x0, y0, h0 = (float(v) for v in frame)
        cf, sf = np.cos(h0), np.sin(h0)
        dx, dy = points[..., 0] - x0, points[..., 1] - y0
        points = np.stack([cf * dx + sf * dy, -sf * dx + cf * dy], axis=-1)
    first = lane_heading - (0.0 if frame is None else float(frame[2]))
    points = _densify(points, _tangents(points, first))
    tangents = _tangents(points, first)
    width = ego[:, _E["lane_width"]]
    left, right = obs.side_lane[rows, 0] > 0.5, obs.side_lane[rows, 1] > 0.5
    if not lane_changes:  # only the changes the route asks for (observation `route`: −left / +right)
        needed = obs.route[rows, 0]
        left, right = left & (needed < 0), right & (needed > 0)
    bounds = np.stack([-0.5 * width - width * left, 0.5 * width + width * right], axis=1)
    # A lane end counts only where the route asks to leave the lane before it: at a route's exit the lane
    # "ends" too, and the vehicle drives off there rather than stopping.
    end = np.where(obs.route[rows, 0] != 0, ego[:, _E["distance_to_lane_end"]], np.inf)
    return Corridor(points=points, tangents=tangents, bounds=bounds, end=end, lane_width=width.copy())


def _densify(points: np.ndarray, tangents: np.ndarray) -> np.ndarray:
    """(N, k(P−1)+1, 2): ``_SUBDIVISIONS`` − 1 points added inside each segment, on the cubic Hermite curve through
    the segment's end points with their tangent directions (``tangents`` (N, P) [rad]) and the chord length as
    speed (a circular arc to within a few mm at these spacings).

    The observation's points are 10 m apart; on a curve the chord between two of them lies inside the arc (by
    c²/8R: 0.6 m at R = 20 m), so a vehicle following the lane exactly looks that much off-centre, and a plan that
    drifts outwards looks as if it came back: on a roundabout entry the shield accepted such plans step after
    step and the members left the road, shielded, in 10 of 10 episodes. Quartering the chords divides that
    error by 16 (halving them was not enough there).
    """
    k = _SUBDIVISIONS
    p0, p1 = points[:, :-1], points[:, 1:]
    chord = np.linalg.norm(p1 - p0, axis=-1, keepdims=True)  # (N, P-1, 1)
    u = np.stack([np.cos(tangents), np.sin(tangents)], axis=-1)  # (N, P, 2)
    m0, m1 = chord * u[:, :-1], chord * u[:, 1:]
    out = np.empty((points.shape[0], k * (points.shape[1] - 1) + 1, 2))
    out[:, 0::k] = points
    for j in range(1, k):
        t = j / k
        out[:, j::k] = ((2 * t**3 - 3 * t**2 + 1) * p0 + (t**3 - 2 * t**2 + t) * m0 + (3 * t**2 - 2 * t**3) * p1
                        + (t**3 - t**2) * m1)
    return out


def _tangents(points: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(N, P) direction of the line at each point: ``first`` at point 0, then the mean of the two segment
    directions meeting there, and at the last point the arc continued (exact for equally spaced points
    on a circle)."""
    d = np.diff(points, axis=1)
    seg = np.arctan2(d[..., 1], d[..., 0])  # (N, P-1)
    out = np.empty(points.shape[:2])
    out[:, 0] = first
    if seg.shape[1] > 1:
        out[:, 1:-1] = seg[:, :-1] + 0.5 * wrap_angle(seg[:, 1:] - seg[:, :-1])
    out[:, -1] = seg[:, -1] + wrap_angle(seg[:, -1] - out[:, -2])
    return out
