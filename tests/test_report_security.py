"""Hostile sweep folders: markup in names, paths, values and errors is shown as text in both
report.md and report.html (checked in headless Chromium); a planted `report_files` symlink is
refused without touching its target; a read-only sweep folder is one line and exit code 2."""

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import markdown
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt
from test_report import chromium, fill_cell, record_sweep, write_result

from mnistsweep import fsio
from mnistsweep.errors import MnistsweepError
from mnistsweep.report import render
from mnistsweep.report.build import write_report
from mnistsweep.sweep.layout import SweepLayout

SCRIPT = "<script>document.title='pwned'</script>"
IMAGE = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"
LINK = "[click](javascript:document.body.setAttribute('data-pwned','2'))"
HOSTILE = f"{SCRIPT} {IMAGE} `tick` a|b {LINK}"

COMMONMARK = MarkdownIt("commonmark", {"html": True}).enable("table")  # raw HTML on: worst case


class Elements(HTMLParser):
    """The tags and attributes of a page, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(page)
    return parser.tags


def injected(page: str) -> list[str]:
    """Anything a hostile value could have made: scripts, handlers, links, images not ours."""
    found = []
    for tag, attrs in elements(page):
        if tag in ("script", "iframe", "a", "object", "embed"):
            found.append(tag)
        if tag == "img" and not (attrs.get("src") or "").startswith(("data:image/png", "report_")):
            found.append(f"img src={attrs.get('src')}")
        found += [f"{tag} {name}" for name in attrs if name.startswith("on")]
    return found


# --- Markdown escaping, for any text --------------------------------------------------------------


def visible_text(page: str) -> str:
    """The text a reader sees (the parser decodes character references itself)."""
    return " ".join(page_text(page).split())


def page_text(page: str) -> str:
    class Text(HTMLParser):
        parts: list[str]

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.parts = []
    parser.feed(page)
    return "".join(parser.parts)


printable = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\u2028\u2029"),
    max_size=60,
) | st.text(st.sampled_from(list("<>&|`*_[]()!#+-.~\\:/ ='\"a1")), max_size=40)


@settings(max_examples=300, deadline=None)
@given(printable)
def test_escaped_markdown_is_shown_literally_by_commonmark_and_python_markdown(text):
    source = render.markdown_block_start(render.markdown_text(text))
    expected = " ".join(text.split())
    for rendered in (
        COMMONMARK.render(source),
        markdown.markdown(source, extensions=["tables", "fenced_code"]),
    ):
        assert [tag for tag, _ in elements(rendered)] in ([], ["p"]), (source, rendered)
        assert visible_text(rendered) == expected, (source, rendered)


@settings(max_examples=150, deadline=None)
@given(printable, printable)
def test_escaped_text_stays_in_its_table_cell(left, right):
    row = f"| {render.markdown_text(left)} | {render.markdown_text(right)} |"
    source = f"| a | b |\n| --- | --- |\n{row}\n"
    for rendered in (COMMONMARK.render(source), markdown.markdown(source, extensions=["tables"])):
        assert [tag for tag, _ in elements(rendered)].count("td") == 2, (source, rendered)
        assert not injected(rendered)


# --- a whole hostile sweep ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_sweep(tmp_path_factory, mnist_dir) -> Path:
    """Markup in the results path, the sweep's name, a cell name, a config value and an error."""
    results = tmp_path_factory.mktemp("hostile") / "results `<b>bold</b>` |x|"
    sweep_dir = results / "quick"
    cells = record_sweep(sweep_dir, {"arch": ["linear", "mlp"], "seed": [0, 1]})
    generator = np.random.default_rng(0)
    from mnistsweep.train import data

    mnist = data.load(mnist_dir)
    for cell in cells[:3]:
        fill_cell(sweep_dir, cell, mnist, generator)
    layout = SweepLayout(sweep_dir)
    record = json.loads(layout.record.read_text())
    fsio.write_json(layout.record, {**record, "name": f"quick {SCRIPT}", "spec_path": IMAGE})
    first = layout.run(cells[0]).result  # a name and a value read from a run's record
    result = json.loads(first.read_text())
    result["cell_name"] = LINK
    result["config"]["arch"] = f"linear {SCRIPT}"
    fsio.write_json(first, result)
    write_result(
        layout.run(cells[3]).root,
        dict(cells[3].config),
        0.0,
        0.0,
        status="failed",
        cell_id=cells[3].id,
        cell_name=cells[3].name,
        error=HOSTILE,
    )
    write_report(sweep_dir, data_dir=mnist_dir)
    return sweep_dir


