"""Featurisation: one platoon's slice of a simulator `Observation` → the joint planner's inputs, and back.

The planner works in a *platoon frame*: origin at member 0's pose (the first live member's if member 0 is
gone), x along that member's heading, y perpendicular (the same handedness as the world frame, so the
bicycle model's equations are unchanged), headings relative to it. `PlatoonInputs` holds one scene padded
to ``n_max`` members; `stack` batches scenes into the tensors `JointDiffusionPlanner.plan` takes;
`scene_context` turns the observed non-platoon vehicles into guidance's constant-velocity predictions;
`to_world` maps planned states back.

| field | shape | content |
|---|---|---|
| obs | (n_max, obs_dim) | `Observation.flat()` row without its inbox columns (inbox, inbox_mask, inbox_age) |
| inbox | (n_max, Kc, msg_dim) | received messages: `comms.MESSAGE_FIELDS` with x, y, heading in the platoon frame, the plan floats as sent, then the message age [steps] |
| inbox_mask | (n_max, Kc) bool | slot holds a message |
| comm_mask | (n_max, n_max) bool | [i, j]: i holds a message of member j, both alive (diagonal True for live members) |
| member_mask | (n_max,) bool | member alive (on the road, not crashed) |
| ego_state | (n_max, 4) | [x, y, heading, speed], platoon frame |
| length | (n_max,) | vehicle length [m] |
| frame | (3,) | world [x, y, heading] of the platoon frame's origin |
| neighbours | (m_max, 5) | non-platoon vehicles seen by any live member: [x, y, heading, speed, length], platoon frame |
| neighbour_mask | (m_max,) bool | valid neighbour rows |

Why the inbox leaves `obs`: its width (Kc slots) differs between scenarios (2 under predecessor-leader
links, M − 1 with inter-platoon links) and its positions are in world coordinates; the planner reads the
inbox separately, in the platoon frame, with any number of slots (`stack` pads to the batch's largest).
Empty slots, padded members and padded neighbours are zeros with masks false.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from diffplatoon.agents.diffusion.corridor import Corridor, member_corridors
from diffplatoon.agents.diffusion.guidance import SceneContext
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.comms import FIELD_INDEX, message_dim
from diffplatoon.geometry import VEHICLE_LENGTH, wrap_angle
from diffplatoon.sim.observation import Observation, flat_layout

_SAME_VEHICLE = 0.5  # [m] two observed centres closer than this are one vehicle
_INBOX_FIELDS = ("inbox", "inbox_mask", "inbox_age")
_X, _Y, _H = FIELD_INDEX["x"], FIELD_INDEX["y"], FIELD_INDEX["heading"]
_LEN = FIELD_INDEX["length"]


@dataclass
class PlatoonInputs:
    """One platoon scene in the platoon frame, padded to n_max members (see the module table)."""

    obs: np.ndarray
    inbox: np.ndarray
    inbox_mask: np.ndarray
    comm_mask: np.ndarray
    member_mask: np.ndarray
    ego_state: np.ndarray
    length: np.ndarray
    frame: np.ndarray
    neighbours: np.ndarray
    neighbour_mask: np.ndarray


PLAN_KEYS = ("obs", "inbox", "inbox_mask", "comm_mask", "member_mask", "ego_state", "length")
"""The `PlatoonInputs` fields `JointDiffusionPlanner.plan` takes, in its argument order."""


def obs_dim(spec: ScenarioSpec) -> int:
    """Width of `PlatoonInputs.obs` for `spec` (independent of the inbox size)."""
    o = spec.observation
    layout = flat_layout(o.neighbours, o.lane_points, 0, 0).slices
    return layout["route"].stop


def msg_dim(spec: ScenarioSpec) -> int:
    """Width of one `PlatoonInputs.inbox` message for `spec`: message fields, plan floats, age."""
    return message_dim(spec.comms.plan_dim) + 1


def member_lengths(spec: ScenarioSpec) -> np.ndarray:
    """(M,) vehicle length of every platoon member in `Simulation.agent_names` order [m]."""
    return np.array([p.vehicle.length for p in spec.platoons for _ in range(p.size)], dtype=np.float32)


def to_frame(x: np.ndarray, y: np.ndarray, heading: np.ndarray, frame: np.ndarray):
    """World (x, y, heading) → platoon frame at ``frame`` = [x0, y0, ψ0] (float64)."""
    x0, y0, h0 = (float(v) for v in frame)
    c, s = np.cos(h0), np.sin(h0)
    dx, dy = np.asarray(x, np.float64) - x0, np.asarray(y, np.float64) - y0
    return c * dx + s * dy, -s * dx + c * dy, wrap_angle(np.asarray(heading, np.float64) - h0)


def to_world(plan_states, frame):
    """Platoon-frame states (..., ≥3) [x, y, heading, ...] → world frame; numpy or torch.

    ``frame`` is [x0, y0, ψ0], (3,) or any shape broadcastable to ``plan_states[..., :3]``
    (e.g. (B, 1, 1, 3) for a (B, N, H, 4) batch of plans). Channels after heading are copied.
    """
    if isinstance(plan_states, torch.Tensor):
        frame = torch.as_tensor(frame, dtype=plan_states.dtype, device=plan_states.device)
        cos, sin, cat = torch.cos, torch.sin, lambda xs: torch.stack(xs, dim=-1)
        rest = plan_states[..., 3:]
    else:
        plan_states = np.asarray(plan_states)
        frame = np.asarray(frame, dtype=np.float64)
        cos, sin, cat = np.cos, np.sin, lambda xs: np.stack(xs, axis=-1)
        rest = plan_states[..., 3:]
    x, y, h = plan_states[..., 0], plan_states[..., 1], plan_states[..., 2]
    x0, y0, h0 = frame[..., 0], frame[..., 1], frame[..., 2]
    c, s = cos(h0), sin(h0)
    out = cat([x0 + c * x - s * y, y0 + s * x + c * y, h + h0])
    if rest.shape[-1]:
        out = torch.cat((out, rest), dim=-1) if isinstance(out, torch.Tensor) else np.concatenate((out, rest), axis=-1)
    return out


def _obs_without_inbox(obs: Observation, rows: np.ndarray) -> np.ndarray:
    """Flat rows of `rows` without the inbox columns: `obs.select(rows).flat()` without those columns, built from
    the kept fields alone (masks as 0/1, float32)."""
    layout = obs.layout
    n = len(rows)
    return np.concatenate([getattr(obs, f.name)[rows].reshape(n, f.size) for f in layout.fields
                           if f.name not in _INBOX_FIELDS], axis=1, dtype=np.float32)


def _observed_vehicles(obs: Observation, rows: np.ndarray) -> np.ndarray:
    """(V, 5) world [x, y, heading, speed, length] of every neighbour slot seen by `rows` (duplicates kept)."""
    nb, mask = obs.neighbours[rows].astype(np.float64), obs.neighbour_mask[rows]
    pose, v = obs.pose[rows].astype(np.float64), obs.ego[rows, 0].astype(np.float64)
    a, k = np.nonzero(mask)
    if len(a) == 0:
        return np.zeros((0, 5))
    f = nb[a, k]  # (V, 9) dx, dy, dvx, dvy, cos dψ, sin dψ, length, width, same_platoon (ego frame)
    x, y, h = pose[a, 0], pose[a, 1], pose[a, 2]
    c, s = np.cos(h), np.sin(h)
    wx, wy = x + c * f[:, 0] - s * f[:, 1], y + s * f[:, 0] + c * f[:, 1]
    vx_e, vy_e = f[:, 2] + v[a], f[:, 3]  # the other's velocity, ego frame
    ho = h + np.arctan2(f[:, 5], f[:, 4])
    # velocity projected on the other's heading (its signed speed)
    speed = (vx_e * np.cos(ho - h) + vy_e * np.sin(ho - h))
    return np.stack([wx, wy, ho, speed, f[:, 6]], axis=1)


def platoon_inputs(obs: Observation, rows: np.ndarray, n_max: int, m_max: int = 16, *,
                   length: np.ndarray | None = None) -> PlatoonInputs:
    """The planner inputs of the platoon whose members are `rows` of `obs` (member order), padded to n_max.

    ``length`` (len(rows),) gives the members' lengths (e.g. ``member_lengths(spec)[rows]``); without it a
    member's length is read from a message it sent or from another member's neighbour slots, else
    `VEHICLE_LENGTH`. Needs an observation with ``pose`` and ``inbox_sender`` (from `Observer`).
    """
    rows = np.asarray(rows, dtype=np.intp)
    n = len(rows)
    if n > n_max:
        raise ValueError(f"platoon of {n} members exceeds n_max={n_max}")
    if obs.pose is None or obs.inbox_sender is None:
        raise ValueError("observation lacks pose/inbox_sender (build it with diffplatoon.sim.observation.Observer)")
    kc, d = obs.inbox.shape[1], obs.inbox.shape[2]
    alive = obs.alive[rows].astype(bool) if obs.alive is not None else np.ones(n, bool)
    live = np.flatnonzero(alive)
    frame = obs.pose[rows[live[0]]].astype(np.float64) if len(live) else np.zeros(3)

    out = PlatoonInputs(
        obs=np.zeros((n_max, flat_layout(obs.neighbours.shape[1], obs.lane_ahead.shape[1], 0, 0).slices["route"].stop),
                     np.float32),
        inbox=np.zeros((n_max, kc, d + 1), np.float32),
        inbox_mask=np.zeros((n_max, kc), bool),
        comm_mask=np.zeros((n_max, n_max), bool),
        member_mask=np.zeros(n_max, bool),
        ego_state=np.zeros((n_max, 4), np.float32),
        length=np.full(n_max, VEHICLE_LENGTH, np.float32),
        frame=frame.astype(np.float32),
        neighbours=np.zeros((m_max, 5), np.float32),
        neighbour_mask=np.zeros(m_max, bool),
    )
    if n == 0:
        return out
    out.member_mask[:n] = alive
    out.obs[:n] = np.where(alive[:, None], _obs_without_inbox(obs, rows), 0.0)

    # start states
    pose = obs.pose[rows]
    fx, fy, fh = to_frame(pose[:, 0], pose[:, 1], pose[:, 2], frame)
    ego = np.stack([fx, fy, fh, obs.ego[rows, 0]], axis=1)
    out.ego_state[:n] = np.where(alive[:, None], ego, 0.0)

    # inbox in the platoon frame, and who hears whom
    mask = obs.inbox_mask[rows].astype(bool) & alive[:, None]
    msg = obs.inbox[rows].astype(np.float64)
    mx, my, mh = to_frame(msg[..., _X], msg[..., _Y], msg[..., _H], frame)
    msg[..., _X], msg[..., _Y], msg[..., _H] = mx, my, mh
    msg = np.concatenate([msg, obs.inbox_age[rows].astype(np.float64)[..., None]], axis=-1)
    out.inbox[:n] = np.where(mask[..., None], msg, 0.0)
    out.inbox_mask[:n] = mask
    sender = np.where(mask, obs.inbox_sender[rows], -1)  # (n, Kc) comm ids
    # [i, j]: some slot of member i holds a message of member j (rows are distinct, senders of empty slots −1)
    out.comm_mask[:n, :n] = (sender[:, :, None] == rows[None, None, :]).any(axis=1)
    out.comm_mask[:n, :n] &= alive[None, :]  # a crashed sender's held message stays in the inbox, not in the graph
    out.comm_mask[np.arange(n), np.arange(n)] = alive

    # lengths and non-platoon neighbours
    seen = _observed_vehicles(obs, rows[live])  # world frame
    out.length[:n] = _lengths(obs, rows, pose, seen) if length is None else np.asarray(length, np.float32)
    member_xy = pose[live, :2].astype(np.float64)
    others = _distinct_others(seen, member_xy)
    if len(others):
        dist = np.hypot(member_xy[None, :, 0] - others[:, None, 0], member_xy[None, :, 1] - others[:, None, 1]).min(1)
        others = others[np.argsort(dist, kind="stable")[:m_max]]
        ox, oy, oh = to_frame(others[:, 0], others[:, 1], others[:, 2], frame)
        k = len(others)
        out.neighbours[:k] = np.stack([ox, oy, oh, others[:, 3], others[:, 4]], axis=1)
        out.neighbour_mask[:k] = True
    return out


def _distinct_others(seen: np.ndarray, member_xy: np.ndarray) -> np.ndarray:
    """Rows of `seen` that are no live member (centre within _SAME_VEHICLE of one), each vehicle once (the
    first sighting of a vehicle seen by several members), in the order of `seen`."""
    if len(seen) and len(member_xy):
        near = np.hypot(member_xy[None, :, 0] - seen[:, None, 0], member_xy[None, :, 1] - seen[:, None, 1])
        seen = seen[~(near.min(axis=1) < _SAME_VEHICLE)]
    same = np.hypot(seen[:, None, 0] - seen[None, :, 0], seen[:, None, 1] - seen[None, :, 1]) < _SAME_VEHICLE
    # Row i is kept unless an earlier kept row is the same vehicle: rows without an earlier match are kept, the
    # others are decided in order (each against the final decisions of the rows before it).
    earlier = np.tril(same, -1)
    kept = ~earlier.any(axis=1)
    for i in np.flatnonzero(~kept):
        kept[i] = not (earlier[i, :i] & kept[:i]).any()
    return seen[kept]


def _lengths(obs: Observation, rows: np.ndarray, pose: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Member lengths from messages they sent, else from other members' neighbour slots, else the default."""
    out = np.full(len(rows), np.nan)
    for j, r in enumerate(rows):
        held = obs.inbox_mask & (obs.inbox_sender == r)
        if held.any():
            out[j] = obs.inbox[..., _LEN][held][0]
        elif len(seen):
            d = np.hypot(seen[:, 0] - pose[j, 0], seen[:, 1] - pose[j, 1])
            if d.min() < _SAME_VEHICLE:
                out[j] = seen[np.argmin(d), 4]
    return np.where(np.isfinite(out), out, VEHICLE_LENGTH).astype(np.float32)


