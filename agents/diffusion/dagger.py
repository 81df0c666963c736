"""Closed-loop data aggregation (DAgger): the planner drives, the expert labels the states it visits.

`rollout_episode` drives one episode with the planner (``diffusion:<checkpoint>``) mixed with the expert:
at every policy step the expert's action is executed with probability ``beta`` (a seeded draw), the
planner's otherwise. Both policies see every observation, so the expert's own state (a CACC's filter,
its lane-change progress) follows the trajectory actually driven. The planner's plan summaries are not
broadcast (its input zeroes the messages' plan fields, and the demonstrations' messages carry none).
Every ``label_every`` steps the episode is forked (`Simulation.snapshot`, the Observer's too, and a copy
of the expert): the expert drives H steps from the visited state, its actions and the members' states
become the future of each platoon's scene there, and the snapshot is restored. ``perturbations`` more
forks per labelled state first offset the members (perturb.py: lateral, heading, speed; bounded, seeded)
and label the expert's recovering future from there. With ``beta`` = 1 and ``label_every`` = 1 the shard
equals `demos.collect_episode`'s.

The shards have the demonstrations' format (demos.py's table, built by the same `scene_future` /
`pack_scenes`, written through shards.py), plus ``perturbed`` (S,) bool, which the dataset ignores: a
round written into the demonstrations' folder (or a copy of it) is aggregated with them, and
`diffplatoon pretrain` on that folder retrains on both. `aggregate` runs one Ray task per (scenario,
episode) through `shards.run_jobs` into ``<out>/shards/<scenario>__<episode>__dagger<round>.npz``
(resumable: a rerun skips listed shards); the manifest records each round's planner, beta and labelling
under ``dagger``. Iterate: retrain, then aggregate round r + 1 with the new checkpoint and a lower beta
(e.g. 0.5 ** r).

    diffplatoon demos aggregate --planner runs/pretrain/best.pt --scenarios onramp_merge --beta 0.5 \\
        --round 0 --out runs/demos
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.demos import (DemoSummary, Scene, check_expert, demo_episodes, pack_scenes,
                                                platoon_rows, print_summary, resolve_scenarios, scene_future,
                                                summarise)
from diffplatoon.agents.diffusion.perturb import PerturbBounds, perturb_members
from diffplatoon.agents.diffusion.policy import file_hash
from diffplatoon.agents.diffusion.shards import open_folder, run_jobs, shard_result, write_manifest
from diffplatoon.agents.policy import Policy, SimInfo, make_policy
from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT, check_timeout, remote
from diffplatoon.scenarios import ScenarioSpec
from diffplatoon.sim import snapshot
from diffplatoon.sim.observation import Observation, Observer
from diffplatoon.sim.simulation import Simulation


@dataclass(frozen=True)
class DaggerSettings:
    """One aggregation round.

    Attributes:
        planner: the ``diffusion:<checkpoint>[,key=value…]`` policy string (None only with beta = 1).
        expert: the expert policy string that labels.
        beta: probability that a step executes the expert's action.
        round: the DAgger iteration (seeds the mixing and perturbation draws; names the shards).
        horizon, m_max: the stored futures' length and neighbours per scene (the demos folder's).
        label_every: policy steps between labelled states.
        perturbations: perturbed forks per labelled state (0: none).
        bounds: the perturbations' largest offsets.
        seed: root of the mixing and perturbation draws (with the episode and round).
    """

    planner: str | None
    expert: str = "cacc"
    beta: float = 0.5
    round: int = 0
    horizon: int = 20
    m_max: int = 16
    label_every: int = 5
    perturbations: int = 0
    bounds: PerturbBounds = field(default_factory=PerturbBounds)
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {self.beta}")
        if self.planner is None and self.beta < 1.0:
            raise ValueError("a planner is needed unless beta = 1")
        if self.horizon < 1 or self.label_every < 1 or self.perturbations < 0 or self.round < 0:
            raise ValueError(f"need horizon >= 1, label_every >= 1, perturbations >= 0 and round >= 0, got "
                             f"{self.horizon}, {self.label_every}, {self.perturbations}, {self.round}")


@dataclass
class DaggerEpisode:
    """One rolled-out episode: the shard arrays, the executed actions (T, M, 2), which steps the expert drove
    (T,) and how many perturbations were refused (a member overlapping a vehicle)."""

    arrays: dict[str, np.ndarray]
    executed: np.ndarray
    by_expert: np.ndarray
    refused: int


def clone_policy(policy: Policy) -> Policy:
    """An independent copy of a policy's episode state (its scenario and episode info shared, not copied)."""
    memo = {id(v): v for v in vars(policy).values() if isinstance(v, (ScenarioSpec, SimInfo))}
    return copy.deepcopy(policy, memo)


