"""Route anchors: lane-change priors for members whose route asks them to change lanes.

A lane change is a discrete choice. The planner's samples either change lanes or they do not, and guidance
cannot turn one into the other: a lateral step towards the target lane raises the lane term (offset from the
nearest lane centre) before it lowers the route term, so a gradient step from a lane-keeping plan stops where it
started. Where the demonstrations hold few lane changes in a situation (a fast on-ramp, a platoon larger than
those it saw merge), no sample changes lanes and sample-and-select has nothing to choose.

An anchor supplies the missing mode, in the spirit of DiffusionDrive's trajectory anchors: the member's steering
replaced by a lane change towards the target lane's centre, rolled out in closed loop on the member's lane centre
line, into a gap the predicted traffic leaves. The planner runs the law once per plan, on the warm-start prior with
the anchor's acceleration offset (`ANCHOR_ACCELERATIONS`), re-noises that prior like any warm prior, and at every
denoising step keeps the model's accelerations of the anchored sample (offset) with the law's steering. (Denoising
the anchor whole does not work: measured on a fast on-ramp, this planner's x̂0 at diffusion step 2 of 100 already
returns its lane-keeping mode, so even a barely noised lane change comes back as lane keeping.) The speed profile
is the model's; the lateral path is the law's. Guidance, the costs and the shield then choose between the anchored
samples and those that keep the lane.

`lane_change_prior` builds the anchors; `JointDiffusionPlanner.plan` gives ``WarmStartConfig.anchors`` of each
warm-started scene's samples this prior when some member of the scene has a route target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffplatoon.agents.diffusion.kinematics import bicycle_step
from diffplatoon.agents.diffusion.lane_costs import lane_offsets

# The lane-change law: lateral speed [m/s] towards the target lane centre, _LATERAL_GAIN × the lateral error
# (1/s) capped at _MAX_LATERAL_SPEED (and at _MAX_RELATIVE_HEADING); heading towards it at _HEADING_GAIN × the heading error (1/s), the yaw rate
# capped so that the lateral acceleration stays under _MAX_LATERAL_ACCELERATION [m/s²]. It depends on the state
# alone, so a plan re-anchored after every executed step continues the same lane change (a time profile restarted
# at every replan would never finish it).
_LATERAL_GAIN = 0.8
_MAX_LATERAL_SPEED = 1.5
_HEADING_GAIN = 3.0
_MAX_LATERAL_ACCELERATION = 2.0
# The heading [rad] relative to the lane the law asks for at most: slow members merge at a shallow angle too.
_MAX_RELATIVE_HEADING = 0.2
# Below this speed [m/s] the law divides by it instead (a standing member steers, it does not spin).
_MIN_SPEED = 1.0


# Acceleration offsets [m/s²] of the anchored samples of a scene, in row order: the model's speed profile, one
# that drops back (into the gap behind a vehicle alongside) and one that pulls ahead (to merge at the target
# lane's speed). Clipped to the action limits.
ANCHOR_ACCELERATIONS = (0.0, -2.0, 2.0)
# A member merges (and goes on merging) only while the target lane is clear of predicted vehicles within half
# the two lengths plus _GAP_DISTANCE + _GAP_TIME × the speed of whichever drives behind, plus the distance in
# which the faster one of the pair brakes to the other's speed at _GAP_DECELERATION (the gap an expert accepts,
# and what a shielded follower needs); otherwise it holds, or returns to, its own lane.
_GAP_DISTANCE = 2.0
_GAP_TIME = 0.5
_GAP_DECELERATION = 3.0


Occupancy = tuple[torch.Tensor, torch.Tensor]
"""`target_lane_traffic`: x (B, N, M, H) of the vehicles in each member's target lane (+inf elsewhere), and half
their lengths (B, N, M)."""


@dataclass(frozen=True)
class Traffic:
    """Predicted vehicles a lane change must find a gap among: poses (B, M, H, ≥2) in the plan's frame after each
    plan step, mask (B, M) (True = real), lengths (B, M) [m]."""

    poses: torch.Tensor
    mask: torch.Tensor
    length: torch.Tensor


def lane_change_prior(
    base: torch.Tensor,
    ego_state: torch.Tensor,
    length: torch.Tensor,
    lane_points: torch.Tensor,
    target: torch.Tensor,
    *,
    dt: float,
    substeps: int = 1,
    speed_range: tuple[float, float] | None = None,
    steer_limit: float = math.pi / 4,
    occupied: Occupancy | None = None,
) -> torch.Tensor:
    """``base`` actions (B, N, H, 2) with each member's steering replaced by a lane change to ``target`` (B, N)
    [m, offset of the target lane's centre from the member's lane centre line ``lane_points`` (B, N, P, 2)];
    members with target 0 keep ``base`` unchanged. The accelerations stay ``base``'s.

    The steering follows the lane-change law (above), on top of the yaw rate that holds the lane's bend, in closed
    loop through the bicycle model from ``ego_state`` (``dt`` per plan step, ``substeps`` integration steps each),
    clipped to ±``steer_limit``. With ``occupied`` (`target_lane_traffic`), a member starts (or goes on) only while
    its target lane has a gap beside it (above), else it holds, or returns to, its own lane's centre."""
    horizon = base.shape[-2]
    changing = target != 0
    state = ego_state.to(base.dtype)
    steer = base[..., 1].clone()
    h = dt / substeps
    for k in range(horizon):
        speed = state[..., 3].clamp(min=_MIN_SPEED)
        offset, heading_error, curvature = _lane_frame(state, speed * dt, lane_points)
        goal = target
        if occupied is not None:
            x, half = occupied
            j = max(k - 1, 0)  # the traffic's poses are after each step; the state here is after k steps
            gap = x[:, :, :, j] - state[..., 0, None]  # (B, N, M) centre to centre, + ahead
            j2 = min(j + 1, horizon - 1)
            other = torch.nan_to_num(x[:, :, :, j2] - x[:, :, :, j2 - 1], nan=0.0, posinf=0.0,
                                     neginf=0.0) / dt  # its speed [m/s]
            faster = torch.where(gap > 0, speed[..., None] - other, other - speed[..., None]).clamp(min=0.0)
            rear = torch.where(gap > 0, speed[..., None], other)  # the speed of whichever drives behind
            clearance = (0.5 * length[..., None] + half + _GAP_DISTANCE + _GAP_TIME * rear
                         + faster**2 / (2 * _GAP_DECELERATION))
            blocked = (gap.abs() < clearance).any(-1)
            goal = torch.where(blocked, torch.zeros_like(target), target)
        lateral_speed = (_LATERAL_GAIN * (goal - offset)).clamp(-_MAX_LATERAL_SPEED, _MAX_LATERAL_SPEED)
        max_yaw_rate = _MAX_LATERAL_ACCELERATION / speed
        wanted = torch.atan2(lateral_speed, speed).clamp(-_MAX_RELATIVE_HEADING, _MAX_RELATIVE_HEADING)
        turn = _HEADING_GAIN * (wanted - heading_error)
        yaw_rate = speed * curvature + torch.maximum(torch.minimum(turn, max_yaw_rate), -max_yaw_rate)
        # the bicycle model's yaw rate is v·sin β / (L/2) with tan β = tan δ / 2
        sin_beta = (yaw_rate * length / (2 * speed)).clamp(-0.99, 0.99)
        delta = torch.atan(2 * torch.tan(torch.asin(sin_beta))).clamp(-steer_limit, steer_limit)
        steer[..., k] = torch.where(changing, delta, steer[..., k])
        action = torch.stack((base[..., k, 0], steer[..., k]), dim=-1)
        for _ in range(substeps):
            state = bicycle_step(state, action, length, h, speed_range)
    return torch.stack((base[..., 0], steer), dim=-1)


