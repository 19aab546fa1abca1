"""How fast are the rules on any model: dfa_lib's autograd path next to plain PyTorch BP.

One epoch of full MNIST (batch 64, Adam 1e-3 or plain SGD 0.01, cross-entropy on logits, preloaded tensors) for
two ordinary ``nn.Sequential`` models:

  * ``mlp``    784-400-400-400-10 with tanh (chapter 5's widths, as nn.Linear layers);
  * ``lenet``  LeNet-5: conv(1->6, 5x5, pad 2)-maxpool-tanh-conv(6->16, 5x5)-maxpool-tanh-120-84-10
               (chapter 11's network, channels-last as there).

Methods, each the same plain PyTorch loop (``zero_grad; loss.backward(); step``):

  * ``torch BP``   no rule at all: autograd;
  * ``DFA``, ``FA``, ``uSF``  the rule built on the model first (its hooks decide the hidden
                   gradients; :mod:`dfa_lib.rules.graph`), nothing else changed;
  * ``train DFA``  the same DFA epoch through ``dfa_lib.train`` (adds its bookkeeping: loss and
                   error sums, divergence checks, one test-set evaluation);
  * ``DFA by hand`` DFA with no hooks at all, written into the loop: each learning layer after
                   the first gets a detached input, the output error ``e`` is formed by hand, the
                   rule's one ``e @ B^T`` gives every block its signal, and one
                   ``torch.autograd.backward`` applies them.  The same arithmetic as ``DFA``: what
                   DFA itself can save against BP, without the cost of the hooks.

Rounds are interleaved (every method once per round), so a neighbour process that slows the
machine hurts all methods alike.  The table gives each method's median seconds per epoch and
its ratio to torch BP as the median over rounds of the ratio *within* a round: on a shared 2-core
VM whose speed drifts by 30-50 % within minutes, two epochs run one after the other see nearly
the same machine, while medians taken method by method mix a fast minute with a slow one.  The target: DFA <= 0.9 x
torch BP on both models.  The optimizer's step costs every method the same, so it dilutes what
DFA saves: ``torch.optim.Adam`` on the CPU (its default per-tensor loop) is about 40 % of a
batch-64 MLP step here (profiled), plain SGD under a tenth.  ``--optimizer sgd`` shows the rules' own cost;
``--optimizer adam-fused`` runs torch's fused Adam (``fused=True``, one kernel for all parameters,
CPU since torch 2.4), which any of these loops can use.

    python benchmarks/any_model_speed.py                 # 5 rounds, torch's default threads
    python benchmarks/any_model_speed.py --models lenet --repeats 5 --threads 1
    python benchmarks/any_model_speed.py --optimizer sgd     # plain SGD instead of Adam
    python benchmarks/any_model_speed.py --optimizer adam-fused  # torch's fused Adam
    python benchmarks/any_model_speed.py --device cuda
    python benchmarks/any_model_speed.py --profile       # where 200 steps of BP and of DFA spend their time
    python benchmarks/any_model_speed.py --blocks 40     # 100-step blocks in turns instead of epochs

This is a benchmark, not a test: nothing fails when a target is missed.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from dfa_lib import DFA, FA, USF, load_mnist, train
from timing import sync  # benchmarks/ is on the path when a benchmark runs

BATCH = 64
TARGET = 0.9  # DFA / torch BP, both models
DEVICE = torch.device("cpu")
OPTIMIZER = "adam"


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """What most people write: Adam at 1e-3 (torch's default implementation or its fused one), or plain SGD."""
    if OPTIMIZER == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.01)
    return torch.optim.Adam(model.parameters(), lr=1e-3, fused=OPTIMIZER == "adam-fused")


def make_model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = _layers(kind).to(DEVICE)
    # channels-last (NHWC), as chapter 11: the same numbers, faster CPU convolutions
    return model.to(memory_format=torch.channels_last) if kind == "lenet" else model


def _layers(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 400), nn.Tanh(), nn.Linear(400, 400), nn.Tanh(),
                             nn.Linear(400, 400), nn.Tanh(), nn.Linear(400, 10))
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.MaxPool2d(2), nn.Tanh(),
        nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(),
        nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))


def attach(method: str, model: nn.Module, x: torch.Tensor):
    if method in ("DFA", "train DFA"):
        return DFA(model, dist="uniform", scale=0.05, example_input=x[:1])
    if method == "FA":
        return FA(model)
    if method == "uSF":
        return USF(model)
    return None


