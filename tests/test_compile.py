"""train(..., compile=True) computes what the eager step computes, and falls back cleanly.

The compiled step is the same arithmetic with fused loops (inductor), so weights agree to float
rounding, not bit for bit.  Each test compiles once per batch shape: a few seconds to tens of
seconds on a 2-core CPU, which is why the nets here are small and the batches divide the set.
"""
import copy
import importlib
import warnings

import pytest
import torch

from conftest import noisy_classification
from dfa_lib import BP, DFA, MLP, train
from dfa_lib.step import CompiledStep


@pytest.mark.parametrize("rule_name", ["BP", "DFA"])
def test_compiled_training_gives_the_eager_weights_and_history(rule_name, one_thread):
    data = noisy_classification(n=256, d=20, n_test=64)
    torch.manual_seed(0)
    model = MLP([20, 16, 16, 4], hidden="tanh")
    eager, compiled = copy.deepcopy(model), copy.deepcopy(model)

    def rule_for(net):  # one rule per model, the same feedback for both
        return BP() if rule_name == "BP" else DFA(net, generator=torch.Generator().manual_seed(1))

    kwargs = dict(epochs=2, batch_size=32, lr=0.1, loss="bce", progress=False)
    h_eager = train(eager, rule_for(eager), data, generator=torch.Generator().manual_seed(2), **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would hide a compile failure
        h_compiled = train(compiled, rule_for(compiled), data, generator=torch.Generator().manual_seed(2), compile=True, **kwargs)
    moved = max((a.weight - b.weight).abs().max().item() for a, b in zip(model.layers, eager.layers))
    assert moved > 1e-2, "the run should change the weights, or the comparison proves nothing"
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert h_compiled.train_error == pytest.approx(h_eager.train_error, abs=1e-9)
    assert h_compiled.test_loss == pytest.approx(h_eager.test_loss, rel=1e-5)


def test_a_step_that_cannot_compile_warns_and_runs_eagerly(one_thread, monkeypatch):
    data = noisy_classification(n=64, d=20, n_test=16)
    torch.manual_seed(0)
    model = MLP([20, 8, 4], hidden="tanh")
    eager = copy.deepcopy(model)
    train(eager, BP(), data, epochs=1, batch_size=32, lr=0.1, progress=False,
          generator=torch.Generator().manual_seed(0))

    calls = []

    class Unsupported(CompiledStep):  # a compile that fails the way dynamo does, before the step runs
        def __init__(self, step, mode=None):
            super().__init__(step, mode)

            def fail(*args):
                calls.append(1)
                raise torch._dynamo.exc.Unsupported("a graph break under fullgraph=True")
            self.compiled = fail

    monkeypatch.setattr(importlib.import_module("dfa_lib.train"), "CompiledStep", Unsupported)
    with pytest.warns(RuntimeWarning, match="training continues without it"):
        train(model, BP(), data, epochs=1, batch_size=32, lr=0.1, progress=False,
              generator=torch.Generator().manual_seed(0), compile=True)
    assert calls == [1], "after the first failure every step runs eagerly"
    for a, b in zip(eager.parameters(), model.parameters()):
        assert torch.equal(a, b), "the fallback must compute exactly the eager step"


def test_compile_refuses_what_it_cannot_do():
    data = noisy_classification(n=64, d=20, n_test=16)
    model = MLP([20, 8, 4])
    with pytest.raises(ValueError, match="on_step"):
        train(model, BP(), data, epochs=1, compile=True, on_step=lambda *a: None, progress=False)
    net = torch.nn.Sequential(torch.nn.Linear(20, 8), torch.nn.Tanh(), torch.nn.Linear(8, 4))
    with pytest.raises(ValueError, match="fast path"):
        train(net, DFA(net), data, epochs=1, compile=True, progress=False)
