"""`DPPOLearner`: PPO over (env step, denoising step) pairs for `DiffusionPlannerModule`, plus value and BC losses.

Per train-batch row (one platoon at one env step) the module recomputes the log-probabilities of its
K stored fine-tuned denoising steps (`_forward_train`). With the env step's advantage A (RLlib's GAE,
standardised per module, then by default again over the minibatch rows that enter the policy loss:
`adv_norm`) the policy loss is DPPO's

    r_k = exp(logp_k − logp_k^old),   A_k = A · γ_d^(K−1−k)   (k = 0 noisiest … K−1 final step)
    L_pi = −mean_{rows, k} min(r_k A_k, clip(r_k, 1 ± ε_k) A_k)

over all K steps (or the random subset the module recomputed, its `update_steps`), with ε_k
interpolated exponentially from `clip_base` (noisiest step) to the PPO `clip` (final step).
Rows of RLlib's artificial bootstrap step (``loss_mask``) and, with the module's `shielded_steps`
"drop", rows where the safety shield replaced the sampled plan (``shielded``; see the module's
docstring) are left out of L_pi; the value loss (clipped squared error, `vf_clip`) uses every real row.
Optional on-manifold regulariser: the DDPM loss of the trainable denoiser on demonstration scenes
(`bc_demos`, weight `bc_coeff`; off when either is unset).

Why `adv_norm: policy_rows`: RLlib standardises A over every row, shield overrides included, and the
loss then drops those rows, so the kept rows' advantages do not average 0 (on onramp_merge with the
DAgger planner −0.04 on average, ±0.1 per minibatch). A constant c in A adds c · Σ ∇log p to the
gradient: zero-mean noise for samples of the chain, and over the plans the shield accepted (a selected
sample) a push towards (c > 0) or away from them. Standardising over each minibatch's kept rows
removes both; it does not add signal.

Measured on onramp_merge with the DAgger planner (10 iterations of 1000 decisions): per step the clip
fraction was 0.55-0.68 and |r − 1| 0.02-0.04 against ε 0.01-0.02, so every iteration reaches the trust
region's edge; `pg_agreement` was 0.03 ± 0.02 (0 within noise, also at 4000 decisions per iteration,
exploration std 0.3 or GAE λ 0.5), so that step points in a random direction: the weights moved as a
random walk (|Δθ| 0.72 after 5 iterations, 1.00 after 10) and the return did not move.

Optimisers: one Adam for the denoiser (the PPO `lr`), one for the critic (`critic_lr`); frozen
parameters (the pre-trained copy that runs the early denoising steps) are in neither.

Diagnostics in the learner results (RLlib's result dict, ``learners/<module>``), per fine-tuned step
k: `adv_mean_k{k}`, `adv_abs_k{k}`, `adv_std_k{k}` (the advantages the loss used), `clip_fraction_k{k}`,
`approx_kl_k{k}`, `ratio_dev_k{k}` (mean |r − 1|), `actor_grad_norm_k{k}` (the denoiser's gradient
norm before RLlib's clipping, for minibatches that recomputed step k alone); and `policy_row_share`
(real rows in the policy loss; the rest were overridden by the shield), `actor_grad_norm`,
`logp_at_bound` (log-probabilities at the clamp, where they have no gradient), `chain_action_match`
(share of kept rows whose stored action is their chain's final plan; 1: chains and actions align), optionally
`pg_agreement_k{k}` (see `pg_agreement`). Means over the iteration's minibatches.

learner_config_dict keys: `DPPOLearnerConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_KL_KEY, LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.annotations import override
from ray.rllib.utils.torch_utils import explained_variance

from diffplatoon.agents.diffusion.controller import clip_actions
from diffplatoon.agents.rllib.dppo_batch import (CHAIN, CHAIN_LOGP, FT_INDEX, INPUT_KEYS, LOGP_RANGE, SHIELDED,
                                                 SHIFT, policy_rows as module_policy_rows)


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
    adv_norm: Literal["policy_rows", "batch"] = Field(
        "policy_rows", description="'policy_rows': standardise the advantages over the minibatch rows that enter "
        "the policy loss (mean 0 there); 'batch': RLlib's standardisation over every row, shield overrides "
        "included, whose rows the loss drops, so the kept rows' mean advantage is not 0 (module docstring).")
    pg_agreement: bool = Field(False, description="Log `pg_agreement_k{k}` each iteration: the cosine between the "
                               "policy gradients of step k on two disjoint halves of the first minibatch (about 0: "
                               "the gradient is noise; costs about K extra minibatch passes).")


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(len,) each tensor's 2-norm in one fused call (the same values as a norm per tensor)."""
    return torch.stack(torch._foreach_norm(tensors))


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
        row_adv = batch[Postprocessing.ADVANTAGES]
        if dcfg.adv_norm == "policy_rows":
            row_adv = standardise(row_adv, policy_rows)
        adv = row_adv[:, None] * discount  # (B, K)
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
            diagnostics = step_diagnostics(adv, ratio, log_ratio, clip, steps, policy_rows, valid)
            diagnostics["logp_at_bound"] = _at_bound(new_logp[policy_rows]) if policy_rows.any() else torch.zeros(())
            if Columns.ACTIONS in batch and policy_rows.any():
                diagnostics["chain_action_match"] = chain_action_match(module, batch, policy_rows)
        if dcfg.pg_agreement and policy_rows.sum() >= 4 and bool((log_ratio[policy_rows].abs() < 1e-5).all()):
            # ratio 1 everywhere: the iteration's first minibatch, still at the sampling weights
            diagnostics.update(pg_agreement(module, batch, row_adv.detach(), policy_rows,
                                            lambda j: dcfg.gamma_denoise ** (k - 1 - j),
                                            seed=dcfg.seed + int(self._weights_seq_no)))
        self.metrics.log_dict(stats, key=module_id, window=1)
        # Per-step diagnostics: means over the iteration's minibatches (a step absent from a minibatch, with
        # `update_steps` < K, contributes nothing to it).
        self.metrics.log_dict(diagnostics, key=module_id, reduce="mean", clear_on_reduce=True)
        self._diag_steps = [int(s) for s in steps.tolist()]
        return total

    @override(PPOTorchLearner)
    def postprocess_gradients_for_module(self, *, module_id: str, config: Any = None,
                                         module_gradients_dict: dict[Any, torch.Tensor]) -> dict[Any, torch.Tensor]:
        """Logs the actor's gradient norm before RLlib's clipping: overall and per recomputed denoising step
        (`actor_grad_norm_k{k}` when the minibatch recomputed step k alone, the `update_steps: 1` case)."""
        for name, optimizer in self.get_optimizers_for_module(module_id):
            if not name.endswith("actor"):
                continue
            grads = self.filter_param_dict_for_optimizer(module_gradients_dict, optimizer)
            present = [g.detach() for g in grads.values() if g is not None]
            norm = torch.linalg.vector_norm(_norms(present)) if present else torch.zeros(())
            values = {"actor_grad_norm": norm}
            steps = getattr(self, "_diag_steps", [])
            if len(steps) == 1:
                values[f"actor_grad_norm_k{steps[0]}"] = norm
            self.metrics.log_dict(values, key=module_id, reduce="mean", clear_on_reduce=True)
        return super().postprocess_gradients_for_module(module_id=module_id, config=config,
                                                        module_gradients_dict=module_gradients_dict)

    @override(PPOTorchLearner)
    def apply_gradients(self, gradients_dict: dict[Any, torch.Tensor]) -> None:
        """RLlib's `apply_gradients`, with one fused finiteness check of all gradients in place of its two
        per-tensor passes (about 100 small checks per minibatch, 13 ms of each 0.18 s update on 2 CPU cores):
        when every gradient is finite (their norms are; a NaN or inf makes a norm non-finite) the gradients
        are set and every optimiser steps, as RLlib does then; otherwise, or with learning-rate schedulers
        or gradient scalers, RLlib's own path runs (it zeroes or skips the non-finite gradients)."""
        grads = list(gradients_dict.values())
        fused = (self._lr_scheduler_classes is None and self._grad_scalers is None and all(g is not None for g in grads)
                 and (not grads or bool(torch.isfinite(_norms(grads)).all())))
        if not fused:
            super().apply_gradients(gradients_dict)
            return
        for pid, grad in gradients_dict.items():
            self._params[pid].grad = grad
        for module_id, optimizer_names in self._module_optimizers.items():
            for optimizer_name in optimizer_names:
                self.get_optimizer(module_id, optimizer_name).step()

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