def stepper(kind: str, method: str, x, y, seed: int):
    """A fresh model, rule and optimizer for ``method``, and ``run(n)``: its next ``n`` training steps.

    Batches follow one seeded permutation of the data, wrapping round at the end of an epoch.
    ``DFA by hand`` is described in the module docstring; it trains the same weights as the hooks
    (``tests/test_benchmarks.py``).
    """
    model = make_model(kind, seed)
    rule = attach("DFA" if method == "DFA by hand" else method, model, x)
    if method == "DFA by hand":
        rule.detach()  # keep its B, drop its hooks
    layers = list(model)
    opt = make_optimizer(model)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    position = 0

    def hooks_step(idx):
        loss = F.cross_entropy(model(x.index_select(0, idx)), y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    def by_hand_step(idx):
        h, yb, kept, seen = x.index_select(0, idx), y.index_select(0, idx), [], 0
        for layer in layers:
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                if seen:  # a block boundary: keep the attached block output, give the layer a detached copy
                    kept.append(h)
                    h = h.detach()
                seen += 1
            h = layer(h)
        loss = F.cross_entropy(h, yb)
        e = (torch.softmax(h.detach(), 1) - F.one_hot(yb, h.shape[1])) / len(yb)  # d loss / d logits
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward([h, *kept], [e, *rule.direct_signals(e, kept)])
        opt.step()
        return loss

    step = by_hand_step if method == "DFA by hand" else hooks_step

    def run(n: int) -> None:
        nonlocal position
        for _ in range(n):
            if position >= len(x):
                position = 0
            loss = step(order[position : position + BATCH])
            position += BATCH
        loss.item()
        sync(DEVICE)

    return run


def own_loop_epoch(kind: str, method: str, x, y, seed: int) -> float:
    """Seconds for one epoch of ``method`` in the plain PyTorch loop (``zero_grad; backward; step``)."""
    run = stepper(kind, method, x, y, seed)
    sync(DEVICE)
    start = time.perf_counter()
    run(math.ceil(len(x) / BATCH))
    return time.perf_counter() - start


def interleaved_blocks(kind: str, methods: list, x, y, blocks: int, steps: int = 100) -> dict:
    """Each method's seconds for ``blocks`` blocks of ``steps`` steps, the methods taking turns block by block.

    Two blocks run back to back see nearly the same machine, so the ratio of two methods within a
    turn survives the drift of a shared VM's speed that whole epochs, a minute apart, do not.
    """
    runs = {m: stepper(kind, m, x, y, seed=0) for m in methods}
    for run in runs.values():
        run(10)  # warm-up
    seconds = {m: [] for m in methods}
    for b in range(blocks):
        for m in methods[b % len(methods):] + methods[:b % len(methods)]:  # rotate who goes first
            start = time.perf_counter()
            runs[m](steps)
            seconds[m].append(time.perf_counter() - start)
    return seconds


def profile_steps(kind: str, x, y, steps: int = 200) -> None:
    """torch.profiler's table of ``steps`` steps of torch BP, DFA and DFA by hand (after 50 warm-up steps)."""
    from torch.profiler import profile

    for method in ("torch BP", "DFA", "DFA by hand"):
        run = stepper(kind, method, x, y, seed=0)
        run(50)
        with profile() as prof:
            run(steps)
        print(f"{kind}, {method}, {steps} steps, {OPTIMIZER}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def train_epoch(kind: str, data, seed: int) -> float:
    model = make_model(kind, seed)
    rule = attach("train DFA", model, data.x_train)
    opt = make_optimizer(model)
    sync(DEVICE)
    start = time.perf_counter()
    train(model, rule, data, epochs=1, batch_size=BATCH, optimizer=opt, loss="ce", eval_initial=False,
          generator=torch.Generator().manual_seed(seed), progress=False)
    sync(DEVICE)
    return time.perf_counter() - start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--models", nargs="+", default=["mlp", "lenet"], choices=["mlp", "lenet"])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--optimizer", default="adam", choices=["adam", "adam-fused", "sgd"])
    parser.add_argument("--profile", action="store_true", help="profile BP and DFA steps instead of timing epochs")
    parser.add_argument("--blocks", type=int, default=None, metavar="N",
                        help="instead of whole epochs, N turns of 100-step blocks, the methods taking turns "
                             "(steadier ratios on a drifting VM; dfa_lib.train's row is left out)")
    args = parser.parse_args(argv)
    global OPTIMIZER
    OPTIMIZER = args.optimizer
    if args.threads:
        torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    data = load_mnist(device=DEVICE)
    mean, std = data.x_train.mean(), data.x_train.std()
    data.x_train, data.x_test = (data.x_train - mean) / std, (data.x_test - mean) / std
    images = data.x_train.reshape(-1, 1, 28, 28)
    methods = ["torch BP", "DFA", "DFA by hand", "FA", "uSF", "train DFA"]
    results = {}
    for kind in args.models:
        x = images if kind == "lenet" else data.x_train
        kind_data = data if kind == "mlp" else type(data)(images, data.y_train, data.x_test.reshape(-1, 1, 28, 28),
                                                           data.y_test)
        if args.profile:
            profile_steps(kind, x, data.y_train)
            continue
        own_loop_epoch(kind, "DFA", x[:3200], data.y_train[:3200], 0)  # warm-up
        if args.blocks:
            timed = [m for m in methods if m != "train DFA"]
            runs = interleaved_blocks(kind, timed, x, data.y_train, args.blocks)
            per_epoch = math.ceil(len(x) / BATCH) / 100  # blocks of 100 steps -> seconds per epoch
            runs = {m: [t * per_epoch for t in v] for m, v in runs.items()}
            rounds = f"{args.blocks} turns of 100-step blocks"
        else:
            timed, runs = methods, {m: [] for m in methods}
            for r in range(args.repeats):
                for m in methods:
                    seconds = train_epoch(kind, kind_data, r) if m == "train DFA" else \
                        own_loop_epoch(kind, m, x, data.y_train, r)
                    runs[m].append(seconds)
                print(f"{kind} round {r + 1}/{args.repeats}: " + ", ".join(f"{m} {v[-1]:.2f}s" for m, v in runs.items()),
                      flush=True)
            rounds = f"{args.repeats} rounds"
        med = {m: statistics.median(v) for m, v in runs.items()}
        ratio = {m: statistics.median(t / bp for t, bp in zip(v, runs["torch BP"])) for m, v in runs.items()}
        results[kind] = {"seconds": med, "ratio": ratio}
        print(f"\n{kind}, batch {BATCH}, {OPTIMIZER}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
              f"{rounds}")
        print(f"{'method':<12}{'median s/epoch':>16}{'x torch BP (median of turns)':>31}")
        for m in timed:
            verdict = f"  (target <= {TARGET}: {'met' if ratio[m] <= TARGET else 'MISSED'})" if m == "DFA" else ""
            print(f"{m:<12}{med[m]:>16.2f}{ratio[m]:>31.2f}{verdict}")
        print()
    return results


if __name__ == "__main__":
    main()
