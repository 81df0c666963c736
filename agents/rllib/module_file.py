"""diffplatoon's own copy of a trained RLModule inside an RLlib checkpoint: written at every save, loaded
by `rllib:` policies without running any code from the folder.

RLlib's checkpoint files are pickles (``class_and_ctor_args.pkl``, ``module_state.pkl``); unpickling
them runs whatever they name, so a policy never reads them. Next to them the training driver writes,
per module id:

* ``diffplatoon_<module id>.pt``: the module's ``state_dict`` (tensors only, `torch.save`), read with
  ``torch.load(weights_only=True)``;
* an entry under ``"modules"`` of the checkpoint's ``diffplatoon.json``: the weights file name, the
  observation and action spaces (Box / Dict of Box as JSON) and the module's validated model config.

`load_module` validates that entry (`ModuleEntry`), rebuilds the module with the project's own class
for the checkpoint's kind (`MODULE_CLASSES`) and loads the weights strictly. Anything else in the
folder is ignored; a folder without these files is a `CheckpointError`.
"""

from __future__ import annotations

import importlib
import io
import json
import re
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from diffplatoon.agents.policy import CheckpointError, load_tensors
from diffplatoon.io import atomic_write_bytes

CHECKPOINT_META = "diffplatoon.json"
MAX_META_BYTES = 4 << 20  # the metadata holds configs and space bounds, never tensors
MAX_SPACE_SIZE = 10_000_000
# module kind → (module class, its model-config class), as "module:attribute" paths imported on load
MODULE_CLASSES: dict[str, tuple[str, str]] = {
    "mlp": ("diffplatoon.agents.rllib.mlp_module:SharedMLPModule",
            "diffplatoon.agents.rllib.mlp_module:MLPModuleConfig"),
    "diffusion": ("diffplatoon.agents.rllib.diffusion_module:DiffusionPlannerModule",
                  "diffplatoon.agents.rllib.diffusion_config:DiffusionModuleConfig"),
}
_WEIGHTS_NAME = re.compile(r"^diffplatoon_[A-Za-z0-9_.-]+\.pt$")

Bound = Union[float, list[Any]]


class BoxSpace(BaseModel):
    """A float32 `gymnasium.spaces.Box`: shape and bounds (a number, or nested lists of the shape)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    box: list[int] = Field(..., max_length=4, description="Shape.")
    low: Bound
    high: Bound

    @field_validator("box")
    @classmethod
    def _shape(cls, value: list[int]) -> list[int]:
        if any(n < 1 for n in value) or int(np.prod(value, dtype=np.float64)) > MAX_SPACE_SIZE:
            raise ValueError(f"expected positive sizes of at most {MAX_SPACE_SIZE} elements in all, got {value}")
        return value

    def build(self) -> Any:
        import gymnasium as gym

        try:
            low, high = (np.broadcast_to(np.asarray(b, dtype=np.float32), self.box) for b in (self.low, self.high))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"bounds do not fit the shape {self.box}: {exc}") from None
        if np.isnan(low).any() or np.isnan(high).any() or (low > high).any():
            raise ValueError("bounds are NaN or low > high")
        return gym.spaces.Box(low, high, shape=tuple(self.box), dtype=np.float32)


class DictSpace(BaseModel):
    """A `gymnasium.spaces.Dict` of Box spaces."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spaces: dict[str, BoxSpace] = Field(..., alias="dict", min_length=1, max_length=64)

    def build(self) -> Any:
        import gymnasium as gym

        return gym.spaces.Dict({key: box.build() for key, box in self.spaces.items()})


class ModuleEntry(BaseModel):
    """One module's entry under ``"modules"`` of ``diffplatoon.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    weights: str = Field(..., description="The state_dict file, in the checkpoint folder.")
    observation_space: Union[DictSpace, BoxSpace]
    action_space: BoxSpace
    model_config_: dict[str, Any] = Field(..., alias="model_config")

    @field_validator("weights")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _WEIGHTS_NAME.match(value):
            raise ValueError(f"expected a file name diffplatoon_<id>.pt, got {value!r}")
        return value


class CheckpointMeta(BaseModel):
    """The validated ``diffplatoon.json`` of a checkpoint (fields a policy needs; others are kept as written)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    iteration: int = Field(..., ge=0)
    grouping: Literal["vehicle", "platoon"]
    module: Literal["mlp", "diffusion"]
    module_ids: list[str] = Field(..., min_length=1)
    env_config: dict[str, Any]
    modules: dict[str, ModuleEntry]


