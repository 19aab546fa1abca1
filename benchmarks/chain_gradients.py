"""Gradients and alignment angles of every rule on chapter 10/11-like chains, saved to compare two library versions.

Changes to the hooks (dfa_lib/rules/graph.py) must leave the chapters' numbers as they are.  Run this
with each version of the library on the path and compare the two files: every gradient after two
SGD steps must be bit-identical (``torch.equal``) and every alignment angle equal::

    PYTHONPATH=/path/to/old python benchmarks/chain_gradients.py old.pt
    PYTHONPATH=/path/to/new python benchmarks/chain_gradients.py new.pt
    python benchmarks/chain_gradients.py --compare old.pt new.pt

Models: chapter 10's tanh MLP (784-32-32-32-10 here) and chapter 11's LeNet-5 (channels-last),
every rule of ``dfa_lib.rules.RULES`` built with ``make_rule`` and the same generator, float32.
"""
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import dfa_lib
from dfa_lib import alignment, make_rule


def compare(old_path: str, new_path: str) -> int:
    """Print and return the number of differing gradients and angles between two saved runs."""
    old, new = torch.load(old_path, weights_only=False), torch.load(new_path, weights_only=False)
    differ = 0
    for key in old:
        if key[2] == "grads":
            same = all((p is None and q is None) or (p is not None and q is not None and torch.equal(p, q))
                       for p, q in zip(old[key], new[key]))
        else:
            same = old[key] == new[key]
        if not same:
            differ += 1
            print("differs:", key)
    print(f"{differ} of {len(old)} results differ")
    return differ


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--compare":
        sys.exit(1 if compare(sys.argv[2], sys.argv[3]) else 0)
    out = {}
    def mlp():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(784, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 10))
    def lenet():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.MaxPool2d(2), nn.Tanh(), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2),
                             nn.Tanh(), nn.Flatten(), nn.Linear(400, 120), nn.Tanh(), nn.Linear(120, 84), nn.Tanh(),
                             nn.Linear(84, 10)).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(3)
    for name, make, x in [("mlp", mlp, torch.randn(16, 784, generator=g)), ("lenet", lenet, torch.randn(16, 1, 28, 28, generator=g))]:
        y = torch.randint(0, 10, (16,), generator=g)
        for rule_name in ["bp", "fa", "dfa", "shallow", "usf", "frsf", "brsf", "kp", "drtp"]:
            model = make()
            rule = make_rule(rule_name, model, generator=torch.Generator().manual_seed(1), example_input=x[:1],
                             **({"path": "autograd"} if rule_name == "bp" else {}))
            for step in range(2):
                model.zero_grad(set_to_none=True); rule.zero_grad(set_to_none=True)
                rule.observe_target(y)
                F.cross_entropy(model(x), y).backward()
                with torch.no_grad():
                    for p in list(model.parameters()) + list(rule.parameters()):
                        if p.grad is not None: p -= 0.1 * p.grad
            out[(name, rule_name, "grads")] = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
            out[(name, rule_name, "alignment")] = alignment(model, rule, x, y, loss="ce")
    torch.save(out, sys.argv[1])
    print(f"saved {len(out)} results from {dfa_lib.__file__} to {sys.argv[1]}")


if __name__ == "__main__":
    main()
