"""K seeds trained as one batched model (a dfa_lib.SeedBatch through dfa_lib.train) equal K separate runs.

Each network keeps its own initial weights, feedback matrices and shuffling; the batched
products only change float rounding, so weights agree to float tolerance and every error
count (hence every error rate) exactly.
"""
import copy
import importlib

import pytest
import torch

from conftest import noisy_classification as task
from dfa_lib import BP, DFA, FA, MLP, USF, SeedBatch, Shallow, batch_rules, evaluate, spread, train

train_module = importlib.import_module("dfa_lib.train")  # the module; dfa_lib.train is the function
from dfa_lib.step import TrainingDivergedError, accumulator_dtype
from dfa_lib.targets import Targets


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small tensors: one thread."""


def nets_and_rules(kind, seeds, sizes=(12, 16, 16, 4), init="default"):
    models, rules = [], []
    for s in seeds:
        torch.manual_seed(s)
        m = MLP(list(sizes), init=init)
        g = torch.Generator().manual_seed(100 + s)
        rules.append({"BP": lambda: BP(), "Shallow": lambda: Shallow(m), "FA": lambda: FA(m, generator=g),
                      "DFA": lambda: DFA(m, scale=0.5, generator=g)}[kind]())
        models.append(m)
    return models, rules


def separate_and_batched(rule_kind, seeds=(0, 1, 2), optimizer=None, frozen=(), epochs=3, shared_order=False, **kw):
    """Each network trained alone by train, and all of them as one SeedBatch: network k shuffles with seed
    7 + seeds[k] (one generator each), or all with seed 7 (``shared_order``: one generator for the batch)."""
    data = task()
    models, rules = nets_and_rules(rule_kind, seeds, **{k: kw.pop(k) for k in ("output", "init") if k in kw})
    batch, batched_rule = SeedBatch(models), batch_rules(rules)
    shuffle_seeds = [7] * len(seeds) if shared_order else [7 + s for s in seeds]
    gens = (torch.Generator().manual_seed(7) if shared_order
            else [torch.Generator().manual_seed(s) for s in shuffle_seeds])
    alone = []
    copied_models, copied_rules = copy.deepcopy((models, rules))  # together: each copy carries its rule's copy
    for m, r, s in zip(copied_models, copied_rules, shuffle_seeds):
        opt = None if optimizer is None else optimizer(m.parameters())
        h = train(m, r, data, epochs=epochs, batch_size=32, lr=0.2, optimizer=opt, frozen=frozen, progress=False,
                  generator=torch.Generator().manual_seed(s), **kw)
        alone.append((m, h))
    opt = None if optimizer is None else optimizer(batch.parameters())
    hists = train(batch, batched_rule, data, generator=gens, epochs=epochs, batch_size=32, lr=0.2,
                  optimizer=opt, frozen=frozen, progress=False, **kw)
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
    assert_same_runs(*separate_and_batched("DFA", loss="ce", reduction="sum", epochs=2))


def test_a_seed_batch_trains_to_one_history_per_network():
    alone, batch, hists = separate_and_batched("DFA", seeds=(0, 1, 2, 3), epochs=2)
    assert isinstance(hists, list) and len(hists) == 4 and len({id(h) for h in hists}) == 4
    assert all(h.epoch == [0, 1, 2] and h.rule == "DFA" and h.seconds > 0 for h in hists)
    assert len({tuple(h.test_error) for h in hists}) > 1, "each history is its own network's"


def test_without_eval_initial_and_with_a_forced_target_kind_each_network_equals_its_run():
    alone, batch, hists = separate_and_batched("FA", eval_initial=False, kind="classification", epochs=2)
    assert_same_runs(alone, batch, hists)
    assert all(h.epoch == [1, 2] and h.target_kind == "classification" for h in hists)


def test_unshuffled_batches_equal_unshuffled_separate_runs():
    assert_same_runs(*separate_and_batched("DFA", shuffle=False, epochs=2))


def test_one_generator_for_a_batch_gives_every_network_the_order_it_would_draw_alone():
    assert_same_runs(*separate_and_batched("DFA", shared_order=True, epochs=2))


def test_batch_averaging_equals_each_networks_averaged_run():
    """Chapter 4's master error, per network: each network averages its own mini-batch."""
    assert_same_runs(*separate_and_batched("DFA", averaging="batch", epochs=2))


def test_tol_stops_the_batch_when_every_network_has_settled():
    alone, batch, hists = separate_and_batched("BP", tol=1.0, epochs=6)
    assert_same_runs(alone, batch, hists)  # any change is <= 1: every run stops after epoch 2
    for h in hists:
        assert h.epoch == [0, 1, 2]
        assert h.stopped_early.startswith("epoch 2: training error changed by") and "every network" in h.stopped_early