def target_lane_traffic(traffic: Traffic, lane_points: torch.Tensor, target: torch.Tensor,
                        lane_width: torch.Tensor | None, horizon: int) -> Occupancy:
    """Per member, the predicted vehicles in its target lane (``target`` (B, N) from its lane centre line
    ``lane_points``, ``lane_width`` (B, N) wide, default 4 m): their x (B, N, M, H) in the plan's frame over
    ``horizon`` steps, +inf where a vehicle is not in that lane (or not real), and half their lengths (B, N, M)."""
    b, m = traffic.mask.shape
    n, p = lane_points.shape[1], traffic.poses.shape[2]
    width = lane_width if lane_width is not None else torch.full_like(target, 4.0)
    if m == 0:
        return target.new_full((b, n, 0, horizon), math.inf), target.new_zeros((b, n, 0))
    steps = torch.arange(horizon, device=target.device).clamp(max=p - 1)
    poses = traffic.poses[:, :, steps, :2].to(target.dtype)  # (B, M, H, 2)
    flat = poses.reshape(b, 1, m * horizon, 2).expand(b, n, m * horizon, 2)
    offset, _ = lane_offsets(torch.cat((flat, torch.zeros_like(flat[..., :1])), dim=-1), lane_points)
    inside = (offset.view(b, n, m, horizon) - target[..., None, None]).abs() < 0.5 * width[..., None, None]
    inside = inside & traffic.mask[:, None, :, None]
    x = torch.where(inside, poses[..., 0][:, None].expand(b, n, m, horizon), math.inf)
    return x, 0.5 * traffic.length[:, None, :].to(target.dtype).expand(b, n, m)


def _lane_frame(state: torch.Tensor, ahead: torch.Tensor,
                lane_points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, N) each state's lateral offset and heading error on its lane centre line, and the line's curvature
    [1/m] between there and a point ``ahead`` (B, N) metres further along the state's heading (the yaw rate that
    holds the lane): both points in one `lane_offsets` call."""
    ahead = ahead.clamp(min=1.0)
    probe = torch.stack((state[..., 0] + ahead * torch.cos(state[..., 2]),
                         state[..., 1] + ahead * torch.sin(state[..., 2]), state[..., 2]), dim=-1)
    offset, heading_error = lane_offsets(torch.stack((state[..., :3], probe), dim=2), lane_points)  # (B, N, 2)
    # the lane turns by the change of the heading error between the two points
    return offset[..., 0], heading_error[..., 0], (heading_error[..., 0] - heading_error[..., 1]) / ahead
