"""Expert demonstrations for the joint planner: rollouts over Ray tasks, stored as sharded ``.npz`` with a manifest.

`collect_demos` checks the scenarios and builds the expert before Ray starts, then runs one Ray task
per (scenario, episode) job through `diffplatoon.cluster.run_bounded` (at most one task per worker, each
with a wall-clock limit; an episode past it is cancelled and counted as failed). The task rolls the
expert out (`collect_episode`) and returns one compressed shard; the driver writes it atomically to
``<out>/shards/<scenario>__<episode>.npz`` and rewrites ``<out>/manifest.json`` atomically after every
shard, so a killed run loses only the jobs in flight. A rerun skips every job whose shard is listed in the
manifest and present on disk.

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

import io as _bytesio
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffplatoon import io
from diffplatoon.cluster import (DEFAULT_JOB_TIMEOUT, JobSummary, Overdue, check_timeout, connect_ray, remote,
                                 run_bounded)
from diffplatoon.agents.diffusion import features
from diffplatoon.agents.policy import SimInfo, make_policy
from diffplatoon.scenarios import ScenarioSpec, expand_sweep, load_scenario
from diffplatoon.sim.observation import Observer
from diffplatoon.sim.simulation import Simulation

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = 1
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


def collect_episode(spec: ScenarioSpec, expert: str, episode: int, horizon: int = 20,
                    m_max: int = 16) -> dict[str, np.ndarray]:
    """Roll `expert` out on episode `episode` of `spec`; return the shard arrays (module table)."""
    sim = Simulation(spec, episode)
    observer = Observer(sim)
    policy = make_policy(expert, spec)
    policy.reset(SimInfo.from_spec(spec, episode))
    lengths = features.member_lengths(spec)
    platoons, offset = [], 0
    for p in spec.platoons:
        platoons.append(np.arange(offset, offset + p.size))
        offset += p.size
    n_max = max(p.size for p in spec.platoons)

    scenes: list[tuple[int, int, features.PlatoonInputs]] = []
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
    s = len(scenes)
    out: dict[str, np.ndarray] = {
        key: np.stack([getattr(sc, key) for _, _, sc in scenes]) if s else np.zeros((0,))
        for key in SCENE_KEYS
    }
    fut_a = np.zeros((s, n_max, horizon, 2), np.float32)
    fut_s = np.zeros((s, n_max, horizon, 4), np.float32)
    fut_m = np.zeros((s, n_max, horizon), bool)
    for i, (t, k, sc) in enumerate(scenes):
        rows = platoons[k]
        n = len(rows)
        steps = np.arange(t, min(t + horizon, n_steps))  # actions t … ; states after them: t+1 …
        h = len(steps)
        ok = sc.member_mask[:n][:, None] & np.logical_and.accumulate(alive_all[steps + 1][:, rows].T, axis=1)
        x, y, hd = features.to_frame(pose_all[steps + 1][:, rows, 0], pose_all[steps + 1][:, rows, 1],
                                     pose_all[steps + 1][:, rows, 2], sc.frame)  # (h, n)
        st = np.stack([x, y, hd, speed_all[steps + 1][:, rows]], axis=-1).transpose(1, 0, 2)  # (n, h, 4)
        fut_m[i, :n, :h] = ok
        fut_s[i, :n, :h] = np.where(ok[..., None], st, 0.0)
        fut_a[i, :n, :h] = np.where(ok[..., None], act_all[steps][:, rows].transpose(1, 0, 2), 0.0)
    out.update(actions=fut_a, states=fut_s, future_mask=fut_m,
               step=np.array([t for t, _, _ in scenes], np.int32),
               platoon=np.array([k for _, k, _ in scenes], np.int32))
    return out


def _shard_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = _bytesio.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def run_demo_job(spec: ScenarioSpec, expert: str, episode: int, horizon: int, m_max: int) -> dict[str, Any]:
    """The Ray task: one episode → {"data": npz bytes, shard facts} or {"error": …}."""
    import torch

    torch.set_num_threads(1)  # one worker per core (ARCHITECTURE §7)
    start = time.perf_counter()
    try:
        arrays = collect_episode(spec, expert, episode, horizon, m_max)
    except Exception as exc:  # noqa: BLE001 - a deterministic episode error is reported, not retried
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    full = (arrays["future_mask"].all(axis=2) | ~arrays["member_mask"]).all(axis=1)  # (S,)
    return {
        "data": _shard_bytes(arrays),
        "scenes": int(len(arrays["step"])),
        "steps": int(arrays["step"].max() + 1) if len(arrays["step"]) else 0,
        "full_horizon_scenes": int(full.sum()) if len(arrays["step"]) else 0,
        "n_max": int(arrays["obs"].shape[1]) if arrays["obs"].ndim == 3 else 0,
        "kc": int(arrays["inbox"].shape[2]) if arrays["inbox"].ndim == 4 else 0,
        "wall_time": time.perf_counter() - start,
    }


# ------------------------------------------------------------------------------------------------
# Collection
# ------------------------------------------------------------------------------------------------


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a demo folder, or None."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    import json

    return json.loads(path.read_text())


def _resolve(scenarios: list[str | ScenarioSpec]) -> list[ScenarioSpec]:
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
    import ray
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    if episodes < 0 or horizon < 1:
        raise ValueError(f"need episodes >= 0 and horizon >= 1, got {episodes}, {horizon}")
    check_timeout(timeout)
    specs = _resolve(scenarios)
    check_expert(expert, specs)
    out = Path(out)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    dims = {"obs_dim": {features.obs_dim(s) for s in specs}, "msg_dim": {features.msg_dim(s) for s in specs},
            "policy_frequency": {s.policy_frequency for s in specs},
            "simulation_frequency": {s.simulation_frequency for s in specs}}
    for key, values in dims.items():
        if len(values) > 1:
            raise ValueError(f"scenarios disagree on {key}: {sorted(values)}; collect them into separate folders")
    manifest = read_manifest(out)
    settings = {"expert": expert, "horizon": horizon, "seed": seed, "m_max": m_max}
    if manifest is not None:
        clash = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if clash:
            raise ValueError(f"{out} holds demos collected with other settings {clash}; use another folder")
    else:
        manifest = {"format": FORMAT, **settings, "seed_offset": seed_offset, "scenarios": {}, "shards": []}
    manifest["shards"] = [s for s in manifest["shards"] if (out / SHARDS / s["file"]).exists()]
    listed = {(s["scenario"], s["episode"]) for s in manifest["shards"]}
    eps = demo_episodes(seed, episodes, seed_offset)
    jobs = [(spec, ep) for spec in specs for ep in eps]
    todo = [(spec, ep) for spec, ep in jobs if (spec.name, ep) not in listed]
    for spec in specs:
        entry = manifest["scenarios"].setdefault(spec.name, {"episodes": []})
        entry["episodes"] = sorted(set(entry["episodes"]) | set(eps))
        entry["seed"] = spec.seed
    manifest["dims"] = {"obs_dim": next(iter(dims["obs_dim"])), "msg_dim": next(iter(dims["msg_dim"])),
                        "horizon": horizon, "m_max": m_max,
                        "dt": 1.0 / next(iter(dims["policy_frequency"])),
                        "substeps": int(next(iter(dims["simulation_frequency"])) // next(iter(dims["policy_frequency"])))}
    _write_manifest(out, manifest)

    console = Console()
    start = time.perf_counter()
    completed, failures = 0, []
    if todo:
        started = connect_ray(ray_address, num_workers)
        try:
            workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            refs = {spec.name: ray.put(spec) for spec in specs}
            task = remote(run_demo_job).options(max_retries=2)
            bar = Progress(TextColumn("[bold]demos"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
                           disable=not progress)
            with bar:
                bar_id = bar.add_task("episodes", total=len(todo))
                submit = lambda job: task.remote(refs[job[0].name], expert, job[1], horizon, m_max)  # noqa: E731
                for (spec, ep), ref in run_bounded(todo, submit, workers=workers, timeout=timeout):
                    if isinstance(ref, Overdue):
                        res = {"error": ref.reason}
                    else:
                        try:
                            res = ray.get(ref)
                        except Exception as exc:  # noqa: BLE001 - worker died after its retries
                            first = str(exc).splitlines()[0] if str(exc) else ""
                            res = {"error": f"{type(exc).__name__}: {first}"}
                    if "error" in res:
                        failures.append({"scenario": spec.name, "episode": str(ep), "error": res["error"]})
                    else:
                        name = shard_name(spec.name, ep)
                        io.atomic_write_bytes(out / SHARDS / name, res.pop("data"))
                        manifest["shards"] = [s for s in manifest["shards"] if s["file"] != name]
                        manifest["shards"].append({"file": name, "scenario": spec.name, "episode": ep, **res})
                        _write_manifest(out, manifest)
                        completed += 1
                    bar.advance(bar_id)
        finally:
            if started:
                ray.shutdown()
    summary = _summarise(out, manifest, len(jobs), completed, len(jobs) - len(todo), failures,
                         time.perf_counter() - start)
    if progress:
        _print_summary(summary, console)
    return summary


def _write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    shards = manifest["shards"]
    manifest["shards"] = sorted(shards, key=lambda s: (s["scenario"], s["episode"]))
    manifest["counts"] = {
        "shards": len(shards),
        "scenes": sum(s["scenes"] for s in shards),
        "steps": sum(s["steps"] for s in shards),
        "full_horizon_scenes": sum(s["full_horizon_scenes"] for s in shards),
    }
    manifest["dims"]["n_max"] = max([s["n_max"] for s in shards], default=0)
    manifest["dims"]["kc"] = max([s["kc"] for s in shards], default=0)
    io.atomic_write_json(out / MANIFEST, manifest)


def _summarise(out, manifest, jobs, completed, skipped, failures, wall) -> DemoSummary:
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


def _print_summary(summary: DemoSummary, console) -> None:
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
