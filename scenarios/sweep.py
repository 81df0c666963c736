"""Parameter sweeps: one scenario with a `sweep:` grid → one validated spec per grid point.

``sweep: {traffic.density: [10, 20], comms.drop_probability: [0, 0.2]}`` expands to four
variants named ``<name>--density=10--drop_probability=0`` and so on, in a stable order
(keys in file order, values in list order, the last key varying fastest). A key names a
field by its dotted path; list items are addressed by index (``platoons.0.size``).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

from diffplatoon.scenarios.errors import Path, Problem, ScenarioError
from diffplatoon.scenarios.limits import MAX_VARIANTS
from diffplatoon.scenarios.schema import ScenarioSpec
from diffplatoon.scenarios.semantics import semantic_problems
from diffplatoon.scenarios.yaml_source import line_of


def _short_names(keys: list[str]) -> dict[str, str]:
    """Last path component, or the full path where the last component is ambiguous."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "-".join(_fmt(v) for v in value)
    return str(value)


def get_path(data: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted field path of dumped spec data; KeyError/IndexError/ValueError if none."""
    node: Any = data
    for part in dotted.split("."):
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set an existing field of dumped spec data by its dotted path; KeyError/IndexError/ValueError if none."""
    node: Any = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
        if not isinstance(node, (dict, list)):
            raise KeyError(part)
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        if last not in node:
            raise KeyError(last)
        node[last] = value


def variant_name(spec: ScenarioSpec, point: dict[str, Any]) -> str:
    """Readable, stable name of one grid point."""
    short = _short_names(list(point))
    return spec.name + "".join(f"--{short[k]}={_fmt(v)}" for k, v in point.items())


def expand_sweep(
    spec: ScenarioSpec,
    *,
    source: str = "<spec>",
    lines: dict[Path, int] | None = None,
    collect_errors: bool = False,
) -> tuple[list[ScenarioSpec], list[list[Problem]]]:
    """Expand the sweep grid into validated specs (the spec itself when there is no sweep).

    With `collect_errors`, invalid variants are returned as problem lists instead of raised.
    """
    if not spec.sweep:
        return [spec], []
    lines = lines or {}
    keys = list(spec.sweep)
    count = math.prod(len(spec.sweep[k]) for k in keys)
    if count > MAX_VARIANTS:
        problems = [Problem(("sweep",), f"expected a grid of at most {MAX_VARIANTS} variants, got {count}",
                            line_of(lines, ("sweep",)))]
        if not collect_errors:
            raise ScenarioError(source, problems)
        return [], [problems]
    base = spec.model_dump(mode="json", by_alias=True, exclude={"sweep"})
    variants: list[ScenarioSpec] = []
    errors: list[list[Problem]] = []
    for values in itertools.product(*(spec.sweep[k] for k in keys)):
        point = dict(zip(keys, values))
        data = _deep_copy(base)
        name = variant_name(spec, point)
        data["name"] = name
        problems: list[Problem] = []
        for key, value in point.items():
            try:
                set_path(data, key, value)
            except (KeyError, IndexError, ValueError, TypeError):
                path = ("sweep", key)
                problems.append(Problem(path, f"expected a dotted path to an existing field, got '{key}'", line_of(lines, path)))
        if problems:
            errors.append(problems)
            if not collect_errors:
                raise ScenarioError(source, problems)
            break  # the same bad key fails every variant: report it once
        try:
            variant = ScenarioSpec.model_validate(data)
            problems = semantic_problems(variant)
        except Exception as exc:  # pydantic ValidationError: point at the sweep key
            problems = [Problem(("sweep",), f"variant {name} is invalid: {_first_line(exc)}", line_of(lines, ("sweep",)))]
            variant = None
        else:
            problems = [Problem(("sweep",), f"variant {name}: {p.message}", line_of(lines, ("sweep",))) for p in problems]
        if problems:
            errors.append(problems)
            if not collect_errors:
                raise ScenarioError(source, problems)
        elif variant is not None:
            variants.append(variant)
    return variants, errors


def _first_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        e = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in e["loc"])
        return f"{loc}: {e['msg']}, got {e.get('input')!r}"
    return str(exc).splitlines()[0]


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
