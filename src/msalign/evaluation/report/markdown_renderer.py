"""A :class:`~.document.Report` as Markdown, figures linked by file name."""

from __future__ import annotations

from msalign.evaluation.report.document import Report


def render_markdown(report: Report) -> str:
    """The report as Markdown: headings, paragraphs, pipe tables, figures with their captions."""
    lines = [f"# {report.title}", ""]
    for block in report.blocks:
        if block[0] == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(row) + " |" for row in rows]
            lines.append("")
        elif block[0] == "figure":
            figure = block[1]
            lines += [f"![{figure.caption}]({figure.file})", "", f"*{figure.caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


__all__ = ["render_markdown"]
