"""How fast is DFA on a small transformer, next to plain PyTorch BP on the same model?

The model: rows of an image as tokens (N, T, d_in) -> a linear embedding -> ``layers`` PyTorch
``nn.TransformerEncoderLayer`` (their attention split into ``nn.Linear`` projections by
``dfa_lib.split_attention``, so every rule reaches them) with a ``dfa_lib.FeedbackPoint`` on the
residual stream after each -> mean over tokens -> a linear head.  Random inputs and labels: the
step time does not depend on the data.

Methods, each the same plain loop (``zero_grad; loss.backward(); step`` with Adam):

  * ``torch BP``  no rule and PyTorch's own ``nn.MultiheadAttention`` (not split): plain PyTorch;
  * ``DFA``       ``dfa_lib.DFA(model, example_input=x[:1])``: the output error projected to every
                  point by one matrix product, backprop inside each layer only;
  * ``FA``        ``dfa_lib.FA(model)``: B in place of W in every projection's backward.

Rounds are interleaved (every method once per round, in turn), and the table gives each method's
median seconds per step and its ratio to torch BP as the median of the per-round ratios, as in
``any_model_speed.py``.  DFA still runs backprop inside every layer, so at this depth it saves
only the chain between layers; what it saves grows with the number of layers.

    python benchmarks/transformer_speed.py                       # a few seconds on a laptop CPU
    python benchmarks/transformer_speed.py --layers 4 --d-model 64 --steps 50 --rounds 5
    python benchmarks/transformer_speed.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import dfa_lib


class RowTransformer(nn.Module):
    """Tokens -> embedding -> encoder layers, each followed by a FeedbackPoint -> mean-pool -> head."""

    def __init__(self, d_in: int, d_model: int, heads: int, layers: int, classes: int):
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True)
            for _ in range(layers))
        self.points = nn.ModuleList(dfa_lib.FeedbackPoint() for _ in range(layers))
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):
        h = self.embed(x)
        for layer, point in zip(self.layers, self.points):
            h = point(layer(h))
        return self.head(h.mean(1))


def make(args, method: str, x: torch.Tensor):
    torch.manual_seed(0)
    model = RowTransformer(x.shape[-1], args.d_model, args.heads, args.layers, 10)
    if method != "torch BP":
        dfa_lib.split_attention(model)
    model.to(args.device)
    if method == "DFA":
        dfa_lib.DFA(model, example_input=x[:1])
    elif method == "FA":
        dfa_lib.FA(model)
    return model, torch.optim.Adam(model.parameters(), lr=1e-3)


def run(model, optimizer, x, y, steps: int) -> float:
    """Seconds per step over ``steps`` steps (the device synchronised at the end)."""
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=28)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.tokens, 28, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    methods = ["torch BP", "DFA", "FA"]
    runs = {m: make(args, m, x) for m in methods}
    for m in methods:  # warm-up: first-call costs and the rules' one-time checks
        run(*runs[m], x, y, 2)
    times = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            times[m].append(run(*runs[m], x, y, args.steps))
    print(f"{args.layers} encoder layers, d_model {args.d_model}, {args.tokens} tokens, batch {args.batch}, "
          f"{args.device}: median over {args.rounds} rounds of {args.steps} steps")
    result = {}
    for m in methods:
        ratio = statistics.median(t / b for t, b in zip(times[m], times["torch BP"]))
        result[m] = (statistics.median(times[m]), ratio)
        print(f"  {m:9s} {1000 * result[m][0]:8.2f} ms/step   {ratio:5.2f} x torch BP")
    return result


if __name__ == "__main__":
    main()
