"""Copy the book's reproduction summary into the README, with the numbers of the committed runs.

The summary page (book/reproduction.md) glues each number from its chapter when the book is
built; GitHub's README cannot, so this script resolves the same glue references from the
notebooks' stored outputs and rewrites the README block between the two markers.  It also
copies one figure of a chapter's stored outputs to book/figures/readme_figure.png.

    python tools/readme_summary.py          # rewrite README.md
    python tools/readme_summary.py --check  # exit 1 if README.md is out of date (used by the tests)
"""
from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FIGURE_SOURCE = ("01_linear_fa.ipynb", 0)  # (chapter, index of the image among its outputs)
FIGURE = ROOT / "book" / "figures" / "readme_figure.png"
START, END = "<!-- reproduction-summary:start -->", "<!-- reproduction-summary:end -->"
GLUE = re.compile(r"\{glue:text\}`([^`:]+)::([A-Za-z0-9_]+):([^`]*)`")


def glued_outputs(notebook: Path):
    """``(name, text)`` for every ``myst_nb.glue`` output stored in a notebook, in order: the text is
    the value's ``text/plain`` repr as myst-nb will read it."""
    for cell in json.loads(notebook.read_text())["cells"]:
        for out in cell.get("outputs", []):
            record = out.get("metadata", {}).get("scrapbook")
            if record:
                yield record["name"], out["data"][record["mime_prefix"] + "text/plain"]


def glued_values(notebook: Path) -> dict:
    """``{key: value}`` for every ``myst_nb.glue`` output stored in a notebook (the last one of a key wins)."""
    values = {}
    for name, text in glued_outputs(notebook):
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name] = text
    return values


def render(markdown: str) -> str:
    cache: dict = {}

    def paste(match: re.Match) -> str:
        doc, key, fmt = match.groups()
        if doc not in cache:
            cache[doc] = glued_values(BOOK / doc)
        if key not in cache[doc]:
            raise KeyError(f"{doc} glues no key {key!r} (re-run the chapter?)")
        return format(cache[doc][key], fmt)

    text = GLUE.sub(paste, markdown)
    text = re.sub(r"\{cite\}`([^`]+)`", lambda m: m.group(1).replace(",", ", "), text)
    text = re.sub(r"\]\((\d\d_[a-z_]+\.ipynb)\)", r"](book/\1)", text)
    return text


def summary_block() -> str:
    page = (BOOK / "reproduction.md").read_text()
    body = page.split("\n", 1)[1]  # drop the page title
    body = re.sub(r"^## ", "### ", body, flags=re.M)
    return f"{START}\n{render(body).strip()}\n{END}"


def figure_bytes() -> bytes:
    """The README's figure: one image output of a committed chapter, as PNG bytes."""
    import base64

    notebook, index = FIGURE_SOURCE
    images = [out["data"]["image/png"] for cell in json.loads((BOOK / notebook).read_text())["cells"]
              for out in cell.get("outputs", []) if "image/png" in out.get("data", {})]
    return base64.b64decode(images[index])


def replace_block(text: str, start: str, end: str, block: str) -> str:
    """``text`` with everything from marker ``start`` to marker ``end`` replaced by ``block``
    (which carries the markers itself); ValueError when a marker is missing."""
    if start not in text or end not in text:
        raise ValueError(f"README.md lacks the markers {start} / {end}")
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    return before + block + after


def main() -> int:
    readme = (ROOT / "README.md").read_text()
    try:
        updated = replace_block(readme, START, END, summary_block())
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if not FIGURE.is_file() or FIGURE.read_bytes() != figure_bytes():
            print(f"{FIGURE.relative_to(ROOT)} is out of date: run `python tools/readme_summary.py`", file=sys.stderr)
            return 1
        if updated != readme:
            print("README.md's reproduction summary is out of date: run `python tools/readme_summary.py`",
                  file=sys.stderr)
            return 1
        return 0
    (ROOT / "README.md").write_text(updated)
    FIGURE.parent.mkdir(exist_ok=True)
    FIGURE.write_bytes(figure_bytes())
    return 0


if __name__ == "__main__":
    sys.exit(main())
