"""Every chapter's first code cell installs dfa_lib where it is missing, and only there.

The cell is run with IPython (so ``%pip`` works) in a fresh virtual environment that sees
dfa_lib's dependencies but not dfa_lib itself.  The cell's git URL is swapped for this
checkout (no network to GitHub here); everything else runs as a reader's Colab would run it.
"""
from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
GIT_URL = "git+https://github.com/dfa-book/dfa-book"


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_guarded_install(path):
    src = first_code_cell(path)
    assert src.lstrip().startswith("try:\n    import dfa_lib"), f"{path.name}: first code cell must try to import dfa_lib"
    assert "except ModuleNotFoundError:" in src and f'%pip install -q "dfa_lib @ {GIT_URL}"' in src, path.name


def test_install_cell_installs_dfa_lib_in_a_fresh_environment(tmp_path):
    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # Dependencies visible, dfa_lib not: a plain path entry to this environment's site-packages
    # (its .pth files, among them dfa_lib's editable hook, are not processed from there).
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    probe = subprocess.run([str(py), "-c", "import torch, IPython; import dfa_lib"], capture_output=True, text=True,
                           cwd=tmp_path)
    assert "No module named 'dfa_lib'" in probe.stderr, probe.stderr[-2000:]

    cell = first_code_cell(NOTEBOOKS[0]).replace(GIT_URL, ROOT.as_uri())
    script = cell + "\nprint('DFA_LIB_AT', dfa_lib.__file__)\n"
    run = subprocess.run([str(py), "-m", "IPython", "--no-banner", "-c", script], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"DFA_LIB_AT {env_dir}" in run.stdout, run.stdout[-2000:]

    # Where dfa_lib is present, the cell installs nothing.
    again = subprocess.run([str(py), "-m", "IPython", "--no-banner", "-c", script], capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and "Successfully installed" not in again.stdout + again.stderr


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="POSIX paths only")
