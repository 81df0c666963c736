"""``diffusion:<checkpoint>``: the joint diffusion planner as a receding-horizon `Policy`.

Policy string: ``diffusion:<checkpoint path>[,key=value…]`` (keys of `DiffusionParams`, values as YAML
scalars, so ``guidance=on``/``off`` work); keyword params of `make_policy` override the string's.

The pipeline is `controller.PlannerController` (the one the DPPO module uses too). Every
``replan_every`` policy steps (default: every step), each platoon's members are featurised in the platoon frame
(`features.platoon_inputs`), all platoons due are planned in batched ``plan()`` calls (one warm, one cold)
(``samples`` joint samples, ``steps`` DDIM steps, guidance on or off, samples ranked by the default plan
cost with the observed neighbours predicted as the shield predicts them — constant heading, with the
acceleration estimated from their speed change since the last step — lateral road bounds from the
members' lane corridors and their speed limits), and the chosen plan's first ``replan_every`` actions
are executed one per step. By default a platoon's plan is warm-started from its previous chosen plan,
shifted by the steps executed since (`warm_start`: ``warm_steps`` DDIM steps from the plan re-noised to an
intermediate level, ``warm_fresh`` samples from pure noise, and where a member's route asks for a lane change
``warm_anchors`` samples from that lane change, `anchors`), unless the platoon's layout changed (a member
left, a vehicle cut in between members), the last plan was a shield fallback, or the episode is new: then
the plan is cold (``steps`` steps from noise). ``replan_every=5,warm_steps=0`` is the earlier behaviour
(a cold plan every 5 steps). With the shield on, the chosen plan is the first sample `SafetyShield`
accepts, or a fallback (a sample's accelerations driven in lane, or braking); after a fallback step the
platoon replans at the next step instead of waiting, and between replans the rest of the plan, rolled
out from the new state, is re-checked every step (a failure replans at once). The
shield uses the same neighbour predictions and checks the road against each member's lane corridor
(`corridor.member_corridors`). Fallback steps steer with the experts' lane-keeping law.

Actions are clipped to each platoon's `VehicleSpec` limits and never brake into reverse; absent
members get zeros. Randomness is seeded by (scenario seed, episode index, policy step), so an episode
is reproducible. Each member broadcasts a plan summary (`plan_summary`, `intents.summarise`): its planned
world-frame displacement (dx, dy) from the state of the step it executes, at ``plan_dim // 2`` evenly spaced later
plan steps (the last one a horizon later); where platoons hear each other, the others' controllers predict it
from that plan (`intents.broadcast_paths`). The planner itself reads the
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

from diffplatoon.agents.diffusion.controller import (Choice, ControlScene, MemberLimits, PlannerController,
                                                     Samples, clip_actions)
from diffplatoon.agents.diffusion.guidance import GuidanceConfig, SceneContext
from diffplatoon.agents.diffusion.kinematics import bicycle_rollout
from diffplatoon.agents.diffusion import intents
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig, layout
from diffplatoon.agents.policy import CheckpointError, Policy, SimInfo, parse_params
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.sim.observation import EGO_FEATURES, Observation

_SPEED = EGO_FEATURES.index("speed")


@dataclass(frozen=True)
class DiffusionParams:
    """Parameters of the diffusion policy.

    Attributes:
        guidance: guided sampling (cost-gradient steps on x̂0 in the last denoising steps).
        shield: check the executed part exactly and fall back to braking (see `shield`).
        samples: joint samples per plan call; the lowest-cost one is chosen.
        steps: DDIM denoising steps.
        replan_every: policy steps executed from each plan (receding horizon; 1 = replan at every step).
        warm_steps: DDIM steps of a warm-started plan (0 = no warm start: every plan runs ``steps`` from noise).
        warm_level: re-noising level of the warm start (`WarmStartConfig.level`).
        warm_fresh: samples per warm-started plan drawn from pure noise (`WarmStartConfig.fresh`).
        warm_anchors: samples per warm-started plan whose prior is the route's lane change, where the route asks a
            member to change lanes (`WarmStartConfig.anchors`, `anchors`; 0 = off, the default; 3 was measured).
        intents: predict other platoons' members from the plans they broadcast (`intents`; needs
            ``comms.inter_platoon``).
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
    replan_every: int = 1
    warm_steps: int = 2
    warm_level: float = 0.3
    warm_fresh: int = 2
    warm_anchors: int = 0
    intents: bool = True
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


