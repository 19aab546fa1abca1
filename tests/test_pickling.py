"""Models and rules survive pickle and torch.save, and train in a worker process exactly as at home.

Readers save runs with torch.save and farm seeds out to multiprocessing pools; both pickle the
model and the rule, so every activation and rule must pickle and come back training the same.
"""
import multiprocessing
import pickle

import pytest
import torch

from conftest import small_classification
from dfa_lib import BP, DFA, FA, MLP, Shallow, seed_everything, train

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


@pytest.mark.parametrize("hidden", ["tanh", "sigmoid", "relu", "identity"])
def test_every_mlp_pickles(hidden):
    model = MLP([6, 5, 3], hidden=hidden)
    x = torch.randn(4, 6)
    copy = pickle.loads(pickle.dumps(model))
    assert torch.equal(copy(x), model(x)) and copy.activation.name == model.activation.name


@pytest.mark.parametrize("make_rule", [BP, Shallow, DFA, FA], ids=["BP", "Shallow", "DFA", "FA"])
def test_torch_save_round_trip_of_model_and_rule(make_rule, tmp_path):
    seed_everything(0)
    model = MLP([6, 8, 8, 3])
    rule = make_rule(model) if make_rule in (DFA, FA) else make_rule()
    torch.save({"model": model, "rule": rule}, tmp_path / "run.pt")
    loaded = torch.load(tmp_path / "run.pt", weights_only=False)
    data = small_classification()
    _, h1 = fit_with(model, rule, data)
    _, h2 = fit_with(loaded["model"], loaded["rule"], data)
    assert h1.train_loss == h2.train_loss
    assert pickle.loads(pickle.dumps(rule)).name == rule.name


def fit_with(model, rule, data):
    h = train(model, rule, data, epochs=1, batch_size=16, lr=0.5, progress=False,
              generator=torch.Generator().manual_seed(0))
    return model, h


def _train_in_worker(seed):
    """Runs in a spawned process: builds, trains and returns a tiny network's state."""
    torch.set_num_threads(1)
    seed_everything(seed)
    model = MLP([6, 8, 3])
    train(model, DFA(model), small_classification(), epochs=2, batch_size=16, lr=0.5, progress=False,
          generator=torch.Generator().manual_seed(0))
    return model


def test_multiprocessing_worker_trains_like_the_parent():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        remote = pool.apply(_train_in_worker, (3,))  # the model itself comes back through pickle
    local = _train_in_worker(3)
    for a, b in zip(remote.state_dict().values(), local.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
