"""The README's reproduction table matches the numbers stored in the committed notebooks."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_summary_is_up_to_date():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_summary.py"), "--check"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
