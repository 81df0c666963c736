"""`PlannerController`: the one pipeline that turns observations into executed planner actions.

featurise → guidance context → sample → shield → fallback steering → clip. Both the ``diffusion:``
evaluation policy (`policy.DiffusionPolicy`: S samples from `JointDiffusionPlanner.plan`, receding
horizon) and the DPPO RLModule (`diffplatoon.agents.rllib.diffusion_module`: one sample of its own
log-probability-scored chain, action chunks) drive the planner through it; they differ only in the
sampler they pass and in how many plan steps they execute.

1. **featurise** (`observe`): a platoon's rows of an `Observation` → `features.PlatoonInputs` in the
   platoon frame, the observed neighbours' accelerations estimated from their speed change since the
   previous call for the same key (a neighbour is the same vehicle if it is within `_MATCH_RADIUS` of
   where it would be at constant velocity; unmatched ones get 0, clipped to ±`_MAX_ESTIMATED_ACCEL`),
   and the members' lane corridors (`corridor.member_corridors`) when guidance or the shield use them.
2. **guidance context** (`guidance_context`): the neighbours predicted as the shield predicts them
   (constant heading and estimated acceleration, so a braking vehicle ahead is seen braking) or, for members of
   another platoon that broadcast their plan to this one, along that plan (`intents`; the shield keeps its own
   prediction, which does not trust intents), padding
   rows after the last valid neighbour dropped (masked rows cost exactly 0, and guidance's neighbour
   term costs in proportion to the rows), each member's lateral road bounds from its corridor, its lane's
   centre line and width (``road``, ``lane``), its lane's speed limit (``speed``), the distance to where
   its lane ends where its route asks it to leave the lane first (``lane_end``) and, where its route asks
   for a lane change the corridor admits, the target lane's offset and the distance left to make it
   (``route``).
3. **sample** (the caller's sampler) from `inputs`: the stacked scenes with the inbox messages' plan
   fields zeroed — the planner is pre-trained on expert demonstrations, whose messages carry no plan. A
   sampler may warm-start from ``warm`` (`warm_start.WarmStarts`: each key's last chosen plan, kept while the
   platoon's layout holds; cleared by `reset`).
4. **shield** (`decide`): `SafetyShield.select_scenes` over each scene's samples (scenes batched by member
   count); without the shield the lowest-cost sample.
5. **fallback steering** (`fallback_steering`): from the "lane_kept" level on (`ShieldLevel.lane_keeping`)
   a step the executor can observe steers by the members' lane-keeping law on the observed state.
6. **clip** (`clip_actions`): to each member's vehicle limits, never braking into reverse along the
   executed steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import numpy as np
import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.corridor import Corridor, member_corridors
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext
from diffplatoon.agents.diffusion.intents import broadcast_paths
from diffplatoon.agents.diffusion.shield import SafetyShield, ShieldConfig, ShieldLevel, ShieldScene
from diffplatoon.agents.diffusion.warm_start import WarmStarts
from diffplatoon.agents.experts import member_lane_keeping
from diffplatoon.sim.comms import MESSAGE_FIELDS
from diffplatoon.geometry import VEHICLE_LENGTH
from diffplatoon.sim.observation import EGO_FEATURES, ROUTE_FEATURES, Observation

_SPEED, _SPEED_LIMIT = EGO_FEATURES.index("speed"), EGO_FEATURES.index("speed_limit")
_LANE_WIDTH = EGO_FEATURES.index("lane_width")
_LANE_END = EGO_FEATURES.index("distance_to_lane_end")
_LANES_TO_MOVE = ROUTE_FEATURES.index("lane_changes_needed")
_ROUTE_DISTANCE = ROUTE_FEATURES.index("distance_to_do_it")
_PLAN_FIELDS = slice(len(MESSAGE_FIELDS), -1)  # planner message columns: named fields, plan floats, age
# A neighbour seen now is last call's neighbour if within this distance of its constant-velocity position [m].
_MATCH_RADIUS = 1.0
# Estimated neighbour accelerations are clipped to ± this [m/s²] (a mismatch must not invent a crash stop).
_MAX_ESTIMATED_ACCEL = 10.0


@dataclass(frozen=True)
class MemberLimits:
    """One platoon's members (n of them): sizes [m] and action limits [m/s², rad], each (n,)."""

    length: np.ndarray
    width: np.ndarray
    max_acceleration: np.ndarray
    max_deceleration: np.ndarray
    max_steering: np.ndarray

    @staticmethod
    def of(n: int, length: Any, width: Any, max_acceleration: Any, max_deceleration: Any,
           max_steering: Any) -> MemberLimits:
        """Limits of n members from per-member arrays or scalars."""
        return MemberLimits(*(np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy()
                              for v in (length, width, max_acceleration, max_deceleration, max_steering)))


