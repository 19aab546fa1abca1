"""Runs trained concurrently (dfa_lib.parallel) give exactly what they give one after another.

Every job computes on one torch thread whatever the number of workers, so the weights must be
equal bit for bit (not just close) between workers=1 and workers=2, on the MLP fast path and on
the autograd path, and torch's thread count must come back as it was.
"""
import pytest
import torch
import torch.nn as nn

from conftest import noisy_classification
from dfa_lib import BP, DFA, MLP, USF, train
from dfa_lib.parallel import run_concurrently


def prepared_runs(data):
    """Four runs built up front (global RNG used here only), each a zero-argument training job."""
    jobs, models = {}, {}
    for seed in (0, 1):
        for name in ("BP", "DFA"):
            torch.manual_seed(seed)
            model = MLP([20, 32, 32, 4], hidden="tanh")
            rule = BP() if name == "BP" else DFA(model, scale=0.5, generator=torch.Generator().manual_seed(seed))
            g = torch.Generator().manual_seed(10 + seed)
            jobs[name, seed] = (lambda m=model, r=rule, g=g: train(m, r, data, epochs=3, batch_size=16, lr=0.1,
                                                                    generator=g, progress=False))
            models[name, seed] = model
        torch.manual_seed(seed)
        seq = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 4))
        opt = torch.optim.Adam(seq.parameters(), lr=1e-2)
        rule = USF(seq)
        g = torch.Generator().manual_seed(20 + seed)
        jobs["uSF", seed] = (lambda m=seq, r=rule, o=opt, g=g: train(m, r, data, epochs=3, batch_size=16, optimizer=o,
                                                                      loss="ce", generator=g, progress=False))
        models["uSF", seed] = seq
    return jobs, models


def weights(models):
    return {k: [p.detach().clone() for p in m.parameters()] for k, m in models.items()}


def test_two_workers_give_the_weights_of_one_worker_bit_for_bit():
    data = noisy_classification(n=256, d=20)
    jobs, models = prepared_runs(data)
    hist_one = run_concurrently(jobs, workers=1)
    one = weights(models)
    jobs, models = prepared_runs(data)
    hist_two = run_concurrently(jobs, workers=2)
    two = weights(models)
    assert list(hist_two) == list(jobs), "results must come back in the jobs' order"
    for key in one:
        assert all(torch.equal(a, b) for a, b in zip(one[key], two[key])), f"{key}: weights differ between workers"
        assert hist_one[key].test_error == hist_two[key].test_error


def test_a_job_alone_on_one_thread_matches_run_concurrently():
    data = noisy_classification(n=256, d=20)
    jobs, models = prepared_runs(data)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        jobs["DFA", 1]()
    finally:
        torch.set_num_threads(before)
    alone = [p.detach().clone() for p in models["DFA", 1].parameters()]
    jobs, models = prepared_runs(data)
    run_concurrently(jobs, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(alone, models["DFA", 1].parameters()))


def test_thread_count_is_restored_and_lists_keep_their_order():
    before = torch.get_num_threads()
    assert run_concurrently([lambda i=i: i * i for i in range(5)], workers=2) == [0, 1, 4, 9, 16]
    assert torch.get_num_threads() == before


def test_errors_reach_the_caller_after_every_job_ran():
    ran = []

    def bad():
        raise ValueError("job failed")

    def good():
        ran.append(1)
        return 1

    with pytest.raises(ValueError, match="job failed"):
        run_concurrently([bad, good, good], workers=2)
    assert len(ran) == 2


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_workers_are_named(workers):
    with pytest.raises(ValueError, match="workers"):
        run_concurrently([lambda: 0], workers=workers)


def test_jobs_must_be_functions():
    with pytest.raises(TypeError, match="zero-argument functions"):
        run_concurrently([1, 2])


def test_the_progress_bar_counts_finished_runs_and_names_the_last(capsys):
    done = run_concurrently({("BP", s): (lambda s=s: s) for s in range(3)}, workers=2, progress=True)
    assert done == {("BP", 0): 0, ("BP", 1): 1, ("BP", 2): 2}
    drawn = capsys.readouterr().err
    assert "3/3" in drawn and "last finished: BP " in drawn
    assert drawn.endswith("\r"), "leave=False: the bar is erased once every run has finished"


def test_the_progress_bar_of_one_worker_names_list_indices(capsys):
    run_concurrently([lambda: 1, lambda: 2], workers=1, progress=True)
    drawn = capsys.readouterr().err
    assert "2/2" in drawn and "last finished: 1" in drawn


def test_no_progress_bar_where_nobody_watches(capsys):
    """pytest captures stderr, as nbconvert captures a notebook's: by default no bar is drawn there."""
    run_concurrently([lambda: 1, lambda: 2], workers=2)
    assert capsys.readouterr().err == ""


def test_a_progress_bar_changes_no_weight():
    data = noisy_classification(n=256, d=20)
    jobs, models = prepared_runs(data)
    run_concurrently(jobs, workers=1, progress=False)
    quiet = weights(models)
    jobs, models = prepared_runs(data)
    run_concurrently(jobs, workers=2, progress=True)
    for key, params in weights(models).items():
        assert all(torch.equal(a, b) for a, b in zip(quiet[key], params)), f"{key}: weights differ with a bar"
