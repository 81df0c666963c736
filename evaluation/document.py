"""A report document rendered both as Markdown and as self-contained HTML.

`Document` collects blocks (headings, paragraphs, tables, PNG figures, GIF animations, lists,
code); `markdown()` links figures and animations by their paths next to the report, `html()`
embeds them as base64 data URIs and inlines its CSS, so the HTML file stands alone. Inline
markup shared by both: ``[text](href)`` links and backticked code.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any, Sequence

# Marks the best policy on a table row; the HTML highlights cells that carry it.
BEST = "★"


class Document:
    """Blocks of a report: headings, paragraphs, tables, images, bullet lists."""

    def __init__(self, root: Path):
        self.root = root
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, rel: str, alt: str) -> None:
        self.blocks.append(("img", (rel, alt)))

    def animation(self, rel: str, alt: str) -> None:
        """A GIF next to the report: linked from the Markdown, embedded in the HTML."""
        self.blocks.append(("gif", (rel, alt)))

    def bullets(self, items: Sequence[str]) -> None:
        self.blocks.append(("ul", list(items)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    # Inline markup shared by both renderers: [text](href) links and `code`.
    _LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")

    def _inline_html(self, text: str) -> str:
        parts, last = [], 0
        for m in self._LINK.finditer(text):
            parts.append(self._code_html(text[last:m.start()]))
            parts.append(f'<a href="{html.escape(m.group(2))}">{self._code_html(m.group(1))}</a>')
            last = m.end()
        parts.append(self._code_html(text[last:]))
        return "".join(parts)

    @staticmethod
    def _code_html(text: str) -> str:
        pieces = text.split("`")
        return "".join(f"<code>{html.escape(s)}</code>" if i % 2 else html.escape(s) for i, s in enumerate(pieces))

    def markdown(self) -> str:
        out = []
        for kind, data in self.blocks:
            if kind == "h":
                out.append("#" * data[0] + " " + data[1])
            elif kind == "p":
                out.append(data)
            elif kind == "table":
                header, rows = data
                out.append("| " + " | ".join(c.replace("|", "\\|") for c in header) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows)
            elif kind in ("img", "gif"):
                out.append(f"![{data[1]}]({data[0]})")
            elif kind == "ul":
                out.extend(f"- {item}" for item in data)
            elif kind == "code":
                out.append("```\n" + data + "\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        body = []
        for kind, data in self.blocks:
            if kind == "h":
                body.append(f"<h{data[0]}>{html.escape(data[1])}</h{data[0]}>")
            elif kind == "p":
                body.append(f"<p>{self._inline_html(data)}</p>")
            elif kind == "table":
                header, rows = data
                head = "".join(f"<th>{self._inline_html(c)}</th>" for c in header)
                trs = "".join("<tr>" + "".join(
                    f"<td class=\"best\">{self._inline_html(c)}</td>" if BEST in c else f"<td>{self._inline_html(c)}</td>"
                    for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind in ("img", "gif"):
                raw = (self.root / data[0]).read_bytes()
                uri = f"data:image/{'png' if kind == 'img' else 'gif'};base64," + base64.b64encode(raw).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(data[1])}" src="{uri}"></figure>')
            elif kind == "ul":
                body.append("<ul>" + "".join(f"<li>{self._inline_html(i)}</li>" for i in data) + "</ul>")
            elif kind == "code":
                body.append(f"<pre>{html.escape(data)}</pre>")
        return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")


_CSS = (
    "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f0f0f0}"
    "td:first-child,th:first-child{text-align:left}td.best{font-weight:bold;background:#eef8ee}"
    "code,pre{background:#f5f5f5;font-size:0.9em}pre{padding:0.6em;overflow-x:auto}"
    "figure{margin:1em 0}img{max-width:100%}h1{border-bottom:2px solid #444}h2{border-bottom:1px solid #aaa}"
)