@dataclass
class ControlScene:
    """One platoon at decision time: where it came from, its planner inputs, and what the shield checks.

    Attributes:
        obs: the observation holding the platoon's rows; rows: its members' rows of it (member order).
        inputs: the featurised scene (padded to the controller's n_max).
        limits: the members' sizes and action limits.
        accel: (m_max,) estimated accelerations of ``inputs.neighbours`` [m/s²].
        corridor: the members' lane corridors in the platoon frame (None when nothing uses them).
        intents: (m_max, H, 3) platoon-frame paths of the neighbours that broadcast a plan to the platoon from
            another platoon, and (m_max,) bool which do (`intents.broadcast_paths`); None when nothing uses them.
    """

    obs: Observation
    rows: np.ndarray
    inputs: features.PlatoonInputs
    limits: MemberLimits
    accel: np.ndarray
    corridor: Corridor | None
    intents: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n(self) -> int:
        """Number of members (rows)."""
        return len(self.rows)


@dataclass
class Samples:
    """A sampler's output for B scenes: actions (B, S, N, H, 2), states (B, S, N, H, 4) in the platoon frame,
    costs (B, S) ranking them (None: every scene has one sample)."""

    actions: np.ndarray
    states: np.ndarray
    costs: np.ndarray | None = None


@dataclass
class Choice:
    """The plan a scene executes: actions (n, H, 2), states (n, H, 4), the shield level (None with the shield
    off) and the chosen sample (−1 for a braking fallback)."""

    actions: np.ndarray
    states: np.ndarray
    level: ShieldLevel | None
    sample: int


Sampler = Callable[[dict[str, torch.Tensor], SceneContext | None], tuple[Samples, Any]]
"""(stacked inputs, guidance context) → (samples, anything the caller wants back)."""


