"""Every chapter's opening cells run on a fresh Colab, where dfa_lib is missing and so is the book's tooling.

A Colab image ships torch, torchvision, numpy, matplotlib, scikit-learn, IPython and tqdm, but
not dfa_lib, jupyter-book, myst-nb or nbval.  The test builds such an environment: a fresh
virtual environment that sees, through a folder of links, only those distributions (and what
they need) from this development environment.  Then, in one IPython process, it runs every
chapter's code cells up to the first one that imports dfa_lib or myst_nb, as a reader's
Colab would run them, with the cell's git URL swapped for this checkout (no network to GitHub
here).  Every module any chapter imports must then be importable there too.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "book").glob("*.ipynb"))
GIT_URL = "git+https://github.com/dfa-book/dfa-book"
COLAB_SHIPS = ["torch", "torchvision", "numpy", "matplotlib", "scikit-learn", "ipython", "tqdm"]
IMPORTS_THE_LIBRARY = re.compile(r"^\s*(from|import)\s+(dfa_lib|myst_nb)\b", re.MULTILINE)

if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip(reason="POSIX paths only")


def code_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def opening_cells(path: Path) -> list[str]:
    """The code cells up to and including the first that imports dfa_lib or myst_nb."""
    cells = code_cells(path)
    first = next(i for i, src in enumerate(cells) if IMPORTS_THE_LIBRARY.search(src))
    return cells[: first + 1]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a chapter imports, in any cell (magics stripped)."""
    from IPython.core.inputtransformer2 import TransformerManager

    names = set()
    for src in code_cells(path):
        for node in ast.walk(ast.parse(TransformerManager().transform_cell(src))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


# --------------------------------------------------------------------------- a Colab-like environment
def with_dependencies(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and, recursively, everything they require."""
    found, todo = {}, list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        found[name] = dist
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(found.values())


def top_level_entries(dist: metadata.Distribution) -> set[str]:
    """The names a distribution puts directly in site-packages (packages, modules, its .dist-info)."""
    entries = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    return {e for e in entries if e != "__pycache__" and not e.endswith(".pth")}


def link_distributions(dists, folder: Path) -> None:
    folder.mkdir()
    for dist in dists:
        site = Path(dist.locate_file(""))
        for entry in top_level_entries(dist):
            if (site / entry).exists() and not (folder / entry).exists():
                (folder / entry).symlink_to(site / entry)


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A fresh virtual environment holding what Colab ships, and neither dfa_lib nor the book's tools."""
    tmp = tmp_path_factory.mktemp("colab")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    link_distributions(with_dependencies(COLAB_SHIPS), tmp / "colab-site-packages")
    site = subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   text=True).strip()
    (Path(site) / "colab.pth").write_text(str(tmp / "colab-site-packages") + "\n")
    return py, tmp


def run_python(py, code: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    return subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def test_the_environment_is_a_fresh_colab(colab):
    py, tmp = colab
    probe = run_python(py, "import torch, torchvision, numpy, matplotlib, sklearn, IPython, tqdm\n"
                           "for name in ('dfa_lib', 'myst_nb', 'jupyter_book', 'nbval'):\n"
                           "    try:\n        __import__(name)\n    except ModuleNotFoundError:\n        pass\n"
                           "    else:\n        print('PRESENT', name)\n", tmp)
    assert probe.returncode == 0, probe.stderr[-2000:]
    assert "PRESENT" not in probe.stdout, probe.stdout


# The driver runs in the Colab environment: every chapter's opening cells in one IPython shell
# (a fresh namespace per chapter), counting %pip calls, then imports every module the chapters use.
DRIVER = """
import importlib, json, sys
from IPython.core.interactiveshell import InteractiveShell

chapters, modules = json.loads(sys.argv[1]), json.loads(sys.argv[2])
shell = InteractiveShell.instance()
real_pip = shell.find_line_magic("pip")
pip_calls = []
shell.register_magic_function(lambda line: (pip_calls.append(line), real_pip(line))[1], "line", "pip")
report = {}
for name, cells in chapters.items():
    shell.reset(new_session=False)
    before = len(pip_calls)
    errors = []
    for src in cells:
        result = shell.run_cell(src)
        if not result.success:
            err = result.error_in_exec or result.error_before_exec
            errors.append(f"{type(err).__name__}: {err}")
            break
    report[name] = {"errors": errors, "pip": len(pip_calls) - before}
missing = []
for module in modules:
    try:
        importlib.import_module(module)
    except ImportError as err:
        missing.append(f"{module}: {err}")
import dfa_lib
print("REPORT" + json.dumps({"chapters": report, "missing": missing, "dfa_lib": dfa_lib.__file__}))
"""


def run_driver(py, chapters: dict, modules: list, cwd: Path) -> dict:
    run = subprocess.run([str(py), "-c", DRIVER, json.dumps(chapters), json.dumps(modules)], capture_output=True,
                         text=True, timeout=600, cwd=cwd,
                         env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "MPLBACKEND": "Agg"})
    lines = [line for line in run.stdout.splitlines() if line.startswith("REPORT")]
    assert run.returncode == 0 and lines, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(lines[-1][len("REPORT"):])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_guarded_install(path):
    src = code_cells(path)[0]
    assert src.lstrip().startswith("try:\n    import dfa_lib"), f"{path.name}: first code cell must try to import dfa_lib"
    assert "except ModuleNotFoundError:" in src and f'%pip install -q "dfa_lib @ {GIT_URL}"' in src, path.name


def test_every_chapter_opens_on_a_fresh_colab(colab):
    py, tmp = colab
    chapters = {p.name: [src.replace(GIT_URL, ROOT.as_uri()) for src in opening_cells(p)] for p in NOTEBOOKS}
    modules = sorted(set().union(*(imported_modules(p) for p in NOTEBOOKS)))
    report = run_driver(py, chapters, modules, tmp)

    failed = {name: r["errors"] for name, r in report["chapters"].items() if r["errors"]}
    assert not failed, f"opening cells fail on a fresh Colab: {failed}"
    assert not report["missing"], f"modules the chapters import that a fresh Colab lacks: {report['missing']}"
    assert report["dfa_lib"].startswith(str(tmp / "venv")), report["dfa_lib"]
    # The first chapter installs dfa_lib; every later one finds it and installs nothing.
    pip_calls = [report["chapters"][p.name]["pip"] for p in NOTEBOOKS]
    assert pip_calls == [1] + [0] * (len(NOTEBOOKS) - 1), dict(zip((p.name for p in NOTEBOOKS), pip_calls))


# --------------------------------------------------------------------------- the chapters' glue
def displayed(call) -> list[tuple[dict, dict]]:
    """The (data, metadata) of everything ``call()`` displays in an IPython shell."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    InteractiveShell.instance()
    with capture_output() as captured:
        call()
    return [(out.data, out.metadata) for out in captured.outputs]


@pytest.mark.parametrize("display", [True, False])
def test_glue_in_the_book_build_is_myst_nbs(display):
    myst_nb = pytest.importorskip("myst_nb")
    from dfa_lib.book import glue

    expected = displayed(lambda: myst_nb.glue("ch_value", 97.46, display=display))
    assert displayed(lambda: glue("ch_value", 97.46, display=display)) == expected
    assert any("scrapbook" in meta for _, meta in expected)  # what jupyter-book reads the value from


def test_glue_without_myst_nb_only_shows_the_value(monkeypatch):
    from dfa_lib.book import glue

    monkeypatch.setitem(sys.modules, "myst_nb", None)  # as on Colab: `import myst_nb` fails
    assert displayed(lambda: glue("ch_value", 97.46, display=False)) == []
    assert displayed(lambda: glue("ch_value", 97.46)) == [({"text/plain": "97.46"}, {})]
