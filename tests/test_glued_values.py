"""Every number a chapter glues into its prose can be formatted by myst-nb.

myst-nb formats a glued value (``{glue:text}`key:.2f```) from its ``text/plain`` repr.  A numpy
scalar glued as is reprs as ``np.float64(97.46)`` under numpy 2, which myst-nb cannot read as a
number: the book build warns and, with ``-W``, fails, but only after every chapter has run.
This test reads the committed notebooks and fails at once.
"""
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from readme_summary import glued_outputs  # noqa: E402

BOOK = ROOT / "book"
NUMPY_REPR = re.compile(r"^np\.\w+\(")


@pytest.mark.parametrize("notebook", sorted(BOOK.glob("*.ipynb")), ids=lambda p: p.stem)
def test_no_glued_value_is_a_numpy_repr(notebook):
    bad = [f"{name} = {text}" for name, text in glued_outputs(notebook) if NUMPY_REPR.match(text)]
    assert not bad, f"glue a Python number (float(x) or x.item()), not a numpy scalar: {bad}"
