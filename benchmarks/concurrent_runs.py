"""Two runs at a time, one core each (``dfa_lib.run_concurrently``), against one run after another.

Four runs of one epoch on full MNIST for each of the book's small networks, trained
(a) one after another on torch's threads and (b) with ``run_concurrently(jobs, workers=2)``:

  * ``mlp200``       chapter 3's 784-200-10 tanh/sigmoid net, DFA, batch 32, plain SGD;
  * ``mlp200-b200``  the same at seed 001's batch 200 (chapter 3's seed setting);
  * ``mlp256``       chapter 10's 784-256-256-256-10 ``nn.Sequential``, DFA hooks, fused AdamW;
  * ``lenet``        chapter 11's LeNet-5, DFA hooks, AdamW.

Rounds are interleaved and the ratio is the median over rounds of (b) / (a) within a round
(see ``any_model_speed.py`` for why).  Each run's weights are checked to be the same in (b)
as trained alone on one thread.

    python benchmarks/concurrent_runs.py
    python benchmarks/concurrent_runs.py --models lenet --repeats 5

This is a benchmark, not a test: nothing fails when a run is slow.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn as nn

from any_model_speed import make_model  # chapter 11's LeNet, as that benchmark builds it (benchmarks/ is on the path)
from dfa_lib import DFA, MLP, load_mnist, run_concurrently, train

RUNS = 4


def prepare(kind: str, seed: int, data, images):
    """Build run `seed` of `kind` (weights, rule, optimizer, batch order); a job that trains one epoch."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(100 + seed)
    order = torch.Generator().manual_seed(seed)
    if kind.startswith("mlp200"):
        model = MLP([784, 200, 10], hidden="tanh")
        rule = DFA(model, dist="normal", scale=1.9, generator=g)
        settings = dict(batch_size=200, lr=1e-4, reduction="sum") if kind == "mlp200-b200" else dict(batch_size=32, lr=0.05)
        return model, lambda: train(model, rule, data, epochs=1, loss="bce", generator=order, progress=False,
                                    **settings)
    if kind == "mlp256":
        model = nn.Sequential(nn.Linear(784, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                              nn.Linear(256, 256), nn.Tanh(), nn.Linear(256, 10))
        rule, run_data = DFA(model, generator=g), data
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0, fused=True)
    else:
        model = make_model("lenet", seed)
        rule, run_data = DFA(model, generator=g, example_input=images.x_train[:1]), images
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    return model, lambda: train(model, rule, run_data, epochs=1, batch_size=64, optimizer=opt, loss="ce",
                                generator=order, progress=False)


def timed(kind, data, images, concurrent: bool):
    built = [prepare(kind, s, data, images) for s in range(RUNS)]
    start = time.perf_counter()
    if concurrent:
        run_concurrently([job for _, job in built], workers=2)
    else:
        for _, job in built:
            job()
    return time.perf_counter() - start, [[p.detach().clone() for p in m.parameters()] for m, _ in built]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["mlp200", "mlp200-b200", "mlp256", "lenet"],
                        choices=["mlp200", "mlp200-b200", "mlp256", "lenet"])
    args = parser.parse_args(argv)
    data = load_mnist()
    standard = load_mnist(scale="standard")
    images = type(standard)(standard.x_train.reshape(-1, 1, 28, 28), standard.y_train,
                            standard.x_test.reshape(-1, 1, 28, 28), standard.y_test)
    results = {}
    for kind in args.models:
        run_data = data if kind.startswith("mlp200") else standard
        seq, conc = [], []
        for r in range(args.repeats):
            t_seq, _ = timed(kind, run_data, images, concurrent=False)
            t_conc, weights = timed(kind, run_data, images, concurrent=True)
            seq.append(t_seq)
            conc.append(t_conc)
            print(f"{kind} round {r + 1}/{args.repeats}: one after another {t_seq:.1f} s, two at a time {t_conc:.1f} s",
                  flush=True)
        # the same runs alone on one thread: run_concurrently must give their weights bit for bit
        _, alone = _one_thread(lambda: timed(kind, run_data, images, concurrent=False))
        same = all(torch.equal(a, b) for ws_a, ws_b in zip(alone, weights) for a, b in zip(ws_a, ws_b))
        ratio = statistics.median(c / s for c, s in zip(conc, seq))
        results[kind] = dict(sequential=statistics.median(seq), concurrent=statistics.median(conc), ratio=ratio)
        print(f"{kind}: {RUNS} runs of one epoch, {os.cpu_count()} CPUs: one after another on "
              f"{torch.get_num_threads()} torch threads {statistics.median(seq):.1f} s, two at a time "
              f"{statistics.median(conc):.1f} s: {ratio:.2f}x the time ({1 / ratio:.2f}x faster); "
              f"weights as trained alone on one thread: {'identical' if same else 'DIFFERENT'}\n", flush=True)
    return results


def _one_thread(fn):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


if __name__ == "__main__":
    main()
