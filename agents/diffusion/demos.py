"""Expert demonstrations for the joint planner: rollouts over Ray tasks, stored as sharded ``.npz`` with a manifest.

`collect_demos` checks the scenarios and builds the expert before Ray starts, then runs one Ray task
per (scenario, episode) job through `diffplatoon.cluster.run_bounded` (at most one task per worker, each
with a wall-clock limit; an episode past it is cancelled and counted as failed). The task rolls the
expert out (`collect_episode`) and returns one compressed shard; the driver writes it atomically to
``<out>/shards/<scenario>__<episode>.npz`` and rewrites ``<out>/manifest.json`` atomically after every
shard (shards.py), so a killed run loses only the jobs in flight. A rerun skips every job whose expert
shard is listed in the manifest and present on disk (closed-loop shards, dagger.py, may share the folder).

Episode indices are drawn from a seeded permutation of [0, 10⁶) shifted by 10⁶ (`demo_episodes`), so
they never coincide with an evaluation run's episodes 0, 1, …; ``seed_offset`` skips that many draws.

One *scene* = one platoon at one policy step. Per scene a shard holds every `PlatoonInputs` field (padded
to the scenario's largest platoon, ``n_max``) and the future of that step, in the platoon frame of the
step itself:

| key | shape | content |
|---|---|---|
| actions | (S, n_max, H, 2) | [acceleration, steering] the expert output at steps t … t+H−1 |
| states | (S, n_max, H, 4) | [x, y, heading, speed] observed after each of those steps |
| future_mask | (S, n_max, H) bool | the member was alive at t and stayed alive through that step, inside the episode |
| step, platoon | (S,) | policy step t and platoon index |

Zeros where ``future_mask`` is False.
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from diffplatoon.cluster import DEFAULT_JOB_TIMEOUT, JobSummary, check_timeout, remote
from diffplatoon.agents.diffusion import features
from diffplatoon.agents.diffusion.shards import (SHARDS, open_folder, read_manifest, run_jobs, shard_result,
                                                 write_manifest)

__all__ = ["FUTURE_KEYS", "SCENE_KEYS", "SHARDS", "check_expert", "collect_demos", "collect_episode", "demo_episodes",
           "pack_scenes", "platoon_rows", "read_manifest", "resolve_scenarios", "scene_future", "shard_name"]
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios import ScenarioSpec, expand_sweep, load_scenario
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

EPISODE_BASE = 1_000_000  # demo episode indices start here (evaluation runs use 0, 1, …)
_POOL = 1_000_000
SCENE_KEYS = ("obs", "inbox", "inbox_mask", "comm_mask", "member_mask", "ego_state", "length", "frame",
              "neighbours", "neighbour_mask")
FUTURE_KEYS = ("actions", "states", "future_mask")


@dataclass
class DemoSummary(JobSummary):
    """What one `collect_demos` call did, and the totals of the folder."""

    shards: int = 0
    scenes: int = 0
    steps: int = 0
    full_horizon_scenes: int = 0
    per_scenario: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def demo_episodes(seed: int, episodes: int, seed_offset: int = 0) -> list[int]:
    """The episode indices of a collection: a seeded permutation, prefix-stable in ``episodes``."""
    if episodes + seed_offset > _POOL:
        raise ValueError(f"at most {_POOL} demo episodes per seed")
    perm = np.random.default_rng(seed).permutation(_POOL)
    return [EPISODE_BASE + int(e) for e in perm[seed_offset: seed_offset + episodes]]


def shard_name(scenario: str, episode: int) -> str:
    """File name of one job's shard."""
    return f"{scenario}__{episode}.npz"


# ------------------------------------------------------------------------------------------------
# One episode
# ------------------------------------------------------------------------------------------------


def platoon_rows(spec: ScenarioSpec) -> list[np.ndarray]:
    """Comm ids (observation rows) of each platoon's members, in platoon order."""
    rows, offset = [], 0
    for p in spec.platoons:
        rows.append(np.arange(offset, offset + p.size))
        offset += p.size
    return rows


