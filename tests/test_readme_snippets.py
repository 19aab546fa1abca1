"""Every ```python block of the README runs as written, on its own, as a reader would paste it.

Each block runs in a fresh namespace: none may lean on names from an earlier block.  The Colab
block (``%pip``) runs through IPython's input transformer, as a notebook cell would.  MNIST is
read offline from ``DFA_MNIST_DIR`` when it is set; to keep the test short, ``load_mnist`` hands
the blocks the first 2 000 training and 1 000 test images (the same call, fewer rows), so the
blocks that train for ten epochs run exactly as written on less data.
"""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import matplotlib
import pytest

import dfa_lib

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
N_TRAIN, N_TEST = 2_000, 1_000


def python_blocks() -> list[tuple[str, str]]:
    """(the heading the block stands under, its code) for every ```python block."""
    text = README.read_text()
    blocks = []
    for match in BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        blocks.append((headings[-1] if headings else "top", match.group(1)))
    return blocks


BLOCKS = python_blocks()


def as_python(code: str) -> str:
    """Notebook syntax (``%pip``) turned into plain Python, as IPython runs a cell."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(code)


@functools.lru_cache(maxsize=None)
def small_mnist(*args, **kwargs) -> dfa_lib.Data:
    return real_load_mnist(*args, **kwargs).subset(N_TRAIN, N_TEST)


real_load_mnist = dfa_lib.load_mnist


@pytest.fixture
def small_data(monkeypatch):
    """``load_mnist`` as the blocks call it, on the first rows of MNIST only."""
    monkeypatch.setattr(dfa_lib, "load_mnist", lambda *args, **kwargs: small_mnist(*args, **kwargs))
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 5, [heading for heading, _ in BLOCKS]


@pytest.mark.parametrize("heading, code", BLOCKS, ids=[f"{i}-{h}" for i, (h, _) in enumerate(BLOCKS)])
def test_block_runs_as_written(heading, code, small_data):
    if "load_mnist" in code and not os.environ.get("DFA_MNIST_DIR"):
        pytest.skip("needs MNIST offline: set DFA_MNIST_DIR (make test does)")
    namespace = {"__name__": "__main__"}
    exec(compile(as_python(code), f"README.md, block under '{heading}'", "exec"), namespace)
