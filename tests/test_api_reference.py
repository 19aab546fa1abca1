"""The book's API reference page (book/api.md) documents every public name of dfa_lib.

A name added to ``dfa_lib.__all__`` (or ``dfa_lib.local.__all__``) without an entry on the page
would be missing from the reference a reader looks it up in; the lists are read here, at test time,
so the page has to follow the library.  When a built book is present (``make html-check`` or
``make book``) the rendered page must also carry each name's entry, an anchor a reader can link to.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import dfa_lib
import dfa_lib.local

ROOT = Path(__file__).resolve().parents[1]
API_PAGE = ROOT / "book" / "api.md"
BUILDS = [ROOT / "_build" / "html-check" / "_build" / "html", ROOT / "_build" / "html"]
# What the rendered page is made from: a build older than any of them may predate a new name.
SOURCES = [API_PAGE, ROOT / "dfa_lib" / "__init__.py", ROOT / "dfa_lib" / "local" / "__init__.py"]

PUBLIC = [("dfa_lib", name) for name in dfa_lib.__all__] + [("dfa_lib.local", name) for name in dfa_lib.local.__all__]


def documented_names(source: str) -> dict[str, set[str]]:
    """Names the page documents, by module: autodoc/py directives and autosummary entries,
    resolved against the ``currentmodule`` in force where they appear."""
    found: dict[str, set[str]] = {}
    module, in_autosummary = "dfa_lib", False
    for line in source.splitlines():
        if m := re.match(r"\.\. (?:py:)?currentmodule:: (\S+)", line):
            module = m.group(1)
        elif m := re.match(r"\.\. (?:auto|py:)(?:class|function|exception|data):: (\S+)", line):
            found.setdefault(module, set()).add(m.group(1))
            in_autosummary = False
        elif line.startswith(".. autosummary::"):
            in_autosummary = True
        elif in_autosummary and (m := re.match(r"   (\w+)\s*$", line)):
            found.setdefault(module, set()).add(m.group(1))
        elif line.startswith((".. ", "```")):
            in_autosummary = False
    return found


def test_the_documented_names_are_read_from_the_page_source():
    source = ".. currentmodule:: dfa_lib.local\n\n.. autosummary::\n   :nosignatures:\n\n   forward\n\n.. autofunction:: predict\n"
    assert documented_names(source) == {"dfa_lib.local": {"forward", "predict"}}


@pytest.mark.parametrize("module,name", PUBLIC, ids=[f"{m}.{n}" for m, n in PUBLIC])
def test_every_public_name_has_an_entry_in_the_api_page_source(module, name):
    documented = documented_names(API_PAGE.read_text(encoding="utf-8")).get(module, set())
    assert name in documented, (
        f"{module}.{name} is public (in {module}.__all__) but book/api.md does not document it: "
        f"add '.. autofunction:: {name}' (or autoclass) to the section it belongs to, under "
        f"'.. currentmodule:: {module}'"
    )


def rendered_api_page() -> Path:
    """The newest built API page; skips when there is none or it predates its sources."""
    built = [b / "book" / "api.html" for b in BUILDS if (b / "book" / "api.html").is_file()]
    if not built:
        pytest.skip("no built book: `make html-check` (or `make book`) renders book/api.html")
    page = max(built, key=lambda p: p.stat().st_mtime)
    newer = [s.name for s in SOURCES if s.stat().st_mtime > page.stat().st_mtime]
    if newer:
        pytest.skip(f"{page} is older than {', '.join(newer)}: rebuild with `make html-check`")
    return page


def test_every_public_name_is_rendered_on_the_api_page():
    html = rendered_api_page().read_text(encoding="utf-8")
    missing = [f"{m}.{n}" for m, n in PUBLIC if f'id="{m}.{n}"' not in html]
    assert not missing, f"the rendered API page has no entry for {missing}: check the build log for autodoc warnings"
