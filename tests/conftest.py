"""Shared fixtures and helpers (test modules import the helpers with ``from conftest import ...``)."""
import pytest
import torch
import torch.nn as nn

from dfa_lib import BP, DFA, FA, MLP, Data, seed_everything, train


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids thread-synchronisation overhead (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def double_precision():
    """Exact identities and angles to 1e-6 degrees: compare in float64 (restored after each test).

    A module opts in with ``pytestmark = pytest.mark.usefixtures("double_precision")``."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def fa_with_forward_weights(model: nn.Module):
    """FA whose every backward weight is the forward weight it replaces: exactly BP."""
    from dfa_lib import FA
    from dfa_lib.rules import learning_layers

    rule = FA(model)
    rule.set_feedback([l.weight.detach().T if isinstance(l, nn.Linear) else l.weight.detach()
                       for l in learning_layers(model)[1:]])
    return rule


def small_classification(n=64, d=6, c=3, seed=0, n_test=None, scale=1.0) -> Data:
    """A noise-free toy task: the class is the largest of the first ``c`` inputs weighted 1..c.

    ``n`` training rows and ``n_test`` test rows (``n`` unless given) of standard normal inputs
    times ``scale``; every row is separable, so a small net learns it in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    n_test = n if n_test is None else n_test
    x = torch.randn(n + n_test, d, generator=g) * scale
    y = (x[:, :c] * torch.arange(1, c + 1)).argmax(1)
    return Data(x[:n], y[:n], x[n:], y[n:])


def noisy_classification(n=192, d=12, c=4, seed=0, n_test=None) -> Data:
    """A toy task whose classes overlap: the largest of the first ``c`` inputs after Gaussian noise
    of standard deviation 0.3, so that no network learns it perfectly and seeds keep differing."""
    g = torch.Generator().manual_seed(seed)
    n_test = n if n_test is None else n_test
    x = torch.randn(n + n_test, d, generator=g)
    y = (x[:, :c] + 0.3 * torch.randn(n + n_test, c, generator=g)).argmax(1)
    return Data(x[:n], y[:n], x[n:], y[n:])


def train_mlp(data: Data, sizes=(6, 8, 3), rule="bp", epochs=2, seed=0, output="sigmoid", **kw):
    """A fresh MLP seeded with ``seed``, trained quietly on ``data`` (batch 16 unless given, fixed
    shuffling) by ``rule`` ("bp", "fa" or "dfa"): returns ``(model, history)``."""
    seed_everything(seed)
    model = MLP(list(sizes), output=output)
    make_rule = {"bp": BP, "dfa": DFA, "fa": FA}[rule]
    kw.setdefault("batch_size", 16)
    history = train(model, make_rule() if make_rule is BP else make_rule(model), data, epochs=epochs,
                    progress=False, generator=torch.Generator().manual_seed(0), **kw)
    return model, history

