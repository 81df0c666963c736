"""Safety shield for sampled joint plans: an exact check of the executed part, then braking fallbacks.

The planner returns S joint samples per platoon ranked by cost. The shield walks them best first and
accepts the first one whose *executed part* (the first ``steps`` plan steps) is safe:

1. no oriented-box overlap (``geometry.swept_overlapping_pairs``: continuous, sub-stepped so nothing
   tunnels between plan steps) between two members, or between a member and a predicted non-platoon
   neighbour, during the executed part *and* during an emergency stop that starts where it ends
   (``backup_steps`` more steps of braking at each member's ``max_deceleration``, steered by the
   fallback's lane keeping when the scene has a corridor): executing the plan must leave the platoon a
   way out. A neighbour that starts directly behind a member in its lane
   is left out while the member keeps that lane (near its centre line, along it): only that vehicle can avoid
   a rear-end, and no plan of ours can; a member part-way through a lane change has cut in, and the vehicle
   stays in the check;
2. a time-headway floor to whatever is ahead of each member in its lane (members and neighbours) during
   the executed part: deficit = standstill_gap + min_time_headway·v − gap [m]. A member already under
   the floor must not let its deficit grow; otherwise it must stay above the floor;
3. with a lane corridor in the scene (`corridor.Corridor`, from each member's observed lane), every
   member stays on the drivable lanes — its sides ``road_margin`` inside the corridor's bounds — and within
   ``max_heading_error`` of the lane direction during the executed part; a member already outside
   must not get further out. This keeps a plan from leaving the road or turning across it. Where the
   member's lane ends (an acceleration lane, a dropped lane: the corridor's ``end``), a member still in
   that lane must also be able to stop before the end (``lane_end_margin`` short of it) braking at its
   ``max_deceleration`` from every executed pose; one that already cannot must not make it worse.

Neighbours are predicted from the current observation with constant heading and constant speed, or
constant acceleration when the caller estimated one (``ShieldScene.neighbour_accel``; the speed stops
at 0 and at ``max_speed``), so a braking vehicle ahead is seen braking.

If no sample passes and the scene has a corridor, the samples' accelerations are tried with the
members' lane-keeping steering instead of the sampled steering ("lane_kept": the planner's speed
plan, driven in lane), best first, under all three conditions. If none passes either, the platoon
brakes at ``comfortable_decel`` keeping its lane when that passes condition 1 (the same way out
included) and leaves every member in a lane that ends able to stop before the end (condition 3's end check);
otherwise every member brakes at its ``max_deceleration``. Braking never reverses (speed
stops at 0). Each decision increments one counter of ``LEVELS`` (`ShieldLevel`); from "lane_kept" on, the
executor steers by lane keeping: a fallback's actions hold the law's steering along the predicted states
when the scene has a corridor (what an executor running the steps open-loop applies; one that observes
every step evaluates the law on the observed state instead), else 0.

All inputs share one frame (the platoon frame of the planner, or the world frame): member states
[x, y, heading, speed], neighbours [x, y, heading, speed, length]. Plan states are those *after* each
plan step of ``dt`` seconds, as ``JointDiffusionPlanner.plan`` returns them.
"""

from __future__ import annotations

import numpy as np
import torch

from diffplatoon.agents.diffusion.corridor import Corridor
from diffplatoon.agents.diffusion.kinematics import HIGHWAY_ENV_SPEED_RANGE, bicycle_rollout, bicycle_step
from diffplatoon.agents.diffusion.shield_scene import (LEVELS, ShieldConfig, ShieldDecision, ShieldLevel, ShieldScene,
                                                       _Stack)
from diffplatoon.agents.experts import lane_keeping_law
from diffplatoon import geometry

__all__ = ["LEVELS", "SafetyShield", "ShieldConfig", "ShieldDecision", "ShieldLevel", "ShieldScene"]

