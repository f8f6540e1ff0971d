"""A :class:`~.document.Report` as one self-contained HTML page (figures linked by file name)."""

from __future__ import annotations

import html
import re

from msalign.evaluation.report.document import Report


def _inline_html(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def render_html(report: Report) -> str:
    """The report as an HTML page that reads on a phone too (wide tables scroll in their box)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',  # readable on a phone
        f"<title>{html.escape(report.title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;line-height:1.45;"
        "overflow-wrap:anywhere}"
        ".table{overflow-x:auto;margin:1em 0}"  # a wide table scrolls inside its box, the page never does
        "table{border-collapse:collapse;font-size:0.92em}th,td{border:1px solid #bbb;padding:4px 8px;"
        "text-align:right;overflow-wrap:normal}th:first-child,td:first-child{text-align:left}th{background:#eee}"
        "figure{margin:1.5em 0}img{max-width:100%;height:auto}figcaption{color:#333;font-style:italic}</style>",
        "</head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    for block in report.blocks:
        if block[0] == "h":
            parts.append(f"<h{block[1]}>{_inline_html(block[2])}</h{block[1]}>")
        elif block[0] == "p":
            parts.append(f"<p>{_inline_html(block[1])}</p>")
        elif block[0] == "table":
            header, rows = block[1], block[2]
            parts.append(
                '<div class="table"><table><thead><tr>'
                + "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                + "</tr></thead><tbody>"
            )
            parts += ["<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</tbody></table></div>")
        elif block[0] == "figure":
            figure = block[1]
            width, height = figure.size_px
            parts.append(
                f'<figure><img src="{html.escape(figure.file)}" width="{width}" height="{height}" '
                f'alt="{html.escape(figure.caption)}"><figcaption>{_inline_html(figure.caption)}</figcaption></figure>'
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


__all__ = ["render_html"]
