"""tools/chapter_times.py: chapter seconds from a test log, scaled by the machine's yardstick."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import chapter_times  # noqa: E402
from epoch_speed import REFERENCE_TORCH_BP_S  # noqa: E402  (chapter_times puts benchmarks/ on the path)

LOG = f"""\
yardstick: plain PyTorch BP {2 * REFERENCE_TORCH_BP_S:.2f} s/epoch (median of 3, 2 threads)
100.00s call     book/01_intro.ipynb::Cell 1
200.00s call     book/03_mnist.ipynb::Cell 4
150.00s call     book/03_mnist.ipynb::Cell 9
yardstick: plain PyTorch BP {2 * REFERENCE_TORCH_BP_S:.2f} s/epoch (median of 3, 2 threads)
""".splitlines()


def test_chapter_seconds_sum_each_notebooks_cells_and_skip_yardstick_lines():
    assert chapter_times.chapter_seconds(LOG) == [("01_intro.ipynb", 100), ("03_mnist.ipynb", 350)]
    plain = ["01_intro.ipynb 100", "yardstick: plain PyTorch BP 2.00 s/epoch (x)", "03_mnist.ipynb 350"]
    assert chapter_times.chapter_seconds(plain) == [("01_intro.ipynb", 100), ("03_mnist.ipynb", 350)]


def test_table_scales_by_the_yardstick():
    text = chapter_times.table(LOG)  # this machine took twice the reference epoch: halve the seconds
    assert "| measured | 100 s | 350 s | 7.5 min |" in text
    assert "| scaled to the reference machine | 50 s | 175 s | 3.8 min |" in text
    assert "measured: within the book's 20-minute budget, 1 chapter over 4 minutes" in text
    assert "every chapter within 4 minutes" in text


def test_table_without_yardstick_is_not_scaled():
    text = chapter_times.table(LOG[1:4])
    assert "scaled to" not in text and "not scaled" in text