class _Labeller:
    """Forks a running episode and records the expert's future from the visited state (module docstring)."""

    def __init__(self, sim: Simulation, observer: Observer, settings: DaggerSettings, episode: int) -> None:
        spec = sim.spec
        self.sim, self.observer, self.s = sim, observer, settings
        self.platoons = platoon_rows(spec)
        self.lengths = features.member_lengths(spec)
        self.n_max = max(p.size for p in spec.platoons)
        self.rng = np.random.default_rng([settings.seed, episode, settings.round, 1])
        self.scenes: list[Scene] = []
        self.futures: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.perturbed: list[bool] = []
        self.refused = 0

    def label(self, obs: Observation, expert: Policy) -> None:
        """Label the current state, then its perturbed copies."""
        self._fork(obs, expert, perturb=False)
        for _ in range(self.s.perturbations):
            self._fork(obs, expert, perturb=True)

    def _fork(self, obs: Observation, expert: Policy, perturb: bool) -> None:
        sim, observer = self.sim, self.observer
        state, obs_state = sim.snapshot(), snapshot.take(observer)
        try:
            if perturb:
                if not perturb_members(sim, self.rng, self.s.bounds):
                    self.refused += 1
                    return
                obs = observer.observe()
            self._record(sim.step_count, obs, clone_policy(expert), perturb)
        finally:
            sim.restore(state)
            snapshot.restore(observer, obs_state)

    def _record(self, t: int, start: Observation, expert: Policy, perturbed: bool) -> None:
        sim, m = self.sim, len(self.sim.controlled)
        actions, poses, speeds, alive = [], [], [], []
        obs = start
        while len(actions) < self.s.horizon and not sim.done and obs.alive.any():
            act = np.asarray(expert.act(obs), dtype=np.float64)
            actions.append(act.copy())
            sim.step(act)
            obs = self.observer.observe()
            poses.append(obs.pose.astype(np.float64))
            speeds.append(obs.ego[:, 0].astype(np.float64))
            alive.append(obs.alive.copy())
        h = len(actions)
        acts = np.stack(actions) if h else np.zeros((0, m, 2))
        pose = np.stack(poses) if h else np.zeros((0, m, 3))
        speed, live = (np.stack(speeds), np.stack(alive)) if h else (np.zeros((0, m)), np.zeros((0, m), bool))
        for k, rows in enumerate(self.platoons):
            if start.alive[rows].any():
                scene = features.platoon_inputs(start, rows, self.n_max, self.s.m_max, length=self.lengths[rows])
                self.scenes.append((t, k, scene))
                self.futures.append(scene_future(scene, rows, acts, pose, speed, live, self.s.horizon))
                self.perturbed.append(perturbed)

    def arrays(self) -> dict[str, np.ndarray]:
        """The shard arrays of every labelled scene so far, with ``perturbed`` (S,)."""
        out = pack_scenes(self.scenes, self.futures, self.n_max, self.s.horizon)
        out["perturbed"] = np.array(self.perturbed, dtype=bool)
        return out


def rollout_episode(spec: ScenarioSpec, episode: int, settings: DaggerSettings) -> DaggerEpisode:
    """Drive episode ``episode`` of ``spec`` with the planner/expert mixture and label it (module docstring)."""
    s = settings
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    info = SimInfo.from_spec(spec, episode)
    expert = make_policy(s.expert, spec)
    expert.reset(info)
    planner = make_policy(s.planner, spec) if s.beta < 1.0 else None
    if planner is not None:
        planner.reset(info)
    mix = np.random.default_rng([s.seed, episode, s.round, 0])
    labeller = _Labeller(sim, observer, s, episode)
    executed, by_expert = [], []
    obs = observer.observe()
    while not sim.done and obs.alive.any():
        if sim.step_count % s.label_every == 0:
            labeller.label(obs, expert)
        act = np.asarray(expert.act(obs), dtype=np.float64)
        use_expert = True
        if planner is not None:
            planned = np.asarray(planner.act(obs), dtype=np.float64)
            use_expert = bool(mix.random() < s.beta)
            act = act if use_expert else planned
        executed.append(act.copy())
        by_expert.append(use_expert)
        sim.step(act)
        obs = observer.observe()
    m = len(sim.controlled)
    return DaggerEpisode(labeller.arrays(), np.stack(executed) if executed else np.zeros((0, m, 2)),
                         np.array(by_expert, dtype=bool), labeller.refused)