# Extra room [m] between the (sample, step) blocks that one vectorized collision query holds.
_BLOCK_MARGIN = 100.0
# A member keeps its lane (a vehicle behind it in that lane may be left out of the collision check) while it is
# within this offset [m] of its lane's centre line and this heading [rad] of the lane's direction.
_STEADY_OFFSET = 0.5
_STEADY_HEADING = 0.05


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
        return self.predict(scene.neighbours, scene.neighbour_accel, steps)

    def _predicted(self, st: _Stack, steps: int) -> np.ndarray:
        """(B, M, steps + 1, 3): `predicted_neighbours` of every stacked scene."""
        return self.predict(st.neighbours, st.neighbour_accel, steps)

    def predict(self, neighbours: np.ndarray, accel: np.ndarray, steps: int) -> np.ndarray:
        """Neighbours (..., M, ≥4) [x, y, heading, speed, …] with accelerations (..., M) [m/s²] → poses
        (..., M, steps + 1, 3) at t = 0, dt, …: constant heading, the speed held in [0, max_speed]."""
        nb = np.asarray(neighbours, dtype=np.float64)
        t = self.dt * np.arange(steps + 1)  # (T,)
        v0 = np.maximum(nb[..., 3], 0.0)[..., None]  # (..., M, 1)
        a = np.asarray(accel, dtype=np.float64)[..., None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_flat = np.where(a < 0, v0 / -a, np.where(a > 0, (self.config.max_speed - v0) / a, np.inf))
        t_flat = np.maximum(t_flat, 0.0)  # when the speed reaches 0 or max_speed
        tt = np.minimum(t, t_flat)  # (B, M, T)
        v_end = v0 + a * tt
        dist = v0 * tt + 0.5 * a * tt**2 + (t - tt) * v_end
        x = nb[..., None, 0] + dist * np.cos(nb[..., None, 2])
        y = nb[..., None, 1] + dist * np.sin(nb[..., None, 2])
        h = np.broadcast_to(nb[..., None, 2], x.shape)
        return np.stack([x, y, h], axis=-1)

    def in_lane(self, scene: ShieldScene, sample_actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples' accelerations (S, N, R, 2 → acceleration used) driven with lane-keeping steering (needs a
        corridor) → actions (S, N, R, 2) with that steering, states (S, N, R, 4)."""
        acc = np.asarray(sample_actions, dtype=np.float64)[..., 0]
        start = np.broadcast_to(scene.start, acc.shape[:1] + scene.start.shape)
        steer, states = self._lane_keeping_rollout(start, acc, scene.length, scene.corridor)
        return np.stack([acc, steer], axis=-1), states

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

        With a corridor the members are steered by the lane-keeping law (actions hold its steering) and the
        states follow the lane; without one they steer 0 and brake straight on (`_brake`).
        """
        return self._brake(scene.start, scene.length, decel, steps, scene.corridor)

    def _brake(self, start: np.ndarray, length: np.ndarray, decel: np.ndarray | float, steps: int,
               corridor: Corridor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Braking from start (..., N, 4) → actions (..., N, steps, 2), states (..., N, steps, 4); decel and
        length broadcast against start[..., 0].

        Without a corridor the vehicle brakes straight on (bicycle model, steering 0). With one, it is
        steered back to its lane as the fallback executor steers it (`_lane_keeping_rollout`), so a
        member turned away from a vehicle in its lane is still predicted to meet it, and one turned
        towards a vehicle in the next lane drifts on while its heading recovers.
        """
        decel = np.broadcast_to(np.asarray(decel, dtype=np.float64), start.shape[:-1])
        v = np.maximum(start[..., 3], 0.0)
        acc = np.zeros(start.shape[:-1] + (steps,))
        for k in range(steps):  # speed does not depend on steering, so the profile is exact
            acc[..., k] = np.maximum(-decel, -v / self.dt)
            v = v + acc[..., k] * self.dt
        if corridor is None:
            actions = np.stack([acc, np.zeros_like(acc)], axis=-1)
            states = bicycle_rollout(torch.as_tensor(start, dtype=torch.float64), torch.as_tensor(actions),
                                     torch.as_tensor(np.broadcast_to(length, start.shape[:-1]).copy()), self.dt,
                                     self.substeps, self.speed_range).numpy()
            return actions, states
        steer, states = self._lane_keeping_rollout(start, acc, length, corridor)
        return np.stack([acc, steer], axis=-1), states

    def _lane_keeping_rollout(self, start: np.ndarray, acc: np.ndarray, length: np.ndarray,
                              corridor: Corridor) -> tuple[np.ndarray, np.ndarray]:
        """Steering (..., N, steps) and states (..., N, steps, 4) from start (..., N, 4) under accelerations
        (..., N, steps), steered each step by the members' lane-keeping law on the corridor (what the braking
        fallback executes)."""
        state = torch.tensor(start, dtype=torch.float64)  # a copy: start may be a read-only broadcast
        size = torch.as_tensor(np.broadcast_to(length, start.shape[:-1]).copy(), dtype=torch.float64)
        out, steering = [], []
        for k in range(acc.shape[-1]):
            speed = np.maximum(state[..., 3].numpy(), 0.0)
            pose = state[..., :3].numpy()[..., None, :]
            lateral, heading_error = corridor.locate(pose)
            steer = lane_keeping_law(lateral[..., 0], heading_error[..., 0], speed, size.numpy())
            # the executor never brakes into reverse
            action = torch.as_tensor(np.stack([np.maximum(acc[..., k], -speed / self.dt), steer], axis=-1))
            for _ in range(self.substeps):
                state = bicycle_step(state, action, size, self.dt / self.substeps, self.speed_range)
            out.append(state)
            steering.append(steer)
        return np.stack(steering, axis=-1), torch.stack(out, dim=-2).numpy()

    def with_backup(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S, N, R + backup_steps, 4): the plan part (S, N, R, 4) followed by an emergency stop from its end."""
        return self._with_backup(_Stack.of([scene]), np.asarray(states, dtype=np.float64)[None])[0]

    def _with_backup(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """`with_backup` of stacked scenes: (B, S, N, R, 4) → (B, S, N, R + backup_steps, 4)."""
        if self.config.backup_steps <= 0:
            return states
        _, backup = self._brake_scenes(st, states[..., -1, :], st.max_deceleration, self.config.backup_steps)
        return np.concatenate([states, backup], axis=3)

    def _brake_scenes(self, st: _Stack, start: np.ndarray, decel: np.ndarray | float,
                      steps: int) -> tuple[np.ndarray, np.ndarray]:
        """`_brake` of stacked scenes from start (B, ..., N, 4) at decel (B, N) or a scalar → actions
        (B, ..., N, steps, 2), states (B, ..., N, steps, 4): one rollout for the scenes without a corridor,
        one per scene with one (it follows its lane)."""
        lead = (1,) * (start.ndim - 3)  # the dims between B and N

        def per_member(v: np.ndarray) -> np.ndarray:
            return np.broadcast_to(np.asarray(v, dtype=np.float64), st.length.shape).reshape(
                st.length.shape[:1] + lead + st.length.shape[1:])

        length, decel = per_member(st.length), per_member(decel)
        actions = np.empty(start.shape[:-1] + (steps, 2))
        states = np.empty(start.shape[:-1] + (steps, 4))
        straight = [b for b, corridor in enumerate(st.corridors) if corridor is None]
        if straight:
            rows = slice(None) if len(straight) == len(start) else straight
            actions[rows], states[rows] = self._brake(start[rows], length[rows], decel[rows], steps)
        for b, corridor in enumerate(st.corridors):
            if corridor is not None:
                actions[b], states[b] = self._brake(start[b], length[b], decel[b], steps, corridor)
        return actions, states

    # -- checks ----------------------------------------------------------------------------------------
    # Every check has one implementation over B stacked scenes with S plans each, states (B, S, N, R, 4);
    # the per-scene methods are its B = 1 case.
    def collides(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: sample s's members overlap each other or a predicted neighbour during (S, N, R, 4)."""
        return self._collides(_Stack.of([scene]), np.asarray(states, dtype=np.float64)[None])[0]

    def _collides(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """(B, S) `collides` of stacked scenes."""
        b_count, s_count, n, r, _ = states.shape
        nb = self._predicted(st, r)  # (B, M, R+1, 3)
        m = nb.shape[1]
        k_tot = n + m
        start = np.broadcast_to(st.start[:, None, :, None, :3], (b_count, s_count, n, 1, 3))
        members = np.concatenate([start, states[..., :3]], axis=3)  # (B, S, N, R+1, 3)
        poses = np.concatenate(
            [members.transpose(0, 1, 3, 2, 4),
             np.broadcast_to(nb.transpose(0, 2, 1, 3)[:, None], (b_count, s_count, r + 1, m, 3))],
            axis=3,
        )  # (B, S, R+1, K, 3)
        length = np.concatenate([st.length, st.neighbours[..., 4]], axis=1)  # (B, K)
        width = np.concatenate([st.width, np.full((b_count, m), self.config.neighbour_width)], axis=1)
        present = st.member_mask.any(axis=1)  # a scene without members collides with nothing
        active = np.concatenate([st.member_mask, st.neighbour_mask], axis=1) & present[:, None]
        hit = np.zeros((b_count, s_count), dtype=bool)
        if not present.any():
            return hit

        # 1. One query for all (scene, sample, interval) blocks: block b is shifted by b·spacing along x,
        #    far enough that boxes of different blocks can never meet.
        live = poses[..., 0][np.broadcast_to(active[:, None, None, :], poses.shape[:-1])]
        extent = np.ptp(live) if live.size else 0.0
        spacing = 2.0 * extent + 2.0 * float(np.hypot(length, width).max()) + _BLOCK_MARGIN
        blocks = (b_count, s_count, r, k_tot)
        shift = spacing * np.arange(b_count * s_count * r, dtype=np.float64).reshape(blocks[:3] + (1,))
        prev, curr = poses[:, :, :-1].copy(), poses[:, :, 1:].copy()  # (B, S, R, K, 3)
        prev[..., 0] += shift
        curr[..., 0] += shift
        size = tuple(np.broadcast_to(v[:, None, None, :], blocks).ravel() for v in (length, width))
        contacts = geometry.swept_overlapping_pairs(
            (*(prev[..., c].ravel() for c in range(3)), *size),
            (*(curr[..., c].ravel() for c in range(3)), *size),
            active=np.broadcast_to(active[:, None, None, :], blocks).ravel(),
        )
        if len(contacts.pairs) == 0:
            return hit

        # 2. Keep pairs with a member (indices are sorted, so the first is the member if any), minus
        #    neighbours that start right behind a member in its lane.
        block = contacts.pairs[:, 0] // k_tot
        scene, sample = block // (s_count * r), block // r % s_count
        li, lj = contacts.pairs[:, 0] % k_tot, contacts.pairs[:, 1] % k_tot
        keep = li < n
        rear = self._behind(st)  # (B, N, M)
        is_nb = keep & (lj >= n)
        keep[is_nb] &= ~rear[scene[is_nb], li[is_nb], lj[is_nb] - n]
        hit[scene[keep], sample[keep]] = True
        return hit

    def headway_violated(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: some member's headway deficit breaks the floor rule (module docstring) during the plan."""
        return self._headway_violated(_Stack.of([scene]), np.asarray(states, dtype=np.float64)[None])[0]

    def _headway_violated(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """(B, S) `headway_violated` of stacked scenes."""
        cfg = self.config
        b_count, s_count, n, r, _ = states.shape
        nb = self._predicted(st, r)  # (B, M, R+1, 3)
        m = nb.shape[1]
        start = np.broadcast_to(st.start[:, None, :, None, :], (b_count, s_count, n, 1, 4))
        mem = np.concatenate([start, states], axis=3).transpose(0, 1, 3, 2, 4)  # (B, S, R+1, N, 4)
        others = np.concatenate(
            [mem[..., :3], np.broadcast_to(nb.transpose(0, 2, 1, 3)[:, None], (b_count, s_count, r + 1, m, 3))],
            axis=3)  # (B, S, R+1, K, 3)
        length = np.concatenate([st.length, st.neighbours[..., 4]], axis=1)  # (B, K)
        width = np.concatenate([st.width, np.full((b_count, m), cfg.neighbour_width)], axis=1)
        active = np.concatenate([st.member_mask, st.neighbour_mask], axis=1)

        def pair(member: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(B, N), (B, K) → (B, 1, 1, N, 1), (B, 1, 1, 1, K)."""
            return member[:, None, None, :, None], other[:, None, None, None, :]

        c, s = np.cos(mem[..., 2])[..., None], np.sin(mem[..., 2])[..., None]  # (B, S, R+1, N, 1)
        dx = others[..., None, :, 0] - mem[..., 0, None]  # (B, S, R+1, N, K)
        dy = others[..., None, :, 1] - mem[..., 1, None]
        lon, lat = c * dx + s * dy, -s * dx + c * dy
        not_self = ~np.eye(n, n + m, dtype=bool)  # (N, K)
        w_member, w_other = pair(st.width, width)
        ahead = (lon > 0) & (np.abs(lat) < 0.5 * (w_member + w_other) + cfg.lateral_margin)
        # a neighbour starting behind in the lane is ignored here too (it would only "pass" by rear-ending)
        rear = np.concatenate([np.zeros((b_count, n, n), dtype=bool), self._behind(st)], axis=2)  # (B, N, K)
        ahead &= pair(active, active)[1] & not_self & ~rear[:, None, None]
        l_member, l_other = pair(st.length, length)
        gap = lon - 0.5 * (l_member + l_other)
        v = np.maximum(mem[..., 3], 0.0)[..., None]
        deficit = np.where(ahead, cfg.standstill_gap + cfg.min_time_headway * v - gap, -np.inf).max(axis=-1)
        allowed = np.maximum(deficit[:, :, :1], 0.0) + cfg.headway_tolerance  # (B, S, 1, N)
        bad = (deficit[:, :, 1:] > allowed) & st.member_mask[:, None, None, :]
        return bad.any(axis=(2, 3))

    def leaves_road(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool: some present member leaves its lane corridor (module docstring) during (S, N, R, 4)."""
        return self._leaves_road(_Stack.of([scene]), np.asarray(states, dtype=np.float64)[None])[0]

    def _leaves_road(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """(B, S) `leaves_road` of stacked scenes (scenes without a corridor: False)."""
        cfg = self.config
        out = np.zeros(states.shape[:2], dtype=bool)
        for b, corridor in enumerate(st.corridors):
            if corridor is None:
                continue
            poses = self._from_start(st, b, states)
            located = corridor.locate(poses)
            excesses = [*corridor.deviation(poses, st.length[b], st.width[b] + 2.0 * cfg.road_margin,
                                            cfg.max_heading_error, located)]
            if corridor.end is not None:
                excesses.append(corridor.end_excess(poses, located[0], st.length[b], st.max_deceleration[b],
                                                    cfg.lane_end_margin, st.width[b]))
            out[b] = self._grows(excesses, st.member_mask[b])
        return out

    @staticmethod
    def _from_start(st: _Stack, b: int, states: np.ndarray) -> np.ndarray:
        """(S, N, R+1, 4): scene b's members now, then the states (B, S, N, R, 4) of each of its plans."""
        now = np.broadcast_to(st.start[b, None, :, None, :4], states.shape[1:3] + (1, 4))
        return np.concatenate([now, states[b, ..., :4]], axis=2)

    def _grows(self, excesses: list[np.ndarray], member_mask: np.ndarray) -> np.ndarray:
        """(S,) bool: some present member's excess (S, N, R+1) grows beyond its start value + ``road_tolerance``."""
        worse = np.zeros(excesses[0].shape[:-1] + (excesses[0].shape[-1] - 1,), dtype=bool)
        for excess in excesses:
            allowed = excess[..., :1] + self.config.road_tolerance  # an excess at the start may not grow
            worse |= excess[..., 1:] > allowed
        return (worse & member_mask[None, :, None]).any(axis=(1, 2))

    def _passes_lane_end(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """(B, S) bool: with states (B, S, N, R, 4), some member still in a lane that ends could no longer stop
        before the end (`corridor.Corridor.end_excess`), or further past it than at the start."""
        out = np.zeros(states.shape[:2], dtype=bool)
        for b, corridor in enumerate(st.corridors):
            if corridor is None or corridor.end is None:
                continue
            poses = self._from_start(st, b, states)
            excess = corridor.end_excess(poses, corridor.locate(poses)[0], st.length[b], st.max_deceleration[b],
                                         self.config.lane_end_margin, st.width[b])
            out[b] = self._grows([excess], st.member_mask[b])
        return out

    def safe(self, scene: ShieldScene, states: np.ndarray) -> np.ndarray:
        """(S,) bool for executed parts (S, N, R, 4): no collision (emergency stop after it included),
        headway kept, lane corridor kept."""
        return self._safe(_Stack.of([scene]), np.asarray(states, dtype=np.float64)[None])[0]

    def safe_scenes(self, scenes: list[ShieldScene], states: np.ndarray) -> np.ndarray:
        """(B,) bool: `safe` of each scene's one plan, states (B, N, R, 4), in one vectorized check.

        The scenes need the same member count N; neighbour counts may differ (padded with masked rows).
        Equal to calling `safe` per scene (only float rounding of the collision query's block shift differs).
        """
        states = np.asarray(states, dtype=np.float64)
        if len(scenes) != len(states):
            raise ValueError(f"{len(scenes)} scenes, {len(states)} plans")
        if not scenes:
            return np.zeros(0, dtype=bool)
        return self._safe(_Stack.of(scenes), states[:, None])[:, 0]

    def _safe(self, st: _Stack, states: np.ndarray) -> np.ndarray:
        """(B, S) `safe` of stacked scenes, states (B, S, N, R, 4)."""
        return (~self._collides(st, self._with_backup(st, states)) & ~self._headway_violated(st, states)
                & ~self._leaves_road(st, states))

    def _behind(self, st: _Stack) -> np.ndarray:
        """(B, N, M) bool: neighbour j starts behind member i, laterally overlapping its lane, while member i keeps
        its lane: within `_STEADY_OFFSET` of its corridor's centre line and `_STEADY_HEADING` of its direction
        (without a corridor: of neighbour j's heading). A member part-way through a lane change has cut in front of
        that vehicle; a rear-end is then the member's doing, and the vehicle stays in the check."""
        nb, start = st.neighbours, st.start
        c, s = np.cos(start[..., 2])[..., None], np.sin(start[..., 2])[..., None]  # (B, N, 1)
        dx = nb[:, None, :, 0] - start[..., 0, None]  # (B, N, M)
        dy = nb[:, None, :, 1] - start[..., 1, None]
        lon, lat = c * dx + s * dy, -s * dx + c * dy
        half = 0.5 * (st.width[..., None] + self.config.neighbour_width)
        behind = (lon < 0) & (np.abs(lat) < half + self.config.lateral_margin)
        turned = np.abs(np.angle(np.exp(1j * (start[..., 2, None] - nb[:, None, :, 2])))) > _STEADY_HEADING
        for b, corridor in enumerate(st.corridors):
            if corridor is not None:
                offset, error = (v[:, 0] for v in corridor.locate(st.start[b, :, None, :3]))  # (N,) each
                turned[b] = ((np.abs(offset) > _STEADY_OFFSET) | (np.abs(error) > _STEADY_HEADING))[:, None]
        return behind & ~turned

    # -- decision --------------------------------------------------------------------------------------
    def select(self, scene: ShieldScene, sample_actions: np.ndarray, sample_states: np.ndarray,
               costs: np.ndarray | None = None, steps: int | None = None) -> ShieldDecision:
        """Accept the lowest-cost sample whose first ``steps`` steps are safe, else brake; counts the level.

        sample_actions (S, N, H, 2), sample_states (S, N, H, 4); ``costs`` (S,) ranks the samples (None =
        the given order is the ranking, best first). The decision holds the full H steps (a braking
        fallback is extended to H), only the first ``steps`` (default H) are checked.
        """
        return self.select_scenes([scene], np.asarray(sample_actions)[None], np.asarray(sample_states)[None],
                                  None if costs is None else np.asarray(costs)[None], steps)[0]

    def select_scenes(self, scenes: list[ShieldScene], sample_actions: np.ndarray, sample_states: np.ndarray,
                      costs: np.ndarray | None = None, steps: int | None = None) -> list[ShieldDecision]:
        """`select` for B scenes of one member count: sample_actions (B, S, N, H, 2), sample_states
        (B, S, N, H, 4), costs (B, S) or None. Every scene's samples are checked in one vectorized check,
        and the braking fallbacks of the scenes left without a safe sample in one more."""
        sample_actions = np.asarray(sample_actions, dtype=np.float64)
        sample_states = np.asarray(sample_states, dtype=np.float64)
        b_count, s_count, _, horizon = sample_actions.shape[:4]
        steps = horizon if steps is None else min(int(steps), horizon)
        order = (np.broadcast_to(np.arange(s_count), (b_count, s_count)) if costs is None
                 else np.argsort(np.asarray(costs).reshape(b_count, s_count), axis=1, kind="stable"))
        st = _Stack.of(scenes)
        ranked = np.take_along_axis(sample_states[:, :, :, :steps], order[:, :, None, None, None], axis=1)
        ok = self._safe(st, ranked)  # (B, S): one vectorized check of every sample
        decisions: list[ShieldDecision | None] = [None] * b_count
        for b, scene in enumerate(scenes):
            if ok[b].any():
                rank = int(np.argmax(ok[b]))
                k = int(order[b, rank])
                level = ShieldLevel.ACCEPTED_FIRST if rank == 0 else ShieldLevel.NEXT_SAMPLE
                decisions[b] = ShieldDecision(level, k, sample_actions[b, k], sample_states[b, k])
            elif (k := self._first_safe_in_lane(scene, sample_actions[b, order[b]], steps)) is not None:
                k = int(order[b, k])
                actions, states = self.in_lane(scene, sample_actions[b, k:k + 1])
                decisions[b] = ShieldDecision(ShieldLevel.LANE_KEPT, k, actions[0], states[0])
        rest = [b for b, d in enumerate(decisions) if d is None]
        if rest:  # comfortable braking when it leaves a way out, else emergency braking
            sub = st.rows(rest)
            actions, states = self._brake_scenes(sub, sub.start, self.config.comfortable_decel, horizon)
            executed = states[:, None, :, :steps]
            hit = (self._collides(sub, self._with_backup(sub, executed)) | self._passes_lane_end(sub, executed))[:, 0]
            if hit.any():
                hard = sub.rows(np.flatnonzero(hit))
                actions[hit], states[hit] = self._brake_scenes(hard, hard.start, hard.max_deceleration, horizon)
            for j, b in enumerate(rest):
                level = ShieldLevel.EMERGENCY_BRAKE if hit[j] else ShieldLevel.COMFORTABLE_BRAKE
                decisions[b] = ShieldDecision(level, -1, actions[j], states[j])
        for d in decisions:
            self.counts[d.level.value] += 1
        return decisions
