"""Every number a chapter glues into its prose can be formatted by myst-nb.

myst-nb formats a glued value (``{glue:text}`key:.2f```) from its ``text/plain`` repr.  A numpy
scalar glued as is reprs as ``np.float64(97.46)`` under numpy 2, which myst-nb cannot read as a
number: the book build warns and, with ``-W``, fails, but only after every chapter has run.
This test reads the committed notebooks and fails at once.
"""
import json
import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parents[1] / "book"
NUMPY_REPR = re.compile(r"^np\.\w+\(")


def glued_values(notebook: Path):
    for cell in json.loads(notebook.read_text())["cells"]:
        for out in cell.get("outputs", []):
            record = out.get("metadata", {}).get("scrapbook")
            if record:
                yield record["name"], out["data"].get(record["mime_prefix"] + "text/plain", "")


@pytest.mark.parametrize("notebook", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_glued_value_is_a_numpy_repr(notebook):
    bad = [f"{name} = {text}" for name, text in glued_values(notebook) if NUMPY_REPR.match(text)]
    assert not bad, f"glue a Python number (float(x) or x.item()), not a numpy scalar: {bad}"
