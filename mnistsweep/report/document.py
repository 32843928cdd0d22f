"""The report as typed blocks: what the templates render, with no markup in it.

Analysis code says *what* to show (a paragraph with a bold number, a table, a figure); the two
templates say how it looks in Markdown and in HTML. Every string here is plain text — names,
paths, values and error messages read from a sweep folder included — and each template escapes
it for its own format, so nothing read from disk can become markup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

SpanStyle = Literal["text", "strong", "code"]
Align = Literal["left", "right"]


@dataclass(frozen=True)
class Span:
    text: str
    style: SpanStyle = "text"


Inline = str | Span


def strong(text: str) -> Span:
    return Span(text, "strong")


def code(text: str) -> Span:
    return Span(text, "code")


def spans(parts: Sequence[Inline]) -> list[Span]:
    return [part if isinstance(part, Span) else Span(part) for part in parts]


@dataclass(frozen=True)
class Paragraph:
    parts: list[Span]
    kind: Literal["paragraph", "note"] = "paragraph"  # a note stands out (a partial report)


def paragraph(*parts: Inline) -> Paragraph:
    return Paragraph(spans(parts))


def note(*parts: Inline) -> Paragraph:
    return Paragraph(spans(parts), kind="note")


@dataclass(frozen=True)
class Bullets:
    items: list[list[Span]]
    kind: Literal["bullets"] = "bullets"


def bullets(items: Sequence[Sequence[Inline]]) -> Bullets:
    return Bullets([spans(item) for item in items])


@dataclass(frozen=True)
class Table:
    """Cells are formatted strings; `align` says which columns hold numbers."""

    columns: list[str]
    rows: list[list[str]]
    align: list[Align]
    kind: Literal["table"] = "table"


@dataclass(frozen=True)
class Figure:
    """A PNG in report_files/ (`name`), inlined as a data URI in the HTML."""

    name: str
    caption: str
    png: bytes = field(repr=False)
    kind: Literal["figure"] = "figure"


@dataclass(frozen=True)
class CodeBlock:
    text: str
    language: str = ""
    kind: Literal["code"] = "code"


Block = Paragraph | Bullets | Table | Figure | CodeBlock


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2  # 2: a section, 3: a part of the one before

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self


@dataclass
class Report:
    title: str
    lead: list[Block]  # the first lines: the headline ensemble and the best configuration
    sections: list[Section]
