"""What a report is made of: headings, paragraphs, tables, figures and notes, in order.

The renderers (:mod:`.markdown_renderer`, :mod:`.html_renderer`) turn a :class:`Report` into text;
the figures are PNG files written beside it (:mod:`.figures`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

DPI = 100
# (width, height) in inches per figure kind; the PNGs are exactly width*DPI x height*DPI pixels
FIGURE_SIZES: dict[str, tuple[float, float]] = {
    "confusion": (7.0, 6.0),
    "per_class": (11.0, 6.5),
    "gap": (12.0, 5.6),
    "sweep": (12.0, 5.4),
    "curves": (12.0, 4.8),
}


@dataclass
class FigureFile:
    file: str  # name inside the report's folder
    kind: str  # a key of FIGURE_SIZES
    caption: str

    @property
    def size_px(self) -> tuple[int, int]:
        width, height = FIGURE_SIZES[self.kind]
        return round(width * DPI), round(height * DPI)


@dataclass
class Report:
    title: str
    blocks: list[tuple] = field(
        default_factory=list
    )  # ("h", level, text) | ("p", text) | ("table", header, rows) | ("figure", FigureFile)
    figures: list[FigureFile] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # figures that were skipped, and why

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", header, rows))

    def figure(self, figure: FigureFile) -> None:
        self.figures.append(figure)
        self.blocks.append(("figure", figure))

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.blocks.append(("p", f"Note: {text}"))


__all__ = ["DPI", "FIGURE_SIZES", "FigureFile", "Report"]
