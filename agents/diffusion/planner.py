"""``JointDiffusionPlanner``: guided DDIM sampling of a platoon's joint plan, sample-and-select, and checkpoints.

Frame: ``ego_state`` (B, N, 4) = [x, y, heading, speed] of every member in the *platoon frame*: origin at the
leader's (member 0's) position, x along the leader's heading, y to its left, headings relative to the
leader's. Plans (actions, rolled-out states) are in the same frame.

One ``plan()`` call: normalise inputs → encode observations and inboxes once (B, N, d) → repeat for
``num_samples`` joint samples per scene → ``steps`` DDIM steps from ``noise_scale``·N(0, I) (or, warm-started,
a few steps from a prior plan re-noised to an intermediate step: `warm_start`), each predicting
x̂0 and clipping it to the action limits; in the last ``guidance.start_fraction`` of the steps x̂0 is moved
against the gradient of the plan cost (guidance on the clean estimate, no backprop through the network) →
roll out through the bicycle model → score every sample → return the lowest-cost sample per scene plus all
samples and their costs.

Checkpoint (a dict, loadable with ``torch.load(weights_only=True)``): format, config, model, ema, normalizer,
and the trainer's state (optimiser, step, RNG) when saved by a trainer. Written to a temp file and renamed.
`JointDiffusionPlanner.load` raises `diffplatoon.agents.policy.CheckpointError` (a ValueError, one line)
for any file that is not such a checkpoint: unreadable, truncated, holding pickled objects, wrong config.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import io
import typing
from dataclasses import dataclass
from pathlib import Path

import torch

from diffplatoon.agents.diffusion.anchors import (ANCHOR_ACCELERATIONS, Traffic, lane_change_prior,
                                                  target_lane_traffic)
from diffplatoon.agents.diffusion.guidance import (CostGuidance, GuidanceConfig, SceneContext, plan_costs,
                                                   repeat_rows)
from diffplatoon.agents.diffusion.kinematics import HIGHWAY_ENV_SPEED_RANGE, bicycle_rollout
from diffplatoon.agents.diffusion.model import DenoiserConfig, JointDenoiser
from diffplatoon.agents.diffusion.normalizer import Normalizer
from diffplatoon.agents.diffusion.schedule import CosineSchedule, ddim_sample
from diffplatoon.agents.diffusion.warm_start import WarmStartConfig
from diffplatoon.geometry import VEHICLE_LENGTH
from diffplatoon.io import atomic_write_bytes

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class PlannerConfig:
    """Planner hyper-parameters (everything needed to rebuild the model from a checkpoint).

    Attributes:
        denoiser: the network's size and input widths (`DenoiserConfig`).
        horizon: default plan length H [steps].
        dt: duration of one plan step [s]; substeps: integration steps per plan step (simulation/policy ratio).
        acc_range [m/s²], steer_range [rad]: action limits; sampled actions are clipped to them
            (defaults are highway-env ContinuousAction's).
        speed_range: highway-env's MIN/MAX_SPEED handling inside the rollout [m/s].
        max_members: largest platoon the planner accepts.
        num_train_steps: diffusion steps of the training schedule.
        noise_scale: default start-noise scale (1 = the trained distribution, < 1 = low temperature).
    """

    denoiser: DenoiserConfig
    horizon: int = 20
    dt: float = 0.2
    substeps: int = 1
    acc_range: tuple[float, float] = (-5.0, 5.0)
    steer_range: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    speed_range: tuple[float, float] = HIGHWAY_ENV_SPEED_RANGE
    max_members: int = 16
    num_train_steps: int = 100
    noise_scale: float = 1.0

    @property
    def obs_dim(self) -> int:
        """Width of one member's observation."""
        return self.denoiser.obs_dim

    @property
    def msg_dim(self) -> int:
        """Width of one message."""
        return self.denoiser.msg_dim

    @property
    def chunk(self) -> int:
        """Plan steps per denoiser token (the horizon must be a multiple of it)."""
        return self.denoiser.chunk

    def to_dict(self) -> dict:
        """Plain dict (tuples as lists, the denoiser as a nested dict) safe for weights_only checkpoints."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "denoiser"}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        return {"denoiser": dataclasses.asdict(self.denoiser), **out}

    @classmethod
    def from_dict(cls, d: dict) -> PlannerConfig:
        """Inverse of ``to_dict``; also reads the flat dicts of checkpoints written before the denoiser had its
        own section (its fields at the top level; a nested ``denoiser`` entry wins over them)."""
        d = dict(d)
        names = {f.name for f in dataclasses.fields(DenoiserConfig)}
        denoiser = {k: d.pop(k) for k in list(d) if k in names}
        denoiser.update(d.pop("denoiser", None) or {})
        return cls(denoiser=DenoiserConfig(**denoiser),
                   **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass
class Plan:
    """Result of ``plan()``: the selected joint plan per scene and every sample with its cost.

    Attributes:
        actions: (B, N, H, 2) selected [acceleration, steering]; zeros for absent members.
        states: (B, N, H, 4) rolled-out [x, y, heading, speed] after each step, platoon frame; an absent
            member's rows are a placeholder (standing at the origin) and excluded from every cost.
        cost: (B,) total cost of the selected sample.
        best_index: (B,) index of the selected sample.
        sample_actions: (B, S, N, H, 2); sample_states: (B, S, N, H, 4); sample_costs: (B, S) totals.
        cost_terms: each weighted term, (B, S).
    """

    actions: torch.Tensor
    states: torch.Tensor
    cost: torch.Tensor
    best_index: torch.Tensor
    sample_actions: torch.Tensor
    sample_states: torch.Tensor
    sample_costs: torch.Tensor
    cost_terms: dict[str, torch.Tensor]


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class JointDiffusionPlanner:
    """Holds the denoiser, its EMA copy, the normaliser and the schedule; samples joint plans."""

    def __init__(self, config: PlannerConfig, device: str | torch.device = "cpu"):
        self.config = config
        self.device = resolve_device(device)
        self.model = JointDenoiser(config.denoiser).to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.normalizer = Normalizer(config.obs_dim, config.msg_dim).to(self.device)
        self.schedule = CosineSchedule(config.num_train_steps)
        self.train_state: dict | None = None  # optimiser/step/RNG restored by load(), for a trainer to resume
        lo = torch.tensor([config.acc_range[0], config.steer_range[0]])
        hi = torch.tensor([config.acc_range[1], config.steer_range[1]])
        self._action_lo, self._action_hi = lo.to(self.device), hi.to(self.device)

    @classmethod
    def with_random_weights(cls, config: PlannerConfig, std: float, seed: int = 0) -> JointDiffusionPlanner:
        """An untrained planner whose every denoiser weight is drawn from N(0, std²), its EMA the same.

        For benchmarks and tests: AdaLN-Zero initialisation makes an untrained denoiser predict a
        constant, which would hide how a plan depends on its inputs."""
        torch.manual_seed(seed)
        planner = cls(config)
        with torch.no_grad():
            for p in planner.model.parameters():
                p.normal_(0.0, std)
        planner.ema.load_state_dict(planner.model.state_dict())
        return planner

    # ----------------------------------------------------------------------------------------------- helpers
    def num_parameters(self) -> int:
        """Trainable parameters of the denoiser (encoder included)."""
        return sum(p.numel() for p in self.model.parameters())

    def clip_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Clip physical actions (..., 2) to the configured acceleration and steering ranges."""
        return torch.maximum(torch.minimum(actions, self._action_hi), self._action_lo)

    def decode_actions(self, x_norm: torch.Tensor) -> torch.Tensor:
        """Normalised actions → physical actions clipped to the action limits."""
        return self.clip_actions(self.normalizer.denormalize("action", x_norm))

    def encode_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Physical actions → clipped, normalised actions (the model's x0 space)."""
        return self.normalizer.normalize("action", self.clip_actions(actions))

    def rollout(self, ego_state: torch.Tensor, actions: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Bicycle rollout of actions (B, N, H, 2) from ego_state (B, N, 4) → (B, N, H, 4)."""
        c = self.config
        return bicycle_rollout(ego_state, actions, length, c.dt, c.substeps, c.speed_range)

    def normalized_inputs(
        self, obs: torch.Tensor, inbox: torch.Tensor, ego_state: torch.Tensor, length: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised obs, inbox and ego features ([x, y, heading, speed, length])."""
        ego = torch.cat((ego_state, length[..., None]), dim=-1)
        nz = self.normalizer
        return nz.normalize("obs", obs), nz.normalize("msg", inbox), nz.normalize("ego", ego)

    def _as_tensor(self, x, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(x, dtype=dtype, device=self.device)

    # -------------------------------------------------------------------------------------------------- plan
    @torch.no_grad()
    def plan(
        self,
        obs: torch.Tensor,
        inbox: torch.Tensor,
        inbox_mask: torch.Tensor,
        comm_mask: torch.Tensor,
        member_mask: torch.Tensor,
        ego_state: torch.Tensor,
        length: torch.Tensor,
        *,
        guidance: GuidanceConfig | None = None,
        context: SceneContext | None = None,
        num_samples: int = 1,
        steps: int = 10,
        horizon: int | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        noise_scale: float | None = None,
        use_ema: bool = True,
        selection: GuidanceConfig | None = None,
        warm_start: torch.Tensor | None = None,
        warm: WarmStartConfig | None = None,
        reuse_search: bool = True,
    ) -> Plan:
        """Sample ``num_samples`` joint plans per scene and return the lowest-cost one (see module docstring).

        Shapes: obs (B,N,obs_dim), inbox (B,N,K,msg_dim), inbox_mask (B,N,K), comm_mask (B,N,N) (i hears j),
        member_mask (B,N), ego_state (B,N,4), length (B,N). ``guidance`` = None samples unguided;
        samples are ranked with ``selection`` (default: ``guidance``, else ``GuidanceConfig()``) and
        ``context``. Deterministic for a given ``seed`` (or ``generator``).

        ``warm_start`` (B, N, H, 2): a prior plan per scene (physical actions, e.g. the last chosen plan shifted,
        `warm_start.shift_plan`); the samples then follow ``warm`` (default `WarmStartConfig()`): ``warm.steps``
        DDIM steps from the prior re-noised to step t_k, ``warm.fresh`` of them from pure noise (``steps`` is
        then unused) and, in scenes where the context's ``route_target`` asks a member to change lanes,
        ``warm.anchors`` of them from the prior with that lane change (`anchors.lane_change_prior`).

        ``reuse_search``: when the samples are ranked with the guidance's own costs, take the chosen samples'
        rollouts and cost terms from the last guidance step's line search instead of computing them again (the
        same values; False recomputes them, the reference the tests compare with).
        """
        cfg = self.config
        horizon = horizon or cfg.horizon
        net = self.ema if use_ema else self.model
        obs, inbox, ego_state, length = (self._as_tensor(v) for v in (obs, inbox, ego_state, length))
        inbox_mask, comm_mask, member_mask = (self._as_tensor(v, torch.bool) for v in (inbox_mask, comm_mask, member_mask))
        b, n = obs.shape[:2]
        if n > cfg.max_members:
            raise ValueError(f"{n} members exceeds max_members={cfg.max_members}")
        # Absent members get a neutral start state so their (discarded) rollout cannot produce NaN costs.
        ego_state = torch.where(member_mask[..., None], ego_state, 0.0)
        length = torch.where(member_mask, length, VEHICLE_LENGTH)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(0 if seed is None else seed)
        context = (context or SceneContext()).to(self.device)
        score_cfg = selection or guidance or GuidanceConfig()
        s = num_samples

        # 1. Encode once per call; fold samples into the batch: scene b, sample k → row b·S + k.
        obs_n, inbox_n, ego_n = self.normalized_inputs(obs, inbox, ego_state, length)
        cond = net.encode(obs_n, ego_n, inbox_n, inbox_mask, member_mask)
        attn_mask = net.member_attention_mask(comm_mask, member_mask)
        rep = (lambda x: repeat_rows(x, s)) if s > 1 else (lambda x: x)
        cond, attn_mask, mm, ego_s, len_s = (rep(v) for v in (cond, attn_mask, member_mask, ego_state, length))
        ctx_s = context.repeat_interleave(s) if s > 1 else context

        # 2. DDIM from scaled noise (a warm start: the prior re-noised to t_k, some rows pure noise); guidance on
        #    x̂0 in the last steps.
        scale = cfg.noise_scale if noise_scale is None else noise_scale
        x = scale * torch.randn((b * s, n, horizon, 2), generator=generator, device=self.device)
        start: int | torch.Tensor | None = None
        anchored: torch.Tensor | None = None  # (B·S,) rows proposing the route's lane change
        if warm_start is not None:
            warm = warm or WarmStartConfig()
            steps, t_k = warm.steps, warm.start_step(cfg.num_train_steps)
            prior = self._as_tensor(warm_start)[:, :, :horizon]
            x0_prior = rep(self.encode_actions(prior))
            n_fresh, n_anchored = warm.rows(s)
            row = torch.arange(b * s, device=self.device) % s
            fresh = row >= s - n_fresh  # the last rows of a scene
            if n_anchored and context.route_target is not None and context.lane_points is not None:
                target = torch.where(member_mask, context.route_target, 0.0)
                anchored = (row >= s - n_fresh - n_anchored) & ~fresh & rep((target != 0).any(dim=1))
                if not anchored.any():
                    anchored = None
                else:
                    anchor = self._anchor(rep(prior)[anchored], anchored, row - (s - n_fresh - n_anchored), ego_s,
                                          len_s, ctx_s, rep(target))
                    x0_prior = x0_prior.clone()
                    x0_prior[anchored] = self.encode_actions(anchor(rep(prior)[anchored]))
            start = torch.where(fresh, cfg.num_train_steps - 1, t_k)
            x = torch.where(fresh[:, None, None, None], x, self.schedule.add_noise(x0_prior, x, start))
            if not fresh.any():
                start = t_k
        chains = {start} if not isinstance(start, torch.Tensor) else {t_k, cfg.num_train_steps - 1}
        ts = sorted({t for c in chains for t in self.schedule.ddim_timesteps(steps, c)})
        lut = torch.zeros(cfg.num_train_steps, dtype=torch.long, device=self.device)
        lut[ts] = torch.arange(len(ts), device=self.device)
        time_cond = net.time_conditioning(torch.tensor(ts, device=self.device))  # (distinct steps, P)
        guide = self.guide(guidance) if guidance is not None else None
        n_guided = guide.guided_steps(steps) if guide is not None else 0
        searched: dict = {}  # the last guidance step's line search: its chosen x0, rollout and cost terms

        def predict_x0(x_t: torch.Tensor, i: int, t: int | torch.Tensor) -> torch.Tensor:
            if isinstance(t, torch.Tensor):  # one step per row
                t_vec, t_cond = t, time_cond[lut[t]]
            else:
                t_vec = torch.full((b * s,), t, dtype=torch.long, device=self.device)
                t_cond = time_cond[lut[t]][None]
            # normalise(clip(denormalise(·))): encode_actions would clip the already clipped actions again
            x0 = self.normalizer.normalize("action", self.decode_actions(
                net.denoise(x_t, t_vec, cond, attn_mask, mm, time_cond=t_cond)))
            if anchored is not None:  # the model's speed profile (offset), the lane change's steering (`anchors`)
                x0 = x0.clone()
                x0[anchored] = self.encode_actions(anchor(self.decode_actions(x0[anchored])))
            return guide(x0, ego_s, len_s, mm, ctx_s, record=searched) if i >= steps - n_guided else x0

        x = ddim_sample(self.schedule, x, predict_x0, steps, eta=eta, generator=generator, start=start)

        # 3. Roll out, score, select per scene.
        actions = torch.where(mm[..., None, None], self.decode_actions(x), 0.0)
        if reuse_search and searched and score_cfg == guidance and torch.equal(searched["x0"], x):
            # The last DDIM step returns the guided x̂0, whose rollout and costs under the ranking's own config the
            # line search has just computed. An absent member's placeholder (zero start, zero actions) stays at 0.
            states = torch.where(mm[..., None, None], searched["states"], 0.0)
            terms = searched["terms"]
        else:
            states = self.rollout(ego_s, actions, len_s)
            terms = plan_costs(actions, states, len_s, mm, cfg.dt, score_cfg, ctx_s)
        terms = {k: v.view(b, s) for k, v in terms.items()}
        sample_actions = actions.view(b, s, n, horizon, 2)
        sample_states = states.view(b, s, n, horizon, 4)
        best = terms["total"].argmin(dim=1)
        rows = torch.arange(b, device=self.device)
        return Plan(
            actions=sample_actions[rows, best],
            states=sample_states[rows, best],
            cost=terms["total"][rows, best],
            best_index=best,
            sample_actions=sample_actions,
            sample_states=sample_states,
            sample_costs=terms["total"],
            cost_terms=terms,
        )

    def _anchor(self, prior: torch.Tensor, anchored: torch.Tensor, index: torch.Tensor, ego_state: torch.Tensor,
                length: torch.Tensor, ctx: SceneContext, target: torch.Tensor
                ) -> typing.Callable[[torch.Tensor], torch.Tensor]:
        """actions (A, N, H, 2) of the ``anchored`` rows (of B·S) → those actions with the row's acceleration offset
        (`anchors.ANCHOR_ACCELERATIONS` by its ``index`` among the scene's anchored rows; the speed kept between 0 and
        the lane's limit) and the steering of the lane
        change to the route's ``target`` lane where the predicted neighbours leave a gap (`anchors.lane_change_prior`),
        the law run once, on the warm ``prior`` (A, N, H, 2) with the offsets: each denoising step keeps that steering
        with the model's new accelerations (running the law again at every step cost 5x the whole plan).
        Members without a target keep their own steering."""
        cfg = self.config
        offsets = torch.tensor(ANCHOR_ACCELERATIONS, device=self.device)
        accel = offsets[index[anchored] % len(offsets)][:, None, None]
        occupied = None
        if ctx.neighbours is not None:  # once per scene (its anchored rows share the traffic and the lanes)
            mask = ctx.neighbour_mask if ctx.neighbour_mask is not None else torch.ones(
                ctx.neighbours.shape[:2], dtype=torch.bool, device=self.device)
            nb_len = ctx.neighbour_length if ctx.neighbour_length is not None else torch.full(
                mask.shape, VEHICLE_LENGTH, device=self.device)
            first = anchored & (index == 0)  # one row per anchored scene
            scene_of = torch.cumsum(first.long(), 0)[anchored] - 1  # each anchored row's scene among those
            width = ctx.lane_width[first] if ctx.lane_width is not None else None
            x, half = target_lane_traffic(Traffic(ctx.neighbours[first], mask[first], nb_len[first]),
                                          ctx.lane_points[first], target[first], width, prior.shape[-2])
            occupied = (x[scene_of], half[scene_of])
        changing = (target[anchored] != 0)[..., None]

        start = ego_state[anchored][..., 3:4]  # (A, N, 1)
        top = torch.maximum(start, ctx.speed_limit[anchored][..., None]) if ctx.speed_limit is not None else None

        def offset(actions: torch.Tensor) -> torch.Tensor:
            # the offset speed profile stays between standstill and the lane's limit (or the speed now, if above)
            speed = (start + torch.cumsum(actions[..., 0] + accel, dim=-1) * cfg.dt).clamp(min=0.0)
            if top is not None:
                speed = torch.minimum(speed, top)
            acc = torch.diff(speed, dim=-1, prepend=start) / cfg.dt
            return self.clip_actions(torch.stack((acc, actions[..., 1]), dim=-1))

        steer = lane_change_prior(offset(prior), ego_state[anchored], length[anchored], ctx.lane_points[anchored],
                                  target[anchored], dt=cfg.dt, substeps=cfg.substeps, speed_range=cfg.speed_range,
                                  steer_limit=cfg.steer_range[1], occupied=occupied)[..., 1]

        def anchor(actions: torch.Tensor) -> torch.Tensor:
            base = offset(actions)
            return torch.stack((base[..., 0], torch.where(changing, steer, base[..., 1])), dim=-1)

        return anchor

    def guide(self, guidance: GuidanceConfig) -> CostGuidance:
        """The guidance step of ``guidance`` on this planner's action space, rollout and plan step."""
        return CostGuidance(guidance, self.decode_actions, self.encode_actions, self.rollout, self.config.dt)

    # ---------------------------------------------------------------------------------------------- storage
    def save(self, path: str | Path, train_state: dict | None = None) -> None:
        """Write config, weights, EMA, normaliser (and a trainer's state) atomically to ``path``."""
        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "train_state": train_state if train_state is not None else {},
        }
        atomic_torch_save(ckpt, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> JointDiffusionPlanner:
        """Rebuild a planner from a checkpoint; the trainer's state, if any, is left in ``train_state``."""
        from diffplatoon.agents.policy import CheckpointError, load_tensors

        dev = resolve_device(device)
        ckpt = load_tensors(path, "diffplatoon planner checkpoint", dev)
        try:
            if ckpt.get("format") != CHECKPOINT_FORMAT:
                raise ValueError(f"format {ckpt.get('format')!r}, expected {CHECKPOINT_FORMAT}")
            config = PlannerConfig.from_dict(ckpt["config"])
            check_planner_config(config)
            planner = cls(config, dev)
            planner.model.load_state_dict(ckpt["model"])
            planner.ema.load_state_dict(ckpt["ema"])
            planner.normalizer.load_state_dict(ckpt["normalizer"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, AssertionError) as exc:  # bad parts
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            what = f"missing {text}" if isinstance(exc, KeyError) else text
            raise CheckpointError(f"{path}: not a diffplatoon planner checkpoint ({what})") from None
        planner.train_state = ckpt.get("train_state") or None
        return planner


MAX_CONFIG_SIZE = 1 << 16  # bound of every size in a loaded config: a checkpoint cannot ask for a giant model


def check_planner_config(config: PlannerConfig) -> None:
    """Raise ValueError unless every field of a loaded config has its type: sizes positive ints (at most
    `MAX_CONFIG_SIZE`), numbers finite and positive, ranges two finite numbers in order."""
    for obj in (config, config.denoiser):
        hints = typing.get_type_hints(type(obj))
        for field in dataclasses.fields(obj):
            value, hint = getattr(obj, field.name), hints[field.name]
            if hint is int:
                ok = type(value) is int and 1 <= value <= MAX_CONFIG_SIZE
            elif hint is float:
                ok = type(value) in (int, float) and math.isfinite(value) and value > 0
            elif typing.get_origin(hint) is tuple:
                ok = (len(value) == 2 and all(type(v) in (int, float) and math.isfinite(v) for v in value)
                      and value[0] <= value[1])
            else:
                continue
            if not ok:
                raise ValueError(f"config {field.name}: unexpected value {value!r}")


def atomic_torch_save(obj: object, path: str | Path) -> None:
    """torch.save through `diffplatoon.io`'s atomic write (temp file, fsync, rename over ``path``)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())