def test_the_html_shows_hostile_text_as_text_in_chromium(hostile_sweep, tmp_path):
    page = SweepLayout(hostile_sweep).report_html
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout
    assert "<title>Sweep report: quick &lt;script&gt;" in dom  # no script set the title
    assert "data-pwned" not in dom.split("<body", 1)[1].split(">", 1)[0]
    assert not injected(dom)
    shown = visible_text(dom)
    assert SCRIPT in shown and IMAGE in shown and LINK in shown
    assert "results `<b>bold</b>` |x|" in shown  # the path, literally
    assert [tag for tag, _ in elements(dom)].count("b") == 0


def test_the_markdown_shows_hostile_text_as_text(hostile_sweep):
    source = SweepLayout(hostile_sweep).report_md.read_text()
    for rendered in (
        COMMONMARK.render(source),
        markdown.markdown(source, extensions=["tables", "fenced_code"]),
    ):
        assert not injected(rendered)
        assert [tag for tag, _ in elements(rendered)].count("b") == 0
        assert SCRIPT in visible_text(rendered)


def test_the_screenshot_of_a_hostile_report_is_a_page(hostile_sweep, tmp_path):
    screenshot = tmp_path / "hostile.png"
    chromium(
        SweepLayout(hostile_sweep).report_html,
        tmp_path / "profile",
        f"--screenshot={screenshot}",
        "--window-size=1200,2000",
    )
    from matplotlib.image import imread

    assert (imread(screenshot)[..., :3] < 0.9).any(axis=2).mean() > 0.03


# --- symlinks and read-only folders ---------------------------------------------------------------


def test_a_planted_report_files_symlink_is_refused_and_its_target_survives(tmp_path):
    sweep_dir = tmp_path / "sweep"
    for cell in record_sweep(sweep_dir)[:2]:
        fill_cell(sweep_dir, cell, None, np.random.default_rng(0))
    victim = tmp_path / "precious"
    victim.mkdir()
    for name in ("notes.md", "table.csv", "figure.png"):
        (victim / name).write_text(name)
    SweepLayout(sweep_dir).report_files.symlink_to(victim)
    with pytest.raises(MnistsweepError, match="symlink"):
        write_report(sweep_dir, data_dir=tmp_path / "no-data")
    assert sorted(path.name for path in victim.iterdir()) == ["figure.png", "notes.md", "table.csv"]
    assert all((victim / name).read_text() == name for name in ("notes.md", "table.csv"))
    command = [sys.executable, "-m", "mnistsweep", "report", str(sweep_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
    assert len(list(victim.iterdir())) == 3


def read_only(sweep_dir: Path) -> list[str]:
    """A command prefix under which `sweep_dir` is read-only, also for root (a private mount)."""
    if os.geteuid() != 0:
        for path in [sweep_dir, *sweep_dir.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        return []
    unshare = shutil.which("unshare")
    probe = [unshare or "unshare", "--mount", "true"]
    if unshare is None or subprocess.run(probe, capture_output=True).returncode != 0:
        pytest.skip("root without mount namespaces: cannot make a folder read-only")
    folder = str(sweep_dir)
    script = (
        f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" && exec "$@"'
    )
    return [unshare, "--mount", "sh", "-c", script, "sh"]


def test_a_read_only_sweep_folder_is_one_line_and_exit_code_2(tmp_path):
    sweep_dir = tmp_path / "sweep"
    for cell in record_sweep(sweep_dir)[:2]:
        fill_cell(sweep_dir, cell, None, np.random.default_rng(0))
    before = sorted(path.name for path in sweep_dir.iterdir())
    command = [
        *read_only(sweep_dir),
        sys.executable,
        "-m",
        "mnistsweep",
        "report",
        str(sweep_dir),
        "--data-dir",
        str(tmp_path / "no-data"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: cannot write") and result.stderr.count("\n") == 1
    assert "read-only" in result.stderr or "may not write" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in sweep_dir.iterdir()) == before
