"""Numbers and tables as a person reads them, in a terminal of any width or in a file.

One place decides how a measured number is printed (`fmt_num`, `fmt_pm`: significant
digits, not ``0.11488043402947258`` or ``± 5.33e-17``) and how a `rich` table is printed
(`print_table`): identifier and number columns are never wrapped or cut, and when they do
not fit the console's width (80 columns, or a pipe) the table is printed wider rather than
with names cut to ``collis…``. Prose columns (descriptions) wrap. Evidence scripts that print
one table per scenario (`grouped_markdown`, `print_grouped`) and rate cells
(`stats.rate_cell`, printed by `fmt_rate_cell`) share the layout here.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

from rich.console import Console
from rich.markup import escape
from rich.segment import Segments
from rich.table import Table

DIGITS = 3  # significant digits of a measured number


def _finite(x: Any) -> float | None:
    if x is None or isinstance(x, bool):
        return None
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _decimals(value: float, digits: int) -> int:
    """Decimals that show `digits` significant digits of `value` (0 for large values)."""
    if value == 0:
        return digits - 1
    return max(0, digits - 1 - math.floor(math.log10(abs(value))))


def fmt_num(x: Any, digits: int = DIGITS) -> str:
    """`x` to `digits` significant digits, fixed-point ('-' when missing, NaN or infinite).

    0.11488043402947258 -> '0.115', 27.345 -> '27.3', 1234.5 -> '1234', 0.0 -> '0.00';
    magnitudes below 1e-4 keep the exponent form ('5.33e-17').
    """
    value = _finite(x)
    if value is None:
        return "-"
    if value != 0 and abs(value) < 1e-4:
        return f"{value:.{digits}g}"
    return f"{value:.{_decimals(value, digits)}f}"


def fmt_pm(mean: Any, half: Any, digits: int = DIGITS) -> str:
    """'mean ± half' with the half-width printed at the mean's resolution ('27.3 ± 0.0', not '± 5.33e-17')."""
    m = _finite(mean)
    if m is None:
        return "-"
    text = fmt_num(m, digits)
    h = _finite(half)
    if h is None:
        return text
    decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
    return f"{text} ± {abs(h):.{decimals}f}"


def fmt_fraction(x: Any) -> str:
    """A rate or probability in [0, 1] to three decimals ('-' when missing)."""
    value = _finite(x)
    return "-" if value is None else f"{value:.3f}"


def fmt_rate_cell(cell: Mapping[str, Any] | None) -> str:
    """'k/n [lo, hi]' of a `stats.rate_cell` ('-' for None)."""
    if cell is None:
        return "-"
    return f"{cell['k']}/{cell['n']} [{cell['lo']:.3f}, {cell['hi']:.3f}]"


Cells = Callable[[Mapping[str, Any]], Sequence[str]]
"""A row's cells, in the order of the table's columns."""


def _groups(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return list(dict.fromkeys(r[key] for r in rows))


def grouped_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], cells: Cells, *,
                     group: str = "scenario") -> str:
    """One markdown table per value of ``row[group]`` (first-seen order), headed ``### <value>``."""
    out: list[str] = []
    for value in _groups(rows, group):
        out += [f"### {value}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        out += ["| " + " | ".join(cells(r)) + " |" for r in rows if r[group] == value]
        out.append("")
    return "\n".join(out)


def print_grouped(console: Console, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], cells: Cells, *,
                  group: str = "scenario") -> None:
    """One `rich` table per value of ``row[group]``, titled by it, printed by `print_table`; brackets in
    headers and cells (units, intervals) print as they are, not as markup."""
    for value in _groups(rows, group):
        table = Table(title=escape(str(value)))
        for col in columns:
            table.add_column(escape(col), no_wrap=True)
        for r in rows:
            if r[group] == value:
                table.add_row(*(escape(c) for c in cells(r)))
        print_table(console, table)


def order_key(scenarios: Sequence[str] = (), policies: Sequence[str] = ()) -> Callable[[Mapping[str, Any]], tuple]:
    """Sort key putting rows in the command line's scenario and policy order (unlisted names after, by name)."""
    s_index = {name: i for i, name in enumerate(scenarios)}
    p_index = {name: i for i, name in enumerate(policies)}

    def key(row: Mapping[str, Any]) -> tuple:
        sc, pol = str(row.get("scenario")), str(row.get("policy"))
        return (s_index.get(sc, len(s_index)), sc, p_index.get(pol, len(p_index)), pol)

    return key


def _needed_width(console: Console, table: Table) -> int:
    """Columns the table needs: no-wrap cells whole, wrapping cells at their `min_width` or longest word."""
    total = 0
    for column in table.columns:
        cells = [column.header, *column.cells]
        if column.no_wrap:
            width = max(console.measure(cell).maximum for cell in cells)
        elif column.min_width:  # prose: wraps, and folds a word longer than its minimum
            width = column.min_width
        else:
            width = max(console.measure(cell).minimum for cell in cells)
        total += width
    n = len(table.columns)
    left, right = table.padding[3], table.padding[1]
    padding = n * (left + right) - (0 if table.pad_edge else left + right)
    rules = 0 if table.box is None else n - 1 + (2 if table.show_edge else 0)
    return total + padding + rules


def print_table(console: Console, table: Table) -> None:
    """Print `table` with no cell cut: wider than the console when its unwrappable columns need it."""
    needed = _needed_width(console, table)
    if needed <= console.width:
        console.print(table)
    else:  # lines longer than the console: a pager or an editor shows them whole
        lines = console.render(table, console.options.update(width=needed, max_width=needed))
        console.print(Segments(lines), crop=False, soft_wrap=True)