def test_tol_trains_on_while_one_network_still_moves():
    models, _ = nets_and_rules("BP", (0, 1))

    def still_moving(histories, epoch, model):  # network 1 never settles: make its error jump every epoch
        histories[1].train_error[-1] += 0.5 * (epoch % 2)

    hists = train(SeedBatch(models), BP(), task(), epochs=4, batch_size=32, lr=0.2, tol=0.3, on_epoch=still_moving,
                  progress=False)
    assert all(h.epoch == [0, 1, 2, 3, 4] and h.stopped_early is None for h in hists)
    settled = hists[0].train_error
    assert any(abs(a - b) <= 0.3 for a, b in zip(settled[1:], settled[2:])), "network 0 alone would have stopped"


def test_on_step_and_on_epoch_see_every_networks_history_and_batched_tensors():
    models, rules = nets_and_rules("DFA", (0, 1, 2))
    steps, epochs = [], []

    def on_step(histories, epoch, step, model, cache, e, signals):
        assert isinstance(histories, list) and len(histories) == 3
        steps.append((epoch, step, tuple(e.shape), tuple(signals[0].shape)))

    def on_epoch(histories, epoch, model):
        epochs.append((epoch, [h.epoch[-1] for h in histories]))
        histories[0].record("seen", epoch)

    hists = train(SeedBatch(models), batch_rules(rules), task(), epochs=2, batch_size=64, lr=0.2, on_step=on_step,
                  on_epoch=on_epoch, progress=False)
    assert steps == [(ep, k, (3, 64, 4), (3, 64, 16)) for ep in (1, 2) for k in (1, 2, 3)]
    assert epochs == [(1, [1, 1, 1]), (2, [2, 2, 2])]
    assert hists[0].records == {"seen": [1, 2]} and hists[1].records == {}


def test_evaluate_gives_each_networks_loss_and_error():
    models, _ = nets_and_rules("BP", (0, 1))
    data = task()
    targets = one_hot(data.y_test)
    pairs = evaluate(SeedBatch(models), data.x_test, targets, "bce", batch_size=50)
    assert len(pairs) == 2
    for (loss, error), m in zip(pairs, models):
        alone = evaluate(m, data.x_test, targets, "bce")
        assert error == alone[1]
        assert loss == pytest.approx(alone[0], rel=1e-5)


