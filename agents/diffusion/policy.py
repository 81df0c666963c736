"""``diffusion:<checkpoint>``: the joint diffusion planner as a receding-horizon `Policy`.

Policy string: ``diffusion:<checkpoint path>[,key=value…]`` (keys of `DiffusionParams`, values as YAML
scalars, so ``guidance=on``/``off`` work); keyword params of `make_policy` override the string's.

Every ``replan_every`` policy steps, each platoon's members are featurised in the platoon frame
(`features.platoon_inputs`), all platoons due are planned in one batched ``plan()`` call
(``samples`` joint samples, ``steps`` DDIM steps, guidance on or off, samples ranked by the default plan
cost with the observed neighbours predicted as the shield predicts them — constant heading, with the
acceleration estimated from their speed change since the last step — lateral road bounds from the
members' lane corridors and their speed limits), and the chosen plan's first ``replan_every`` actions
are executed one per step. With the shield on, the chosen plan is the first sample `SafetyShield`
accepts, or a fallback (a sample's accelerations driven in lane, or braking); after a fallback step the
platoon replans at the next step instead of waiting, and between replans the rest of the plan, rolled
out from the new state, is re-checked every step (a failure replans at once). The
shield uses the same neighbour predictions and checks the road against each member's lane corridor
(`corridor.member_corridors`). Fallback steps steer with the experts' lane-keeping law.

Actions are clipped to each platoon's `VehicleSpec` limits and never brake into reverse; absent
members get zeros. Randomness is seeded by (scenario seed, episode index, policy step), so an episode
is reproducible. Each member broadcasts a plan summary (`plan_summary`): its planned displacement
(dx, dy) from its position at plan time, in the platoon frame, at ``plan_dim // 2`` evenly spaced future
plan steps (the last one = the horizon); it changes at each replan. The planner itself reads the
received messages without their plan fields (zeroed at its input): it is pre-trained on expert
demonstrations, whose messages carry no plan, and the RLlib module does not broadcast one either, so
conditioning on summaries would put it off its training distribution.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.corridor import member_corridors
from diffplatoon.agents.diffusion.guidance import GuidanceConfig
from diffplatoon.agents.diffusion.kinematics import bicycle_rollout
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
from diffplatoon.agents.diffusion.shield import LEVELS, SafetyShield, ShieldConfig, ShieldScene
from diffplatoon.agents.experts import member_lane_keeping
from diffplatoon.agents.policy import Policy, SimInfo, parse_params
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.comms import MESSAGE_FIELDS
from diffplatoon.sim.observation import EGO_FEATURES, Observation

_E = {name: k for k, name in enumerate(EGO_FEATURES)}
_LANE_KEEPING = set(LEVELS[2:])  # levels the executor steers by lane keeping
_PLAN_FIELDS = slice(len(MESSAGE_FIELDS), -1)  # planner message columns: named fields, plan floats, age
# A neighbour seen now is last step's neighbour if within this distance of its constant-velocity position [m].
_MATCH_RADIUS = 1.0
# Estimated neighbour accelerations are clipped to ± this [m/s²] (a mismatch must not invent a crash stop).
_MAX_ESTIMATED_ACCEL = 10.0


@dataclass(frozen=True)
class DiffusionParams:
    """Parameters of the diffusion policy.

    Attributes:
        guidance: guided sampling (cost-gradient steps on x̂0 in the last denoising steps).
        shield: check the executed part exactly and fall back to braking (see `shield`).
        samples: joint samples per plan call; the lowest-cost one is chosen.
        steps: DDIM denoising steps.
        replan_every: policy steps executed from each plan (receding horizon).
        neighbours: most non-platoon vehicles passed to guidance and the shield.
        noise_scale: start-noise scale (None: the checkpoint's default).
        guidance_scale: guidance step size (None: GuidanceConfig's default).
        threads: torch intra-op threads for this process (0 = leave torch's setting).
        device: torch device of the planner.
    """

    guidance: bool = True
    shield: bool = True
    samples: int = 8
    steps: int = 10
    replan_every: int = 5
    neighbours: int = 16
    noise_scale: float | None = None
    guidance_scale: float | None = None
    threads: int = 1
    device: str = "cpu"


def file_hash(path: str | Path) -> str:
    """First 12 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def _check_params(params: dict[str, Any]) -> DiffusionParams:
    valid = [f.name for f in dataclasses.fields(DiffusionParams)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown diffusion policy parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    p = DiffusionParams(**params)
    if p.samples < 1 or p.steps < 1 or p.replan_every < 1:
        raise ValueError(f"samples, steps and replan_every must be >= 1, got {p.samples}, {p.steps}, {p.replan_every}")
    return p


class DiffusionPolicy(Policy):
    """Receding-horizon joint planning for every platoon of a scenario (module docstring)."""

    def __init__(self, spec: ScenarioSpec, checkpoint: str | Path, **params: Any) -> None:
        self.params = p = _check_params(params)
        if p.threads > 0:
            torch.set_num_threads(int(p.threads))
        self.checkpoint = Path(checkpoint)
        self.planner = JointDiffusionPlanner.load(self.checkpoint, device=p.device)
        cfg = self.planner.config
        if p.replan_every > cfg.horizon:
            raise ValueError(f"replan_every={p.replan_every} exceeds the planner's horizon {cfg.horizon}")
        self.version = file_hash(self.checkpoint)
        flags = [f"{k}={'on' if getattr(p, k) else 'off'}" for k in ("guidance", "shield")]
        self.name = f"diffusion:{self.checkpoint}," + ",".join(flags)
        self.guidance = None
        if p.guidance:
            self.guidance = GuidanceConfig() if p.guidance_scale is None else GuidanceConfig(scale=p.guidance_scale)
        self.shield = SafetyShield(ShieldConfig(), dt=cfg.dt, substeps=cfg.substeps, speed_range=cfg.speed_range)
        self.spec = spec
        self.reset(SimInfo.from_spec(spec))

    # -- episode --------------------------------------------------------------------------------------
    def reset(self, info: SimInfo) -> None:
        cfg = self.planner.config
        if abs(info.dt - cfg.dt) > 1e-9:
            raise ValueError(f"{self.checkpoint} plans in steps of {cfg.dt} s but the scenario's policy step is "
                             f"{info.dt} s")
        self.info = info
        spec = info.spec
        m = len(info.agent_names)
        self.platoon_rows = [np.flatnonzero(info.platoon == k) for k in range(len(spec.platoons))]
        self.n_max = max(len(r) for r in self.platoon_rows) if self.platoon_rows else 0
        if self.n_max > cfg.max_members:
            raise ValueError(f"a platoon of {self.n_max} members exceeds the planner's max_members={cfg.max_members}")
        vehicles = [spec.platoons[k].vehicle for k in info.platoon]
        self.length = np.array([v.length for v in vehicles], dtype=np.float64)
        self.width = np.array([v.width for v in vehicles], dtype=np.float64)
        self.max_acc = np.array([v.max_acceleration for v in vehicles], dtype=np.float64)
        self.max_dec = np.array([v.max_deceleration for v in vehicles], dtype=np.float64)
        self.max_steer = np.array([v.max_steering for v in vehicles], dtype=np.float64)
        self.plan_dim = spec.comms.plan_dim
        self._summary = np.zeros((m, self.plan_dim))
        n_platoons = len(self.platoon_rows)
        # Per platoon: the plan being executed (n_members, H, 2), the next step of it to execute, and the
        # shield level that chose it (None with the shield off).
        self.plans: list[np.ndarray | None] = [None] * n_platoons
        self._cursor = np.zeros(n_platoons, dtype=np.intp)
        self.levels: list[str | None] = [None] * n_platoons
        self.step_index = 0
        self.replan_steps: list[int] = []  # policy steps at which some platoon replanned
        self.plan_calls = 0
        self.monitor_replans = 0  # replans because the rest of a plan failed the shield on a new observation
        self.plan_time = 0.0
        self._prev_neighbours: dict[int, np.ndarray] = {}  # per platoon: last step's neighbours, world frame
        self.shield.reset_counts()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "plan_calls": self.plan_calls,
            "plan_ms_mean": 1000.0 * self.plan_time / max(self.plan_calls, 1),
            "monitor_replans": self.monitor_replans,
        }
        if self.params.shield:
            out["shield"] = dict(self.shield.counts)
        return out

    def plan_summary(self) -> np.ndarray | None:
        """(M, plan_dim) summary of each member's current plan (module docstring); None when plan_dim = 0."""
        return self._summary.copy() if self.plan_dim else None

    # -- acting ---------------------------------------------------------------------------------------
    def act(self, obs: Observation) -> np.ndarray:
        m = len(self.info.agent_names)
        alive = obs.alive.astype(bool) if obs.alive is not None else np.ones(m, dtype=bool)
        live = [k for k, rows in enumerate(self.platoon_rows) if alive[rows].any()]
        scenes = {k: features.platoon_inputs(obs, self.platoon_rows[k], self.n_max, self.params.neighbours,
                                             length=self.length[self.platoon_rows[k]]) for k in live}
        accel = {k: self._neighbour_accel(k, scenes[k]) for k in live}
        self._corridors = {k: member_corridors(obs, self.platoon_rows[k], scenes[k].frame) for k in live}
        due = [k for k in live if self._needs_plan(k)]
        if self.params.shield:  # the rest of a plan is re-checked against every new observation
            unsafe = [k for k in live if k not in due and not self._still_safe(k, scenes[k], accel[k])]
            self.monitor_replans += len(unsafe)
            due = sorted(due + unsafe)
        if due:
            self._replan(obs, due, scenes, accel)
        acc, steer = np.zeros(m), np.zeros(m)
        for k, rows in enumerate(self.platoon_rows):
            buf = self.plans[k]
            if buf is None or self._cursor[k] >= buf.shape[1]:
                continue
            a = buf[:, self._cursor[k]]  # (n, 2)
            acc[rows], steer[rows] = a[:, 0], a[:, 1]
            if self.levels[k] in _LANE_KEEPING:
                steer[rows] = self._lane_keeping(obs, rows)
            self._cursor[k] += 1
        self.step_index += 1
        return self._finish(obs, acc, steer, alive)

    def _needs_plan(self, k: int) -> bool:
        buf = self.plans[k]
        if buf is None or self._cursor[k] >= self.params.replan_every:
            return True
        return self.levels[k] in _LANE_KEEPING  # after a fallback step, look for a plan again at once

    def _neighbour_accel(self, k: int, scene: features.PlatoonInputs) -> np.ndarray:
        """(m_max,) accelerations of the scene's neighbours from their speed change since the last step [m/s²].

        A neighbour is the same vehicle as one of the last step if it is within `_MATCH_RADIUS` of where
        that one would be at constant velocity; unmatched neighbours get 0.
        """
        dt = self.info.dt
        world = features.to_world(scene.neighbours[:, :3].astype(np.float64), scene.frame.astype(np.float64))
        now = np.concatenate([world, scene.neighbours[:, 3:4].astype(np.float64)], axis=1)[scene.neighbour_mask]
        out = np.zeros(len(scene.neighbours))
        prev = self._prev_neighbours.get(k)
        if prev is not None and len(prev) and len(now):
            px = prev[:, 0] + prev[:, 3] * np.cos(prev[:, 2]) * dt
            py = prev[:, 1] + prev[:, 3] * np.sin(prev[:, 2]) * dt
            d = np.hypot(now[:, None, 0] - px[None, :], now[:, None, 1] - py[None, :])  # (now, prev)
            j = d.argmin(axis=1)
            matched = d[np.arange(len(now)), j] < _MATCH_RADIUS
            a = np.where(matched, (now[:, 3] - prev[j, 3]) / dt, 0.0)
            out[np.flatnonzero(scene.neighbour_mask)] = np.clip(a, -_MAX_ESTIMATED_ACCEL, _MAX_ESTIMATED_ACCEL)
        self._prev_neighbours[k] = now
        return out

    def _shield_scene(self, k: int, scene: features.PlatoonInputs, accel: np.ndarray) -> ShieldScene:
        rows = self.platoon_rows[k]
        n = len(rows)
        return ShieldScene(start=scene.ego_state[:n], length=self.length[rows], width=self.width[rows],
                           member_mask=scene.member_mask[:n], max_deceleration=self.max_dec[rows],
                           neighbours=scene.neighbours, neighbour_mask=scene.neighbour_mask, neighbour_accel=accel,
                           corridor=self._corridors[k])

    def _still_safe(self, k: int, scene: features.PlatoonInputs, accel: np.ndarray) -> bool:
        """Whether the not yet executed steps of platoon k's plan, rolled out from now, pass the shield."""
        buf, cfg = self.plans[k], self.planner.config
        rest = buf[:, self._cursor[k]:self.params.replan_every]
        if rest.shape[1] == 0:
            return True
        n = len(self.platoon_rows[k])
        states = bicycle_rollout(torch.as_tensor(scene.ego_state[:n], dtype=torch.float64), torch.as_tensor(rest),
                                 torch.as_tensor(self.length[self.platoon_rows[k]]), cfg.dt, cfg.substeps,
                                 cfg.speed_range).numpy()
        return bool(self.shield.safe(self._shield_scene(k, scene, accel), states[None])[0])

    def _replan(self, obs: Observation, due: list[int], scenes: dict[int, features.PlatoonInputs],
                accel: dict[int, np.ndarray]) -> None:
        p, cfg = self.params, self.planner.config
        batch_scenes = [scenes[k] for k in due]
        batch = features.stack(batch_scenes, device=self.planner.device)
        batch["inbox"][..., _PLAN_FIELDS] = 0.0  # the demonstrations carry no plan summaries (module docstring)
        context = features.scene_context(batch_scenes, cfg.horizon, cfg.dt, device=self.planner.device)
        # guidance sees the neighbours as the shield predicts them (braking ones braking), not at constant velocity
        context.neighbours = torch.as_tensor(
            np.stack([self.shield.predicted_neighbours(self._shield_scene(k, scenes[k], accel[k]), cfg.horizon)[:, 1:]
                      for k in due]), dtype=torch.float32, device=self.planner.device)
        limits = np.zeros((len(due), batch["ego_state"].shape[1]), dtype=np.float32)
        for b, k in enumerate(due):
            limits[b, :len(self.platoon_rows[k])] = obs.ego[self.platoon_rows[k], _E["speed_limit"]]
        context.speed_limit = torch.as_tensor(limits, device=self.planner.device)
        context.lateral_bounds = torch.as_tensor(
            np.stack([features.lateral_bounds(obs, self.platoon_rows[k], scenes[k], self.n_max, self._corridors[k])
                      for k in due]),
            dtype=torch.float32, device=self.planner.device)
        seq = np.random.SeedSequence([self.info.spec.seed, self.info.episode, self.step_index])
        started = time.perf_counter()
        plan = self.planner.plan(**batch, guidance=self.guidance, context=context, num_samples=p.samples,
                                 steps=p.steps, seed=int(seq.generate_state(1)[0]), noise_scale=p.noise_scale)
        self.plan_time += time.perf_counter() - started
        self.plan_calls += 1
        self.replan_steps.append(self.step_index)
        sample_actions = plan.sample_actions.double().cpu().numpy()  # (B, S, N, H, 2)
        sample_states = plan.sample_states.double().cpu().numpy()
        costs = plan.sample_costs.double().cpu().numpy()  # (B, S)
        for b, k in enumerate(due):
            rows, scene = self.platoon_rows[k], scenes[k]
            n = len(rows)
            if p.shield:
                d = self.shield.select(self._shield_scene(k, scene, accel[k]), sample_actions[b, :, :n],
                                       sample_states[b, :, :n], costs[b], steps=p.replan_every)
                actions, states, level = d.actions, d.states, d.level
            else:
                best = int(plan.best_index[b])
                actions, states, level = sample_actions[b, best, :n], sample_states[b, best, :n], None
            self.plans[k] = actions
            self._cursor[k] = 0
            self.levels[k] = level
            self._summary[rows] = self._summarise(scene.ego_state[:n], states, scene.member_mask[:n])

    def _summarise(self, start: np.ndarray, states: np.ndarray, present: np.ndarray) -> np.ndarray:
        """(n, plan_dim): planned (dx, dy) from the start at evenly spaced future steps, zeros for absent members."""
        n, horizon = states.shape[:2]
        pairs = self.plan_dim // 2
        out = np.zeros((n, self.plan_dim))
        if pairs == 0:
            return out
        idx = np.ceil(horizon * np.arange(1, pairs + 1) / pairs).astype(np.intp) - 1  # last = horizon − 1
        disp = states[:, idx, :2] - start[:, None, :2]  # (n, pairs, 2)
        out[:, : 2 * pairs] = disp.reshape(n, 2 * pairs)
        return np.where(present[:, None], out, 0.0)

    def _lane_keeping(self, obs: Observation, rows: np.ndarray) -> np.ndarray:
        """Steering towards the current lane's centre (the experts' law)."""
        return member_lane_keeping(obs.ego[rows], self.length[rows])

    def _finish(self, obs: Observation, acc: np.ndarray, steer: np.ndarray, alive: np.ndarray) -> np.ndarray:
        """Clip to vehicle limits, never brake into reverse, zeros for absent members → (M, 2)."""
        v = np.maximum(obs.ego[:, _E["speed"]].astype(np.float64), 0.0)
        acc = np.clip(acc, -self.max_dec, self.max_acc)
        acc = np.maximum(acc, -v / self.info.dt)
        steer = np.clip(steer, -self.max_steer, self.max_steer)
        out = np.stack([np.nan_to_num(acc), np.nan_to_num(steer)], axis=1)
        return np.where(alive[:, None], out, 0.0)


def make_diffusion_policy(spec: ScenarioSpec, argument: str | None, **params: Any) -> DiffusionPolicy:
    """Factory of ``diffusion:<checkpoint>[,k=v…]`` for `diffplatoon.agents.policy.make_policy`."""
    if not argument:
        raise ValueError("expected diffusion:<checkpoint>[,key=value...], got no checkpoint path")
    path, _, rest = argument.partition(",")
    path = path.strip()
    if not Path(path).is_file():
        raise FileNotFoundError(f"diffusion checkpoint {path!r} not found")
    return DiffusionPolicy(spec, path, **{**parse_params(rest), **params})