def _space_json(space: Any) -> dict[str, Any]:
    """JSON of a Box (bounds as one number when uniform) or a Dict of Box spaces."""
    if hasattr(space, "spaces") and isinstance(space.spaces, dict):
        return {"dict": {key: _space_json(sub) for key, sub in space.spaces.items()}}

    def bound(values: np.ndarray) -> Any:
        flat = np.asarray(values, dtype=np.float64)
        return float(flat.flat[0]) if flat.size and (flat == flat.flat[0]).all() else flat.tolist()

    return {"box": [int(n) for n in space.shape], "low": bound(space.low), "high": bound(space.high)}


def _export(learner: Any, module_id: str) -> dict[str, Any]:
    """On the learner: the module's state_dict (CPU tensors), spaces and validated model config."""
    module = learner.module[module_id]
    return {"state": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
            "observation_space": _space_json(module.observation_space),
            "action_space": _space_json(module.action_space),
            "model_config": module.cfg.model_dump(mode="json")}


def write_modules(algo: Any, folder: Path, module_ids: list[str]) -> dict[str, Any]:
    """Write each learner module's weights into `folder` (atomically); their ``"modules"`` metadata."""
    import torch

    entries = {}
    for module_id in module_ids:
        results = algo.learner_group.foreach_learner(_export, module_id=module_id)
        exported = next(iter(results)).get()
        buffer = io.BytesIO()
        torch.save(exported.pop("state"), buffer)
        name = f"diffplatoon_{module_id}.pt"
        atomic_write_bytes(folder / name, buffer.getvalue())
        entries[module_id] = {"weights": name, **exported}
    return entries


def read_meta(checkpoint: str | Path) -> CheckpointMeta:
    """The checkpoint's validated metadata; `CheckpointError` when it is not diffplatoon's."""
    path = Path(checkpoint) / CHECKPOINT_META
    reason = None
    try:
        if path.stat().st_size > MAX_META_BYTES:
            reason = f"{CHECKPOINT_META} is over {MAX_META_BYTES >> 20} MB"
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "modules" not in data:
                reason = (f"{CHECKPOINT_META} lists no module weights; checkpoints saved before this format "
                          "cannot be loaded as policies (RLlib's own files are pickles, never loaded)")
            else:
                return CheckpointMeta.model_validate(data)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # incl. ValidationError, JSONDecodeError
        reason = _first_line(exc)
    raise CheckpointError(f"{checkpoint}: not a diffplatoon RLlib checkpoint ({reason})")


def load_module(checkpoint: str | Path, module_id: str, meta: CheckpointMeta | None = None) -> Any:
    """Module `module_id` of a checkpoint, rebuilt from diffplatoon's files only, in eval mode."""
    meta = meta or read_meta(checkpoint)
    entry = meta.modules.get(module_id)

    def fail(reason: str) -> CheckpointError:
        return CheckpointError(f"{checkpoint}: not a diffplatoon RLlib checkpoint ({reason})")

    if entry is None:
        raise fail(f"no weights of module {module_id!r}")
    module_cls, config_cls = (_attribute(path) for path in MODULE_CLASSES[meta.module])
    try:
        model_config = config_cls.model_validate(entry.model_config_).model_dump()
        if "checkpoint" in model_config:  # the weights below replace the pre-trained planner's; never read it
            model_config["checkpoint"] = None
        module = module_cls(observation_space=entry.observation_space.build(), action_space=entry.action_space.build(),
                            model_config=model_config, inference_only=False)
    except (ValidationError, ValueError, TypeError, KeyError) as exc:
        raise fail(f"its module config does not build a {meta.module} module: {_first_line(exc)}") from None
    weights = Path(checkpoint) / entry.weights
    if weights.is_symlink() or not weights.is_file():
        raise fail(f"{entry.weights}: expected a file in the checkpoint folder")
    state = load_tensors(weights, "diffplatoon weights file")
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # missing/unexpected keys, shape mismatches
        raise fail(f"{entry.weights} does not fit the module: {_first_line(exc)}") from None
    module.eval()
    return module


def _attribute(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, ValidationError) and exc.errors():
        error = exc.errors()[0]
        return f"{'.'.join(str(k) for k in error['loc']) or 'document'}: {error['msg']}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