def check_params(params: dict[str, Any]) -> DiffusionParams:
    """Validated `DiffusionParams` of a parameter dict (ValueError naming an unknown or bad parameter)."""
    valid = [f.name for f in dataclasses.fields(DiffusionParams)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"unknown diffusion policy parameter(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    p = DiffusionParams(**params)
    if p.samples < 1 or p.steps < 1 or p.replan_every < 1:
        raise ValueError(f"samples, steps and replan_every must be >= 1, got {p.samples}, {p.steps}, {p.replan_every}")
    if p.warm_steps:
        WarmStartConfig(p.warm_steps, p.warm_level, p.warm_fresh, p.warm_anchors)  # raises on a bad combination
    elif p.warm_steps < 0:
        raise ValueError(f"warm_steps must be >= 0, got {p.warm_steps}")
    return p


class DiffusionPolicy(Policy):
    """Receding-horizon joint planning for every platoon of a scenario (module docstring)."""

    def __init__(self, spec: ScenarioSpec, checkpoint: str | Path | JointDiffusionPlanner, *, version: str | None = None,
                 **params: Any) -> None:
        """``checkpoint``: a checkpoint file, or a planner in memory (its EMA weights drive, shared, not copied;
        ``version`` then names them, e.g. a training step)."""
        self.params = p = check_params(params)
        if p.threads > 0:
            torch.set_num_threads(int(p.threads))
        if isinstance(checkpoint, JointDiffusionPlanner):
            self.planner, self.checkpoint = checkpoint, Path(f"<in-memory {version or 'planner'}>")
            self.version = version or "in-memory"
        else:
            self.checkpoint = Path(checkpoint)
            self.planner = JointDiffusionPlanner.load(self.checkpoint, device=p.device)
            self.version = file_hash(self.checkpoint)
        cfg = self.planner.config
        if p.replan_every > cfg.horizon:
            raise ValueError(f"replan_every={p.replan_every} exceeds the planner's horizon {cfg.horizon}")
        self.warm = WarmStartConfig(p.warm_steps, p.warm_level, p.warm_fresh, p.warm_anchors) if p.warm_steps else None
        flags = [f"{k}={'on' if getattr(p, k) else 'off'}" for k in ("guidance", "shield")]
        self.name = f"diffusion:{self.checkpoint}," + ",".join(flags)
        self.guidance = None
        if p.guidance:
            self.guidance = GuidanceConfig() if p.guidance_scale is None else GuidanceConfig(scale=p.guidance_scale)
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
        self.limits = MemberLimits.of(m, *(np.array([getattr(v, name) for v in vehicles]) for name in (
            "length", "width", "max_acceleration", "max_deceleration", "max_steering")))
        self.controller = PlannerController(dt=cfg.dt, substeps=cfg.substeps, speed_range=cfg.speed_range,
                                            horizon=cfg.horizon, n_max=self.n_max, m_max=self.params.neighbours,
                                            guidance=self.guidance, shield=self.params.shield, rank_context=True,
                                            interval=info.dt, intents=self.params.intents)
        self.plan_dim = spec.comms.plan_dim
        self._summary = np.zeros((m, self.plan_dim))
        n_platoons = len(self.platoon_rows)
        # Per platoon: the plan being executed (n_members, H, 2), the next step of it to execute, and the
        # shield level that chose it (None with the shield off).
        self.plans: list[Choice | None] = [None] * n_platoons
        self._cursor = np.zeros(n_platoons, dtype=np.intp)
        self._frames = np.zeros(n_platoons)  # heading of the platoon frame each plan was made in [rad]
        self.step_index = 0
        self.replan_steps: list[int] = []  # policy steps at which some platoon replanned
        self.plan_calls = 0
        self.warm_plans = 0  # platoon plans warm-started from the previous plan
        self.monitor_replans = 0  # replans because the rest of a plan failed the shield on a new observation
        self.plan_time = 0.0

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "plan_calls": self.plan_calls,
            "plan_ms_mean": 1000.0 * self.plan_time / max(self.plan_calls, 1),
            "warm_plans": self.warm_plans,
            "monitor_replans": self.monitor_replans,
        }
        if self.params.shield:
            out["shield"] = dict(self.controller.shield.counts)
        return out

    def plan_summary(self) -> np.ndarray | None:
        """(M, plan_dim) summary of each member's current plan (module docstring); None when plan_dim = 0."""
        return self._summary.copy() if self.plan_dim else None

    # -- acting ---------------------------------------------------------------------------------------
    def act(self, obs: Observation) -> np.ndarray:
        m = len(self.info.agent_names)
        alive = obs.alive.astype(bool) if obs.alive is not None else np.ones(m, dtype=bool)
        scenes = {k: self.controller.observe(k, obs, rows, self._limits(rows))
                  for k, rows in enumerate(self.platoon_rows) if alive[rows].any()}
        due = [k for k in scenes if self._needs_plan(k)]
        if self.params.shield:  # the rest of a plan is re-checked against every new observation
            unsafe = [k for k in scenes if k not in due and not self._still_safe(k, scenes[k])]
            self.monitor_replans += len(unsafe)
            due = sorted(due + unsafe)
        if due:
            self._replan([scenes[k] for k in due], due)
        actions = np.zeros((1, m, 2))
        for k, rows in enumerate(self.platoon_rows):
            choice = self.plans[k]
            if choice is None or self._cursor[k] >= choice.actions.shape[1]:
                continue
            actions[0, rows] = choice.actions[:, self._cursor[k]]
            if self.plan_dim:
                self._summary[rows] = intents.summarise(choice.states, alive[rows], self._frames[k], self.plan_dim,
                                                        executed=int(self._cursor[k]))
            if PlannerController.steers_by_lane_keeping(choice) and k in scenes:
                actions[0, rows, 1] = PlannerController.fallback_steering(scenes[k])
            self._cursor[k] += 1
        self.step_index += 1
        speed = obs.ego[:, _SPEED].astype(np.float64)
        return np.where(alive[:, None], clip_actions(actions, speed, self.limits, self.info.dt)[0], 0.0)

    def _limits(self, rows: np.ndarray) -> MemberLimits:
        lim = self.limits
        return MemberLimits(lim.length[rows], lim.width[rows], lim.max_acceleration[rows],
                            lim.max_deceleration[rows], lim.max_steering[rows])

    def _needs_plan(self, k: int) -> bool:
        choice = self.plans[k]
        if choice is None or self._cursor[k] >= self.params.replan_every:
            return True
        return PlannerController.steers_by_lane_keeping(choice)  # after a fallback step, look for a plan again at once

    def _still_safe(self, k: int, scene: ControlScene) -> bool:
        """Whether the not yet executed steps of platoon k's plan, rolled out from now, pass the shield."""
        cfg = self.planner.config
        rest = self.plans[k].actions[:, self._cursor[k]:self.params.replan_every]
        if rest.shape[1] == 0:
            return True
        states = bicycle_rollout(torch.as_tensor(scene.inputs.ego_state[:scene.n], dtype=torch.float64),
                                 torch.as_tensor(rest), torch.as_tensor(scene.limits.length), cfg.dt, cfg.substeps,
                                 cfg.speed_range).numpy()
        shield = self.controller.shield
        return bool(shield.safe(self.controller.shield_scene(scene), states[None])[0])

    def _replan(self, scenes: list[ControlScene], due: list[int]) -> None:
        """Plan the due platoons: those with a remembered plan in its layout warm-started, the others cold, one
        batched call each; remember the chosen plans (a fallback's is forgotten)."""
        p = self.params
        seeds = np.random.SeedSequence([self.info.spec.seed, self.info.episode, self.step_index]).generate_state(2)
        memory = self.controller.warm
        layouts = [layout(scene.inputs, scene.n) for scene in scenes]
        priors = [memory.recall(k, lay, self.step_index) if self.warm else None for k, lay in zip(due, layouts)]
        groups = [[j for j, prior in enumerate(priors) if (prior is not None) == warm] for warm in (False, True)]
        for warm, group, seed in zip((False, True), groups, seeds):
            if not group:
                continue
            prior = None
            if warm:
                prior = np.zeros((len(group), self.n_max, self.planner.config.horizon, 2), dtype=np.float32)
                for g, j in enumerate(group):
                    prior[g, : scenes[j].n] = priors[j]
                self.warm_plans += len(group)

            def sample(inputs: dict[str, torch.Tensor], context: SceneContext | None) -> tuple[Samples, None]:
                started = time.perf_counter()
                plan = self.planner.plan(**inputs, guidance=self.guidance, context=context, num_samples=p.samples,
                                         steps=p.steps, seed=int(seed), noise_scale=p.noise_scale,
                                         warm_start=None if prior is None else torch.from_numpy(prior), warm=self.warm)
                self.plan_time += time.perf_counter() - started
                return Samples(plan.sample_actions.double().cpu().numpy(), plan.sample_states.double().cpu().numpy(),
                               plan.sample_costs.double().cpu().numpy()), None

            choices, _, _ = self.controller.plan([scenes[j] for j in group], sample, steps=p.replan_every,
                                                 device=self.planner.device)
            for j, choice in zip(group, choices):
                k, scene = due[j], scenes[j]
                self.plans[k] = choice
                self._cursor[k] = 0
                self._frames[k] = float(scene.inputs.frame[2])
                if choice.sample >= 0 and not PlannerController.steers_by_lane_keeping(choice):
                    memory.remember(k, choice.actions, layouts[j], self.step_index)
                else:
                    memory.forget(k)
        self.plan_calls += 1
        self.replan_steps.append(self.step_index)


def make_diffusion_policy(spec: ScenarioSpec, argument: str | None, **params: Any) -> DiffusionPolicy:
    """Factory of ``diffusion:<checkpoint>[,k=v…]`` for `diffplatoon.agents.policy.make_policy`."""
    if not argument:
        raise ValueError("expected diffusion:<checkpoint>[,key=value...], got no checkpoint path")
    path, _, rest = argument.partition(",")
    path = path.strip()
    if not Path(path).is_file():
        raise CheckpointError(f"{path}: not a diffplatoon planner checkpoint (no such file)")
    return DiffusionPolicy(spec, path, **{**parse_params(rest), **params})
