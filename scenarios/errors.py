"""Scenario errors: every problem of a file collected and reported at once.

A `Problem` names the field path and says what was expected and what was found; the
`ScenarioError` that carries them formats each as ``file:line: path: message`` so a user can
jump straight to the offending YAML line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

Path = tuple[str | int, ...]


def format_path(path: Path) -> str:
    """Render ('platoons', 0, 'size') as 'platoons[0].size'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<document>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a scenario: where (field path, YAML line) and what."""

    path: Path
    message: str
    line: int | None = None

    def format(self, source: str) -> str:
        """``source:line: path: message`` (line omitted when unknown)."""
        where = f"{source}:{self.line}" if self.line else source
        return f"{where}: {format_path(self.path)}: {self.message}"


class ScenarioError(ValueError):
    """A scenario file (or catalogue entry) is invalid; `problems` lists everything wrong with it."""

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = source
        self.problems = sorted(problems, key=lambda p: (p.line or 0, format_path(p.path)))
        super().__init__("\n".join(p.format(source) for p in self.problems))

    @property
    def lines(self) -> list[str]:
        """One formatted line per problem."""
        return [p.format(self.source) for p in self.problems]