def stack(inputs: list[PlatoonInputs], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Batch scenes into the tensors of `JointDiffusionPlanner.plan` (keys `PLAN_KEYS`), inbox padded to the largest Kc.

    Use as ``planner.plan(**stack(scenes), num_samples=...)``.
    """
    kc = max(p.inbox.shape[1] for p in inputs)
    out = {}
    for key in PLAN_KEYS:
        arrs = [getattr(p, key) for p in inputs]
        if key in ("inbox", "inbox_mask"):
            arrs = [_pad_slots(a, kc) for a in arrs]
        dtype = torch.bool if key.endswith("mask") else torch.float32
        out[key] = torch.as_tensor(np.stack(arrs), dtype=dtype, device=device)
    return out


def _pad_slots(a: np.ndarray, kc: int) -> np.ndarray:
    """Pad axis 1 (inbox slots) with zeros / False up to kc."""
    pad = [(0, 0)] * a.ndim
    pad[1] = (0, kc - a.shape[1])
    return np.pad(a, pad)


def predict_neighbours(neighbours: np.ndarray, horizon: int, dt: float) -> np.ndarray:
    """Constant-velocity prediction (..., M, 5) → (..., M, H, 3) [x, y, heading] after each of H steps."""
    t = dt * np.arange(1, horizon + 1)
    x, y, h, v = (neighbours[..., i, None] for i in range(4))
    return np.stack([x + v * np.cos(h) * t, y + v * np.sin(h) * t, np.broadcast_to(h, x.shape[:-1] + (horizon,))],
                    axis=-1).astype(np.float32)


def scene_context(inputs: list[PlatoonInputs], horizon: int, dt: float,
                  device: str | torch.device = "cpu") -> SceneContext:
    """Guidance context of a batch of scenes: constant-velocity predictions of their observed neighbours."""
    m = max(p.neighbours.shape[0] for p in inputs)
    nb = np.stack([np.pad(p.neighbours, ((0, m - len(p.neighbours)), (0, 0))) for p in inputs])
    nb_mask = np.stack([np.pad(p.neighbour_mask, (0, m - len(p.neighbour_mask))) for p in inputs])
    return SceneContext(
        neighbours=torch.as_tensor(predict_neighbours(nb, horizon, dt), device=device),
        neighbour_mask=torch.as_tensor(nb_mask, device=device),
        neighbour_length=torch.as_tensor(np.where(nb[..., 4] > 0, nb[..., 4], VEHICLE_LENGTH), dtype=torch.float32,
                                         device=device),
    )


def as_dict(p: PlatoonInputs) -> dict[str, np.ndarray]:
    """The fields of one scene as a dict (for storage)."""
    return {f.name: getattr(p, f.name) for f in fields(p)}


__all__ = [
    "PLAN_KEYS", "PlatoonInputs", "as_dict", "member_lengths", "msg_dim",
    "obs_dim", "platoon_inputs", "predict_neighbours", "scene_context", "stack", "to_frame", "to_world",
]



def lateral_bounds(obs: Observation, rows: np.ndarray, scene: PlatoonInputs, n_max: int,
                   corridor: Corridor | None = None) -> np.ndarray:
    """(n_max, 2) [low y, high y] of each member's lane corridor (`corridor.member_corridors`), platoon frame.

    The corridor's bounds are placed across the frame's x axis at the member's lane centre (the road
    assumed parallel to the frame near the platoon). ``corridor``: the members' corridors in the scene's
    frame when the caller has them already. Absent members get wide (±1e4 m) bounds.
    """
    out = np.tile([-1e4, 1e4], (n_max, 1)).astype(np.float64)
    n = len(rows)
    if n == 0:
        return out
    lanes = corridor if corridor is not None else member_corridors(obs, rows, scene.frame.astype(np.float64))
    bounds = lanes.points[:, 0, 1:2] + lanes.bounds
    out[:n] = np.where(scene.member_mask[:n, None], bounds, out[:n])
    return out
