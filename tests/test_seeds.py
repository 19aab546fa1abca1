"""K seeds trained as one batched model (dfa_lib.seeds) equal K separate runs of dfa_lib.train.

Each network keeps its own initial weights, feedback matrices and shuffling; the batched
products only change float rounding, so weights agree to float tolerance and every error
count (hence every error rate) exactly.
"""
import copy

import pytest
import torch

from dfa_lib import BP, DFA, FA, MLP, USF, Data, SeedBatch, Shallow, batch_rules, spread, train, train_seeds


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small tensors: one thread."""


def task(n=192, d=12, c=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, d, generator=g)
    y = (x[:, :c] + 0.3 * torch.randn(2 * n, c, generator=g)).argmax(1)
    return Data(x[:n], y[:n], x[n:], y[n:])


def nets_and_rules(kind, seeds, sizes=(12, 16, 16, 4), output="sigmoid", init="default"):
    models, rules = [], []
    for s in seeds:
        torch.manual_seed(s)
        m = MLP(list(sizes), output=output, init=init)
        g = torch.Generator().manual_seed(100 + s)
        rules.append({"BP": lambda: BP(), "Shallow": lambda: Shallow(m), "FA": lambda: FA(m, generator=g),
                      "DFA": lambda: DFA(m, scale=0.5, generator=g)}[kind]())
        models.append(m)
    return models, rules


def separate_and_batched(kind, seeds=(0, 1, 2), optimizer=None, frozen=(), epochs=3, **kw):
    data = task()
    models, rules = nets_and_rules(kind, seeds, **{k: kw.pop(k) for k in ("output", "init") if k in kw})
    batch, batched_rule = SeedBatch(models), batch_rules(rules)
    gens = [torch.Generator().manual_seed(7 + s) for s in seeds]
    alone = []
    copied_models, copied_rules = copy.deepcopy((models, rules))  # together: each copy carries its rule's copy
    for m, r, s in zip(copied_models, copied_rules, seeds):
        opt = None if optimizer is None else optimizer(m.parameters())
        h = train(m, r, data, epochs=epochs, batch_size=32, lr=0.2, optimizer=opt, frozen=frozen, progress=False,
                  generator=torch.Generator().manual_seed(7 + s), **kw)
        alone.append((m, h))
    opt = None if optimizer is None else optimizer(batch.parameters())
    hists = train_seeds(batch, batched_rule, data, generators=gens, epochs=epochs, batch_size=32, lr=0.2,
                        optimizer=opt, frozen=frozen, **kw)
    return alone, batch, hists


def assert_same_runs(alone, batch, hists):
    for (m, h), mk, hk in zip(alone, batch.unbatch(), hists):
        for a, b in zip(m.parameters(), mk.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert hk.epoch == h.epoch
        assert hk.test_error == h.test_error and hk.train_error == h.train_error  # error counts: exact
        torch.testing.assert_close(torch.tensor(hk.test_loss), torch.tensor(h.test_loss), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(torch.tensor(hk.train_loss), torch.tensor(h.train_loss), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["BP", "FA", "DFA", "Shallow"])
def test_each_seed_of_the_batch_equals_its_separate_run_plain_sgd(kind):
    assert_same_runs(*separate_and_batched(kind))


@pytest.mark.parametrize("kind", ["BP", "DFA"])
def test_rmsprop_and_a_frozen_first_layer_equal_separate_runs(kind):
    """Chapter 5's optimizer and chapter 6's frozen layer, per network."""
    alone, batch, hists = separate_and_batched(kind, optimizer=lambda p: torch.optim.RMSprop(p, lr=1e-3),
                                               frozen=[1])
    assert_same_runs(alone, batch, hists)
    models, _ = nets_and_rules(kind, (0, 1, 2))
    for k, m in enumerate(models):  # layer 1 still at its initial weights
        torch.testing.assert_close(batch.layers[0].weight[k], m.layers[0].weight)


def test_softmax_cross_entropy_and_sum_reduction():
    assert_same_runs(*separate_and_batched("DFA", output="softmax", loss="ce", reduction="sum", epochs=2))


def test_the_networks_differ_and_keep_their_own_feedback():
    models, rules = nets_and_rules("DFA", (0, 1))
    rule = batch_rules(rules)
    assert rule.B.shape == (2, *rules[0].B.shape)
    torch.testing.assert_close(rule.B[1], rules[1].B)
    assert not torch.equal(rule.B[0], rule.B[1])
    batch = SeedBatch(models)
    out = batch(torch.randn(5, 12))
    assert out.shape == (2, 5, 4)



def test_a_batch_and_its_unbatched_networks_give_the_same_outputs():
    models, _ = nets_and_rules("BP", (0, 1, 2))
    batch, x = SeedBatch(models), torch.randn(7, 12)
    out = batch(x)
    for k, m in enumerate(batch.unbatch()):
        torch.testing.assert_close(out[k], m(x))
        torch.testing.assert_close(out[k], models[k](x))


def test_bad_batches_are_named():
    a, b = MLP([12, 16, 4]), MLP([12, 8, 4])
    with pytest.raises(ValueError, match="same sizes"):
        SeedBatch([a, b])
    batch = SeedBatch([a, copy.deepcopy(a)])
    with pytest.raises(ValueError, match="one generator per network"):
        train_seeds(batch, BP(), task(), generators=[torch.Generator()], epochs=1)
    with pytest.raises(TypeError, match="train_seeds"):
        train(batch, BP(), task(), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(2, batch, 12\)"):
        batch(torch.randn(3, 5, 12))
    with pytest.raises(ValueError, match="USF trains each seed with dfa_lib.train"):
        batch_rules([USF(copy.deepcopy(a)), USF(copy.deepcopy(a))])


def test_spread_reads_mean_min_max():
    assert spread([97.0, 98.0, 99.5]) == "98.17 [97.00, 99.50]"
    assert spread([0.5], ".1f") == "0.5"