def scene_future(scene: features.PlatoonInputs, rows: np.ndarray, actions: np.ndarray, poses: np.ndarray,
                 speeds: np.ndarray, alive: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stored future of one scene (module table, without the leading S): (n_max, horizon, 2) actions,
    (n_max, horizon, 4) states, (n_max, horizon) mask.

    ``actions`` (h, M, 2) are the actions executed from the scene's step on (h ≤ horizon); ``poses`` (h, M, 3),
    ``speeds`` (h, M) and ``alive`` (h, M) are observed after each of them."""
    n_max, n, h = len(scene.member_mask), len(rows), len(actions)
    fut_a = np.zeros((n_max, horizon, 2), np.float32)
    fut_s = np.zeros((n_max, horizon, 4), np.float32)
    fut_m = np.zeros((n_max, horizon), bool)
    ok = scene.member_mask[:n][:, None] & np.logical_and.accumulate(alive[:, rows].T, axis=1)
    x, y, hd = features.to_frame(poses[:, rows, 0], poses[:, rows, 1], poses[:, rows, 2], scene.frame)  # (h, n)
    st = np.stack([x, y, hd, speeds[:, rows]], axis=-1).transpose(1, 0, 2)  # (n, h, 4)
    fut_m[:n, :h] = ok
    fut_s[:n, :h] = np.where(ok[..., None], st, 0.0)
    fut_a[:n, :h] = np.where(ok[..., None], actions[:, rows].transpose(1, 0, 2), 0.0)
    return fut_a, fut_s, fut_m


Scene = tuple[int, int, features.PlatoonInputs]
"""(policy step, platoon index, the platoon's inputs at that step)."""


def pack_scenes(scenes: list[Scene], futures: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_max: int,
                horizon: int) -> dict[str, np.ndarray]:
    """The shard arrays (module table) of scenes and their `scene_future`s."""
    s = len(scenes)
    out: dict[str, np.ndarray] = {
        key: np.stack([getattr(sc, key) for _, _, sc in scenes]) if s else np.zeros((0,))
        for key in SCENE_KEYS
    }
    fut_a = np.zeros((s, n_max, horizon, 2), np.float32)
    fut_s = np.zeros((s, n_max, horizon, 4), np.float32)
    fut_m = np.zeros((s, n_max, horizon), bool)
    for i, (a, st, m) in enumerate(futures):
        fut_a[i], fut_s[i], fut_m[i] = a, st, m
    out.update(actions=fut_a, states=fut_s, future_mask=fut_m,
               step=np.array([t for t, _, _ in scenes], np.int32),
               platoon=np.array([k for _, k, _ in scenes], np.int32))
    return out


def collect_episode(spec: ScenarioSpec, expert: str, episode: int, horizon: int = 20,
                    m_max: int = 16) -> dict[str, np.ndarray]:
    """Roll `expert` out on episode `episode` of `spec`; return the shard arrays (module table)."""
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    policy = make_policy(expert, spec)
    policy.reset(SimInfo.from_spec(spec, episode))
    lengths = features.member_lengths(spec)
    platoons = platoon_rows(spec)
    n_max = max(p.size for p in spec.platoons)

    scenes: list[Scene] = []
    actions, poses, speeds, alive = [], [], [], []
    obs = observer.observe()
    while True:
        poses.append(obs.pose.astype(np.float64))
        speeds.append(obs.ego[:, 0].astype(np.float64))
        alive.append(obs.alive.copy())
        if sim.done or not obs.alive.any():
            break
        t = sim.step_count
        for k, rows in enumerate(platoons):
            if obs.alive[rows].any():
                scenes.append((t, k, features.platoon_inputs(obs, rows, n_max, m_max, length=lengths[rows])))
        act = np.asarray(policy.act(obs), dtype=np.float64)
        actions.append(act.copy())
        sim.step(act)
        obs = observer.observe()

    n_steps = len(actions)  # observations 0 … n_steps exist
    act_all = np.stack(actions) if actions else np.zeros((0, len(sim.controlled), 2))
    pose_all, speed_all, alive_all = np.stack(poses), np.stack(speeds), np.stack(alive)
    futures = []
    for t, k, sc in scenes:
        end = min(t + horizon, n_steps)  # actions t … end−1; states after them: t+1 … end
        futures.append(scene_future(sc, platoons[k], act_all[t:end], pose_all[t + 1:end + 1], speed_all[t + 1:end + 1],
                                    alive_all[t + 1:end + 1], horizon))
    return pack_scenes(scenes, futures, n_max, horizon)


def run_demo_job(spec: ScenarioSpec, expert: str, episode: int, horizon: int, m_max: int) -> dict[str, Any]:
    """The Ray task: one episode → {"data": npz bytes, shard facts} or {"error": …}."""
    import torch

    torch.set_num_threads(1)  # one worker per core (ARCHITECTURE §7)
    start = time.perf_counter()
    try:
        arrays = collect_episode(spec, expert, episode, horizon, m_max)
    except Exception as exc:  # noqa: BLE001 - a deterministic episode error is reported, not retried
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    return shard_result(arrays, start)


# ------------------------------------------------------------------------------------------------
# Collection
# ------------------------------------------------------------------------------------------------


def resolve_scenarios(scenarios: list[str | ScenarioSpec]) -> list[ScenarioSpec]:
    """Load names or files and expand their sweeps; a `ValueError` when two variants share a name."""
    specs: list[ScenarioSpec] = []
    for item in scenarios:
        spec = item if isinstance(item, ScenarioSpec) else load_scenario(item)
        specs.extend(expand_sweep(spec)[0])
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"scenario names must be unique, got {names}")
    return specs


def check_expert(expert: str, specs: list[ScenarioSpec]) -> None:
    """Build the expert once for every scenario; a `ValueError` naming the expert and scenario if one fails."""
    for spec in specs:
        try:
            make_policy(expert, spec)
        except Exception as exc:  # noqa: BLE001 - any build error is the user's expert string
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"expert {expert!r} cannot be built for scenario {spec.name!r}: {text}") from None


