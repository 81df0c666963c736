"""Loading scenarios: YAML file or catalogue name → validated `ScenarioSpec`.

Validation runs in two passes and reports every problem of both at once:
1. schema — every number finite and of a sane size (`semantics.number_problems`, on the raw
   data), then pydantic's checks, translated into "expected …, got …" messages with the YAML
   line of the field;
2. semantics — checks that need several fields or the built road (`diffplatoon.scenarios.
   semantics`): lanes usable, spawns fully on their lanes and not overlapping, routes connected,
   traffic within budget, events naming vehicles of the right kind, topology edges in range.
Nothing is silently repaired; a scenario that validates builds and runs.
"""

from __future__ import annotations

import typing
from importlib import resources
from pathlib import Path as FsPath
from typing import Any

import numpy as np
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

from diffplatoon.scenarios.errors import Path, Problem, ScenarioError, format_path
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.scenarios.semantics import number_problems, semantic_problems
from diffplatoon.scenarios.yaml_source import line_of, parse_yaml, read_yaml_text

CATALOGUE_PACKAGE = "diffplatoon.scenarios"


def catalogue_names() -> list[str]:
    """Names of the scenarios shipped with the package, sorted."""
    root = resources.files(CATALOGUE_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def resolve_source(name_or_path: str | FsPath) -> tuple[str, str]:
    """Return (display name, YAML text) for a path or a catalogue name."""
    path = FsPath(name_or_path)
    if path.suffix in (".yaml", ".yml") or _exists(path):
        return str(path), read_yaml_text(path)
    names = catalogue_names()
    if str(name_or_path) not in names:
        raise ScenarioError(
            str(name_or_path),
            [Problem((), f"expected a scenario file path or a catalogue name ({', '.join(names)})")],
        )
    text = (resources.files(CATALOGUE_PACKAGE) / f"{name_or_path}.yaml").read_text(encoding="utf-8")
    return f"{name_or_path}.yaml", text


def _exists(path: FsPath) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL byte
        return False


def load_scenario(name_or_path: str | FsPath) -> ScenarioSpec:
    """Load and fully validate a scenario; raise `ScenarioError` listing every problem."""
    source, text = resolve_source(name_or_path)
    return parse_scenario(text, source)


def parse_scenario(text: str, source: str = "<string>") -> ScenarioSpec:
    """Validate scenario YAML text (schema, semantics and every sweep variant)."""
    data, lines = parse_yaml(text, source)
    return validate_with_sweep(data, source, lines)


def validate_with_sweep(data: dict[str, Any], source: str, lines: dict[Path, int] | None = None) -> ScenarioSpec:
    """`validate_data`, then every sweep variant; raise `ScenarioError` listing every problem."""
    spec = validate_data(data, source, lines)
    from diffplatoon.scenarios.sweep import expand_sweep  # sweep builds on this module

    problems: list[Problem] = []
    for variant_problems in expand_sweep(spec, source=source, lines=lines, collect_errors=True)[1]:
        problems.extend(variant_problems)
    if problems:
        raise ScenarioError(source, problems)
    return spec


def validate_data(data: dict[str, Any], source: str, lines: dict[Path, int] | None = None) -> ScenarioSpec:
    """Validate already-parsed data: schema then semantics; raise `ScenarioError` on any problem."""
    lines = lines or {}
    problems = number_problems(data, lines)
    try:
        with np.errstate(all="ignore"):  # validators may compute with the numbers flagged above
            spec = ScenarioSpec.model_validate(data)
    except ValidationError as exc:  # where both flag a field, the schema's message names its range
        schema = schema_problems(exc, lines)
        flagged = {p.path for p in schema}
        problems = schema + [p for p in problems if p.path not in flagged]
    except (ArithmeticError, ValueError) as exc:  # a validator's maths on numbers `number_problems` let through
        problems = problems or [Problem((), f"expected numbers a scenario can be built from: {exc}", None)]
    if problems:
        raise ScenarioError(source, problems)
    problems = semantic_problems(spec, lines)
    if problems:
        raise ScenarioError(source, problems)
    return spec


# ---------------------------------------------------------------------------------------------
# Pass 1: pydantic errors → readable problems.


def schema_problems(exc: ValidationError, lines: dict[Path, int],
                    root: type[BaseModel] = ScenarioSpec, prefix: Path = ()) -> list[Problem]:
    """Translate pydantic errors of model `root` into one `Problem` per field, with YAML lines.

    `prefix` is where `root` sits in the YAML document (e.g. ``("model",)`` for a section
    validated by its own model)."""
    seen: dict[Path, Problem] = {}
    for error in exc.errors(include_url=False):
        field, path, parents = _walk(error["loc"], root)
        path = prefix + path
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = path + ("type",)
        if path in seen:  # several union members failed for the same field: report it once
            continue
        seen[path] = Problem(path, _describe(error, field, parents), line_of(lines, path))
    return list(seen.values())


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """Every pydantic model class mentioned in a (possibly nested) annotation."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _walk(loc: tuple[Any, ...], root: type[BaseModel] = ScenarioSpec) -> tuple[Any, Path, list[type[BaseModel]]]:
    """Follow a pydantic error location through the schema.

    Returns the innermost field's FieldInfo (or None), the clean path (union tags removed)
    and the candidate models that own the last part (for "unknown field" messages).
    """
    candidates: list[type[BaseModel]] = [root]
    field = None
    path: list[str | int] = []
    parents = candidates
    keyed = False
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        if keyed:  # a key of a dict-valued field (e.g. a sweep's dotted path): part of the user's path
            path.append(part)
            keyed = False
            continue
        owner = next((m for m in candidates if part in _yaml_keys(m)), None)
        if owner is not None:
            field = owner.model_fields[_yaml_keys(owner)[part]]
            keyed = typing.get_origin(field.annotation) is dict
            parents = [owner]
            path.append(part)
            candidates = _models_in(field.annotation)
            continue
        tagged = [m for m in candidates if _tag_of(m) == part]
        if tagged:  # discriminated-union tag: narrows the model, not part of the user's path
            candidates = tagged
            continue
        if candidates and not any(_tag_of(m) for m in candidates):
            # an unknown key on a plain model
            parents = candidates
            path.append(part)
            field = None
            candidates = []
        # otherwise: a union-member marker such as 'int' or 'tuple[...]' — skip it
    return field, tuple(path), parents


def _yaml_keys(model: type[BaseModel]) -> dict[str, str]:
    """YAML key (the alias where one is set, e.g. `from`) → attribute name, for every field."""
    return {(f.alias or name): name for name, f in model.model_fields.items()}


def _tag_of(model: type[BaseModel]) -> str | None:
    if "type" not in model.model_fields:
        return None
    args = typing.get_args(model.model_fields["type"].annotation)
    return args[0] if len(args) == 1 and isinstance(args[0], str) else None


def _kind(annotation: Any) -> str:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if int in args and len(args) == 1:
        return "an integer"
    if float in args or int in args:
        return "a number"
    return "a value"


def _bounds(field: Any) -> tuple[str, str]:
    lo = hi = ""
    for meta in getattr(field, "metadata", []):
        if isinstance(meta, Ge):
            lo = f">= {meta.ge}"
        elif isinstance(meta, Gt):
            lo = f"> {meta.gt}"
        elif isinstance(meta, Le):
            hi = f"<= {meta.le}"
        elif isinstance(meta, Lt):
            hi = f"< {meta.lt}"
    return lo, hi


def _describe(error: dict[str, Any], field: Any, parents: list[type[BaseModel]]) -> str:
    kind, got = error["type"], error.get("input")
    got_text = repr(got) if isinstance(got, str) else _short(got)
    annotation = getattr(field, "annotation", None)
    if kind == "missing":
        return "expected this required field, found nothing"
    if kind == "extra_forbidden":
        allowed = sorted({key for m in parents for key in _yaml_keys(m)})
        return f"unknown field; expected one of: {', '.join(allowed)}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        lo, hi = _bounds(field)
        what = _kind(annotation)
        if lo.startswith(">=") and hi.startswith("<="):
            return f"expected {what} between {lo[3:]} and {hi[3:]}, got {got_text}"
        return f"expected {what} {' and '.join(filter(None, [lo, hi]))}, got {got_text}"
    if annotation is not None and "LaneRef" in str(field) or _is_lane_ref(annotation):
        return f"expected a lane: an integer id, a lane name or [from, to, id], got {got_text}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {got_text}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {got_text}"
    if kind == "finite_number":
        return f"expected a finite number, got {got_text}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {got_text}"
    if kind == "string_type":
        return f"expected a string, got {got_text}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {got_text}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {got_text}"
    if kind == "literal_error":
        return f"expected one of {error['ctx']['expected']}, got {got_text}"
    if kind == "union_tag_invalid":
        return f"expected one of {error['ctx']['expected_tags']}, got {error['ctx']['tag']!r}"
    if kind == "union_tag_not_found":
        return f"expected a 'type' field (one of the known kinds), found none"
    if kind == "string_pattern_mismatch":
        return f"expected a name of letters, digits, '_' or '-' starting with a letter, got {got_text}"
    if kind in ("too_short", "too_long"):
        bound = error["ctx"]["min_length" if kind == "too_short" else "max_length"]
        which = "at least" if kind == "too_short" else "at most"
        return f"expected {which} {bound} item{'s' * (bound != 1)}, got {_short(got)}"
    if kind == "value_error":
        return error["msg"].removeprefix("Value error, ")
    return f"{error['msg']}, got {got_text}"


def _is_lane_ref(annotation: Any) -> bool:
    args = [typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
            for a in typing.get_args(annotation)]
    return int in args and str in args


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


__all__ = ["load_scenario", "parse_scenario", "validate_data", "catalogue_names", "ScenarioError", "format_path",
           "semantic_problems"]
