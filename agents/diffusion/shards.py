"""Demo folders: the manifest, shard files, and the Ray fan-out that fills them (one format for every writer).

A folder holds ``manifest.json`` and ``shards/*.npz``, one shard per job (demos.py's table gives the arrays).
`open_folder` reads or creates the manifest, refusing a folder whose settings (expert, horizon, seed, m_max)
or stored dimensions differ, and forgets entries whose file is gone; `run_jobs` runs one Ray task per job
through `diffplatoon.cluster.run_bounded` and, as each result arrives, writes its shard atomically and then
the manifest (`write_manifest`, which recounts the totals), so a killed run loses only the jobs in flight and
a rerun skips every job whose shard is listed. Expert demonstrations (demos.py, `demos collect`) and
closed-loop aggregation (dagger.py, `demos aggregate`) both write through here, and dataset.py reads it.
"""

from __future__ import annotations

import io as _bytesio
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
from rich.console import Console

from diffplatoon import io
from diffplatoon.agents.diffusion import features
from diffplatoon.cluster import Overdue, connect_ray, run_bounded
from diffplatoon.scenarios import ScenarioSpec

J = TypeVar("J", bound=tuple)

MANIFEST = "manifest.json"
SHARDS = "shards"
FORMAT = 1


def read_manifest(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of a demo folder, or None."""
    path = Path(out) / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def shard_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """One shard's arrays as compressed ``.npz`` bytes."""
    buf = _bytesio.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def shard_result(arrays: dict[str, np.ndarray], started: float) -> dict[str, Any]:
    """What a job's task returns for ``arrays``: the shard bytes and the facts its manifest entry lists."""
    full = (arrays["future_mask"].all(axis=2) | ~arrays["member_mask"]).all(axis=1)  # (S,)
    return {
        "data": shard_bytes(arrays),
        "scenes": int(len(arrays["step"])),
        "steps": int(arrays["step"].max() + 1) if len(arrays["step"]) else 0,
        "full_horizon_scenes": int(full.sum()) if len(arrays["step"]) else 0,
        "n_max": int(arrays["obs"].shape[1]) if arrays["obs"].ndim == 3 else 0,
        "kc": int(arrays["inbox"].shape[2]) if arrays["inbox"].ndim == 4 else 0,
        "wall_time": time.perf_counter() - started,
    }


def open_folder(out: Path, specs: list[ScenarioSpec], settings: dict[str, Any], seed_offset: int = 0) -> dict[str, Any]:
    """The manifest of a demo folder (created with ``settings`` if new), its listed shards checked on disk.

    A `ValueError` when the scenarios disagree on the stored dimensions or the folder holds shards
    collected with other ``settings``."""
    (out / SHARDS).mkdir(parents=True, exist_ok=True)
    dims = {"obs_dim": {features.obs_dim(s) for s in specs}, "msg_dim": {features.msg_dim(s) for s in specs},
            "policy_frequency": {s.policy_frequency for s in specs},
            "simulation_frequency": {s.simulation_frequency for s in specs}}
    for key, values in dims.items():
        if len(values) > 1:
            raise ValueError(f"scenarios disagree on {key}: {sorted(values)}; collect them into separate folders")
    manifest = read_manifest(out)
    if manifest is not None:
        clash = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if clash:
            raise ValueError(f"{out} holds demos collected with other settings {clash}; use another folder")
    else:
        manifest = {"format": FORMAT, **settings, "seed_offset": seed_offset, "scenarios": {}, "shards": []}
    manifest["shards"] = [s for s in manifest["shards"] if (out / SHARDS / s["file"]).exists()]
    stored = manifest.get("dims", {})
    new_dims = {"obs_dim": next(iter(dims["obs_dim"])), "msg_dim": next(iter(dims["msg_dim"])),
                "horizon": settings["horizon"], "m_max": settings["m_max"],
                "dt": 1.0 / next(iter(dims["policy_frequency"])),
                "substeps": int(next(iter(dims["simulation_frequency"])) // next(iter(dims["policy_frequency"])))}
    clash = {k: (stored[k], v) for k, v in new_dims.items() if manifest["shards"] and k in stored and stored[k] != v}
    if clash:
        raise ValueError(f"{out} holds shards of other dimensions {clash}; use another folder")
    manifest["dims"] = {**stored, **new_dims}
    return manifest


def run_jobs(todo: list[J], submit: Callable[[Any, J], Any], describe: Callable[[J], tuple[str, dict[str, Any]]],
             out: Path, manifest: dict[str, Any], label: str, *, ray_address: str | None, num_workers: int | None,
             timeout: float | None, progress: bool) -> tuple[int, list[dict[str, str]]]:
    """Run one Ray task per job through `run_bounded`, storing each returned shard as it arrives.

    ``submit(spec_ref, job)`` starts a job's task (jobs are ``(spec, …)`` tuples; the spec is put in the object
    store once), which returns ``{"data": npz bytes, facts…}`` or ``{"error": …}``; ``describe(job)`` gives its
    shard file name and manifest entry. Each shard is written atomically, then the manifest. Returns the count
    of completed jobs and the failures."""
    import ray
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    completed, failures = 0, []
    if not todo:
        return completed, failures
    started = connect_ray(ray_address, num_workers)
    try:
        workers = num_workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        refs = {job[0].name: ray.put(job[0]) for job in todo}
        bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("episodes"),
                       TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(),
                       disable=not progress)
        with bar:
            bar_id = bar.add_task("episodes", total=len(todo))
            for job, ref in run_bounded(todo, lambda job: submit(refs[job[0].name], job), workers=workers,
                                        timeout=timeout):
                if isinstance(ref, Overdue):
                    res = {"error": ref.reason}
                else:
                    try:
                        res = ray.get(ref)
                    except Exception as exc:  # noqa: BLE001 - worker died after its retries
                        first = str(exc).splitlines()[0] if str(exc) else ""
                        res = {"error": f"{type(exc).__name__}: {first}"}
                name, entry = describe(job)
                if "error" in res:
                    failures.append({"scenario": entry["scenario"], "episode": str(entry["episode"]),
                                     "error": res["error"]})
                else:
                    io.atomic_write_bytes(out / SHARDS / name, res.pop("data"))
                    manifest["shards"] = [s for s in manifest["shards"] if s["file"] != name]
                    manifest["shards"].append({"file": name, **entry, **res})
                    write_manifest(out, manifest)
                    completed += 1
                bar.advance(bar_id)
    finally:
        if started:
            ray.shutdown()
    return completed, failures


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Recount the folder's totals and dimensions from its shard entries and write the manifest atomically."""
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
