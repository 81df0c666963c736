"""Guidance costs measured against each member's lane centre line, not against the platoon frame's axis.

The platoon frame is member 0's pose, so when the leader is a few degrees off its lane the frame's x axis
crosses the lanes: a 3° error puts the road edge 5 m away from where an axis-aligned bound says it is, 100 m
ahead. These terms therefore locate every planned pose on its member's centre line (`SceneContext.lane_points`,
the corridor's polyline in the platoon frame: `corridor.member_corridors`), differentiably in torch:

- `lane_offsets`: signed lateral offset [m] (positive towards the frame's +y side of the line, the
  observation's ``lateral_offset`` convention) and heading error [rad] of states (B, N, H, ≥3); each pose on
  the nearest segment, the first segment continued backwards and the last forwards.
- ``road`` (`corridor_road_cost`): how far the vehicle's side is outside the corridor bounds
  (`SceneContext.lane_bounds`, offsets from the centre line), mean over time, summed over members.
- ``lane`` (`lane_alignment_cost`): over the plan's last ``tail`` share of steps (guidance's ``lane_tail``,
  default all of them), the squared offset from the nearest lane centre the corridor admits (the member's own
  lane, plus a side lane the route asks for) [m²], plus the squared heading error weighted so that 0.05 rad
  costs as much as 0.5 m. A plan may change lanes when the corridor allows it but must end centred and parallel
  to a lane; drifting plans (the compounding lateral error of imitation planners) cost, whatever the frame.
"""

from __future__ import annotations

import torch

_EPS = 1e-9


def lane_offsets(states: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed lateral offset and heading error (B, N, H) of states (B, N, H, ≥3) from polylines (B, N, P, 2)."""
    # x and y are kept as separate tensors: the same arithmetic as on (..., 2) vectors, in fewer and smaller ops.
    a = points[:, :, None, :-1]  # (B, N, 1, P-1, 2)
    d = points[:, :, None, 1:] - a
    seg_len = d.norm(dim=-1).clamp(min=_EPS)
    (ax, ay), (ux, uy) = a.unbind(-1), (d / seg_len[..., None]).unbind(-1)  # (B, N, 1, P-1) each
    px, py = states[..., 0, None], states[..., 1, None]  # (B, N, H, 1)
    rel_x, rel_y = px - ax, py - ay  # (B, N, H, P-1)
    with torch.no_grad():  # the nearest segment is a discrete choice; the offset is differentiable within it
        t = rel_x * ux + rel_y * uy
        n_seg = seg_len.shape[-1]
        if n_seg > 1:  # the first segment continues backwards, the last forwards
            t = torch.cat((t[..., :1], t[..., 1:].clamp(min=0.0)), dim=-1)
            t = torch.cat((torch.minimum(t[..., :-1], seg_len[..., :-1]), t[..., -1:]), dim=-1)
        k = ((px - (ax + t * ux)).pow(2) + (py - (ay + t * uy)).pow(2)).argmin(-1, keepdim=True)  # (B, N, H, 1)
    # the cross product on every segment, then the nearest one's: the same value as crossing the gathered vectors
    cross = ux * rel_y - uy * rel_x
    offset = torch.gather(cross, -1, k).squeeze(-1)
    seg_heading = torch.atan2(uy, ux).expand(k.shape[:-1] + (n_seg,))
    heading_err = states[..., 2] - torch.gather(seg_heading, -1, k).squeeze(-1)
    heading_err = torch.atan2(torch.sin(heading_err), torch.cos(heading_err))
    return offset, heading_err


def corridor_road_cost(offset: torch.Tensor, bounds: torch.Tensor, member_mask: torch.Tensor,
                       half_width: float) -> torch.Tensor:
    """Distance [m] by which a side of each vehicle leaves its corridor [low, high] (B, N, 2) → (B,)."""
    lo, hi = bounds[..., 0:1], bounds[..., 1:2]
    pen = torch.relu(lo + half_width - offset) + torch.relu(offset + half_width - hi)
    return torch.where(member_mask[..., None], pen, 0.0).sum(1).mean(-1)


def lane_centres(bounds: torch.Tensor, width: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) offsets of the lane centres a corridor admits: its own lane (0) and, where the corridor is
    widened by a lane, that side lane's centre (else 0 again)."""
    lo, hi = bounds[..., 0], bounds[..., 1]
    left = torch.where(lo < -width, lo + 0.5 * width, 0.0)
    right = torch.where(hi > width, hi - 0.5 * width, 0.0)
    return torch.stack((torch.zeros_like(lo), left, right), dim=-1)


def lane_alignment_cost(offset: torch.Tensor, heading_err: torch.Tensor, bounds: torch.Tensor, width: torch.Tensor,
                        member_mask: torch.Tensor, heading_weight: float, tail: float = 1.0) -> torch.Tensor:
    """Over the plan's last ``tail`` share of steps: min over admitted lane centres of the squared offset [m²], plus
    ``heading_weight`` × the squared heading error [rad²]; mean over those steps, summed over members → (B,)."""
    horizon = offset.shape[-1]
    k = max(1, round(tail * horizon))
    e = offset[..., -k:, None] - lane_centres(bounds, width)[:, :, None, :]  # (B, N, k, 3)
    lateral = e.pow(2).amin(-1)
    pen = lateral + heading_weight * heading_err[..., -k:].pow(2)
    return torch.where(member_mask[..., None], pen, 0.0).sum(1).mean(-1)
