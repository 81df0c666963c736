"""Reading scenario YAML safely, with the line of every field kept for error messages.

The text is parsed with PyYAML's `SafeLoader` (exactly `yaml.safe_load`'s semantics: plain
data only) in two stages: compose the node tree, from which we record the line of every
mapping key and sequence item, then construct the Python data. Hostile inputs are bounded:
file size, nesting depth, the number of nodes after alias expansion ("billion laughs") and the
digits of an integer are all capped, and each cap produces a clear `ScenarioError` instead of a
hang. Duplicate keys in a mapping are refused (naming both lines) instead of the last one
silently winning. Whatever PyYAML raises (syntax, control characters, binary data) comes back
as a `ScenarioError`: callers of `parse_yaml` see no other exception.
"""

from __future__ import annotations

import os
import stat
from typing import Any

import yaml

from diffplatoon.scenarios.errors import Path, Problem, ScenarioError

MAX_BYTES = 1_000_000
MAX_DEPTH = 40
MAX_NODES = 200_000
MAX_INT_DIGITS = 40  # far beyond any field's bound, far below Python's int-conversion limit
_INT_TAG = "tag:yaml.org,2002:int"


def read_yaml_text(path: str | os.PathLike[str]) -> str:
    """The text of a YAML file, or a `ScenarioError` saying why it cannot be read (missing, not a
    regular file, unreadable, over `MAX_BYTES`); undecodable bytes become U+FFFD."""
    source = str(path)
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ScenarioError(source, [Problem((), "expected an existing scenario file, found none")])
        if info.st_size > MAX_BYTES:
            message = f"expected a scenario file of at most {MAX_BYTES} bytes, got {info.st_size}"
            raise ScenarioError(source, [Problem((), message)])
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except ScenarioError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        raise ScenarioError(source, [Problem((), "expected an existing scenario file, found none")]) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ScenarioError(source, [Problem((), f"expected a readable file, got: {reason}")]) from None
    return data.decode("utf-8", errors="replace")


def parse_yaml(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML text; return the data and a map from field path to 1-based line number."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > MAX_BYTES:
        raise ScenarioError(source, [Problem((), f"expected a scenario file of at most {MAX_BYTES} bytes, got {size}")])
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ScenarioError(source, [Problem((), "expected a YAML text file, got binary data (a NUL byte)", line)])
    if not text.strip():
        raise ScenarioError(source, [Problem((), "expected a YAML mapping of scenario fields, got an empty file")])
    _check_depth(text, source)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ScenarioError(source, [Problem((), "expected a YAML mapping of scenario fields, got an empty document")])
        lines: dict[Path, int] = {}
        problems: list[Problem] = []
        _record_lines(node, (), lines, [0], source, problems)
        if problems:
            raise ScenarioError(source, problems)
        data = loader.construct_document(node)
    except ScenarioError:
        raise
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [_yaml_problem(exc, text)]) from None
    except RecursionError:
        raise ScenarioError(source, [Problem((), f"expected at most {MAX_DEPTH} levels of nesting")]) from None
    except (ValueError, OverflowError) as exc:  # a scalar PyYAML's constructors cannot convert
        message = f"expected plain YAML values, got one that cannot be read: {exc}"
        raise ScenarioError(source, [Problem((), message)]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        kind = type(data).__name__ if data is not None else "null"
        raise ScenarioError(
            source, [Problem((), f"expected a YAML mapping of scenario fields at the top level, got a {kind}", 1)]
        )
    return data, lines


def _yaml_problem(exc: yaml.YAMLError, text: str) -> Problem:
    """One `Problem` for any PyYAML error, with its line where PyYAML knows it."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(filter(None, [exc.context, exc.problem]))
        return Problem((), f"invalid YAML syntax: {what}", line)
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: PyYAML gives its offset
        line = text.count("\n", 0, exc.position) + 1
        return Problem((), f"expected printable text, got the control character #x{exc.character:04x}", line)
    return Problem((), f"invalid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


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
    except yaml.YAMLError as exc:
        raise ScenarioError(source, [_yaml_problem(exc, text)]) from None


def _record_lines(node: yaml.Node, path: Path, lines: dict[Path, int], budget: list[int], source: str,
                  problems: list[Problem]) -> None:
    """Record the line of every key and item; collect duplicate keys and over-long integers."""
    budget[0] += 1
    if budget[0] > MAX_NODES:
        raise ScenarioError(
            source, [Problem((), f"expected at most {MAX_NODES} YAML nodes after alias expansion, got more")]
        )
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else str(key.start_mark.line)
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                if (key.tag, key.value) in first_line:
                    problems.append(Problem(
                        path + (name,),
                        f"duplicate key: given at line {first_line[key.tag, key.value]} and again at line {line}",
                        line,
                    ))
                    continue
                first_line[key.tag, key.value] = line
            lines[path + (name,)] = line
            _record_lines(value, path + (name,), lines, budget, source, problems)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, path + (index,), lines, budget, source, problems)
    elif node.tag == _INT_TAG and len(node.value) > MAX_INT_DIGITS:
        problems.append(Problem(path, f"expected an integer of at most {MAX_INT_DIGITS} digits, got {len(node.value)}",
                                node.start_mark.line + 1))


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """Line of the deepest recorded prefix of `path` (a missing field points at its parent)."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None
