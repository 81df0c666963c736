"""`DPPOLearner`: PPO over (env step, denoising step) pairs for `DiffusionPlannerModule`, plus value and BC losses.

Per train-batch row (one platoon at one env step) the module recomputes the log-probabilities of its
K stored fine-tuned denoising steps (`_forward_train`). With the env step's advantage A (RLlib's GAE,
standardised per module) the policy loss is DPPO's

    r_k = exp(logp_k − logp_k^old),   A_k = A · γ_d^(K−1−k)   (k = 0 noisiest … K−1 final step)
    L_pi = −mean_{rows, k} min(r_k A_k, clip(r_k, 1 ± ε_k) A_k)

over all K steps (or the random subset the module recomputed, its `update_steps`), with ε_k
interpolated exponentially from `clip_base` (noisiest step) to the PPO `clip` (final step).
Rows of RLlib's artificial bootstrap step (``loss_mask``) and, with the module's `shielded_steps`
"drop", rows where the safety shield replaced the sampled plan (``shielded``; see the module's
docstring) are left out of L_pi; the value loss (clipped squared error, `vf_clip`) uses every real row. Optional on-manifold regulariser: the DDPM loss of the
trainable denoiser on demonstration scenes (`bc_demos`, weight `bc_coeff`; off when either is unset).

Optimisers: one Adam for the denoiser (the PPO `lr`), one for the critic (`critic_lr`); frozen
parameters (the pre-trained copy that runs the early denoising steps) are in neither.

learner_config_dict keys: `DPPOLearnerConfig`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_KL_KEY, LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.torch_utils import explained_variance

from diffplatoon.agents.rllib.dppo_batch import CHAIN_LOGP, FT_INDEX, SHIELDED, policy_rows as module_policy_rows


class DPPOLearnerConfig(BaseModel):
    """`learner` section of a DPPO training config (RLlib's learner_config_dict)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gamma_denoise: float = Field(0.99, gt=0, le=1, description="Advantage discount per denoising step back from the last.")
    clip_base: float | None = Field(None, gt=0, description="Ratio clip of the noisiest fine-tuned step (null: = clip).")
    critic_lr: float = Field(1e-3, gt=0, description="Adam learning rate of the critic.")
    bc_coeff: float = Field(0.0, ge=0, description="Weight of the DDPM loss on demonstrations (0: off).")
    bc_demos: str | None = Field(None, description="Demonstration folder (agents.diffusion.demos); null: no BC loss.")
    bc_batch_size: int = Field(64, ge=1, description="Demonstration scenes per BC minibatch.")
    seed: int = Field(0, ge=0, description="Seed of the BC minibatches and diffusion noise.")


class DPPOLearner(PPOTorchLearner):
    """DPPO loss for `DiffusionPlannerModule` (see the module docstring)."""

    def _dppo_config(self) -> DPPOLearnerConfig:
        if not hasattr(self, "_dppo_cfg"):
            raw = dict(self.config.learner_config_dict or {})
            self._dppo_cfg = DPPOLearnerConfig.model_validate(raw)
        return self._dppo_cfg

    @override(PPOTorchLearner)
    def configure_optimizers_for_module(self, module_id: str, config: Any = None) -> None:
        module = self._module[module_id]
        inner = module.unwrapped() if hasattr(module, "unwrapped") else module
        actor = [p for p in inner.denoiser.parameters() if p.requires_grad]
        critic = [p for p in inner.critic.parameters() if p.requires_grad]
        for name, params, lr in (("actor", actor, config.lr), ("critic", critic, self._dppo_config().critic_lr)):
            self.register_optimizer(module_id=module_id, optimizer_name=name, optimizer=torch.optim.Adam(params),
                                    params=params, lr_or_lr_schedule=lr)

    @override(PPOTorchLearner)
    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict[str, Any],
                                fwd_out: dict[str, Any]) -> torch.Tensor:
        dcfg = self._dppo_config()
        module = self.module[module_id].unwrapped()
        valid = batch[Columns.LOSS_MASK].bool() if Columns.LOSS_MASK in batch else \
            torch.ones_like(batch[Postprocessing.ADVANTAGES], dtype=torch.bool)
        policy_rows = module_policy_rows(batch, module.cfg.shielded_steps)  # the rows the module recomputed

        new_logp, old_logp = fwd_out[CHAIN_LOGP], batch[CHAIN_LOGP]  # (B, m), (B, K)
        k = old_logp.shape[1]
        steps = torch.arange(k, device=new_logp.device, dtype=new_logp.dtype)
        if FT_INDEX in fwd_out:  # a random subset of the K steps was recomputed
            index = fwd_out[FT_INDEX].to(new_logp.device)
            old_logp, steps = old_logp[:, index], steps[index]
        discount = dcfg.gamma_denoise ** (k - 1 - steps)  # (K,)
        clip_final = float(config.clip_param)
        clip_base = dcfg.clip_base if dcfg.clip_base is not None else clip_final
        frac = (torch.exp(3 * steps / max(k - 1, 1)) - 1) / math.expm1(3.0) if k > 1 else torch.ones_like(steps)
        clip = clip_base + (clip_final - clip_base) * frac  # noisiest → final

        log_ratio = new_logp - old_logp
        ratio = torch.exp(log_ratio)
        adv = batch[Postprocessing.ADVANTAGES][:, None] * discount  # (B, K)
        surrogate = torch.min(adv * ratio, adv * torch.clamp(ratio, 1 - clip, 1 + clip)).mean(-1)
        n_policy = policy_rows.sum().clamp(min=1)
        policy_loss = -(surrogate * policy_rows).sum() / n_policy

        values = module.compute_values(batch)
        vf_err = (values - batch[Postprocessing.VALUE_TARGETS]).pow(2)
        n_valid = valid.sum().clamp(min=1)
        vf_loss = (torch.clamp(vf_err, 0, config.vf_clip_param) * valid).sum() / n_valid
        total = policy_loss + config.vf_loss_coeff * vf_loss

        stats: dict[str, Any] = {}
        if dcfg.bc_coeff > 0 and dcfg.bc_demos:
            bc = self._bc_loss(module, dcfg)
            total = total + dcfg.bc_coeff * bc
            stats["bc_loss"] = bc.detach()

        with torch.no_grad():
            rows = policy_rows[:, None].expand_as(ratio)
            approx_kl = (((ratio - 1) - log_ratio)[rows]).mean() if rows.any() else torch.zeros(())
            clipped = ((ratio - 1).abs() > clip)[rows].float().mean() if rows.any() else torch.zeros(())
            stats.update({
                POLICY_LOSS_KEY: policy_loss.detach(), VF_LOSS_KEY: vf_loss.detach(),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(
                    batch[Postprocessing.VALUE_TARGETS][valid], values[valid]),
                LEARNER_RESULTS_KL_KEY: approx_kl, "clip_fraction": clipped,
                "shield_rate": (batch[SHIELDED][valid] > 0.5).float().mean(),
                "logp_old_mean": old_logp[policy_rows].mean() if policy_rows.any() else torch.zeros(()),
            })
        self.metrics.log_dict(stats, key=module_id, window=1)
        return total

    def _bc_loss(self, module: Any, dcfg: DPPOLearnerConfig) -> torch.Tensor:
        """DDPM loss of the trainable denoiser on one demonstration minibatch."""
        from diffplatoon.agents.diffusion.dataset import load_demos
        from diffplatoon.agents.diffusion.train import ddpm_loss

        if not hasattr(self, "_bc_data"):
            self._bc_data = load_demos(dcfg.bc_demos, horizon=module.horizon, val_fraction=0.0).train
            self._bc_step = 0
            self._bc_generator = torch.Generator().manual_seed(dcfg.seed)
        batch = self._bc_data.batch_at(self._bc_step, dcfg.bc_batch_size, dcfg.seed).to(module._planner.device)
        self._bc_step += 1
        return ddpm_loss(module._planner, batch, self._bc_generator)
