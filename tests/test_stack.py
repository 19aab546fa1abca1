"""A block-diagonal stack trains exactly like its networks trained one by one."""
import pytest
import torch

from dfa_lib import BP, DFA, FA, MLP, Data, logic_gate, seed_everything, train
from dfa_lib.stack import MaskedSGD, per_model_outputs, stack, unstack


def make(seed, rule_cls, sizes=(2, 4, 3, 1)):
    seed_everything(seed)
    m = MLP(list(sizes), hidden="tanh", init="xavier")
    r = rule_cls(m, dist="uniform", scale=0.7) if rule_cls in (DFA, FA) else rule_cls()
    return m, r


@pytest.mark.parametrize("rule_cls", [BP, DFA, FA])
def test_stacked_training_equals_separate_training(rule_cls):
    torch.set_default_dtype(torch.float64)
    try:
        x, y = logic_gate("xor", "01", dtype=torch.float64)
        data = Data(x, y, x, y)
        P = 3
        pairs = [make(s, rule_cls) for s in range(P)]
        big, big_rule, masks = stack([m for m, _ in pairs], [r for _, r in pairs])
        train(big, big_rule, Data(x, y.repeat(1, P), x, y.repeat(1, P)), epochs=30, batch_size=None, loss="bce",
              optimizer=MaskedSGD(big, masks, lr=0.5), kind="binary", progress=False)
        for (m, r), stacked in zip(pairs, unstack(big, P)):
            train(m, r, data, epochs=30, batch_size=None, lr=0.5, loss="bce", progress=False)
            for a, b in zip(m.parameters(), stacked.parameters()):
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        outs = per_model_outputs(big(x), P)
        assert outs.shape == (P, 4, 1)
    finally:
        torch.set_default_dtype(torch.float32)


def test_stack_refuses_mixed_shapes():
    a = MLP([2, 3, 1])
    b = MLP([2, 4, 1])
    with pytest.raises(ValueError, match="same sizes"):
        stack([a, b])
