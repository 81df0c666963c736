"""Differentiable kinematic bicycle rollout in torch, with the equations of highway-env's ``Vehicle.step``.

One integration step of length ``dt`` with steering δ and acceleration a (highway-env 1.12 ``Vehicle.step``):

    β  = atan(½ · tan δ)
    x += v · cos(ψ + β) · dt
    y += v · sin(ψ + β) · dt
    ψ += v · sin β / (L / 2) · dt
    v += a · dt

Position and heading use the speed and heading *before* the update, as highway-env does. highway-env's
``clip_actions`` also caps the acceleration once the speed is outside [MIN_SPEED, MAX_SPEED]
(a ≤ MAX_SPEED − v above the top speed); ``speed_range`` reproduces that.

States are ``[x, y, heading, speed]``; every function is batched over arbitrary leading dimensions, typically
(..., N members) for states and (..., N members, H steps) for actions.
"""

from __future__ import annotations

import torch

STATE_DIM = 4  # [x (m), y (m), heading (rad), speed (m/s)]
ACTION_DIM = 2  # [acceleration (m/s²), steering (rad)]
HIGHWAY_ENV_SPEED_RANGE = (-40.0, 40.0)  # Vehicle.MIN_SPEED, Vehicle.MAX_SPEED [m/s]


def bicycle_step(
    state: torch.Tensor,
    action: torch.Tensor,
    length: torch.Tensor | float,
    dt: float,
    speed_range: tuple[float, float] | None = HIGHWAY_ENV_SPEED_RANGE,
) -> torch.Tensor:
    """One bicycle-model step: state (..., 4), action (..., 2), length (...) → next state (..., 4)."""
    x, y, psi, v = state.unbind(-1)
    acc, steer = action.unbind(-1)
    if speed_range is not None:
        lo, hi = speed_range
        acc = torch.where(v > hi, torch.minimum(acc, hi - v), acc)
        acc = torch.where(v < lo, torch.maximum(acc, lo - v), acc)
    beta = torch.atan(0.5 * torch.tan(steer))
    x = x + v * torch.cos(psi + beta) * dt
    y = y + v * torch.sin(psi + beta) * dt
    psi = psi + v * torch.sin(beta) / (0.5 * length) * dt
    v = v + acc * dt
    return torch.stack((x, y, psi, v), dim=-1)


def bicycle_rollout(
    state0: torch.Tensor,
    actions: torch.Tensor,
    length: torch.Tensor | float,
    dt: float,
    substeps: int = 1,
    speed_range: tuple[float, float] | None = HIGHWAY_ENV_SPEED_RANGE,
) -> torch.Tensor:
    """Roll out H actions from state0 (..., 4) with actions (..., H, 2) → states after each step (..., H, 4).

    Each action is held for ``substeps`` integration steps of ``dt / substeps`` (the simulator's
    simulation-vs-policy frequency split); the state after the last sub-step of action k is output k.
    ``length`` broadcasts against ``state0[..., 0]``.

    Because speed depends only on the accelerations and heading only on speeds and steering, the explicit
    Euler recursion unrolls into cumulative sums (same summation order as the step-by-step loop). When a
    speed leaves ``speed_range`` the acceleration cap makes the recursion state-dependent, and the
    step-by-step loop is used instead.
    """
    if actions.shape[-1] != ACTION_DIM or state0.shape[-1] != STATE_DIM:
        raise ValueError(f"expected state (...,4) and actions (...,H,2), got {tuple(state0.shape)}, {tuple(actions.shape)}")
    if isinstance(length, torch.Tensor):
        length = length.to(state0.dtype)[..., None]
    horizon = actions.shape[-2]
    if substeps > 1:
        actions = actions.repeat_interleave(substeps, dim=-2)
    h = dt / substeps
    acc, steer = actions.unbind(-1)  # (..., H·substeps)
    state0 = state0[..., None]  # (..., 4, 1)

    # speeds before each sub-step (v_0 … v_{S−1}) and after the last
    v_all = torch.cumsum(torch.cat((state0[..., 3, :], acc * h), dim=-1), dim=-1)  # (..., S+1)
    v = v_all[..., :-1]
    if speed_range is not None and v.numel():
        lo, hi = speed_range
        v_min, v_max = torch.aminmax(v)
        if v_max > hi or v_min < lo:
            return _rollout_loop(state0[..., 0], actions, length, h, substeps, horizon, speed_range)
    beta = torch.atan(0.5 * torch.tan(steer))
    psi_all = torch.cumsum(torch.cat((state0[..., 2, :], v * torch.sin(beta) / (0.5 * length) * h), dim=-1), dim=-1)
    course = psi_all[..., :-1] + beta
    # x and y in one cumulative sum over a (..., 2, S+1) tensor: the same additions in the same order
    step = v[..., None, :] * torch.stack((torch.cos(course), torch.sin(course)), dim=-2) * h  # (..., 2, S)
    xy = torch.cumsum(torch.cat((state0[..., :2, :], step), dim=-1), dim=-1)[..., substeps::substeps]  # (..., 2, H)
    out = torch.cat((xy, psi_all[..., None, substeps::substeps], v_all[..., None, substeps::substeps]), dim=-2)
    return out.transpose(-1, -2)  # (..., H, 4)


def _rollout_loop(state0, actions, length, h, substeps, horizon, speed_range):
    """Step-by-step rollout over already sub-step-expanded actions (..., H·substeps, 2)."""
    if isinstance(length, torch.Tensor):
        length = length[..., 0]
    state = state0
    out = []
    for k in range(horizon * substeps):
        state = bicycle_step(state, actions[..., k, :], length, h, speed_range)
        if (k + 1) % substeps == 0:
            out.append(state)
    return torch.stack(out, dim=-2)
