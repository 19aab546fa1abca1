"""Every chapter figure tells a reader what it shows, and the back matter follows the book's order.

The book's figures are notebook outputs; myst-nb renders them as figures with a caption, a
target name and alt text when the cell's metadata asks for it::

    "mystnb": {"figure": {"caption": ..., "name": ...}, "image": {"alt": ...}}

Without that, a figure has no caption and its alt text is the image's hashed file name.  A
caption describes the figure: the numbers belong to the chapter's text, where they are glued
from the run, so a caption that quoted one would go stale the next time the chapter runs.
Multi-panel figures wider than the text column carry the ``full-width`` class (book/_static/
dfa-book.css lets them take the margin too) and ``width: 100%`` (which also links the image
to its full-resolution file).  These checks read the committed notebooks: no build needed;
tests/browser/test_rendered_book.py checks the rendered pages.
"""
from __future__ import annotations

import base64
import json
import re
import struct
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
# The text column is at most about 790 px wide (sphinx-book-theme, 1440 px and wider windows): a
# figure drawn more than a quarter wider is shrunk to small tick labels unless it may take the margin.
WIDE_FIGURE_PX = 1000
MATH_OR_GLUE = re.compile(r"\$[^$]*\$|\{glue:[a-z]+\}`[^`]*`")


def figure_cells(notebook: Path) -> list[tuple[int, dict, int]]:
    """(index, cell, width in pixels of its widest PNG) for every code cell that shows a figure."""
    found = []
    for index, cell in enumerate(json.loads(notebook.read_text(encoding="utf-8"))["cells"]):
        widths = [png_width(out["data"]["image/png"]) for out in cell.get("outputs", [])
                  if "image/png" in out.get("data", {})]
        if cell["cell_type"] == "code" and widths:
            found.append((index, cell, max(widths)))
    return found


def png_width(encoded: str | list[str]) -> int:
    header = base64.b64decode("".join(encoded)[:64])
    return struct.unpack(">I", header[16:20])[0]


def figure_options(cell: dict) -> tuple[dict, dict]:
    mystnb = cell["metadata"].get("mystnb", {})
    return mystnb.get("figure", {}), mystnb.get("image", {})


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_a_caption_a_name_and_alt_text(notebook):
    bare = []
    for index, cell, _ in figure_cells(notebook):
        figure, image = figure_options(cell)
        if not (figure.get("caption", "").strip() and figure.get("name") and image.get("alt", "").strip()):
            bare.append(index)
    assert not bare, (
        f"{notebook.name}: figure cells {bare} need a caption, a name and alt text in their metadata "
        '("mystnb": {"figure": {"caption": ..., "name": ...}, "image": {"alt": ...}})'
    )


def test_figure_names_are_unique_across_the_book():
    names = [figure_options(cell)[0].get("name") for nb in NOTEBOOKS for _, cell, _ in figure_cells(nb)]
    names = [n for n in names if n]
    repeated = sorted({n for n in names if names.count(n) > 1})
    assert not repeated, f"figure names are Sphinx targets and must be unique in the book: {repeated}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_captions_describe_without_quoting_numbers(notebook):
    quoting = {}
    for index, cell, _ in figure_cells(notebook):
        figure, image = figure_options(cell)
        for text in (figure.get("caption", ""), image.get("alt", "")):
            if digits := re.findall(r"\S*\d\S*", MATH_OR_GLUE.sub("", text)):
                quoting[index] = digits
    assert not quoting, (
        f"{notebook.name}: captions or alt texts quote numbers {quoting}: describe the figure and "
        "leave the numbers to the glued text, which follows the chapter's run"
    )


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_figures_wider_than_the_text_column_may_take_the_margin(notebook):
    squeezed = []
    for index, cell, width in figure_cells(notebook):
        figure, image = figure_options(cell)
        full_width = "full-width" in str(figure.get("classes", "")).split() and image.get("width") == "100%"
        if width > WIDE_FIGURE_PX and not full_width:
            squeezed.append(f"cell {index} ({width} px)")
    assert not squeezed, (
        f"{notebook.name}: {squeezed} are drawn wider than the text column and would be shrunk to "
        'illegible tick labels: add "classes": "full-width" to the figure options and "width": "100%" '
        "to the image options"
    )


def chapter_order() -> list[str]:
    """The chapters' notebook names in the order of _toc.yml."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    return [Path(c["file"]).name + ".ipynb" for part in toc["parts"] for c in part["chapters"]]


def test_reproduction_summary_follows_the_chapter_order():
    """A reader goes through the summary next to the book: its rows, section by section, name
    the chapters in the order the table of contents gives them."""
    order = chapter_order()
    linked = re.findall(r"\]\((\d\d_[\w]+\.ipynb)\)", (BOOK / "reproduction.md").read_text(encoding="utf-8"))
    positions = [order.index(name) for name in linked]
    backwards = [(linked[i], linked[i + 1]) for i in range(len(linked) - 1) if positions[i + 1] < positions[i]]
    assert linked and not backwards, f"book/reproduction.md lists a chapter after a later one: {backwards}"
