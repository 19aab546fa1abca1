"""Write the per-chapter execution times of the last `make notebooks` run into the README.

`make notebooks` executes every chapter on a fresh kernel and appends one line per chapter,
``<notebook> <seconds>``, to ``_build/chapter_times.txt``; this script turns that file into the
README's table between the two markers (and the total), so the table always shows one real run.
It also reads the log of an nbval run with pytest's ``--durations=0`` (e.g.
``PYTEST_ADDOPTS=--durations=0 make test > test.log``) and sums each notebook's cell times.

    python tools/chapter_times.py [_build/chapter_times.txt | test.log]
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from readme_summary import replace_block  # tools/ is on the path when this script runs

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- chapter-times:start -->", "<!-- chapter-times:end -->"
BUDGET_S = 20 * 60  # the whole book, on the 2-core machine


DURATION = re.compile(r"^([\d.]+)s (?:setup|call|teardown)\s+book/(\S+\.ipynb)::")


def chapter_seconds(lines: list[str]) -> list[tuple[str, int]]:
    """``[(notebook, seconds)]`` from ``<notebook> <seconds>`` lines or from pytest --durations output."""
    durations = defaultdict(float)
    for line in lines:
        match = DURATION.match(line.strip())
        if match:
            durations[match.group(2)] += float(match.group(1))
    if durations:
        return [(name, round(s)) for name, s in sorted(durations.items())]
    return [(name, int(seconds)) for name, seconds in (line.split() for line in lines if line.strip())]


def table(lines: list[str]) -> str:
    times = [(name.removesuffix(".ipynb"), s) for name, s in chapter_seconds(lines)]
    total = sum(s for _, s in times)
    head = "| " + " | ".join(f"ch{int(name[:2])}" for name, _ in times) + " | total |"
    rule = "|" + " --- |" * (len(times) + 1)
    body = "| " + " | ".join(f"{s} s" for _, s in times) + f" | {total / 60:.1f} min |"
    verdict = "within" if total <= BUDGET_S else "over"
    return f"{head}\n{rule}\n{body}\n\n({verdict} the book's {BUDGET_S // 60}-minute budget)"


def main() -> int:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "chapter_times.txt"
    if not source.is_file():
        print(f"{source} not found: run `make notebooks` first", file=sys.stderr)
        return 1
    readme = (ROOT / "README.md").read_text()
    block = f"{START}\n{table(source.read_text().splitlines())}\n{END}"
    try:
        (ROOT / "README.md").write_text(replace_block(readme, START, END, block))
    except ValueError as err:
        print(err, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