def standardise(adv: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``adv`` shifted and scaled to mean 0, std 1 over ``rows`` (other rows: shifted and scaled alike)."""
    if rows.sum() < 2:
        return adv - adv[rows].mean() if rows.any() else adv
    kept = adv[rows]
    return (adv - kept.mean()) / kept.std().clamp(min=1e-6)


def _at_bound(logp: torch.Tensor) -> torch.Tensor:
    """Share of log-probabilities at the clamp bounds of the module's `LOGP_RANGE` (there the gradient is 0)."""
    lo, hi = LOGP_RANGE
    return ((logp <= lo + 1e-6) | (logp >= hi - 1e-6)).float().mean()


def step_diagnostics(adv: torch.Tensor, ratio: torch.Tensor, log_ratio: torch.Tensor, clip: torch.Tensor,
                     steps: torch.Tensor, policy_rows: torch.Tensor, valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per fine-tuned denoising step k (0 = noisiest) over the policy rows: mean advantage (`adv_mean_k{k}`; not 0
    when the dropped rows were better or worse than the rest), mean |advantage| (`adv_abs_k{k}`),
    advantage std (`adv_std_k{k}`), clip fraction (`clip_fraction_k{k}`), approximate KL (`approx_kl_k{k}`) and
    mean |ratio − 1| (`ratio_dev_k{k}`); plus the share of real rows in the policy loss (`policy_row_share`;
    the rest were overridden by the shield and dropped). Columns of ``adv``/``ratio`` are ``steps``."""
    out: dict[str, torch.Tensor] = {"policy_row_share": policy_rows[valid].float().mean() if valid.any()
                                    else torch.zeros(())}
    if not policy_rows.any():
        return out
    a, r, lr = adv[policy_rows], ratio[policy_rows], log_ratio[policy_rows]
    for j, step in enumerate(steps.tolist()):
        k = int(step)
        out[f"adv_mean_k{k}"] = a[:, j].mean()
        out[f"adv_abs_k{k}"] = a[:, j].abs().mean()
        out[f"adv_std_k{k}"] = a[:, j].std() if len(a) > 1 else torch.zeros(())
        out[f"clip_fraction_k{k}"] = ((r[:, j] - 1).abs() > clip[j]).float().mean()
        out[f"approx_kl_k{k}"] = ((r[:, j] - 1) - lr[:, j]).mean()
        out[f"ratio_dev_k{k}"] = (r[:, j] - 1).abs().mean()
    return out


def chain_action_match(module: Any, batch: dict[str, Any], rows: torch.Tensor) -> torch.Tensor:
    """Share of ``rows`` whose stored env action is the stored chain's final plan (its first act_steps steps,
    clipped as the module executes them): 1 unless the chain columns and the actions are misaligned."""
    t = module.cfg.act_steps
    index = rows.nonzero()[:, 0]
    mm = batch[INPUT_KEYS["member_mask"]].index_select(0, index) > 0.5  # (R, N)
    plan = module._planner.decode_actions(batch[CHAIN].index_select(0, index)[:, -1].float())  # (R, N, H, 2)
    plan = torch.where(mm[..., None, None], plan, 0.0)[:, :, :t].transpose(1, 2).double().cpu().numpy()
    speed = batch[INPUT_KEYS["ego_state"]].index_select(0, index)[..., 3].double().cpu().numpy()
    executed = clip_actions(plan, speed, module._limits, module._planner.config.dt)
    executed = np.where(mm.cpu().numpy()[:, None, :, None], executed, 0.0)
    stored = batch[Columns.ACTIONS].index_select(0, index).detach().cpu().numpy()
    return torch.tensor(float((np.abs(module.to_env(executed) - stored).max(axis=1) < 1e-3).mean()))


def pg_agreement(module: Any, batch: dict[str, Any], adv: torch.Tensor, policy_rows: torch.Tensor,
                 discount: Callable[[int], float], seed: int = 0) -> dict[str, torch.Tensor]:
    """`pg_agreement_k{k}`: cosine between the actor's policy gradients (at ratio 1: mean of A·∇log p_k, with
    ``adv`` (B,) the rows' advantages and ``discount(k)`` the step's factor) on two random disjoint halves of the
    policy rows, per fine-tuned step k. With independent halves its expectation is |g|² / (|g|² + noise²) of the
    half-batch estimate: about 0 when the gradient is noise, 1 when it is signal."""
    index = policy_rows.nonzero()[:, 0]
    perm = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))]
    halves = (perm[: len(perm) // 2], perm[len(perm) // 2: 2 * (len(perm) // 2)])
    params = [p for p in module.denoiser.parameters() if p.requires_grad]
    out: dict[str, torch.Tensor] = {}
    for k in range(module.cfg.ft_steps):
        grads = []
        for half in halves:
            inp = {name: batch[key].index_select(0, half) for name, key in INPUT_KEYS.items()}
            logp = module.chain_logp(inp, batch[CHAIN].index_select(0, half), batch[SHIFT].index_select(0, half),
                                     [k])[:, 0]
            surrogate = (adv.index_select(0, half) * discount(k) * logp).mean()
            g = torch.autograd.grad(surrogate, params, allow_unused=True)
            grads.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten()
                                    for x, p in zip(g, params)]))
        out[f"pg_agreement_k{k}"] = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0).detach()
    return out
