"""Demonstration shards → in-memory arrays, a train/validation split by shard, and `Batch` iterators.

`load_demos(folder)` reads every shard listed in the manifest into one `DemoSet` of numpy arrays, padding
members to the folder's largest platoon and inbox slots to its largest inbox (both masked). Given several
folders (DAgger rounds, a generalisation mix) it reads their union: a shard file name names one episode
(scenario, seed, DAgger round), so a name listed by two folders is read once, from the first; the folders must
agree on the feature widths and time step. The split is by
shard (whole episodes), stratified by the shards' scenario (each scenario holds out its share, chosen by a
seeded permutation of its sorted shard names), so a validation episode is never seen in training, every
scenario is validated on, and the split does not depend on the order shards were collected in.

`DemoSet.batch_at(step, batch_size, seed)` returns the minibatch of a training step as a pure function of
(seed, step): epochs are seeded permutations, so a resumed run draws exactly the batches an uninterrupted
run would have drawn.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from diffplatoon.agents.diffusion.demos import FUTURE_KEYS, SCENE_KEYS, SHARDS, read_manifest
from diffplatoon.agents.diffusion.train import Batch, Trainer
from diffplatoon.geometry import VEHICLE_LENGTH

_BATCH_KEYS = tuple(f.name for f in dataclasses.fields(Batch))


@dataclass
class DemoSet:
    """Scenes of some shards: every `PlatoonInputs` field plus actions/states/future_mask, leading dim S."""

    arrays: dict[str, np.ndarray]
    shards: list[str]

    def __len__(self) -> int:
        return len(self.arrays["obs"]) if self.arrays else 0

    def subset(self, idx: np.ndarray) -> DemoSet:
        """Scenes at ``idx``."""
        return DemoSet({k: v[idx] for k, v in self.arrays.items()}, self.shards)

    def batch(self, idx: np.ndarray | slice | None = None, horizon: int | None = None) -> Batch:
        """A training `Batch` of the scenes at ``idx`` (all by default), actions cut to ``horizon``."""
        idx = slice(None) if idx is None else idx
        a = self.arrays
        fields = {k: torch.from_numpy(np.ascontiguousarray(a[k][idx])) for k in _BATCH_KEYS if k != "actions"}
        fields["actions"] = torch.from_numpy(np.ascontiguousarray(a["actions"][idx][:, :, :horizon]))
        return Batch(**fields)

    def batch_at(self, step: int, batch_size: int, seed: int) -> Batch:
        """The minibatch of training step ``step``: a pure function of (seed, step) (module docstring)."""
        n = len(self)
        size = min(batch_size, n)
        per_epoch = max(1, n // size)
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        return self.batch(np.sort(perm[k * size:(k + 1) * size]))

    def batches(self, batch_size: int, seed: int, start: int = 0) -> Iterator[Batch]:
        """Endless `batch_at` minibatches from step ``start`` on."""
        step = start
        while True:
            yield self.batch_at(step, batch_size, seed)
            step += 1


@dataclass
class DemoData:
    """A demo folder loaded and split."""

    train: DemoSet
    val: DemoSet
    manifest: dict
    horizon: int


def _pad(x: np.ndarray, axis: int, size: int) -> np.ndarray:
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return np.pad(x, pad)


_MEMBER_AXES = {"obs": 1, "inbox": 1, "inbox_mask": 1, "member_mask": 1, "ego_state": 1, "length": 1,
                "actions": 1, "states": 1, "future_mask": 1}


def _load_shard(path: Path, n_max: int, kc: int, horizon: int) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        a = {k: z[k] for k in (*SCENE_KEYS, *FUTURE_KEYS)}
    if len(a["obs"]) == 0:
        return {}
    for k, axis in _MEMBER_AXES.items():
        a[k] = _pad(a[k], axis, n_max)
    a["comm_mask"] = _pad(_pad(a["comm_mask"], 1, n_max), 2, n_max)
    a["length"] = np.where(a["member_mask"], a["length"], VEHICLE_LENGTH).astype(np.float32)
    a["inbox"] = _pad(a["inbox"], 2, kc)
    a["inbox_mask"] = _pad(a["inbox_mask"], 2, kc)
    for k in FUTURE_KEYS:
        a[k] = a[k][:, :, :horizon]
    return a


# Manifest dims that every folder of one training set must share (the rest, n_max and kc, are padded to the max).
_SAME_DIMS = ("obs_dim", "msg_dim", "dt", "substeps")


def merged_manifest(folders: Sequence[Path]) -> tuple[dict, dict[str, Path]]:
    """The manifest of the union of ``folders`` (module docstring) and the folder each shard is read from."""
    merged: dict | None = None
    where: dict[str, Path] = {}
    for folder in folders:
        manifest = read_manifest(folder)
        if manifest is None or not manifest.get("shards"):
            raise FileNotFoundError(f"{folder}: no demonstrations (expected {folder / 'manifest.json'} listing shards)")
        if merged is None:
            merged = {**manifest, "dims": dict(manifest["dims"]), "shards": []}
        else:
            for key in _SAME_DIMS:
                if key in manifest["dims"] and manifest["dims"][key] != merged["dims"].get(key):
                    raise ValueError(f"{folder}: {key} {manifest['dims'][key]} differs from {folders[0]}'s "
                                     f"{merged['dims'].get(key)}; demo folders trained together must share it")
            for key in ("n_max", "kc"):
                merged["dims"][key] = max(int(merged["dims"][key]), int(manifest["dims"][key]))
            merged["horizon"] = min(int(merged["horizon"]), int(manifest["horizon"]))
        for shard in manifest["shards"]:
            if shard["file"] not in where:
                where[shard["file"]] = folder
                merged["shards"].append(shard)
    assert merged is not None
    return merged, where


def load_demos(folder: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *, horizon: int | None = None,
               val_fraction: float = 0.1, seed: int = 0, full_horizon_only: bool = True,
               max_shards: int | None = None, oversample: dict[str, int] | None = None) -> DemoData:
    """Load a demo folder, or the union of several (see the module docstring).

    ``horizon`` ≤ the stored one cuts the futures; ``full_horizon_only`` keeps the scenes whose every live
    member has a valid future over the whole horizon (the training loss has no per-step mask).
    ``oversample``: {file-name substring: k}, the training scenes of matching shards repeated k times (the
    first matching key counts; validation scenes are never repeated).
    """
    folders = [Path(folder)] if isinstance(folder, (str, os.PathLike)) else [Path(f) for f in folder]
    if not folders:
        raise ValueError("no demo folder given")
    manifest, where = merged_manifest(folders)
    stored = int(manifest["horizon"])
    horizon = stored if horizon is None else int(horizon)
    if not 1 <= horizon <= stored:
        raise ValueError(f"horizon {horizon} must be between 1 and the demos' horizon {stored}")
    names = sorted(s["file"] for s in manifest["shards"])
    if max_shards is not None:
        names = names[:max_shards]
    val_names, train_names = _split(names, {s["file"]: s.get("scenario", "") for s in manifest["shards"]},
                                    val_fraction, seed)
    n_max, kc = int(manifest["dims"]["n_max"]), max(int(manifest["dims"]["kc"]), 1)

    def repeats(name: str) -> int:
        return next((int(k) for key, k in (oversample or {}).items() if key in name), 1)

    def load(shards: list[str], weighted: bool = False) -> DemoSet:
        parts = []
        for s in shards:
            part = _load_shard(where[s] / SHARDS / s, n_max, kc, horizon)
            if part:
                parts += [part] * (repeats(s) if weighted else 1)
        if not parts:
            return DemoSet({}, shards)
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if full_horizon_only:
            keep = (arrays["future_mask"].all(axis=2) | ~arrays["member_mask"]).all(axis=1)
            arrays = {k: v[keep] for k, v in arrays.items()}
        return DemoSet(arrays, shards)

    return DemoData(train=load(train_names, weighted=True), val=load(val_names), manifest=manifest, horizon=horizon)


def _split(names: list[str], scenario: dict[str, str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(validation, training) shard names, stratified by scenario: each scenario holds out its share of its own
    shards (seeded permutation; at least one when it has two or more), so every scenario is validated on."""
    rng = np.random.default_rng(seed)
    val: list[str] = []
    for group in sorted(set(scenario.get(n, "") for n in names)):
        mine = [n for n in names if scenario.get(n, "") == group]
        order = rng.permutation(len(mine))
        n_val = int(round(val_fraction * len(mine)))
        if val_fraction > 0 and len(mine) >= 2:
            n_val = min(max(n_val, 1), len(mine) - 1)
        val += [mine[i] for i in order[:n_val]]
    if val_fraction > 0 and not val and len(names) >= 2:  # one shard per scenario: hold out one shard overall
        val = [names[int(rng.integers(len(names)))]]
    held = set(val)
    return sorted(val), [n for n in names if n not in held]


def spread(n_total: int, n: int) -> np.ndarray:
    """n indices spread evenly over range(n_total) (all of them when n >= n_total): a subset of scenes stored in
    shard-name order that keeps every shard's, and so every scenario's, share."""
    if n >= n_total:
        return np.arange(n_total)
    return np.unique(np.linspace(0, n_total - 1, n).round().astype(np.intp))


def fit_normalizer(trainer: Trainer, data: DemoSet, max_scenes: int = 20000, seed: int = 0) -> None:
    """Fit the planner's normaliser on (a seeded subset of at most ``max_scenes``) training scenes."""
    idx = np.arange(len(data))
    if len(idx) > max_scenes:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_scenes, replace=False))
    trainer.fit_normalizer(data.batch(idx))
