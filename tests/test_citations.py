"""Every number the reproduction summary attributes to a source says where in that source it is.

A reader checks a reproduction by putting each "their number" next to the source.  So every
cell of the summary's "their number" / "their rate" columns must either say that the source
gives no number (``none ...``) or cite a place: a seed document's line(s) (``seed 004, line
304``) or a paper's table, figure, section or abstract next to a ``{cite}``.  Where the seed
documents are at hand (``../shared/seeds`` or ``$DFA_SEEDS_DIR``), each number quoted from a
seed must also appear, to the quoted precision, on the line it cites.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "book" / "reproduction.md"
SEEDS = Path(os.environ.get("DFA_SEEDS_DIR", ROOT.parent / "shared" / "seeds"))
THEIR_COLUMNS = ("their number", "their rate")

SEED_PLACE = re.compile(r"seed (00\d), lines? (\d+(?:\s*(?:-|,|and)\s*\d+)*)")
PAPER_PLACE = re.compile(r"\{cite\}`[^`]+`.*\b(Table \d+|Fig\. \d+|Figure \d+|abstract|section \d+|[\w-]+\.(?:md|py|ya?ml)\b)", re.I)
# (the last alternative: a file of a cited repository, e.g. BioTorch's Benchmarks.md)
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e[-+]?\d+)?")
# Numbers once quoted as seed 003's results that no source contains: none may be quoted again.
UNTRACEABLE = ("97.67", "93.7", "74.88", "93.48", "90.52", "20-35°")


def their_cells() -> list[tuple[str, str]]:
    """(claim, cell) for every row of every summary table that has a their-number column."""
    cells, column = [], None
    for line in SUMMARY.read_text().splitlines():
        if not line.startswith("|"):
            column = None
            continue
        row = [c.strip() for c in line.strip().strip("|").split("|")]
        if column is None:
            lowered = [c.lower() for c in row]
            column = next((lowered.index(name) for name in THEIR_COLUMNS if name in lowered), -1)
            continue
        if column >= 0 and not set(row[0]) <= set("- "):
            cells.append((row[0], row[column]))
    return cells


def seed_file(number: str) -> Path:
    matches = sorted(SEEDS.glob(f"{number}_*.txt"))
    assert len(matches) == 1, f"expected one seed document {number}_*.txt in {SEEDS}, found {matches}"
    return matches[0]


def cited_lines(spec: str) -> list[int]:
    """'157 and 169' -> [157, 169]; '642-676' -> [642, ..., 676]."""
    lines = []
    for part in re.split(r"\s*(?:,|and)\s*", spec):
        lo, _, hi = part.partition("-")
        lines += range(int(lo), int(hi or lo) + 1)
    return lines


def matches_to_precision(quoted: str, value: float) -> bool:
    mantissa, _, exponent = quoted.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (int(exponent or 0) - decimals)
    return abs(value - float(quoted)) <= unit / 2 * (1 + 1e-9)


def test_summary_has_their_number_cells():
    assert len(their_cells()) >= 15, "the summary's tables were not found"


@pytest.mark.parametrize("claim,cell", their_cells(), ids=lambda s: s[:40])
def test_their_number_cites_a_place(claim, cell):
    if cell.lower().startswith("none"):
        return
    assert SEED_PLACE.search(cell) or PAPER_PLACE.search(cell), (
        f"{claim!r}: their number {cell!r} names no place in its source "
        "(write 'seed NNN, line N', or a paper's table/figure/section/abstract (or a cited repository's file) after its {cite}, or 'none ...')")


@pytest.mark.parametrize("claim,cell", [c for c in their_cells() if SEED_PLACE.search(c[1])], ids=lambda s: s[:40])
def test_seed_numbers_are_on_the_cited_line(claim, cell):
    if not SEEDS.is_dir():
        pytest.skip(f"seed documents not found at {SEEDS}")
    quoted = NUMBER.findall(cell.split("(", 1)[0])
    assert quoted, f"{claim!r}: {cell!r} cites a seed line but quotes no number before the citation"
    for seed, spec in SEED_PLACE.findall(cell):
        text = seed_file(seed).read_text().splitlines()
        found = [float(v) for n in cited_lines(spec) for v in NUMBER.findall(text[n - 1])]
        for q in quoted:
            assert any(matches_to_precision(q, v) for v in found), (
                f"{claim!r}: {q} is not on seed {seed}, line(s) {spec}: "
                + " / ".join(text[n - 1].strip() for n in cited_lines(spec)))


def test_untraceable_numbers_are_gone():
    """Neither the summary's their-number cells nor any chapter's text or code quote them again."""
    import json

    texts = {f"summary: {claim}": cell for claim, cell in their_cells()}
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(notebook.read_text())["cells"]):
            texts[f"{notebook.name}, cell {i}"] = "".join(cell["source"])
    for where, text in texts.items():
        for number in UNTRACEABLE:
            assert number not in text, f"{where} still quotes {number!r}, a number no source gives"
