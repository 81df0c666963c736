"""Reading scenario YAML safely, with the line of every field kept for error messages.

The text is parsed with PyYAML's `SafeLoader` (exactly `yaml.safe_load`'s semantics: plain
data only) in two stages: compose the node tree, from which we record the line of every
mapping key and sequence item, then construct the Python data. Hostile inputs are bounded:
file size, nesting depth and the number of nodes after alias expansion ("billion laughs")
are all capped, and each cap produces a clear `ScenarioError` instead of a hang.
"""

from __future__ import annotations

from typing import Any

import yaml

from diffplatoon.scenarios.errors import Path, Problem, ScenarioError

MAX_BYTES = 1_000_000
MAX_DEPTH = 40
MAX_NODES = 200_000


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML text; return the data and a map from field path to 1-based line number."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        raise ScenarioError(source, [Problem((), f"expected a scenario file of at most {MAX_BYTES} bytes, got {size}")])
    if not text.strip():
        raise ScenarioError(source, [Problem((), "expected a YAML mapping of scenario fields, got an empty file")])
    _check_depth(text, source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError(source, [Problem((), "expected a YAML mapping of scenario fields, got an empty document")])
        lines: dict[Path, int] = {}
        _record_lines(node, (), lines, [0], source)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(filter(None, [exc.context, exc.problem]))
        raise ScenarioError(source, [Problem((), f"invalid YAML syntax: {what}", line)]) from None
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [Problem((), f"invalid YAML: {exc}")]) from None
    except RecursionError:
        raise ScenarioError(source, [Problem((), f"expected at most {MAX_DEPTH} levels of nesting")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise ScenarioError(
            source, [Problem((), f"expected a YAML mapping of scenario fields at the top level, got a {kind}", 1)]
        )
    return data, lines


def _check_depth(text: str, source: str) -> None:
    """Reject deep nesting from the event stream, before the recursive composer sees it."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1
                    raise ScenarioError(
                        source, [Problem((), f"expected at most {MAX_DEPTH} levels of nesting, got more", line)]
                    )
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(filter(None, [exc.context, exc.problem]))
        raise ScenarioError(source, [Problem((), f"invalid YAML syntax: {what}", line)]) from None


def _record_lines(node: yaml.Node, path: Path, lines: dict[Path, int], budget: list[int], source: str) -> None:
    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise ScenarioError(
            source, [Problem((), f"expected at most {MAX_NODES} YAML nodes after alias expansion, got more")]
        )
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line)
            lines[path + (name,)] = key.start_mark.line + 1
            _record_lines(value, path + (name,), lines, budget, source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines, budget, source)


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """Line of the deepest recorded prefix of `path` (a missing field points at its parent)."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
