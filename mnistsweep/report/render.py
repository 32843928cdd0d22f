"""A `Report` to report.md and a self-contained report.html, through Jinja2 templates.

The HTML environment autoescapes everything; the Markdown one runs every value through
`markdown_text` (its `finalize`), so a name, path, value or error message read from a sweep folder
is shown as text in both, never run as markup. Only the filters below may return `Markup`, and
each builds it from escaped pieces.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from mnistsweep.report.document import Figure, Report, Span

TEMPLATES = Path(__file__).parent / "templates"
FILES_FOLDER = "report_files"  # as the sweep layout names it; links in report.md are relative

_BACKSLASHED = re.compile(r"([\\`*_\[\]|])")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_LINE_START = re.compile(r"^(\s*)([#+\-]|\d+[.)])")


def markdown_text(text: str) -> str:
    """Text that Markdown renderers (CommonMark, GitHub, Python-Markdown) show literally."""
    flat = re.sub(r"\s+", " ", str(text))
    flat = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    flat = flat.replace("~", "&#126;")
    return _BACKSLASHED.sub(r"\\\1", flat)


def markdown_block_start(text: str) -> Markup:
    """A paragraph or list item that would start like a heading, a list or a quote does not."""
    return Markup(_LINE_START.sub(_escape_marker, text, count=1))


def _escape_marker(match: re.Match[str]) -> str:
    marker = match[2]
    if marker[0].isdigit():
        return f"{match[1]}{marker[:-1]}\\{marker[-1]}"
    return f"{match[1]}\\{marker}"


def markdown_span(span: Span) -> Markup:
    if span.style == "strong" and span.text.strip():
        # `**x **` is not bold in CommonMark: spaces at the edges go outside the markers
        core = span.text.strip()
        before = " " if span.text[0].isspace() else ""
        after = " " if span.text[-1].isspace() else ""
        return Markup(f"{before}**{markdown_text(core)}**{after}")
    if span.style == "code" and _fits_code_span(span.text):
        return Markup(f"`{span.text}`")
    return Markup(markdown_text(span.text))


def _fits_code_span(text: str) -> bool:
    """A code span shows its content literally, unless the content could close it or split a
    table row; such text is shown as escaped plain text instead."""
    return bool(text) and not re.search(r"[`|\n\r]", text) and text.strip() == text


def markdown_fence(text: str) -> Markup:
    """A fence longer than any run of backticks inside, so the content cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return Markup("`" * max(3, longest + 1))


def markdown_verbatim(text: str) -> Markup:
    """The inside of a fenced code block is shown as is; only the fence had to be safe."""
    return Markup(text.rstrip("\n"))


def template_output(text: str) -> Markup:
    """A macro's output: built by the template from values it already escaped."""
    return Markup(text)


def figure_path(figure: Figure) -> Markup:
    """The figure's link in report.md; its name is ours, checked to need no escaping."""
    if not _SAFE_NAME.fullmatch(figure.name):
        raise ValueError(f"figure file name {figure.name!r} is not a plain file name")
    return Markup(f"{FILES_FOLDER}/{figure.name}")


def _finalize_markdown(value: Any) -> Any:
    return value if isinstance(value, Markup) else markdown_text(str(value))


def data_uri(figure: Figure) -> str:
    return "data:image/png;base64," + base64.b64encode(figure.png).decode("ascii")


def _environment(filters: dict[str, Any], **options: Any) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        **options,
    )
    environment.filters.update(filters)
    return environment


_MARKDOWN = _environment(
    {
        "md_span": markdown_span,
        "md_fence": markdown_fence,
        "md_verbatim": markdown_verbatim,
        "md_safe": template_output,
        "md_block": markdown_block_start,
        "md_figure_path": figure_path,
    },
    autoescape=False,
    finalize=_finalize_markdown,
)
_HTML = _environment(
    {"data_uri": data_uri}, autoescape=select_autoescape(default=True, default_for_string=True)
)


def to_markdown(report: Report) -> str:
    return _MARKDOWN.get_template("report.md.j2").render(report=report)


def to_html(report: Report) -> str:
    return _HTML.get_template("page.html.j2").render(report=report)
