"""Progress bars of run_concurrently and of train on a SeedBatch: shown where someone watches, never saved into an
executed notebook.

A chapter executed by Jupyter Book, ``jupyter nbconvert --execute`` or nbval would keep a tqdm bar for
good (a widget view whose text reads "0%", or the bar's text on stderr) even though it vanished on
screen, so by default the bars show only in a terminal or in a notebook a person runs.
"""
import io
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from dfa_lib import parallel
from dfa_lib.parallel import someone_is_watching, wants_progress

REPO = Path(__file__).resolve().parents[1]


def kernel_whose_cell_came_with(allow_stdin):
    request = {"header": {"msg_type": "execute_request"}, "content": {"code": "", "allow_stdin": allow_stdin}}
    return SimpleNamespace(get_parent=lambda channel=None: request)


@pytest.mark.parametrize("allow_stdin,watched", [(True, True), (False, False)])
def test_a_jupyter_cell_is_watched_when_its_front_end_can_answer_input(monkeypatch, allow_stdin, watched):
    """JupyterLab, VS Code and Colab send cells that may ask for input(); nbconvert, nbval, Jupyter Book don't."""
    monkeypatch.setattr(parallel, "_jupyter_kernel", lambda: kernel_whose_cell_came_with(allow_stdin))
    assert someone_is_watching() is watched
    assert wants_progress(None) is watched
    assert wants_progress(True) is True and wants_progress(False) is False  # an explicit choice wins


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_outside_jupyter_a_terminal_is_watched_a_file_or_pipe_is_not(monkeypatch):
    monkeypatch.setattr(parallel, "_jupyter_kernel", lambda: None)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert someone_is_watching()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert not someone_is_watching()
    monkeypatch.setattr(sys, "stderr", None)  # pythonw, some services
    assert not someone_is_watching()


NOTEBOOK_CELL = """
import copy, torch
from dfa_lib import BP, MLP, Data, SeedBatch, run_concurrently, train
x = torch.randn(400, 12); y = x[:, :4].argmax(1)
model = MLP([12, 16, 4])
histories = train(SeedBatch([model, copy.deepcopy(model)]), BP(), Data(x, y, x, y),
                  generator=[torch.Generator(), torch.Generator()], epochs=2, batch_size=8)
done = run_concurrently({("run", k): (lambda k=k: k * k) for k in range(3)})
print(len(histories), done[("run", 2)])
"""


def test_an_executed_notebook_saves_no_progress_bar():
    """What Jupyter Book, nbconvert and nbval do: execute every cell, then save what it displayed."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = notebook.cells[0].outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [("stream", "stdout", "2 4\n")]
    assert "widgets" not in notebook.metadata
