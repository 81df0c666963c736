"""Safety shield for sampled joint plans: an exact check of the executed part, then braking fallbacks.

The planner returns S joint samples per platoon ranked by cost. The shield walks them best first and
accepts the first one whose *executed part* (the first ``steps`` plan steps) is safe:

1. no oriented-box overlap (``geometry.swept_overlapping_pairs``: continuous, sub-stepped so nothing
   tunnels between plan steps) between two members, or between a member and a predicted non-platoon
   neighbour, during the executed part *and* during an emergency stop that starts where it ends
   (``backup_steps`` more steps of braking at each member's ``max_deceleration``, steered by the
   fallback's lane keeping when the scene has a corridor): executing the plan must leave the platoon a
   way out. A neighbour that starts directly behind a member in its lane
   is left out: only that vehicle can avoid a rear-end, and no plan of ours can;
2. a time-headway floor to whatever is ahead of each member in its lane (members and neighbours) during
   the executed part: deficit = standstill_gap + min_time_headway·v − gap [m]. A member already under
   the floor must not let its deficit grow; otherwise it must stay above the floor;
3. with a lane corridor in the scene (`corridor.Corridor`, from each member's observed lane), every
   member stays on the drivable lanes — its sides inside the corridor's bounds — and within
   ``max_heading_error`` of the lane direction during the executed part; a member already outside
   must not get further out. This keeps a plan from leaving the road or turning across it.

Neighbours are predicted from the current observation with constant heading and constant speed, or
constant acceleration when the caller estimated one (``ShieldScene.neighbour_accel``; the speed stops
at 0 and at ``max_speed``), so a braking vehicle ahead is seen braking.

If no sample passes and the scene has a corridor, the samples' accelerations are tried with the
members' lane-keeping steering instead of the sampled steering ("lane_kept": the planner's speed
plan, driven in lane), best first, under all three conditions. If none passes either, the platoon
brakes at ``comfortable_decel`` keeping its lane when that passes condition 1 (the same way out
included); otherwise every member brakes at its ``max_deceleration``. Braking never reverses (speed
stops at 0). Each decision increments one counter of ``LEVELS``; from "lane_kept" on, the
executor steers by lane keeping.

All inputs share one frame (the platoon frame of the planner, or the world frame): member states
[x, y, heading, speed], neighbours [x, y, heading, speed, length]. Plan states are those *after* each
plan step of ``dt`` seconds, as ``JointDiffusionPlanner.plan`` returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from diffplatoon.agents.diffusion.corridor import Corridor
from diffplatoon.agents.diffusion.kinematics import HIGHWAY_ENV_SPEED_RANGE, bicycle_rollout, bicycle_step
from diffplatoon.agents.experts import LANE_KEEPING_MIN_SPEED
from diffplatoon.sim import geometry, traffic

LEVELS = ("accepted_first", "next_sample", "lane_kept", "comfortable_brake", "emergency_brake")

# Extra room [m] between the (sample, step) blocks that one vectorized collision query holds.
_BLOCK_MARGIN = 100.0


@dataclass(frozen=True)
class ShieldConfig:
    """Shield thresholds.

    Attributes:
        comfortable_decel: deceleration of the first fallback [m/s²].
        min_time_headway: time-headway floor to the vehicle ahead [s].
        standstill_gap: bumper-to-bumper gap the floor adds at any speed [m].
        lateral_margin: a vehicle counts as "in my lane" (ahead, or behind) when the lateral offset of the
            centres is below the half widths plus this [m].
        headway_tolerance: growth of an existing headway deficit that is still accepted [m].
        neighbour_width: width of predicted neighbours [m].
        backup_steps: length of the emergency stop appended to every checked plan [plan steps].
        max_speed: speed cap of accelerating predicted neighbours [m/s].
        max_heading_error: largest heading difference to the lane direction a plan may reach [rad].
        road_tolerance: growth of an existing corridor excess that is still accepted [m, rad].
    """

    comfortable_decel: float = 3.0
    min_time_headway: float = 0.5
    standstill_gap: float = 1.0
    lateral_margin: float = 0.3
    headway_tolerance: float = 0.05
    neighbour_width: float = 2.0
    backup_steps: int = 15
    max_speed: float = 40.0
    max_heading_error: float = 0.35
    road_tolerance: float = 0.02


@dataclass
class ShieldScene:
    """One platoon's situation at plan time (N members, M neighbours; one frame for everything).

    Attributes:
        start: (N, 4) member states [x, y, heading, speed] now.
        length, width: (N,) member sizes [m].
        member_mask: (N,) bool, present (alive) members; the others are ignored.
        max_deceleration: (N,) emergency deceleration of each member, positive [m/s²].
        neighbours: (M, 5) non-platoon vehicles [x, y, heading, speed, length] now.
        neighbour_mask: (M,) bool.
        neighbour_accel: (M,) estimated accelerations [m/s²] (None = 0, constant velocity).
        corridor: the members' lane corridors (None = no road check).
    """

    start: np.ndarray
    length: np.ndarray
    width: np.ndarray
    member_mask: np.ndarray
    max_deceleration: np.ndarray
    neighbours: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    neighbour_mask: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    neighbour_accel: np.ndarray | None = None
    corridor: Corridor | None = None

    def __post_init__(self) -> None:
        n = len(self.start)
        self.start = np.asarray(self.start, dtype=np.float64).reshape(n, 4)
        self.length, self.width, self.max_deceleration = (
            np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()
            for v in (self.length, self.width, self.max_deceleration)
        )
        self.member_mask = np.asarray(self.member_mask, dtype=bool).reshape(n)
        self.neighbours = np.asarray(self.neighbours, dtype=np.float64).reshape(-1, 5)
        self.neighbour_mask = np.asarray(self.neighbour_mask, dtype=bool).reshape(len(self.neighbours))
        accel = np.zeros(len(self.neighbours)) if self.neighbour_accel is None else self.neighbour_accel
        self.neighbour_accel = np.asarray(accel, dtype=np.float64).reshape(len(self.neighbours))


@dataclass
class ShieldDecision:
    """What the shield chose for one platoon.

    Attributes:
        level: one of ``LEVELS``.
        sample: index of the accepted sample (−1 for a braking fallback).
        actions: (N, H, 2) [acceleration, steering] (fallbacks: steering 0, lane keeping is the
            executor's job).
        states: (N, H, 4) predicted states after each step.
    """

    level: str
    sample: int
    actions: np.ndarray
    states: np.ndarray


class SafetyShield:
    """Checks ranked joint samples and picks the first safe one or a braking fallback (module docstring)."""

    def __init__(self, config: ShieldConfig = ShieldConfig(), dt: float = 0.2, substeps: int = 1,
                 speed_range: tuple[float, float] = HIGHWAY_ENV_SPEED_RANGE):
        self.config = config
        self.dt = float(dt)
        self.substeps = int(substeps)
        self.speed_range = speed_range
        self.counts = dict.fromkeys(LEVELS, 0)

    def reset_counts(self) -> None:
        """Zero every level counter."""
        self.counts = dict.fromkeys(LEVELS, 0)

    # -- predictions ---------------------------------------------------------------------------------
    def predicted_neighbours(self, scene: ShieldScene, steps: int) -> np.ndarray:
        """(M, steps + 1, 3) poses [x, y, heading] at t = 0, dt, …: constant heading and acceleration."""
        nb = scene.neighbours
        t = self.dt * np.arange(steps + 1)  # (T,)
        v0 = np.maximum(nb[:, 3], 0.0)[:, None]  # (M, 1)
        a = scene.neighbour_accel[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_flat = np.where(a < 0, v0 / -a, np.where(a > 0, (self.config.max_speed - v0) / a, np.inf))
        t_flat = np.maximum(t_flat, 0.0)  # when the speed reaches 0 or max_speed
        tt = np.minimum(t[None, :], t_flat)  # (M, T)
        v_end = v0 + a * tt
        dist = v0 * tt + 0.5 * a * tt**2 + (t[None, :] - tt) * v_end
        x = nb[:, None, 0] + dist * np.cos(nb[:, None, 2])
        y = nb[:, None, 1] + dist * np.sin(nb[:, None, 2])
        h = np.broadcast_to(nb[:, None, 2], x.shape)
        return np.stack([x, y, h], axis=-1)

    def in_lane(self, scene: ShieldScene, sample_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples' accelerations (S, N, R, 2 → acceleration used) driven with lane-keeping steering (needs a
        corridor) → actions (S, N, R, 2) with steering 0 (the executor keeps the lane), states (S, N, R, 4)."""
        acc = np.asarray(sample_actions, dtype=np.float64)[..., 0]
        start = np.broadcast_to(scene.start, acc.shape[:1] + scene.start.shape)
        states = self._lane_keeping_rollout(start, acc, scene.length, scene.corridor)
        return np.stack([acc, np.zeros_like(acc)], axis=-1), states

    def _first_safe_in_lane(self, scene: ShieldScene, ranked_actions: np.ndarray, steps: int) -> int | None:
        """Rank of the first sample whose accelerations are safe driven in lane, None if none (or no corridor)."""
        if scene.corridor is None:
            return None
        _, states = self.in_lane(scene, ranked_actions[:, :, :steps])
        ok = self.safe(scene, states)
        return int(np.argmax(ok)) if ok.any() else None

    def braking_plan(self, scene: ShieldScene, decel: np.ndarray | float,
                     steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Braking at ``decel`` [m/s²] (never below speed 0) → actions (N, steps, 2), states (N, steps, 4).

        Actions steer 0 (the executor keeps the lane); the states follow the lane when the scene has a
        corridor (`_brake`).
        """
        return self._brake(scene.start, scene.length, decel, steps, scene.corridor)

    def _brake(self, start: np.ndarray, length: np.ndarray, decel: np.ndarray | float, steps: int,
               corridor: Corridor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Braking from start (..., N, 4) → actions (..., N, steps, 2), states (..., N, steps, 4).

        Without a corridor the vehicle brakes straight on (bicycle model, steering 0). With one, it is
        steered back to its lane as the fallback executor steers it (`_lane_keeping_rollout`), so a
        member turned away from a vehicle in its lane is still predicted to meet it, and one turned
        towards a vehicle in the next lane drifts on while its heading recovers.
        """
        decel = np.broadcast_to(np.asarray(decel, dtype=np.float64), start.shape[-2:-1])
        v = np.maximum(start[..., 3], 0.0)
        acc = np.zeros(start.shape[:-1] + (steps,))
        for k in range(steps):  # speed does not depend on steering, so the profile is exact
            acc[..., k] = np.maximum(-decel, -v / self.dt)
            v = v + acc[..., k] * self.dt
        actions = np.stack([acc, np.zeros_like(acc)], axis=-1)
        if corridor is None:
            states = bicycle_rollout(torch.as_tensor(start, dtype=torch.float64), torch.as_tensor(actions),
                                     torch.as_tensor(np.broadcast_to(length, start.shape[:-1]).copy()), self.dt,
                                     self.substeps, self.speed_range).numpy()
            return actions, states
        return actions, self._lane_keeping_rollout(start, acc, length, corridor)

    def _lane_keeping_rollout(self, start: np.ndarray, acc: np.ndarray, length: np.ndarray,
                              corridor: Corridor) -> np.ndarray:
        """States (..., N, steps, 4) from start (..., N, 4) under accelerations (..., N, steps), steered each
        step by the members' lane-keeping law on the corridor (what the braking fallback executes)."""
        state = torch.tensor(start, dtype=torch.float64)  # a copy: start may be a read-only broadcast
        size = torch.as_tensor(np.broadcast_to(length, start.shape[:-1]).copy(), dtype=torch.float64)
        out = []
        for k in range(acc.shape[-1]):
            speed = np.maximum(state[..., 3].numpy(), 0.0)
            pose = state[..., :3].numpy()[..., None, :]
            lateral, heading_error = corridor.locate(pose)
            steer = traffic.lane_keeping_steering(lateral[..., 0], np.zeros_like(lateral[..., 0]),
                                                  heading_error[..., 0],
                                                  np.maximum(speed, LANE_KEEPING_MIN_SPEED), size.numpy())
            # the executor never brakes into reverse
            action = torch.as_tensor(np.stack([np.maximum(acc[..., k], -speed / self.dt), steer], axis=-1))
            for _ in range(self.substeps):
                state = bicycle_step(state, action, size, self.dt / self.substeps, self.speed_range)
            out.append(state)
        return torch.stack(out, dim=-2).numpy()

    def with_backup(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S, N, R + backup_steps, 4): the plan part (S, N, R, 4) followed by an emergency stop from its end."""
        states = np.asarray(states, dtype=np.float64)
        if self.config.backup_steps <= 0:
            return states
        _, backup = self._brake(states[:, :, -1], scene.length, scene.max_deceleration, self.config.backup_steps,
                                scene.corridor)
        return np.concatenate([states, backup], axis=2)

    # -- checks ----------------------------------------------------------------------------------------
    def collides(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: sample s's members overlap each other or a predicted neighbour during (S, N, R, 4)."""
        states = np.asarray(states, dtype=np.float64)
        s_count, n, r, _ = states.shape
        nb = self.predicted_neighbours(scene, r)  # (M, R+1, 3)
        m = len(nb)
        k_tot = n + m
        start = np.broadcast_to(scene.start[None, :, None, :3], (s_count, n, 1, 3))
        members = np.concatenate([start, states[..., :3]], axis=2)  # (S, N, R+1, 3)
        poses = np.concatenate(
            [members.transpose(0, 2, 1, 3), np.broadcast_to(nb.transpose(1, 0, 2)[None], (s_count, r + 1, m, 3))],
            axis=2,
        )  # (S, R+1, K, 3)
        length = np.concatenate([scene.length, scene.neighbours[:, 4]])
        width = np.concatenate([scene.width, np.full(m, self.config.neighbour_width)])
        active = np.concatenate([scene.member_mask, scene.neighbour_mask])
        if not scene.member_mask.any():
            return np.zeros(s_count, dtype=bool)

        # 1. One query for all (sample, interval) blocks: block b is shifted by b·spacing along x, far
        #    enough that boxes of different blocks can never meet.
        live = poses[:, :, active]
        extent = np.ptp(live[..., 0]) if live.size else 0.0
        spacing = 2.0 * extent + 2.0 * float(np.hypot(length, width).max()) + _BLOCK_MARGIN
        shift = spacing * np.arange(s_count * r, dtype=np.float64).reshape(s_count, r, 1)
        prev, curr = poses[:, :-1].copy(), poses[:, 1:].copy()  # (S, R, K, 3)
        prev[..., 0] += shift
        curr[..., 0] += shift
        rows = s_count * r
        size = (np.tile(length, rows), np.tile(width, rows))
        contacts = geometry.swept_overlapping_pairs(
            (*(prev[..., c].ravel() for c in range(3)), *size),
            (*(curr[..., c].ravel() for c in range(3)), *size),
            active=np.tile(active, rows),
        )
        if len(contacts.pairs) == 0:
            return np.zeros(s_count, dtype=bool)

        # 2. Keep pairs with a member (indices are sorted, so the first is the member if any), minus
        #    neighbours that start right behind a member in its lane.
        block = contacts.pairs[:, 0] // k_tot
        li, lj = contacts.pairs[:, 0] % k_tot, contacts.pairs[:, 1] % k_tot
        keep = li < n
        rear = self._behind_in_lane(scene)  # (N, M)
        is_nb = keep & (lj >= n)
        keep[is_nb] &= ~rear[li[is_nb], lj[is_nb] - n]
        hit = np.zeros(s_count, dtype=bool)
        hit[block[keep] // r] = True
        return hit

    def headway_violated(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: some member's headway deficit breaks the floor rule (module docstring) during the plan."""
        cfg = self.config
        states = np.asarray(states, dtype=np.float64)
        s_count, n, r, _ = states.shape
        nb = self.predicted_neighbours(scene, r)  # (M, R+1, 3)
        m = len(nb)
        start = np.broadcast_to(scene.start[None, :, None, :], (s_count, n, 1, 4))
        mem = np.concatenate([start, states], axis=2).transpose(0, 2, 1, 3)  # (S, R+1, N, 4)
        others = np.concatenate([mem[..., :3], np.broadcast_to(nb.transpose(1, 0, 2)[None], (s_count, r + 1, m, 3))],
                                axis=2)  # (S, R+1, K, 3)
        length = np.concatenate([scene.length, scene.neighbours[:, 4]])
        width = np.concatenate([scene.width, np.full(m, cfg.neighbour_width)])
        active = np.concatenate([scene.member_mask, scene.neighbour_mask])

        c, s = np.cos(mem[..., 2])[..., None], np.sin(mem[..., 2])[..., None]  # (S, R+1, N, 1)
        dx = others[:, :, None, :, 0] - mem[..., 0, None]  # (S, R+1, N, K)
        dy = others[:, :, None, :, 1] - mem[..., 1, None]
        lon, lat = c * dx + s * dy, -s * dx + c * dy
        not_self = ~np.eye(n, n + m, dtype=bool)  # (N, K)
        ahead = (lon > 0) & (np.abs(lat) < 0.5 * (scene.width[:, None] + width[None, :]) + cfg.lateral_margin)
        # a neighbour starting behind in the lane is ignored here too (it would only "pass" by rear-ending)
        rear = np.concatenate([np.zeros((n, n), dtype=bool), self._behind_in_lane(scene)], axis=1)  # (N, K)
        ahead &= active[None, :] & not_self & ~rear
        gap = lon - 0.5 * (scene.length[:, None] + length[None, :])
        v = np.maximum(mem[..., 3], 0.0)[..., None]
        deficit = np.where(ahead, cfg.standstill_gap + cfg.min_time_headway * v - gap, -np.inf).max(axis=-1)
        allowed = np.maximum(deficit[:, :1], 0.0) + cfg.headway_tolerance  # (S, 1, N)
        bad = (deficit[:, 1:] > allowed) & scene.member_mask
        return bad.any(axis=(1, 2))

    def leaves_road(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: some present member leaves its lane corridor (module docstring) during (S, N, R, 4)."""
        states = np.asarray(states, dtype=np.float64)
        if scene.corridor is None:
            return np.zeros(len(states), dtype=bool)
        cfg = self.config
        poses = np.concatenate([np.broadcast_to(scene.start[None, :, None, :3], states.shape[:2] + (1, 3)),
                                states[..., :3]], axis=2)  # (S, N, R+1, 3)
        worse = np.zeros(states.shape[:3], dtype=bool)
        for excess in scene.corridor.deviation(poses, scene.length, scene.width, cfg.max_heading_error):
            allowed = excess[..., :1] + cfg.road_tolerance  # an excess at the start may not grow
            worse |= excess[..., 1:] > allowed
        return (worse & scene.member_mask[None, :, None]).any(axis=(1, 2))

    def safe(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool for executed parts (S, N, R, 4): no collision (emergency stop after it included),
        headway kept, lane corridor kept."""
        return (~self.collides(scene, self.with_backup(scene, states)) & ~self.headway_violated(scene, states)
                & ~self.leaves_road(scene, states))

    def _behind_in_lane(self, scene: ShieldScene) -> np.ndarray:
        """(N, M) bool: neighbour j starts behind member i, laterally overlapping its lane."""
        nb = scene.neighbours
        if len(nb) == 0:
            return np.zeros((len(scene.start), 0), dtype=bool)
        c, s = np.cos(scene.start[:, 2])[:, None], np.sin(scene.start[:, 2])[:, None]
        dx = nb[None, :, 0] - scene.start[:, 0, None]
        dy = nb[None, :, 1] - scene.start[:, 1, None]
        lon, lat = c * dx + s * dy, -s * dx + c * dy
        half = 0.5 * (scene.width[:, None] + self.config.neighbour_width)
        return (lon < 0) & (np.abs(lat) < half + self.config.lateral_margin)

    # -- decision --------------------------------------------------------------------------------------
    def select(self, scene: ShieldScene, sample_actions: np.ndarray, sample_states: np.ndarray,
               costs: np.ndarray | None = None, steps: int | None = None) -> ShieldDecision:
        """Accept the lowest-cost sample whose first ``steps`` steps are safe, else brake; counts the level.

        sample_actions (S, N, H, 2), sample_states (S, N, H, 4); ``costs`` (S,) ranks the samples (None =
        the given order is the ranking, best first). The decision holds the full H steps (a braking
        fallback is extended to H), only the first ``steps`` (default H) are checked.
        """
        sample_actions = np.asarray(sample_actions, dtype=np.float64)
        sample_states = np.asarray(sample_states, dtype=np.float64)
        horizon = sample_actions.shape[2]
        steps = horizon if steps is None else min(int(steps), horizon)
        order = np.arange(len(sample_actions)) if costs is None else np.argsort(np.asarray(costs), kind="stable")
        ok = self.safe(scene, sample_states[order, :, :steps])  # one vectorized check of every sample
        if ok.any():
            rank = int(np.argmax(ok))
            k = int(order[rank])
            level = LEVELS[0] if rank == 0 else LEVELS[1]
            decision = ShieldDecision(level, k, sample_actions[k], sample_states[k])
        elif (k := self._first_safe_in_lane(scene, sample_actions[order], steps)) is not None:
            k = int(order[k])
            actions, states = self.in_lane(scene, sample_actions[k:k + 1])
            decision = ShieldDecision(LEVELS[2], k, actions[0], states[0])
        else:
            actions, states = self.braking_plan(scene, self.config.comfortable_decel, horizon)
            level = LEVELS[3]
            if self.collides(scene, self.with_backup(scene, states[None, :, :steps]))[0]:
                actions, states = self.braking_plan(scene, scene.max_deceleration, horizon)
                level = LEVELS[4]
            decision = ShieldDecision(level, -1, actions, states)
        self.counts[decision.level] += 1
        return decision
