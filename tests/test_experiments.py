"""A set of runs (dfa_lib.experiments): built in a fixed order, trained longest first, read off by seed;
the alignment recorder measures at the steps asked for; smooth and html_table behave as the chapters use them."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from dfa_lib import DFA, MLP, USF, Data, spread, train
from dfa_lib.book import html_table
from dfa_lib.experiments import (AlignmentRecorder, batch_order, build_runs, longest_first, per_seed,
                                 recorded_angles, train_runs)
from dfa_lib.plot import smooth


def task(n=128, d=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, d, generator=g)
    y = (x[:, :c] + 0.3 * torch.randn(2 * n, c, generator=g)).argmax(1)
    return Data(x[:n], y[:n], x[n:], y[n:])


def test_runs_are_built_in_the_order_of_their_keys():
    built = []

    def prepare(key):
        built.append(key)
        return lambda: key

    keys = [("DFA", 1), ("BP", 0), ("DFA", 0)]
    jobs = build_runs(keys, prepare)
    assert built == keys and list(jobs) == keys


def test_building_in_a_fixed_order_gives_the_same_draws_every_time():
    def draws():
        torch.manual_seed(0)
        return build_runs(["a", "b"], lambda key: (lambda w=torch.randn(3): w))

    first, second = draws(), draws()
    assert all(torch.equal(first[k](), second[k]()) for k in first)
    assert not torch.equal(first["a"](), first["b"]())


def test_longest_first_sorts_by_decreasing_cost_and_keeps_the_order_of_ties():
    keys = [("BP", 0), ("brSF", 0), ("DFA", 0), ("BP", 1), ("brSF", 1)]
    cost = {"BP": 1.0, "DFA": 1.0, "brSF": 1.25}
    assert longest_first(keys, lambda run: cost[run[0]]) == [("brSF", 0), ("brSF", 1), ("BP", 0), ("DFA", 0), ("BP", 1)]
    assert longest_first(["x", "y"], {"x": 1, "y": 2}) == ["y", "x"]


def test_train_runs_starts_the_longest_first_and_returns_results_in_the_build_order():
    started = []
    jobs = build_runs(["short", "long", "middle"], lambda key: (lambda: started.append(key) or key.upper()))
    results = train_runs(jobs, cost={"short": 1, "long": 3, "middle": 2}, workers=1)
    assert started == ["long", "middle", "short"]
    assert list(results.items()) == [("short", "SHORT"), ("long", "LONG"), ("middle", "MIDDLE")]


def test_train_runs_gives_what_training_one_after_another_gives():
    data = task()

    def prepare(key):
        name, seed = key
        torch.manual_seed(seed)
        model = MLP([12, 16, 3], hidden="tanh")
        rule = DFA(model, generator=torch.Generator().manual_seed(seed)) if name == "DFA" else None
        from dfa_lib import BP
        return lambda: train(model, rule or BP(), data, epochs=2, batch_size=16, lr=0.1,
                             generator=batch_order(seed), progress=False)

    keys = [(name, seed) for seed in (0, 1) for name in ("BP", "DFA")]
    together = train_runs(build_runs(keys, prepare), cost=lambda run: 2 if run[0] == "DFA" else 1, workers=2)
    alone = {key: job() for key, job in build_runs(keys, prepare).items()}
    assert list(together) == keys
    assert all(together[k].test_error == alone[k].test_error for k in keys)


def test_per_seed_reads_results_by_seed_for_names_and_tuples():
    results = {("BP", 0): 97.0, ("BP", 1): 98.0, ("BP", 2): 96.0, ("mean", 32, "none", 0): 1, ("mean", 32, "none", 1): 2}
    assert per_seed(results, "BP", [2, 0]) == [96.0, 97.0]
    assert per_seed(results, ("mean", 32, "none"), [0, 1], value=lambda r: 10 * r) == [10, 20]


def test_spread_of_the_seeds_is_mean_min_max():
    values = per_seed({("DFA", s): v for s, v in enumerate([97.25, 96.5, 98.0])}, "DFA", [0, 1, 2])
    assert spread(values) == "97.25 [96.50, 98.00]"


def test_an_unknown_run_key_names_the_missing_run():
    with pytest.raises(KeyError, match=r"no run \('FA', 0\)"):
        per_seed({("BP", 0): 1.0}, "FA", [0])
    with pytest.raises(KeyError, match="no cost given"):
        longest_first(["BP", "FA"], {"BP": 1.0})


def test_a_key_listed_twice_is_refused():
    with pytest.raises(ValueError, match=r"run \('BP', 0\) is listed twice"):
        build_runs([("BP", 0), ("BP", 0)], lambda key: (lambda: None))


def test_prepare_must_return_a_job():
    with pytest.raises(TypeError, match="not a job"):
        build_runs(["BP"], lambda key: 42)


def test_the_recorder_measures_at_the_requested_update_counts_and_after_the_final_epoch():
    data = task(n=64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    rule = USF(model)
    steps = 64 // 16
    recorder = AlignmentRecorder(steps, at={0, 2, 5}, final_epoch=2, probe=(data.x_test[:32], data.y_test[:32]),
                                 rule=rule, loss="ce")
    history = train(model, rule, data, epochs=2, batch_size=16, lr=0.05, loss="ce", on_step=recorder.on_step,
                    on_epoch=recorder.on_epoch, progress=False)
    assert history.records["step"] == [0, 2, 5, 2 * steps]
    assert len(history.records["signal"]) == 4 and len(history.records["signal"][0]) == 2
    run_steps, weight = recorded_angles([history, history], "weight")
    assert list(run_steps) == [0, 2, 5, 8] and weight.shape == (2, 4, 2)


def test_the_recorder_measures_every_kth_step_of_each_epoch_on_the_training_batch():
    data = task(n=64)
    torch.manual_seed(0)
    model = MLP([12, 16, 16, 3], hidden="tanh")
    rule = DFA(model, generator=torch.Generator().manual_seed(0))
    recorder = AlignmentRecorder(8, every=3)
    history = train(model, rule, data, epochs=2, batch_size=8, lr=0.1, on_step=recorder.on_step, progress=False)
    assert history.records["step"] == [2, 5, 10, 13]  # updates made before steps 3 and 6 of each epoch
    assert np.array(history.records["update"]).shape == (4, 2)


def test_the_recorder_refuses_unclear_settings():
    with pytest.raises(ValueError, match="say when to measure"):
        AlignmentRecorder(10)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        AlignmentRecorder(0, every=2)
    with pytest.raises(ValueError, match="update counts"):
        AlignmentRecorder(10, at=[-1])
    with pytest.raises(ValueError, match="both probe"):
        AlignmentRecorder(10, every=2, probe=(torch.zeros(1, 2), torch.zeros(1)))


def test_recorded_angles_refuses_runs_measured_at_different_steps():
    from dfa_lib import History
    a, b = History("FA"), History("FA")
    a.records.update(step=[0, 10], signal=[[80.0], [40.0]])
    b.records.update(step=[0, 20], signal=[[81.0], [41.0]])
    with pytest.raises(ValueError, match="different steps"):
        recorded_angles([a, b], "signal")
    with pytest.raises(KeyError, match="no 'weight' angles"):
        recorded_angles([a], "weight")


def test_smooth_is_a_running_mean_along_the_first_axis():
    assert np.allclose(smooth([1, 2, 3, 4], 2), [1.5, 2.5, 3.5])
    two = smooth(np.array([[0.0, 10], [2, 20], [4, 30]]), 2)
    assert two.shape == (2, 2) and np.allclose(two, [[1, 15], [3, 25]])
    with pytest.raises(ValueError, match="at least 5"):
        smooth([1, 2, 3], 5)


def test_html_table_lays_out_header_and_rows():
    html = html_table(["rule", "acc"], [["BP", 97.5]]).data
    assert html.count("<tr>") == 2 and "<th style='text-align:right'>rule</th>" in html and ">97.5</td>" in html