class PlannerController:
    """The planner pipeline (module docstring) for platoons of at most ``n_max`` members.

    Args:
        dt, substeps, speed_range: the planner's plan step and rollout (the shield predicts with them).
        horizon: plan steps of the guidance context.
        n_max: members per featurised scene; m_max: neighbours per scene.
        guidance: guided sampling's config (None: unguided).
        rank_context: build the guidance context without guidance too (a sampler that ranks its samples by cost
            scores them in it); without either, no context is built.
        shield: check plans with `SafetyShield` (else the lowest-cost sample is executed).
        shield_corridor: give the shield each member's lane corridor (road check, lane-kept fallback).
        interval: time between two `observe` calls for one key [s] (the neighbour acceleration estimate).
        intents: predict other platoons' members from their broadcast plans in the guidance context (`intents`).
    """

    def __init__(self, *, dt: float, substeps: int, speed_range: tuple[float, float], horizon: int, n_max: int,
                 m_max: int, guidance: GuidanceConfig | None, shield: bool, shield_corridor: bool = True,
                 rank_context: bool = False, interval: float | None = None, intents: bool = True) -> None:
        self.horizon, self.n_max, self.m_max = horizon, n_max, m_max
        self.guidance = guidance
        self.needs_context = guidance is not None or rank_context
        self.use_intents = intents
        self.shield = SafetyShield(ShieldConfig(), dt=dt, substeps=substeps, speed_range=speed_range)
        self.use_shield, self.shield_corridor = shield, shield_corridor
        self.interval = dt if interval is None else interval
        self._previous: dict[Hashable, np.ndarray] = {}  # per key: last call's neighbours, world frame
        self.warm = WarmStarts()  # per key: the last chosen plan, the prior of a warm-started next plan

    def reset(self) -> None:
        """Forget the neighbours and plans of earlier calls (a new episode) and zero the shield's counters."""
        self._previous.clear()
        self.warm.clear()
        self.shield.reset_counts()

    # -- 1. featurise -----------------------------------------------------------------------------------
    def observe(self, key: Hashable, obs: Observation, rows: np.ndarray, limits: MemberLimits) -> ControlScene:
        """The `ControlScene` of the platoon whose members are ``rows`` of ``obs`` (``key`` names it across calls)."""
        rows = np.asarray(rows, dtype=np.intp)
        inputs = features.platoon_inputs(obs, rows, self.n_max, self.m_max, length=limits.length)
        road = self.needs_context or (self.use_shield and self.shield_corridor)
        corridor = member_corridors(obs, rows, inputs.frame.astype(np.float64)) if road else None
        return ControlScene(obs, rows, inputs, limits, self._neighbour_accel(key, inputs), corridor,
                            self._intents(obs, rows, inputs) if self.needs_context and self.use_intents else None)

    def _intents(self, obs: Observation, rows: np.ndarray, scene: features.PlatoonInputs
                 ) -> tuple[np.ndarray, np.ndarray] | None:
        """The platoon-frame paths of the neighbours another platoon's broadcast plan predicts (`intents`)."""
        frame = scene.frame.astype(np.float64)
        world = features.to_world(scene.neighbours[:, :4].astype(np.float64), frame)
        paths, found = broadcast_paths(obs, rows, world, scene.neighbour_mask, horizon=self.horizon, dt=self.shield.dt,
                                       interval=self.interval)
        if not found.any():
            return None
        x, y, heading = features.to_frame(paths[..., 0], paths[..., 1], paths[..., 2], frame)
        return np.stack((x, y, heading), axis=-1), found

    def _neighbour_accel(self, key: Hashable, scene: features.PlatoonInputs) -> np.ndarray:
        """(m_max,) neighbour accelerations from their speed change since the last call for ``key`` [m/s²]."""
        dt = self.interval
        world = features.to_world(scene.neighbours[:, :3].astype(np.float64), scene.frame.astype(np.float64))
        now = np.concatenate([world, scene.neighbours[:, 3:4].astype(np.float64)], axis=1)[scene.neighbour_mask]
        out = np.zeros(len(scene.neighbours))
        prev = self._previous.get(key)
        if prev is not None and len(prev) and len(now):
            px = prev[:, 0] + prev[:, 3] * np.cos(prev[:, 2]) * dt
            py = prev[:, 1] + prev[:, 3] * np.sin(prev[:, 2]) * dt
            d = np.hypot(now[:, None, 0] - px[None, :], now[:, None, 1] - py[None, :])  # (now, prev)
            j = d.argmin(axis=1)
            matched = d[np.arange(len(now)), j] < _MATCH_RADIUS
            a = np.where(matched, (now[:, 3] - prev[j, 3]) / dt, 0.0)
            out[np.flatnonzero(scene.neighbour_mask)] = np.clip(a, -_MAX_ESTIMATED_ACCEL, _MAX_ESTIMATED_ACCEL)
        self._previous[key] = now
        return out

    def shield_scene(self, scene: ControlScene) -> ShieldScene:
        """What the shield checks for ``scene``: its members (unpadded), neighbours with their accelerations and,
        with ``shield_corridor``, the lane corridors."""
        n, inp, lim = scene.n, scene.inputs, scene.limits
        return ShieldScene(start=inp.ego_state[:n], length=lim.length, width=lim.width, member_mask=inp.member_mask[:n],
                           max_deceleration=lim.max_deceleration, neighbours=inp.neighbours,
                           neighbour_mask=inp.neighbour_mask, neighbour_accel=scene.accel,
                           corridor=scene.corridor if self.shield_corridor else None)

    # -- 2. guidance context, 3. sampler inputs -----------------------------------------------------------
    def guidance_context(self, scenes: list[ControlScene], device: str | torch.device = "cpu") -> SceneContext:
        """Guidance's context of a batch (module docstring, step 2)."""
        m = max((int(np.flatnonzero(s.inputs.neighbour_mask)[-1]) + 1 if s.inputs.neighbour_mask.any() else 0)
                for s in scenes)
        nb = np.stack([s.inputs.neighbours[:m] for s in scenes])  # (B, m, 5)
        accel = np.stack([s.accel[:m] for s in scenes])
        path = self.shield.predict(nb, accel, self.horizon)  # (B, m, H + 1, 3) from t = 0
        for b, s in enumerate(scenes):  # other platoons' members as they broadcast their plans
            if s.intents is not None:
                found = s.intents[1][:m]
                path[b, found, 1:] = s.intents[0][:m][found]
        predicted = path[:, :, 1:]
        speed = np.linalg.norm(np.diff(path[..., :2], axis=2), axis=-1) / self.shield.dt  # mean speed of each step
        limits = np.zeros((len(scenes), self.n_max), dtype=np.float32)
        lane_end = np.full((len(scenes), self.n_max), 1000.0, dtype=np.float32)  # the observation's cap
        for b, s in enumerate(scenes):
            limits[b, :s.n] = s.obs.ego[s.rows, _SPEED_LIMIT]
            # only where the route asks to leave the lane before its end (at a route's exit the lane ends too)
            asked = s.obs.route[s.rows, _LANES_TO_MOVE] != 0
            lane_end[b, :s.n] = np.where(asked, s.obs.ego[s.rows, _LANE_END], 1000.0)
        lanes = [self._lane_lines(s) for s in scenes]
        routes = [self._route(s, lane[1], lane[2]) for s, lane in zip(scenes, lanes)]

        def tensor(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dtype, device=device)

        return SceneContext(
            neighbours=tensor(predicted),
            neighbour_mask=tensor(np.stack([s.inputs.neighbour_mask[:m] for s in scenes]), torch.bool),
            neighbour_length=tensor(np.where(nb[..., 4] > 0, nb[..., 4], VEHICLE_LENGTH)),
            lateral_bounds=tensor(np.stack([features.lateral_bounds(s.obs, s.rows, s.inputs, self.n_max, s.corridor)
                                            for s in scenes])),
            speed_limit=tensor(limits),
            neighbour_speed=tensor(speed),
            lane_points=tensor(np.stack([lane[0] for lane in lanes])),
            lane_bounds=tensor(np.stack([lane[1] for lane in lanes])),
            lane_width=tensor(np.stack([lane[2] for lane in lanes])),
            lane_end=tensor(lane_end),
            route_target=tensor(np.stack([r[0] for r in routes])),
            route_distance=tensor(np.stack([r[1] for r in routes])),
        )

    def _route(self, scene: ControlScene, bounds: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_max,) each member's target-lane offset from its lane centre (one lane towards the side its route asks
        for, 0 where it asks for none or its corridor does not reach that lane) and (n_max,) the distance left to
        change [m] (the observation's 1000 m cap for absent members)."""
        target = np.zeros(self.n_max)
        distance = np.full(self.n_max, 1000.0)
        need = np.sign(np.rint(scene.obs.route[scene.rows, _LANES_TO_MOVE].astype(np.float64)))
        n = scene.n
        side = need * width[:n]
        admitted = np.where(need < 0, bounds[:n, 0] < -width[:n], bounds[:n, 1] > width[:n]) & (need != 0)
        target[:n] = np.where(admitted & scene.inputs.member_mask[:n], side, 0.0)
        distance[:n] = scene.obs.route[scene.rows, _ROUTE_DISTANCE]
        return target, distance

    def _lane_lines(self, scene: ControlScene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(n_max, P, 2) centre lines, (n_max, 2) corridor bounds and (n_max,) lane widths of a scene's members in
        its platoon frame (guidance's ``road`` and ``lane`` terms); absent members get a straight line along x
        with wide bounds, which their masked rows never use."""
        corridor = scene.corridor if scene.corridor is not None else member_corridors(
            scene.obs, scene.rows, scene.inputs.frame.astype(np.float64))
        n, p = scene.n, corridor.points.shape[1]
        points = np.zeros((self.n_max, p, 2))
        points[:, :, 0] = np.linspace(0.0, 10.0, p)
        bounds = np.tile([-1e4, 1e4], (self.n_max, 1)).astype(np.float64)
        width = np.full(self.n_max, 4.0)
        live = scene.inputs.member_mask[:n]
        points[:n][live], bounds[:n][live] = corridor.points[live], corridor.bounds[live]
        width[:n][live] = scene.obs.ego[scene.rows[live], _LANE_WIDTH]
        return points, bounds, width

    @staticmethod
    def inputs(scenes: list[ControlScene], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The sampler's stacked inputs (`features.stack`), the inbox plan fields zeroed (module docstring)."""
        batch = features.stack([s.inputs for s in scenes], device=device)
        batch["inbox"][..., _PLAN_FIELDS] = 0.0
        return batch

    # -- 4. shield --------------------------------------------------------------------------------------
    def plan(self, scenes: list[ControlScene], sample: Sampler, steps: int,
             device: str | torch.device = "cpu") -> tuple[list[Choice], dict[str, torch.Tensor], Any]:
        """Sample plans for ``scenes`` and choose what each executes; ``steps``: plan steps the shield checks.

        Returns the choices, the sampler's inputs and whatever the sampler returned beside its samples."""
        inputs = self.inputs(scenes, device)
        context = self.guidance_context(scenes, device) if self.needs_context else None
        samples, extra = sample(inputs, context)
        return self.decide(scenes, samples, steps), inputs, extra

    def decide(self, scenes: list[ControlScene], samples: Samples, steps: int) -> list[Choice]:
        """Each scene's choice among its samples: the shield's (scenes of one member count in one batched
        check), or without the shield the lowest-cost sample."""
        costs = samples.costs
        if not self.use_shield:
            best = np.zeros(len(scenes), np.intp) if costs is None else np.argmin(costs, axis=1)
            return [Choice(samples.actions[b, k, :s.n], samples.states[b, k, :s.n], None, int(k))
                    for b, (s, k) in enumerate(zip(scenes, best))]
        out: list[Choice | None] = [None] * len(scenes)
        for n in sorted({s.n for s in scenes}):
            group = [b for b, s in enumerate(scenes) if s.n == n]
            decisions = self.shield.select_scenes(
                [self.shield_scene(scenes[b]) for b in group], samples.actions[group, :, :n],
                samples.states[group, :, :n], None if costs is None else costs[group], steps=steps)
            for b, d in zip(group, decisions):
                out[b] = Choice(d.actions, d.states, d.level, d.sample)
        return out

    # -- 5. fallback steering, 6. clip --------------------------------------------------------------------
    @staticmethod
    def fallback_steering(scene: ControlScene) -> np.ndarray:
        """(n,) the members' lane-keeping steering on the observed state [rad]."""
        return member_lane_keeping(scene.obs.ego[scene.rows], scene.limits.length)

    @staticmethod
    def steers_by_lane_keeping(choice: Choice) -> bool:
        """Whether the executor steers ``choice`` by the lane-keeping law."""
        return choice.level is not None and choice.level.lane_keeping


def clip_actions(actions: np.ndarray, speed: np.ndarray, limits: MemberLimits, dt: float) -> np.ndarray:
    """Executed actions (..., T, n, 2) clipped to the members' limits, never braking into reverse along the T
    steps from ``speed`` (..., n) [m/s] (speed does not depend on steering, so the profile is exact); NaN → 0."""
    out = np.array(actions, dtype=np.float64)
    v = np.maximum(np.asarray(speed, dtype=np.float64), 0.0)
    for k in range(out.shape[-3]):
        v = np.maximum(v, 0.0)
        acc = np.clip(out[..., k, :, 0], -limits.max_deceleration, limits.max_acceleration)
        out[..., k, :, 0] = np.maximum(acc, -v / dt)
        v = v + out[..., k, :, 0] * dt
    out[..., 1] = np.clip(out[..., 1], -limits.max_steering, limits.max_steering)
    return np.nan_to_num(out)


def observed_speed(scene: ControlScene) -> np.ndarray:
    """(n,) the members' observed speeds [m/s]."""
    return scene.obs.ego[scene.rows, _SPEED].astype(np.float64)
