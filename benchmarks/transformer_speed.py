"""How fast is DFA on a small transformer, next to plain PyTorch BP on the same model?

The model: rows of an image as tokens (N, T, d_in) -> a linear embedding plus a fixed random
position code -> ``layers`` PyTorch ``nn.TransformerEncoderLayer`` (feed-forward width 2 d; their
attention split into ``nn.Linear`` projections by ``dfa_lib.split_attention``, so every rule
reaches them) with a ``dfa_lib.FeedbackPoint`` on the residual stream after each -> mean over
tokens -> a linear head: chapter 12's ``RowTransformer``.  Random inputs and labels: the step
time does not depend on the data.

Methods, each the same plain loop (``zero_grad; loss.backward(); step`` with Adam):

  * ``torch BP``  no rule and PyTorch's own ``nn.MultiheadAttention`` (not split): plain PyTorch;
  * ``BP split``  no rule, the attention split (``dfa_lib.SelfAttention``): plain autograd on the
                  model every rule trains, chapter 12's BP;
  * ``DFA``       ``dfa_lib.DFA(model, example_input=x[:1])``: the output error projected to every
                  point by one matrix product, backprop inside each layer only;
  * ``FA``        ``dfa_lib.FA(model)``: B in place of W in every projection's backward.

``--chapter`` sets chapter 12's sizes (2 layers, d_model 32, 4 heads, 28 tokens, batch 64) and
one torch thread, on which the chapter trains each run (``dfa_lib.parallel``); the chapter's
optimizer is AdamW without weight decay, here Adam (the same arithmetic).  ``--attention`` picks
``SelfAttention``'s path: ``default`` (the formula by hand on the CPU, the fused kernel elsewhere),
``fused`` (``F.scaled_dot_product_attention``) or ``by-hand``; PyTorch's own module (torch BP)
always takes its fused kernel.

Rounds are interleaved (every method once per round, in turn), and the table gives each method's
median seconds per step and its ratios to torch BP and to BP split as the medians of the
per-round ratios, as in ``any_model_speed.py``.  DFA still runs backprop inside every layer, so
at this depth it saves only the chain between layers; what it saves grows with the number of layers.

    python benchmarks/transformer_speed.py                       # a few seconds on a laptop CPU
    python benchmarks/transformer_speed.py --layers 4 --d-model 64 --steps 50 --rounds 5
    python benchmarks/transformer_speed.py --chapter --steps 20 --rounds 11
    python benchmarks/transformer_speed.py --chapter --attention fused
    python benchmarks/transformer_speed.py --device cuda

Measured on the 2-core development machine (AMD EPYC with AVX-512, torch 2.14.1), 2026-12-05, each
line one run (``--steps 20 --rounds 11`` for ``--chapter``, ``--steps 10 --rounds 7`` at 4 layers
and batch 64, ``--steps 20 --rounds 7`` at batch 32): milliseconds per step, the median over
rounds, and the ratios.  Another process (a chapter's run) shared the two cores, so the seconds
drift between runs and only the ratios within a run compare:

    ms/step (x torch BP, x BP split)         torch BP  BP split             DFA                  FA
    --chapter (2 layers, d 32, batch 64,    15.17     9.77 (0.63, 1.00)    9.88 (0.64, 1.03)   10.51 (0.70, 1.08)
      1 thread), attention by hand
    --chapter --attention fused             13.99    11.05 (0.80, 1.00)   11.28 (0.82, 1.02)   11.74 (0.86, 1.08)
    4 layers, d 64, batch 64, 1 thread      37.41    31.47 (0.84, 1.00)   30.00 (0.82, 0.97)   32.55 (0.88, 1.04)
    the same, --attention fused             38.31    33.55 (0.89, 1.00)   33.28 (0.90, 0.99)   35.25 (0.95, 1.06)
    4 layers, d 64, batch 32, 2 threads     19.81    16.95 (0.86, 1.00)   16.37 (0.82, 0.96)   17.60 (0.89, 1.04)

The first line was measured on the library as released; the other lines on a variant that took the
learning layers' hooks off during a DFA step with feedback points (since dropped: it saved about 2 %
of a step, within the noise between runs; on that variant the first line read 13.69, 8.60, 8.78 (0.64,
1.02) and 9.42 ms).

DFA takes less than torch BP's step at chapter 12's sizes (0.64x), and about BP split's: at two
layers what it saves (one layer's input gradients) is about what its signal costs.  Part of the
gap to torch BP is the attention kernel: PyTorch's module takes ``F.scaled_dot_product_attention``,
slower on this CPU at 28 tokens of head width 8 than the formula by hand (with the fused kernel in
``SelfAttention`` too, BP split takes 0.80x torch BP instead of 0.63x); the rest is spent elsewhere
in PyTorch's module (not profiled further).
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

    def __init__(self, d_in: int, d_model: int, heads: int, layers: int, classes: int, tokens: int):
        super().__init__()
        self.embed = nn.Linear(d_in, d_model)
        self.register_buffer("position", 0.5 * torch.randn(tokens, d_model, generator=torch.Generator().manual_seed(0)))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, heads, 2 * d_model, dropout=0.0, batch_first=True)
            for _ in range(layers))
        self.points = nn.ModuleList(dfa_lib.FeedbackPoint() for _ in range(layers))
        self.head = nn.Linear(d_model, classes)

    def forward(self, x):
        h = self.embed(x) + self.position
        for layer, point in zip(self.layers, self.points):
            h = point(layer(h))
        return self.head(h.mean(1))


ATTENTION = {"default": None, "fused": True, "by-hand": False}  # values of SelfAttention.fused


def make(args, method: str, x: torch.Tensor):
    torch.manual_seed(0)
    model = RowTransformer(x.shape[-1], args.d_model, args.heads, args.layers, 10, x.shape[1])
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
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--attention", choices=list(ATTENTION), default="default",
                        help="SelfAttention's path (module docstring)")
    parser.add_argument("--chapter", action="store_true",
                        help="chapter 12's sizes and one torch thread (overrides those flags)")
    args = parser.parse_args(argv)
    if args.chapter:
        args.layers, args.d_model, args.heads, args.tokens, args.batch, args.threads = 2, 32, 4, 28, 64, 1
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dfa_lib.SelfAttention.fused = ATTENTION[args.attention]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.tokens, 28, generator=g).to(args.device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)
    methods = ["torch BP", "BP split", "DFA", "FA"]
    runs = {m: make(args, m, x) for m in methods}
    for m in methods:  # warm-up: first-call costs and the rules' one-time checks
        run(*runs[m], x, y, 2)
    times = {m: [] for m in methods}
    for _ in range(args.rounds):
        for m in methods:
            times[m].append(run(*runs[m], x, y, args.steps))
    print(f"{args.layers} encoder layers, d_model {args.d_model}, {args.heads} heads, {args.tokens} tokens, "
          f"batch {args.batch}, {args.device}, {torch.get_num_threads()} torch thread(s), attention "
          f"{args.attention}: median over {args.rounds} rounds of {args.steps} steps")
    result = {}
    for m in methods:
        ratio = statistics.median(t / b for t, b in zip(times[m], times["torch BP"]))
        split = statistics.median(t / b for t, b in zip(times[m], times["BP split"]))
        result[m] = (statistics.median(times[m]), ratio)
        print(f"  {m:9s} {1000 * result[m][0]:8.2f} ms/step   {ratio:5.2f} x torch BP   {split:5.2f} x BP split")
    return result


if __name__ == "__main__":
    main()
