"""The console summary of an evaluation: per scenario x policy collision rate (Wilson), speed and min TTC."""

from __future__ import annotations

from typing import Any, Sequence

from rich.table import Table
from rich.text import Text

from diffplatoon.evaluation import stats
from diffplatoon.evaluation.formatting import fmt_fraction, fmt_num, order_key


def summary_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per scenario x policy: collision rate (Wilson), mean speed and min TTC."""
    recs = [r for r in records if not r.get("failed")]
    present = {k for r in recs for k in r}
    metrics = [m for m in ("mean_speed", "min_ttc") if m in present]
    return stats.aggregate(recs, by=("scenario", "policy"), metrics=metrics, rates=["collision"])


def summary_table(rows: Sequence[dict[str, Any]], *, failed: int = 0, scenarios: Sequence[str] = (),
                  policies: Sequence[str] = ()) -> Table:
    """Rich table of `summary_rows`: collision rate with its Wilson 95% CI and n, speed, TTC.

    Rows follow the order of `scenarios` and `policies` (the command line's); print it with
    `formatting.print_table` so no name is cut at 80 columns.
    """
    table = Table(title="Safety evaluation" + (f" ({failed} failed episodes not counted)" if failed else ""))
    for col, just in (("scenario", "left"), ("policy", "left"), ("collisions", "right"),
                      ("rate [95% CI]", "right"), ("speed", "right"), ("min TTC", "right")):
        table.add_column(col, justify=just, no_wrap=True)
    table.caption = Text("collisions: episodes with a collision / episodes; 95% CI: Wilson; speed: mean [m/s]; "
                         "min TTC: mean of the per-episode minimum [s]")  # Text: '[s]' is not markup
    for r in sorted(rows, key=order_key(scenarios, policies)):
        rate = (f"{fmt_fraction(r['collision'])} "
                f"[{fmt_fraction(r['collision_lo'])}, {fmt_fraction(r['collision_hi'])}]")
        table.add_row(str(r["scenario"]), str(r["policy"]), f"{r['collision_k']}/{r['collision_n']}", rate,
                      fmt_num(r.get("mean_speed_mean")), fmt_num(r.get("min_ttc_mean")))
    return table
