"""The benchmarks time what they say: benchmarks/any_model_speed.py's "DFA by hand" is DFA."""
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import any_model_speed  # noqa: E402


@pytest.mark.parametrize("kind", ["mlp", "lenet"])
def test_dfa_by_hand_trains_the_weights_the_hooks_train(kind, monkeypatch):
    """The hand-written loop (detached blocks, e by hand, one backward) and the hooks: same weights."""
    monkeypatch.setattr(any_model_speed, "OPTIMIZER", "sgd")
    models, make_model = [], any_model_speed.make_model
    monkeypatch.setattr(any_model_speed, "make_model", lambda k, s: models.append(make_model(k, s)) or models[-1])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, *((1, 28, 28) if kind == "lenet" else (784,)), generator=gen)
    y = torch.randint(0, 10, (256,), generator=gen)
    any_model_speed.own_loop_epoch(kind, "DFA", x, y, seed=0)
    any_model_speed.own_loop_epoch(kind, "DFA by hand", x, y, seed=0)
    hooks, by_hand = models
    start = make_model(kind, 0)
    for p, q, p0 in zip(hooks.parameters(), by_hand.parameters(), start.parameters()):
        assert not torch.equal(p, p0)  # the weights moved
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
