"""Closed-loop checkpoint selection: drive seeded episodes with the EMA weights in training and score them.

The denoising loss says little about how a planner drives, so `pretrain` (with a ``selection:`` block) runs,
every ``every`` steps, ``episodes`` episodes (indices 0, 1, …: seeded by the scenario's seed and the index,
the same episodes at every evaluation) of each of ``scenarios`` (durations cut to ``duration``) with a
``diffusion`` policy built around the planner in memory (its EMA weights, nothing written to disk), through
the evaluation's episode runner, and keeps ``best.pt`` at the highest score:

    score = speed · mean_speed / speed_scale + merge · merge_success
            − collision · collision_rate − at_fault · at_fault_rate − override · shield_override_rate

collision_rate: share of episodes in which a member collided; at_fault_rate: share with an at-fault member
collision; mean_speed: members' mean speed over the episodes [m/s]; merge_success: mean over the episodes
that have mergers (0 when none has); shield_override_rate: the share of the shield's decisions that did not
execute the first-ranked sample. Ties go to the lower validation loss.

The episode runner is passed in (``run_episode``: `diffplatoon.evaluation.episode.run_episode`, which the
``pretrain`` command hands over): the evaluation layer sits above the agents, so this module cannot import it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from diffplatoon.agents.diffusion.planner import JointDiffusionPlanner
from diffplatoon.agents.diffusion.policy import DiffusionPolicy, check_params
from diffplatoon.agents.diffusion.shield import ShieldLevel
from diffplatoon.envs.episodes import resolve_scenario

EpisodeRunner = Callable[..., Any]
"""``(spec, policy, episode) → result with a .record`` dict: the evaluation's `run_episode`."""

METRICS = ("collision_rate", "at_fault_rate", "mean_speed", "merge_success", "shield_override_rate")


class ScoreWeights(BaseModel):
    """Weights of the closed-loop score (module docstring); higher score = better."""

    model_config = ConfigDict(extra="forbid")
    collision: float = Field(10.0, ge=0, description="Per unit of collision rate (subtracted).")
    at_fault: float = Field(10.0, ge=0, description="Per unit of at-fault collision rate (subtracted).")
    speed: float = Field(1.0, ge=0, description="Per unit of mean_speed / speed_scale (added).")
    speed_scale: float = Field(30.0, gt=0, description="Speed that counts as 1 [m/s].")
    merge: float = Field(2.0, ge=0, description="Per unit of merge success (added).")
    override: float = Field(1.0, ge=0, description="Per unit of shield override rate (subtracted).")


class SelectionSection(BaseModel):
    """Closed-loop checkpoint selection during pre-training (module docstring)."""

    model_config = ConfigDict(extra="forbid")
    scenarios: list[str] = Field(default_factory=lambda: ["highway_platoon", "onramp_merge"], min_length=1,
                                 description="Catalogue names or YAML paths of the evaluation scenarios.")
    episodes: int = Field(2, ge=1, le=1000, description="Seeded episodes per scenario (indices 0..episodes-1).")
    every: int = Field(500, ge=1, description="Training steps between closed-loop evaluations (and at the end).")
    duration: float | None = Field(10.0, gt=0, description="Episode duration override [s] (None: the scenario's).")
    policy: dict[str, Any] = Field(default_factory=dict,
                                   description="diffusion policy parameters (DiffusionParams), e.g. samples: 4.")
    weights: ScoreWeights = Field(default_factory=ScoreWeights)


def closed_loop_metrics(planner: JointDiffusionPlanner, section: SelectionSection, run_episode: EpisodeRunner,
                        step: int) -> dict[str, Any]:
    """Run the section's episodes with ``planner``'s EMA weights; the five metrics, the score and the episodes."""
    threads = torch.get_num_threads()
    records = []
    try:
        for spec in scenario_specs(section):
            for episode in range(section.episodes):
                policy = DiffusionPolicy(spec, planner, version=f"step{step}", **{"threads": 0, **section.policy})
                records.append(run_episode(spec, policy, episode).record)
    finally:
        torch.set_num_threads(threads)
    out = aggregate(records)
    out["score"] = score(out, section.weights)
    out["episodes"] = len(records)
    return out


def scenario_specs(section: SelectionSection) -> list:
    """The section's scenarios with the duration override (a `ScenarioError` for a bad name or file)."""
    return [resolve_scenario(name, {"duration": section.duration} if section.duration else None)
            for name in section.scenarios]


def aggregate(records: list[dict[str, Any]]) -> dict[str, float]:
    """The selection metrics of episode records (module docstring)."""
    merges = [r["merge_success"] for r in records if r.get("merge_success") is not None]
    counts = [r.get("shield") or {} for r in records]
    decisions = sum(sum(c.values()) for c in counts)
    overridden = sum(v for c in counts for k, v in c.items() if ShieldLevel(k).overrides)
    speeds = [r["mean_speed"] for r in records if r.get("mean_speed") is not None]
    return {
        "collision_rate": float(np.mean([bool(r["collision"]) for r in records])),
        "at_fault_rate": float(np.mean([r["at_fault_collisions"] > 0 for r in records])),
        "mean_speed": float(np.mean(speeds)) if speeds else 0.0,
        "merge_success": float(np.mean(merges)) if merges else 0.0,
        "shield_override_rate": overridden / decisions if decisions else 0.0,
    }


def score(metrics: dict[str, float], w: ScoreWeights) -> float:
    """The closed-loop score of ``metrics`` (module docstring)."""
    return (w.speed * metrics["mean_speed"] / w.speed_scale + w.merge * metrics["merge_success"]
            - w.collision * metrics["collision_rate"] - w.at_fault * metrics["at_fault_rate"]
            - w.override * metrics["shield_override_rate"])


class Selector:
    """Closed-loop evaluations of one training run: when they are due, their history (kept in the checkpoint's
    training history, so a resumed run keeps it) and which one is the best so far."""

    def __init__(self, section: SelectionSection, run_episode: EpisodeRunner | None, history: list[dict]) -> None:
        if run_episode is None:
            raise ValueError("selection: closed-loop checkpoint selection needs an episode runner: pass "
                             "run_episode=diffplatoon.evaluation.episode.run_episode (the pretrain command does)")
        scenario_specs(section)  # a bad scenario or parameter fails now, not at the first evaluation
        try:
            check_params({"threads": 0, **section.policy})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"selection.policy: {exc}") from None
        self.section, self.run_episode, self.history = section, run_episode, history

    def due(self, step: int, final: bool) -> bool:
        """Whether ``step`` evaluates (every ``every`` steps and at the end)."""
        return step % self.section.every == 0 or final

    def evaluate(self, planner: JointDiffusionPlanner, step: int, val_loss: float, writer: Any) -> bool:
        """Evaluate at ``step``, log to ``writer`` (TensorBoard) and the history; whether it is the new best."""
        entry = {"step": step, **closed_loop_metrics(planner, self.section, self.run_episode, step),
                 "val_loss": val_loss}
        for key in (*METRICS, "score"):
            writer.add_scalar(f"closed_loop/{key}", entry[key], step)
        best = self.best()
        self.history.append(entry)
        return best is None or _rank(entry) > _rank(best)

    def best(self) -> dict | None:
        """The best evaluation so far (highest score, then lowest validation loss)."""
        return max(self.history, key=_rank, default=None)


def _rank(entry: dict) -> tuple[float, float]:
    val = entry.get("val_loss")
    return entry["score"], -(val if val is not None and np.isfinite(val) else np.inf)