def collect_demos(scenarios: list[str | ScenarioSpec], expert: str = "cacc", episodes: int = 10,
                  out: str | os.PathLike[str] = "runs/demos", *, horizon: int = 20,
                  ray_address: str | None = None, num_workers: int | None = None, seed_offset: int = 0,
                  seed: int = 0, m_max: int = 16, progress: bool = True,
                  timeout: float | None = DEFAULT_JOB_TIMEOUT) -> DemoSummary:
    """Collect `episodes` expert episodes per scenario into ``out`` (module docstring); resumable.

    The scenarios and the expert are checked before Ray starts (`ScenarioError`; `ValueError` naming the
    expert). ``timeout`` is each episode's wall-clock limit [s] (None: none); an episode past it, or one
    that raises, is a failure in the summary (``failed``), and a rerun tries it again."""
    if episodes < 0 or horizon < 1:
        raise ValueError(f"need episodes >= 0 and horizon >= 1, got {episodes}, {horizon}")
    check_timeout(timeout)
    specs = resolve_scenarios(scenarios)
    check_expert(expert, specs)
    out = Path(out)
    manifest = open_folder(out, specs, {"expert": expert, "horizon": horizon, "seed": seed, "m_max": m_max},
                           seed_offset)
    # a demo job is done when its expert shard is listed (other kinds of shards may share the folder)
    listed = {(s["scenario"], s["episode"]) for s in manifest["shards"] if s.get("kind", "expert") == "expert"}
    eps = demo_episodes(seed, episodes, seed_offset)
    jobs = [(spec, ep) for spec in specs for ep in eps]
    todo = [(spec, ep) for spec, ep in jobs if (spec.name, ep) not in listed]
    for spec in specs:
        entry = manifest["scenarios"].setdefault(spec.name, {"episodes": []})
        entry["episodes"] = sorted(set(entry["episodes"]) | set(eps))
        entry["seed"] = spec.seed
    write_manifest(out, manifest)

    start = time.perf_counter()
    task = remote(run_demo_job).options(max_retries=2)
    completed, failures = run_jobs(
        todo, lambda ref, job: task.remote(ref, expert, job[1], horizon, m_max),
        lambda job: (shard_name(job[0].name, job[1]), {"scenario": job[0].name, "episode": job[1]}),
        out, manifest, "demos", ray_address=ray_address, num_workers=num_workers, timeout=timeout, progress=progress)
    summary = summarise(out, manifest, len(jobs), completed, len(jobs) - len(todo), failures,
                         time.perf_counter() - start)
    if progress:
        print_summary(summary, Console())
    return summary


def summarise(out: Path, manifest: dict[str, Any], jobs: int, completed: int, skipped: int,
              failures: list[dict[str, str]], wall: float) -> DemoSummary:
    """The summary of a run into ``out``: this run's counts and the folder's totals per scenario (every shard)."""
    per: dict[str, dict[str, int]] = {}
    for s in manifest["shards"]:
        row = per.setdefault(s["scenario"], {"episodes": 0, "scenes": 0, "steps": 0, "full_horizon_scenes": 0})
        row["episodes"] += 1
        for key in ("scenes", "steps", "full_horizon_scenes"):
            row[key] += s[key]
    c = manifest["counts"]
    return DemoSummary(out=out, jobs=jobs, completed=completed, skipped=skipped, failed=len(failures),
                       wall_time=wall, shards=c["shards"], scenes=c["scenes"], steps=c["steps"],
                       full_horizon_scenes=c["full_horizon_scenes"], per_scenario=per, failures=failures)


def print_summary(summary: DemoSummary, console: Console) -> None:
    """The folder's table per scenario, this run's counts and its failures."""
    from rich.table import Table

    table = Table(title=f"Demonstrations in {summary.out}")
    for col in ("scenario", "episodes", "policy steps", "scenes", "full-horizon scenes"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name, row in sorted(summary.per_scenario.items()):
        table.add_row(name, str(row["episodes"]), str(row["steps"]), str(row["scenes"]), str(row["full_horizon_scenes"]))
    table.add_row("total", str(summary.shards), str(summary.steps), str(summary.scenes), str(summary.full_horizon_scenes))
    console.print(table)
    console.print(f"{summary.completed} episodes collected, {summary.skipped} already there, {summary.failed} failed, "
                  f"in {summary.wall_time:.1f} s")
    for f in summary.failures:
        console.print(f"[red]failed[/red] {f['scenario']} episode {f['episode']}: {f['error']}")
