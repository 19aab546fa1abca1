"""Write the per-chapter execution times of the last `make notebooks` run into the README.

`make notebooks` executes every chapter on a fresh kernel and appends one line per chapter,
``<notebook> <seconds>``, to ``_build/chapter_times.txt``; this script turns that file into the
README's table between the two markers (and the total), so the table always shows one real run.
It also reads the log of an nbval run with pytest's ``--durations=0`` (e.g.
``PYTEST_ADDOPTS=--durations=0 make test > test.log``) and sums each notebook's cell times.

Both runs print ``benchmarks/epoch_speed.py --yardstick`` before and after the book: plain
PyTorch BP's seconds per epoch on the machine that ran it.  The budgets were set on a machine
where that epoch took ``REFERENCE_TORCH_BP_S``; the table adds a row that scales the measured
seconds by the ratio (an estimate: it assumes the book slows down with the machine as that
epoch does).

    python tools/chapter_times.py [_build/chapter_times.txt | test.log]
"""
from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

from readme_summary import replace_block  # tools/ is on the path when this script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from epoch_speed import REFERENCE_TORCH_BP_S, YARDSTICK_PREFIX  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- chapter-times:start -->", "<!-- chapter-times:end -->"
BUDGET_S = 20 * 60  # the whole book, on the 2-core machine
CHAPTER_BUDGET_S = 4 * 60  # each chapter


DURATION = re.compile(r"^([\d.]+)s (?:setup|call|teardown)\s+book/(\S+\.ipynb)::")
YARDSTICK = re.compile(rf"{YARDSTICK_PREFIX} ([\d.]+) s/epoch")


def yardsticks(lines: list[str]) -> list[float]:
    """Plain PyTorch BP's seconds per epoch from every ``yardstick:`` line of the log."""
    return [float(m.group(1)) for m in map(YARDSTICK.search, lines) if m]


def chapter_seconds(lines: list[str]) -> list[tuple[str, int]]:
    """``[(notebook, seconds)]`` from ``<notebook> <seconds>`` lines or from pytest --durations output."""
    durations = defaultdict(float)
    for line in lines:
        match = DURATION.match(line.strip())
        if match:
            durations[match.group(2)] += float(match.group(1))
    if durations:
        return [(name, round(s)) for name, s in sorted(durations.items())]
    rows = (line.split() for line in lines if line.strip() and not YARDSTICK.search(line))
    return [(name, int(seconds)) for name, seconds in rows]


def _verdict(seconds: list[float], where: str) -> str:
    total, over = sum(seconds), sum(s > CHAPTER_BUDGET_S for s in seconds)
    book = "within" if total <= BUDGET_S else "over"
    chapters = "every chapter within" if not over else f"{over} chapter{'s' * (over > 1)} over"
    return f"{where}: {book} the book's {BUDGET_S // 60}-minute budget, {chapters} {CHAPTER_BUDGET_S // 60} minutes"


def table(lines: list[str]) -> str:
    times = [(name.removesuffix(".ipynb"), s) for name, s in chapter_seconds(lines)]
    seconds = [s for _, s in times]
    head = "| | " + " | ".join(f"ch{int(name[:2])}" for name, _ in times) + " | total |"
    rule = "| --- |" + " --- |" * (len(times) + 1)
    rows = ["| measured | " + " | ".join(f"{s} s" for s in seconds) + f" | {sum(seconds) / 60:.1f} min |"]
    verdicts = [_verdict(seconds, "measured")]
    speeds = yardsticks(lines)
    if speeds:
        factor = REFERENCE_TORCH_BP_S / (sum(speeds) / len(speeds))
        scaled = [s * factor for s in seconds]
        rows.append("| scaled to the reference machine | " + " | ".join(f"{s:.0f} s" for s in scaled)
                    + f" | {sum(scaled) / 60:.1f} min |")
        verdicts.append(_verdict(scaled, "scaled (an estimate)"))
        note = (f"Yardstick, plain PyTorch BP's epoch (`benchmarks/epoch_speed.py --yardstick`): "
                f"{', '.join(f'{v:.2f}' for v in speeds)} s on this run's machine (before and after the book), "
                f"{REFERENCE_TORCH_BP_S} s on the reference machine: scaled = measured x {factor:.2f}.")
    else:
        note = "No yardstick line in this log: the times are not scaled."
    return "\n".join([head, rule, *rows]) + f"\n\n{note}\n\n(" + "; ".join(verdicts) + ")"


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
