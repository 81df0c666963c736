"""`DiffusionPlannerModule`: the joint diffusion planner as an RLlib RLModule that PPO fine-tunes (DPPO).

One agent = one platoon (the platoon grouping of `PlatoonMultiAgentEnv`). Each env step the module
drives the planner through `controller.PlannerController`, the pipeline the `diffusion:` policy uses
too (platoon-frame featurisation, guidance context with the neighbours' estimated accelerations,
lane bounds and speed limits, inbox plan fields zeroed, shield, fallback steering, clipping); its own
part is the sampler: a DDIM chain of
`denoising_steps` steps and executes the first `act_steps` steps of the resulting joint plan (one
policy step, or an action chunk that the env runs open-loop, as DPPO executes its action chunks:
the chain, the shield and the learner's rows are then paid once per chunk).

The denoising chain is an inner MDP (Ren et al., DPPO, arXiv 2409.00588): step i maps x_i to

    x_{i+1} ~ N(μ_θ(x_i, i, s) + g_i, σ_i² I),   σ_i = max(η·σ_DDIM(i), min_std)

where μ_θ is the DDIM mean (`CosineSchedule.ddim_mean`, σ_DDIM its `ddim_sigma`) from the denoiser's clean estimate (clipped to the action limits) and g_i
the safety-guidance shift of that mean (guidance moves x̂0 along −∇cost; the shift is treated as a
constant of the sample, stored, and added back unchanged when log-probabilities are recomputed, so no
gradient flows through the cost). The last `ft_steps` steps use the trainable denoiser and are the
ones PPO fine-tunes; earlier steps use a frozen copy of the pre-trained weights. Noise is clipped to
±`noise_clip` σ. A step's log-probability is the Gaussian log-density of x_{i+1} with std
max(σ_DDIM, min_logprob_std), averaged over present members, action dims and the first
`logprob_steps` plan steps (default: the executed chunk), clamped to [−5, 2]. With `update_steps` = m < K each
training minibatch recomputes m of the K steps, drawn at random (DPPO samples (env step, denoising
step) pairs the same way), which divides the learner's cost by K/m.

Extra model outputs stored per env step (and so in the learner's batch; column names in `dppo_batch`):
  chain (K+1, N, H, 2) normalised plans before and after each fine-tuned step; chain_shift (K, N, H, 2)
  guidance shifts; chain_logp (K,) log-probabilities at sampling time; shielded () 1.0 when the shield
  overrode the plan; p_* the planner inputs (obs, inbox, masks, ego state, length) so the learner
  recomputes μ_θ without re-featurising.

Shield override: the log-probability must be that of the action actually sampled. When the shield
(`shield: true`, checking at least the executed chunk; with `shield_corridor` also each member's lane
corridor, as the `diffusion:` policy's shield) rejects the sampled plan and executes a braking fallback
instead (its accelerations; steering: the members' lane-keeping law on the observed state for the
chunk's first step, then the fallback's own — the law along its predicted states with a corridor, 0
without one, as the shield checked it), the step's ``shielded`` flag is set and the learner drops that env step from the policy loss, without recomputing its
log-probability (its reward and value still enter GAE and the value loss): the executed fallback is not
a sample of the chain, and the sampled plan was never executed. With `shielded_steps: train` the shield
is instead treated as part of the environment: the policy's action is the plan it sampled (its
log-probability is the chain's), and the env step's advantage is that of what the shield then executed,
so plans the shield overrides are discouraged when the fallback pays less; with "drop" nothing in the
policy loss pushes mass away from overridden plans. Deterministic post-processing of an
accepted plan (clipping to the vehicle's limits, never braking into reverse) is part of the environment.

Inference (`explore=False`) runs the chain from a fixed-seed start noise without step noise.
Sample-and-select is not used (one sample per step): choosing among samples would make the executed
plan's density differ from the chain's. Values: an MLP critic on the platoon state (members' flat
observations, member mask, poses relative to the first present member) whose output is the value in
symlog units (value = symexp(output)): platoon returns are −50 to −100, which an output layer
starting near 0 took a dozen iterations to reach on the raw scale.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import nn

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.controller import (ControlScene, MemberLimits, PlannerController, Samples,
                                                     clip_actions)
from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner, PlannerConfig, check_planner_config
from diffplatoon.agents.rllib.diffusion_config import DiffusionModuleConfig, module_model_config, planner_config_of
from diffplatoon.agents.rllib.dppo_batch import (CHAIN, CHAIN_LOGP, FT_INDEX, INPUT_KEYS, LOGP_RANGE, SHIELDED, SHIFT,
                                                 platoon_state, policy_rows)
from diffplatoon.agents.rllib.mlp_module import _mlp, symexp
from diffplatoon.geometry import VEHICLE_LENGTH
from diffplatoon.sim.observation import Observation, flat_layout

__all__ = ["CHAIN", "CHAIN_LOGP", "ChainOut", "DiffusionModuleConfig", "DiffusionPlannerModule", "FT_INDEX",
           "INPUT_KEYS", "SHIELDED", "SHIFT", "module_model_config", "planner_config_of", "platoon_state",
           "policy_rows"]


@dataclass
class ChainOut:
    """One pass of the denoising chain for B platoons (K fine-tuned steps, N members, H plan steps)."""

    x: torch.Tensor  # (B, N, H, 2) final normalised plan
    chain: torch.Tensor  # (B, K+1, N, H, 2)
    shift: torch.Tensor  # (B, K, N, H, 2)
    logp: torch.Tensor  # (B, K)


class DiffusionPlannerModule(TorchRLModule, ValueFunctionAPI):
    """DPPO RLModule around `JointDiffusionPlanner` (see the module docstring)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        ours = {k: v for k, v in (self.model_config or {}).items() if k in DiffusionModuleConfig.model_fields}
        cfg = self.cfg = DiffusionModuleConfig.model_validate(ours)
        if torch.get_num_threads() != cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        space = self.observation_space
        self.n_max, self.flat_dim = (int(v) for v in space["obs"].shape)
        self.kc, self.raw_msg_dim = int(space["inbox"].shape[1]), int(space["inbox"].shape[2])
        layout = flat_layout(cfg.neighbours, cfg.lane_points, self.kc, self.raw_msg_dim)
        if layout.size != self.flat_dim:
            raise ValueError(f"neighbours={cfg.neighbours}, lane_points={cfg.lane_points} give a flat observation of "
                             f"{layout.size} columns; the env gives {self.flat_dim}")
        self._layout = layout

        planner = self._load_planner(cfg, obs_dim=layout.slices["route"].stop, msg_dim=self.raw_msg_dim + 1)
        pc = planner.config
        self.horizon = cfg.horizon or pc.horizon
        if self.horizon % pc.chunk or max(cfg.logprob_horizon, cfg.act_steps) > self.horizon:
            raise ValueError(f"horizon {self.horizon} must be a multiple of {pc.chunk} and >= logprob_steps, act_steps")
        # Trainable denoiser + normaliser are this module's parameters/buffers (they travel in RLlib's state).
        self.denoiser = copy.deepcopy(planner.ema if cfg.init_from_ema else planner.model).requires_grad_(True)
        self.normalizer = planner.normalizer
        self.base = None
        if cfg.ft_steps < cfg.denoising_steps:  # the early steps keep the pre-trained weights
            self.base = copy.deepcopy(self.denoiser).requires_grad_(False)
        planner.model = planner.ema = self.denoiser
        self._planner = planner  # plain attribute: schedule, clipping, rollout, guidance
        self.timesteps = planner.schedule.ddim_timesteps(cfg.denoising_steps)
        self._timestep_tensor = torch.tensor(self.timesteps)
        self._sigmas = [self._step_sigma(i) for i in range(len(self.timesteps))]
        self.first_ft = cfg.denoising_steps - cfg.ft_steps
        self.guidance = cfg.guidance_config()
        self._guide = planner.guide(self.guidance) if self.guidance is not None else None
        self.controller = PlannerController(dt=pc.dt, substeps=pc.substeps, speed_range=pc.speed_range,
                                            horizon=self.horizon, n_max=self.n_max, m_max=cfg.max_neighbours,
                                            guidance=self.guidance, shield=cfg.shield,
                                            shield_corridor=cfg.shield_corridor, interval=cfg.act_steps * pc.dt)
        self.shield = self.controller.shield if cfg.shield else None
        max_acc, max_dec, max_steer = cfg.vehicle_limits
        self._limits = MemberLimits.of(self.n_max, cfg.vehicle_length, cfg.vehicle_width, max_acc, max_dec,
                                       max_steer)
        self.shield_fired = 0
        self.plans = 0

        state_dim = self.n_max * (self.flat_dim + 1 + 6)
        self.critic = _mlp([state_dim, *cfg.critic_hiddens], 1, out_gain=1.0)
        # Built in eval mode: RLlib's forward_exploration/forward_inference switch to eval and back to the
        # previous mode around every call, a walk over every submodule; starting in eval (and `train`
        # skipping unchanged modes) makes that free. forward_train switches to train once, on the learner.
        self.train(False)

    def train(self, mode: bool = True) -> "DiffusionPlannerModule":
        """nn.Module.train, skipped when the mode is unchanged (nothing here depends on the mode anyway:
        no dropout, no batch norm)."""
        if mode == self.training and all(m.training == mode for m in self.children()):
            return self
        return super().train(mode)

    @staticmethod
    def _load_planner(cfg: DiffusionModuleConfig, obs_dim: int, msg_dim: int) -> JointDiffusionPlanner:
        if cfg.checkpoint and Path(cfg.checkpoint).is_file():
            planner = JointDiffusionPlanner.load(cfg.checkpoint)
        elif cfg.checkpoint and not cfg.planner:
            raise FileNotFoundError(f"planner checkpoint {cfg.checkpoint!r} not found")
        else:  # random init, or an RLlib checkpoint whose state will overwrite the weights
            config = PlannerConfig.from_dict({"obs_dim": obs_dim, "msg_dim": msg_dim, **cfg.planner})
            check_planner_config(config)  # module files name the planner's sizes: bounded like a checkpoint's
            planner = JointDiffusionPlanner(config)
        pc = planner.config
        if (pc.obs_dim, pc.msg_dim) != (obs_dim, msg_dim):
            raise ValueError(f"the planner takes obs/msg widths ({pc.obs_dim}, {pc.msg_dim}); this scenario gives "
                             f"({obs_dim}, {msg_dim})")
        planner.train_state = None
        return planner

    # -- observation → planner inputs --------------------------------------------------------------------
    def observation(self, row: dict[str, np.ndarray]) -> Observation:
        """The `Observation` of one platoon (members as rows) rebuilt from its Dict observation through the
        observation layout (`Observation.from_flat`), with the Dict's inbox, masks, poses and senders."""
        return Observation.from_flat(
            np.asarray(row["obs"], np.float32), self._layout, inbox=np.asarray(row["inbox"], np.float32),
            inbox_mask=np.asarray(row["inbox_mask"]) > 0.5, alive=np.asarray(row["member_mask"]) > 0.5,
            pose=np.asarray(row["pose"], np.float64)[:, :3],
            inbox_sender=np.asarray(row["inbox_sender"]).round().astype(np.int64))

    def scene(self, key: Any, obs: Observation, rows: np.ndarray, length: np.ndarray) -> ControlScene:
        """The controller's scene of the platoon ``rows`` of ``obs`` (members of ``length`` [m]); ``key`` names
        the platoon across calls (its neighbours' accelerations)."""
        lim = self._limits
        n = len(rows)
        limits = MemberLimits(np.asarray(length, np.float64), lim.width[:n], lim.max_acceleration[:n],
                              lim.max_deceleration[:n], lim.max_steering[:n])
        return self.controller.observe(key, obs, rows, limits)

    def scenes(self, obs: dict[str, torch.Tensor]) -> list[ControlScene]:
        """The controller's scenes of a batch of platoon Dict observations (keyed by batch row)."""
        arrays = {k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in obs.items()}
        out = []
        for b in range(len(arrays["obs"])):
            row = {k: v[b] for k, v in arrays.items()}
            length = np.where(row["member_mask"] > 0.5, row["length"], VEHICLE_LENGTH)
            out.append(self.scene(b, self.observation(row), np.arange(self.n_max), length))
        return out

    # -- the chain ---------------------------------------------------------------------------------------
    def _sigma(self, i: int) -> tuple[float, float, float]:
        """(DDIM sigma, sampling std, log-prob std) of denoising step i."""
        return self._sigmas[i]

    def _step_sigma(self, i: int) -> tuple[float, float, float]:
        sigma = self._planner.schedule.ddim_sigma(*self._step(i), self.cfg.eta)
        return sigma, max(sigma, self.cfg.min_std), max(sigma, self.cfg.min_logprob_std)

    def _step(self, i: int) -> tuple[int, int]:
        """(t, t_prev) of denoising step i (t_prev = −1 after the last)."""
        ts = self.timesteps
        return ts[i], (ts[i + 1] if i + 1 < len(ts) else -1)

    def _mean(self, x: torch.Tensor, x0: torch.Tensor, i: int, sigma: float) -> torch.Tensor:
        """DDIM mean of step i (the update of `CosineSchedule.ddim_step` without its noise)."""
        return self._planner.schedule.ddim_mean(x, x0, *self._step(i), sigma)

    def _conditioning(self, net: nn.Module, inp: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """(cond, member attention mask, step conditioning of every DDIM step) of one network."""
        p = self._planner
        obs_n, inbox_n, ego_n = p.normalized_inputs(inp["obs"], inp["inbox"], inp["ego_state"], inp["length"])
        cond = net.encode(obs_n, ego_n, inbox_n, inp["inbox_mask"], inp["member_mask"])
        attn = net.member_attention_mask(inp["comm_mask"], inp["member_mask"])
        time_cond = net.time_conditioning(self._timestep_tensor.to(cond.device))
        return cond, attn, time_cond

    def _x0(self, net: nn.Module, x: torch.Tensor, i: int, conditioning: tuple, mm: torch.Tensor,
            out_steps: int | None = None) -> torch.Tensor:
        cond, attn, time_cond = conditioning
        t = torch.full((x.shape[0],), self.timesteps[i], dtype=torch.long, device=x.device)
        x0_hat = net.denoise(x, t, cond, attn, mm, time_cond=time_cond[i:i + 1], out_steps=out_steps)
        return self._planner.encode_actions(self._planner.decode_actions(x0_hat))

    def step_logp(self, x_next: torch.Tensor, mean: torch.Tensor, std: float, mm: torch.Tensor) -> torch.Tensor:
        """(B,) Gaussian log-density of x_next, mean over present members, dims and the first logprob_steps steps."""
        steps = self.cfg.logprob_horizon
        z = (x_next[:, :, :steps] - mean[:, :, :steps]) / std
        lp = -0.5 * z.pow(2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        w = mm[:, :, None, None].to(lp.dtype)
        lp = (lp * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * steps * lp.shape[-1]).clamp(min=1.0)
        return lp.clamp(*LOGP_RANGE)

    def _inputs(self, inp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Dtypes and absent-member neutralisation as `JointDiffusionPlanner.plan` does them."""
        out = {k: inp[k].to(torch.bool if k.endswith("mask") else torch.float32) for k in features.PLAN_KEYS}
        mm = out["member_mask"]
        out["ego_state"] = torch.where(mm[..., None], out["ego_state"], 0.0)
        out["length"] = torch.where(mm, out["length"], VEHICLE_LENGTH)
        return out

    @torch.no_grad()
    def sample_chain(self, inp: dict[str, torch.Tensor], *, explore: bool, context: Any = None,
                     generator: torch.Generator | None = None) -> ChainOut:
        """Run the DDIM chain; exploration samples Gaussian steps, inference follows the means."""
        inp = self._inputs(inp)
        mm = inp["member_mask"]
        b, n = mm.shape
        # The networks run in inference mode (less per-op bookkeeping); their outputs are read, never
        # stored, and guidance gets a plain copy of x̂0 because it differentiates through it.
        with torch.inference_mode():
            ft = self._conditioning(self.denoiser, inp)
            base = self._conditioning(self.base, inp) if self.base is not None and self.first_ft > 0 else None
        scale = self._planner.config.noise_scale
        x = scale * torch.randn((b, n, self.horizon, 2), generator=generator)
        n_guided = self._guide.guided_steps(len(self.timesteps)) if self._guide is not None else 0
        chain, shifts, logps = [], [], []
        for i in range(len(self.timesteps)):
            net, conditioning = (self.base, base) if i < self.first_ft else (self.denoiser, ft)
            sigma, std, lp_std = self._sigma(i)
            with torch.inference_mode():
                x0 = self._x0(net, x, i, conditioning, mm)
            mean = self._mean(x, x0, i, sigma)
            shift = torch.zeros_like(mean)
            if i >= len(self.timesteps) - n_guided:
                guided = self._guide(x0.clone(), inp["ego_state"], inp["length"], mm, context)
                shift = self._mean(x, guided, i, sigma) - mean
            mean = mean + shift
            if explore:
                noise = torch.randn(x.shape, generator=generator).clamp(-self.cfg.noise_clip, self.cfg.noise_clip)
                x_next = mean + std * noise
            else:
                x_next = mean
            if i >= self.first_ft:
                if not chain:
                    chain.append(x)
                chain.append(x_next)
                shifts.append(shift)
                logps.append(self.step_logp(x_next, mean, lp_std, mm))
            x = x_next
        return ChainOut(x=x, chain=torch.stack(chain, 1), shift=torch.stack(shifts, 1), logp=torch.stack(logps, 1))

    def chain_logp(self, inp: dict[str, torch.Tensor], chain: torch.Tensor, shift: torch.Tensor,
                   steps: list[int] | None = None) -> torch.Tensor:
        """(B, len(steps)) log-probabilities of fine-tuned steps `steps` (default all K) of a stored chain under
        the current trainable weights (differentiable)."""
        inp = self._inputs(inp)
        mm = inp["member_mask"]
        conditioning = self._conditioning(self.denoiser, inp)
        # The log-probability reads only the first logprob_steps plan steps: the denoiser computes x̂0 for
        # those alone (the DDIM mean is elementwise in x and x̂0).
        h = self.cfg.logprob_horizon
        out = []
        for j in (range(self.cfg.ft_steps) if steps is None else steps):
            i = self.first_ft + j
            sigma, _, lp_std = self._sigma(i)
            x = chain[:, j]
            x0 = self._x0(self.denoiser, x, i, conditioning, mm, out_steps=h)
            mean = self._mean(x[:, :, :h], x0, i, sigma) + shift[:, j, :, :h]
            out.append(self.step_logp(chain[:, j + 1], mean, lp_std, mm))
        return torch.stack(out, 1)

    # -- acting ------------------------------------------------------------------------------------------
    def plan_actions(self, scenes: list[ControlScene], *, explore: bool, generator: torch.Generator | None = None
                     ) -> tuple[np.ndarray, np.ndarray, ChainOut, dict[str, torch.Tensor]]:
        """Physical actions of the executed chunk (B, act_steps, n_max, 2), shield flags (B,), the chain and the
        stacked inputs, through the controller with this module's chain as the sampler."""
        pc, t_count = self._planner.config, self.cfg.act_steps
        if generator is None and not explore:
            generator = torch.Generator().manual_seed(self.cfg.inference_seed)

        def sample(inp: dict[str, torch.Tensor], context: Any) -> tuple[Samples, ChainOut]:
            out = self.sample_chain(inp, explore=explore, context=context, generator=generator)
            plan = torch.where(inp["member_mask"][..., None, None], self._planner.decode_actions(out.x), 0.0)
            if self.shield is not None:
                states = self._planner.rollout(inp["ego_state"], plan, inp["length"]).double().numpy()
            else:  # unused without the shield
                states = np.zeros(plan.shape[:-1] + (4,))
            return Samples(plan.double().numpy()[:, None], states[:, None]), out

        choices, inp, out = self.controller.plan(scenes, sample, steps=self.cfg.shield_steps)
        self.plans += len(scenes)
        actions = np.zeros((len(scenes), t_count, self.n_max, 2))
        shielded = np.zeros(len(scenes), np.float32)
        for b, (choice, scene) in enumerate(zip(choices, scenes)):
            actions[b, :, :scene.n] = choice.actions[:, :t_count].transpose(1, 0, 2)
            if choice.level is not None and choice.level.overrides:
                shielded[b] = 1.0
                self.shield_fired += 1
            if PlannerController.steers_by_lane_keeping(choice):  # the chunk's first step observes the state
                steer = PlannerController.fallback_steering(scene)
                actions[b, 0, :scene.n, 1] = np.where(scene.inputs.member_mask[:scene.n], steer, 0.0)
        speed = np.stack([s.inputs.ego_state[:, 3] for s in scenes]).astype(np.float64)  # (B, n_max)
        actions = clip_actions(actions, speed, self._limits, pc.dt)
        actions = np.where(inp["member_mask"].numpy()[:, None, :, None], actions, 0.0)
        return actions, shielded, out, inp

    def to_env(self, actions: np.ndarray) -> np.ndarray:
        """Physical (B, T, N, 2) → the env's normalised Box (B, T·2N) (0 stays 0, as the env scales back)."""
        max_acc, max_dec, max_steer = self.cfg.vehicle_limits
        acc = np.where(actions[..., 0] < 0, actions[..., 0] / max_dec, actions[..., 0] / max_acc)
        out = np.stack([acc, actions[..., 1] / max_steer], axis=-1).clip(-1.0, 1.0)
        return out.reshape(len(out), -1).astype(np.float32)

    def _act(self, batch: dict[str, Any], explore: bool) -> dict[str, Any]:
        actions, shielded, out, inp = self.plan_actions(self.scenes(batch[Columns.OBS]), explore=explore)
        result: dict[str, Any] = {Columns.ACTIONS: torch.from_numpy(self.to_env(actions))}
        if explore:
            result.update({CHAIN: out.chain, SHIFT: out.shift, CHAIN_LOGP: out.logp,
                           Columns.ACTION_LOGP: out.logp.sum(-1), SHIELDED: torch.from_numpy(shielded)})
            result.update({key: inp[name].float() for name, key in INPUT_KEYS.items()})
        return result

    @override(TorchRLModule)
    def _forward_inference(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, explore=False)

    @override(TorchRLModule)
    def _forward_exploration(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        return self._act(batch, explore=True)

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        """Log-probabilities of the stored chains' fine-tuned steps (all K, or `update_steps` drawn at random).

        Only rows that enter the policy loss (`policy_rows`) are recomputed; the others hold their stored
        log-probabilities (ratio 1, no gradient): the loss multiplies them by 0 anyway."""
        k, m = self.cfg.ft_steps, self.cfg.update_steps
        steps = None if m is None or m >= k else sorted(torch.randperm(k)[:m].tolist())
        inp = {name: batch[key] for name, key in INPUT_KEYS.items()}
        chain, shift = batch[CHAIN], batch[SHIFT]
        rows = policy_rows(batch, self.cfg.shielded_steps) if CHAIN_LOGP in batch else None
        if rows is None or bool(rows.all()):
            logp = self.chain_logp(inp, chain, shift, steps)
        else:
            index = rows.nonzero()[:, 0]
            if index.numel() == 0:  # keep the actor in the graph (its gradient is 0)
                index = index.new_zeros(1)
            new = self.chain_logp({name: v.index_select(0, index) for name, v in inp.items()},
                                  chain.index_select(0, index), shift.index_select(0, index), steps)
            old = batch[CHAIN_LOGP] if steps is None else batch[CHAIN_LOGP][:, steps]
            logp = old.detach().to(new.dtype).index_copy(0, index, new)
        out = {CHAIN_LOGP: logp}
        if steps is not None:
            out[FT_INDEX] = torch.tensor(steps)
        return out

    # -- values ------------------------------------------------------------------------------------------
    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        return symexp(self.critic(platoon_state(batch[Columns.OBS])).squeeze(-1))