def run_dagger_job(spec: ScenarioSpec, episode: int, settings: DaggerSettings) -> dict[str, Any]:
    """The Ray task: one episode → {"data": npz bytes, shard facts} or {"error": …}."""
    import torch

    torch.set_num_threads(1)  # one worker per core (ARCHITECTURE §7)
    start = time.perf_counter()
    try:
        ep = rollout_episode(spec, episode, settings)
    except Exception as exc:  # noqa: BLE001 - a deterministic episode error is reported, not retried
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    out = shard_result(ep.arrays, start)
    out.update(expert_steps=int(ep.by_expert.sum()), driven_steps=int(len(ep.by_expert)), refused=ep.refused)
    return out


def dagger_shard_name(scenario: str, episode: int, round_: int) -> str:
    """File name of one round's shard of an episode."""
    return f"{scenario}__{episode}__dagger{round_}.npz"


def check_planner(planner: str, specs: list[ScenarioSpec]) -> None:
    """Build the planner policy for every scenario (a `CheckpointError` or `ValueError` naming what is wrong)."""
    for spec in specs:
        make_policy(planner, spec)


def aggregate(scenarios: list[str | ScenarioSpec], settings: DaggerSettings, out: str | os.PathLike[str], *,
              episodes: int = 10, seed_offset: int = 0, ray_address: str | None = None,
              num_workers: int | None = None, progress: bool = True,
              timeout: float | None = DEFAULT_JOB_TIMEOUT) -> DemoSummary:
    """Roll out and label ``episodes`` episodes per scenario into the demo folder ``out`` (module docstring).

    The episodes are `demo_episodes(settings.seed, episodes, seed_offset)`, the ones `demos collect` with the
    same seed drives: the planner starts where the demonstrations started. The expert, the planner and the
    folder's settings are checked before Ray starts; a round already in the folder with other settings is
    refused (`ValueError`). Resumable like `collect_demos`."""
    s = settings
    if episodes < 0:
        raise ValueError(f"need episodes >= 0, got {episodes}")
    check_timeout(timeout)
    specs = resolve_scenarios(scenarios)
    check_expert(s.expert, specs)
    if s.planner is not None:
        check_planner(s.planner, specs)
    out = Path(out)
    manifest = open_folder(out, specs, {"expert": s.expert, "horizon": s.horizon, "seed": s.seed, "m_max": s.m_max},
                           seed_offset)
    checkpoint = None if s.planner is None else s.planner.removeprefix("diffusion:").split(",")[0]
    record = {"planner": s.planner, "planner_hash": None if checkpoint is None else file_hash(checkpoint),
              "beta": s.beta, "label_every": s.label_every, "perturbations": s.perturbations,
              "bounds": dataclasses.asdict(s.bounds)}
    rounds = manifest.setdefault("dagger", {})
    if rounds.get(str(s.round), record) != record:
        raise ValueError(f"{out} holds DAgger round {s.round} collected with other settings "
                         f"{rounds[str(s.round)]}; use another --round or folder")
    rounds[str(s.round)] = record
    listed = {(e["scenario"], e["episode"]) for e in manifest["shards"]
              if e.get("kind") == "dagger" and e.get("round") == s.round}
    jobs = [(spec, ep) for spec in specs for ep in demo_episodes(s.seed, episodes, seed_offset)]
    todo = [(spec, ep) for spec, ep in jobs if (spec.name, ep) not in listed]
    write_manifest(out, manifest)

    start = time.perf_counter()
    task = remote(run_dagger_job).options(max_retries=2)
    completed, failures = run_jobs(
        todo, lambda ref, job: task.remote(ref, job[1], s),
        lambda job: (dagger_shard_name(job[0].name, job[1], s.round),
                     {"scenario": job[0].name, "episode": job[1], "kind": "dagger", "round": s.round}),
        out, manifest, f"dagger round {s.round}", ray_address=ray_address, num_workers=num_workers,
        timeout=timeout, progress=progress)
    summary = summarise(out, manifest, len(jobs), completed, len(jobs) - len(todo), failures,
                        time.perf_counter() - start)
    if progress:
        from rich.console import Console

        print_summary(summary, Console())
    return summary
