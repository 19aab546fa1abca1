"""Shared fixtures and helpers (test modules import the helpers with ``from conftest import ...``)."""
import pytest
import torch
import torch.nn as nn


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
