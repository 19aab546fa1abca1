"""Shared fixtures and helpers (test modules import the helpers with ``from conftest import ...``)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

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
    rule.set_feedback([l.weight.detach().transpose(0, 1) for l in learning_layers(model)[1:]])
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


def train_mlp(data: Data, sizes=(6, 8, 3), rule="bp", epochs=2, seed=0, **kw):
    """A fresh MLP seeded with ``seed``, trained quietly on ``data`` (batch 16 unless given, fixed
    shuffling) by ``rule`` ("bp", "fa" or "dfa"): returns ``(model, history)``."""
    seed_everything(seed)
    model = MLP(list(sizes))
    make_rule = {"bp": BP, "dfa": DFA, "fa": FA}[rule]
    kw.setdefault("batch_size", 16)
    history = train(model, make_rule() if make_rule is BP else make_rule(model), data, epochs=epochs,
                    progress=False, generator=torch.Generator().manual_seed(0), **kw)
    return model, history



def small_convnet(seed=0) -> nn.Sequential:
    """A LeNet in miniature for 1x8x8 images and 3 classes: conv-tanh-pool, conv-tanh, two linear layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
                         nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(),
                         nn.Linear(4 * 2 * 2, 6), nn.Tanh(), nn.Linear(6, 3))


def toy_batch(n=5, seed=1, image=True, size=8):
    """``(x, labels)``: ``n`` random one-channel ``size`` x ``size`` images (or rows of 7 features
    when not ``image``) with random labels of 3 classes, from their own seeded generator."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g) if image else torch.randn(n, 7, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def gradients(model: nn.Module, x, y, rule=None) -> list:
    """Weight and bias gradients of the mean cross-entropy after one backward pass (None where a
    parameter got none); with ``rule``, the rule is first shown the one-hot targets (DRTP needs them)."""
    model.zero_grad(set_to_none=True)
    if rule is not None:
        rule.observe_target(F.one_hot(y, 3).to(x.dtype))
    F.cross_entropy(model(x), y).backward()
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def assert_same_gradients(a: list, b: list, atol=1e-12) -> None:
    """Two lists from :func:`gradients` agree parameter by parameter: both missing, or equal to ``atol``."""
    assert len(a) == len(b)
    for i, (p, q) in enumerate(zip(a, b)):
        assert (p is None) == (q is None), f"parameter {i}: one gradient is missing"
        if p is not None:
            torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=f"parameter {i} differs")