@pytest.mark.slow
def test_a_compiled_batch_equals_the_eager_one():
    models, rules = nets_and_rules("DFA", (0, 1))
    eager, compiled = SeedBatch(copy.deepcopy(models)), SeedBatch(copy.deepcopy(models))
    runs = [train(b, batch_rules(rules), task(), generator=[torch.Generator().manual_seed(s) for s in (0, 1)],
                  epochs=2, batch_size=32, lr=0.2, progress=False, compile=c)
            for b, c in ((eager, False), (compiled, True))]
    assert [h.test_error for h in runs[0]] == [h.test_error for h in runs[1]]
    for a, b in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_an_interrupted_batch_marks_every_network_interrupted():
    models, _ = nets_and_rules("BP", (0, 1))

    def stop(histories, epoch, model):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match=r"BP \(2 seeds\): training interrupted in epoch 2"):
        hists = train(SeedBatch(models), BP(), task(), epochs=5, batch_size=32, on_epoch=stop, progress=False)
    assert all(h.interrupted and h.epoch == [0, 1, 2] for h in hists)


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
    with pytest.raises(ValueError, match=r"SeedBatch of 2 networks needs one generator per network \(2\) or a single"):
        train(batch, BP(), task(), generator=[torch.Generator()], epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"generator: .* got 3"):
        train(batch, BP(), task(), generator=[torch.Generator() for _ in range(3)], epochs=1, progress=False)
    with pytest.raises(ValueError, match="a sequence of generators .* is for a SeedBatch"):
        train(MLP([12, 16, 4]), BP(), task(), generator=[torch.Generator()], epochs=1, progress=False)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        train(batch, BP(), task(), generator=[7, 8], epochs=1, progress=False)
    with pytest.raises(ValueError, match="averaging='class' cannot train a SeedBatch"):
        train(batch, BP(), task(), averaging="class", epochs=1, progress=False)
    lone_rule = DFA(copy.deepcopy(a))
    lone_rule.detach()
    with pytest.raises(ValueError, match=r"feedback 'B' .* not one matrix per network .*batch_rules"):
        train(batch, lone_rule, task(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="SeedBatch trains on the MLP fast path.*uSF as given trains through autograd"):
        train(batch, USF(copy.deepcopy(a)), task(), epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"\(2, batch, 12\)"):
        batch(torch.randn(3, 5, 12))
    with pytest.raises(ValueError, match="USF trains each seed with dfa_lib.train"):
        batch_rules([USF(copy.deepcopy(a)), USF(copy.deepcopy(a))])


def test_spread_reads_mean_min_max_and_lives_with_the_statistics():
    from dfa_lib.stats import spread as spread_in_stats

    assert spread is spread_in_stats
    assert spread([97.0, 98.0, 99.5]) == "98.17 [97.00, 99.50]"
    assert spread([0.5], ".1f") == "0.5"


# --- any device: the epoch sums' dtype, the generators' own devices, a divergence that keeps the histories ---

def test_accumulator_dtype_is_float32_only_on_mps():
    assert accumulator_dtype("mps") == torch.float32  # Apple's MPS has no float64
    for device in ("cpu", "meta", "cuda", torch.device("cuda", 1)):
        assert accumulator_dtype(device) == torch.float64


def test_evaluation_sums_follow_the_devices_accumulator_dtype(monkeypatch):
    """A reader on a Mac: evaluating the seeds must not ask MPS for float64 sums."""
    asked = []

    def like_mps(device):
        asked.append(torch.device(device).type)
        return torch.float32

    monkeypatch.setattr(train_module, "accumulator_dtype", like_mps)
    models, _ = nets_and_rules("BP", (0, 1))
    x, y = torch.randn(9, 12), torch.randint(0, 4, (9,))
    losses, errors = train_module._network_sums(SeedBatch(models), x, one_hot(y), "bce", batch_size=4)
    assert asked and set(asked) == {"cpu"}
    assert losses.dtype == errors.dtype == torch.float32 and losses.shape == errors.shape == (2,)


def one_hot(y, n_out=4):
    return Targets(torch.nn.functional.one_hot(y, n_out).to(torch.get_default_dtype()), "classification", y)


def test_evaluation_sums_stay_on_the_models_device_meta():
    """PyTorch's meta device stands in for a GPU: a sum made without a device would land on the CPU."""
    models, _ = nets_and_rules("BP", (0, 1, 2))
    batch = SeedBatch(models).to("meta")
    y = torch.randint(0, 4, (9,))
    targets = one_hot(y)
    targets = Targets(targets.values.to("meta"), targets.kind, y.to("meta"))
    losses, errors = train_module._network_sums(batch, torch.randn(9, 12, device="meta"), targets, "bce", 4)
    for sums in (losses, errors):
        assert sums.device.type == "meta" and sums.dtype == accumulator_dtype("meta") and sums.shape == (3,)
    assert [p.device.type for m in batch.unbatch() for p in m.parameters()] == ["meta"] * 3 * 6


def test_each_generator_draws_its_own_order_then_moves_to_the_models_device():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    order = train_module._shuffled_orders(gens, 10, torch.device("meta"))
    assert order.shape == (2, 10) and order.device.type == "meta"
    cpu = train_module._shuffled_orders([torch.Generator().manual_seed(s) for s in (3, 4)], 10, torch.device("cpu"))
    for k, s in enumerate((3, 4)):  # the orders train draws with the same generator
        assert torch.equal(cpu[k], torch.randperm(10, generator=torch.Generator().manual_seed(s)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_seeds_on_a_gpu_with_gpu_generators_equal_their_separate_runs():
    data = task()
    models, _ = nets_and_rules("BP", (0, 1))
    models = [m.cuda() for m in models]
    alone = copy.deepcopy(models)
    batch = SeedBatch(models)
    hists = train(batch, BP(), data, generator=[torch.Generator("cuda").manual_seed(7 + s) for s in (0, 1)],
                  epochs=2, batch_size=32, lr=0.2, progress=False)
    for s, (m, mk, hk) in enumerate(zip(alone, batch.unbatch(), hists)):
        h = train(m, BP(), data, epochs=2, batch_size=32, lr=0.2, progress=False,
                  generator=torch.Generator("cuda").manual_seed(7 + s))
        assert hk.test_error == h.test_error
        for a, b in zip(m.parameters(), mk.parameters()):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


def test_a_diverged_batch_keeps_every_networks_history_of_the_epochs_before():
    torch.manual_seed(0)
    model = MLP([12, 16, 4], hidden="identity")
    batch = SeedBatch([model, copy.deepcopy(model)])
    with pytest.raises(TrainingDivergedError, match=r"2 seeds.*err\.history") as caught:
        train(batch, BP(), task(), generator=[torch.Generator().manual_seed(s) for s in (0, 1)], epochs=50,
              batch_size=16, lr=1e3, loss="mse", progress=False)
    histories = caught.value.history
    assert isinstance(histories, list) and len(histories) == 2
    for h in histories:
        assert h.epoch[0] == 0 and len(h.epoch) == len(h.test_error) >= 1
        assert h.stopped_early.startswith("diverged")


# --- the progress bar ---

def test_progress_bar_moves_with_the_steps_and_disappears(capsys):
    models, rules = nets_and_rules("DFA", (0, 1))
    train(SeedBatch(models), batch_rules(rules), task(), generator=[torch.Generator() for _ in models],
          epochs=2, batch_size=32, progress=True)
    drawn = capsys.readouterr().err
    assert "DFA (2 seeds)" in drawn and "12/12" in drawn and "epoch=2/2" in drawn
    assert drawn.endswith("\r"), "leave=False: the bar is erased when the run ends"


def test_no_progress_bar_where_nobody_watches(capsys):
    """pytest captures stderr, as nbconvert captures a notebook's: by default no bar is drawn there."""
    models, rules = nets_and_rules("DFA", (0, 1))
    train(SeedBatch(models), batch_rules(rules), task(), generator=[torch.Generator() for _ in models],
          epochs=1, batch_size=32)
    assert capsys.readouterr().err == ""
