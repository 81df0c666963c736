"""Planned intents over V2V: what a member broadcasts of its plan, and how another platoon reads it back.

Every member driven by the planner broadcasts a summary of its chosen plan in the plan floats of its V2V message
(`comms.MESSAGE_FIELDS` are followed by ``plan_dim`` floats): its planned displacement (dx, dy) in the world frame
from the plan's first state, at ``plan_dim // 2`` evenly spaced later plan steps, the last one at the horizon
(`summarise`). The message goes out after the simulation step that executed the plan's first step, so the position
it carries is that first state, and the displacements are measured from there.

Where platoons hear each other (``comms.inter_platoon``), a platoon's controller predicts a vehicle of another
platoon from that vehicle's broadcast plan instead of extrapolating its observed motion (`broadcast_paths`): two
platoons planned separately otherwise each see the other drive straight on at constant acceleration while both
change lanes or brake. The sender is found among the observed neighbours by where its message puts it now (its
position at send time advanced by its speed over the message's age); its path is the plan's displacements, read
as the receiver's own planner would write them (every platoon of a policy runs the same planner, so the same
horizon and plan step), interpolated linearly and continued at the last segment's velocity past the horizon.
"""

from __future__ import annotations

import numpy as np

from diffplatoon.sim.comms import FIELD_INDEX, MESSAGE_FIELDS
from diffplatoon.sim.observation import Observation

_X, _Y, _H, _V = (FIELD_INDEX[k] for k in ("x", "y", "heading", "speed"))
_PLAN = len(MESSAGE_FIELDS)
# A message's sender is the observed neighbour within this distance [m] of where the message puts it now.
MATCH_RADIUS = 2.0


def summary_steps(horizon: int, plan_dim: int) -> np.ndarray:
    """(plan_dim // 2,) the plan steps (0-based) a summary samples: evenly spaced, the last one at the horizon."""
    pairs = plan_dim // 2
    return np.ceil(horizon * np.arange(1, pairs + 1) / pairs).astype(np.intp) - 1


def summarise(states: np.ndarray, present: np.ndarray, heading: float, plan_dim: int, executed: int = 0) -> np.ndarray:
    """(n, plan_dim) plan summaries of ``states`` (n, H, ≥2) (the states after each plan step, in a frame rotated by
    ``heading`` [rad] from the world's: the platoon frame) while its step ``executed`` executes: world-frame
    displacements from that step's state to the states `summary_steps` later, the plan continued at its last
    velocity past its end; zeros for members not ``present`` and in the unused last float of an odd ``plan_dim``."""
    n, horizon = states.shape[:2]
    if executed:
        states = np.asarray(states)[:, executed:, :2]
        velocity = states[:, -1:] - states[:, -2:-1] if states.shape[1] > 1 else np.zeros_like(states[:, -1:])
        states = np.concatenate((states, states[:, -1:] + velocity * np.arange(1, executed + 1)[None, :, None]), 1)
    out = np.zeros((n, plan_dim))
    pairs = plan_dim // 2
    if pairs == 0:
        return out
    d = states[:, summary_steps(horizon, plan_dim), :2] - states[:, :1, :2]  # (n, pairs, 2)
    c, s = np.cos(heading), np.sin(heading)
    world = np.stack((c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1]), axis=-1)
    out[:, : 2 * pairs] = world.reshape(n, 2 * pairs)
    return np.where(present[:, None], out, 0.0)


def broadcast_paths(obs: Observation, rows: np.ndarray, neighbours: np.ndarray, mask: np.ndarray, *, horizon: int,
                    dt: float, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """Paths of the observed ``neighbours`` (m, ≥4) [x, y, heading, speed] (world frame) that broadcast a plan to
    some member in ``rows`` from another platoon: (m, horizon, 3) world poses after each of the next ``horizon``
    steps of ``dt`` seconds, and (m,) bool which neighbours have one. ``interval``: seconds per step of a message's
    age. Needs the observation's ``inbox_sender``; a neighbour without a message, or whose message has an empty
    plan, gets no path."""
    m = len(neighbours)
    paths = np.zeros((m, horizon, 3))
    found = np.zeros(m, dtype=bool)
    plan_dim = obs.inbox.shape[-1] - _PLAN
    if m == 0 or obs.inbox_sender is None or plan_dim < 2 or not mask.any():
        return paths, found
    held = obs.inbox_mask[rows].astype(bool) & ~np.isin(obs.inbox_sender[rows], rows)  # foreign senders only
    pairs = plan_dim // 2
    msg = obs.inbox[rows][held].astype(np.float64)  # (k, D)
    planned = np.abs(msg[:, _PLAN:_PLAN + 2 * pairs]).sum(axis=1) > 0  # a plan was broadcast
    msg, age = msg[planned], obs.inbox_age[rows][held][planned].astype(np.float64) * interval
    if len(msg) == 0:
        return paths, found
    now = msg[:, [_X, _Y]] + (msg[:, _V] * age)[:, None] * np.stack((np.cos(msg[:, _H]), np.sin(msg[:, _H])), axis=1)
    dist = np.hypot(neighbours[:, None, 0] - now[None, :, 0], neighbours[:, None, 1] - now[None, :, 1])  # (m, k)
    dist[~mask] = np.inf
    best = dist.argmin(axis=1)
    found = dist[np.arange(m), best] < MATCH_RADIUS
    knots_t = np.concatenate(([0.0], summary_steps(horizon, plan_dim) * dt))  # [s] after the message was sent
    for j in np.flatnonzero(found):
        k = best[j]
        knots = np.concatenate((np.zeros((1, 2)), msg[k, _PLAN:_PLAN + 2 * pairs].reshape(pairs, 2))) + msg[k, [_X, _Y]]
        t = age[k] + dt * np.arange(1, horizon + 1)  # the receiver's future steps, from the message's send time
        xy = np.stack([np.interp(t, knots_t, knots[:, i]) for i in range(2)], axis=1)
        beyond = t > knots_t[-1]
        if beyond.any():  # past the plan: the last segment's velocity
            velocity = (knots[-1] - knots[-2]) / (knots_t[-1] - knots_t[-2])
            xy[beyond] = knots[-1] + (t[beyond] - knots_t[-1])[:, None] * velocity
        step = np.diff(np.concatenate((neighbours[j, None, :2], xy)), axis=0)
        moving = np.hypot(step[:, 0], step[:, 1]) > 1e-3
        heading = np.where(moving, np.arctan2(step[:, 1], step[:, 0]), neighbours[j, 2])
        paths[j] = np.concatenate((xy, heading[:, None]), axis=1)
    return paths, found
