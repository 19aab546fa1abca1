"""Seed 001's averaged loops (chapter 4) against the seed's own loop body, for DFA.

The seed averages a, h (including h_0 = x), y_hat and y over the batch (section 3.3.2) or
over each class present (section 3.3.3), forms the error from the averages, and updates
with summed outer products and f' taken at the averaged pre-activation.  Because DFA's
update does not depend on the weights it changes, applying the class rows one after another
(as the seed does) equals one step with their sum, i.e. ``reduction="sum"``.
"""
import pytest
import torch

from dfa_lib import DFA, MLP, Data, train


def seed_step(W, b, B, x, y, lr, classes=None):
    """One step of the seed's averaged DFA loop, column-vector layout as in the report."""
    a, h = [], [x]
    for l in range(len(W) - 1):
        a.append(h[-1] @ W[l].T + b[l])
        h.append(torch.tanh(a[-1]))
    y_hat = torch.sigmoid(h[-1] @ W[-1].T + b[-1])
    groups = [list(range(len(y)))] if classes is None else [
        [i for i in range(len(y)) if int(y[i].argmax()) == c] for c in range(classes)
    ]
    W, b = [w.clone() for w in W], [v.clone() for v in b]
    for idx in groups:
        if not idx:
            continue
        sa = [t[idx].mean(0, keepdim=True).T for t in a]
        sh = [t[idx].mean(0, keepdim=True).T for t in h]
        e = (y_hat[idx].mean(0) - y[idx].mean(0)).unsqueeze(1)
        for i in range(len(B)):
            da = (B[i] @ e) * (1 - torch.tanh(sa[i]) ** 2)
            W[i] -= lr * da @ sh[i].T
            b[i] -= lr * da.sum(1)
        W[-1] -= lr * e @ sh[-1].T
        b[-1] -= lr * e.sum(1)
    return W, b


@pytest.mark.parametrize("averaging,classes", [("batch", None), ("class", 4)])
@pytest.mark.parametrize("sizes", [[5, 7, 4], [5, 7, 6, 4]])
def test_averaged_dfa_step_matches_the_seed_loop(averaging, classes, sizes):
    torch.manual_seed(0)
    x = torch.randn(24, sizes[0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 3] * 6)  # class 2 absent: the seed skips empty classes
    y = torch.nn.functional.one_hot(labels, 4).double()
    net = MLP(sizes, hidden="tanh").double()
    rule = DFA(net, dist="normal", scale=1.9, generator=torch.Generator().manual_seed(1))
    W = [layer.weight.detach().clone() for layer in net.layers]
    b = [layer.bias.detach().clone() for layer in net.layers]
    W_seed, b_seed = seed_step(W, b, [B.double() for B in rule.feedback], x, y, lr=0.3, classes=classes)
    train(net, rule, Data(x, labels, x, labels), epochs=1, batch_size=len(x), lr=0.3, reduction="sum",
          averaging=averaging, shuffle=False, eval_initial=False, progress=False)
    for layer, w, v in zip(net.layers, W_seed, b_seed):
        torch.testing.assert_close(layer.weight, w)
        torch.testing.assert_close(layer.bias, v)


def test_mean_reduction_divides_the_class_step_by_the_classes_present():
    torch.manual_seed(0)
    x = torch.randn(12, 5)
    labels = torch.tensor([0, 0, 1, 3] * 3)  # three classes present
    runs = {}
    for reduction, lr in [("sum", 0.1), ("mean", 0.3)]:
        torch.manual_seed(1)
        net = MLP([5, 6, 4])
        rule = DFA(net, generator=torch.Generator().manual_seed(2))
        train(net, rule, Data(x, labels, x, labels), epochs=1, batch_size=12, lr=lr, reduction=reduction,
              averaging="class", shuffle=False, eval_initial=False, progress=False)
        runs[reduction] = [p.detach() for p in net.parameters()]
    for a, b in zip(runs["sum"], runs["mean"]):
        torch.testing.assert_close(a, b)
