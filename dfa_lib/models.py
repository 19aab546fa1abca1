"""The multilayer perceptron every FA-family chapter trains.

An ``MLP`` is a stack of ``nn.Linear`` layers with one hidden activation and one
output function.  Besides ``forward`` it has ``forward_cached``, which keeps what each
layer saw (its input ``h_{l-1}``) and computed (its pre-activation ``a_l``); the feedback
rules in :mod:`dfa_lib.rules` turn the output error into weight gradients from that cache.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``); the cache is explained in chapter 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An elementwise function with its derivative written two ways.

    ``from_output(h)`` gives f'(a) from h = f(a) (cheap: no second tanh); ``from_pre(a)``
    gives it from a itself, which the averaged training loops need (the mean of h is
    not f of the mean of a).
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    from_output: Callable[[torch.Tensor], torch.Tensor]
    from_pre: Callable[[torch.Tensor], torch.Tensor]


# Module-level functions, not lambdas, so that models pickle (torch.save(model), multiprocessing).
def _identity(a: torch.Tensor) -> torch.Tensor:
    return a


def _tanh_from_output(h: torch.Tensor) -> torch.Tensor:
    return 1 - h * h


def _tanh_from_pre(a: torch.Tensor) -> torch.Tensor:
    return 1 - torch.tanh(a) ** 2


def _sigmoid_from_output(h: torch.Tensor) -> torch.Tensor:
    return h * (1 - h)


def _sigmoid_from_pre(a: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(a) * (1 - torch.sigmoid(a))


def _relu_derivative(t: torch.Tensor) -> torch.Tensor:
    return (t > 0).to(t.dtype)


def _softmax(a: torch.Tensor) -> torch.Tensor:
    return F.softmax(a, dim=-1)


ACTIVATIONS = {
    "tanh": Activation("tanh", torch.tanh, _tanh_from_output, _tanh_from_pre),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_from_output, _sigmoid_from_pre),
    "relu": Activation("relu", torch.relu, _relu_derivative, _relu_derivative),
    "identity": Activation("identity", _identity, torch.ones_like, torch.ones_like),
}
OUTPUT_FUNCTIONS = {
    "sigmoid": torch.sigmoid,
    "identity": _identity,
    "softmax": _softmax,
    "tanh": torch.tanh,
}


def get_activation(name: str) -> Activation:
    """The activation record for a name (``"linear"`` and ``"none"`` mean ``"identity"``)."""
    key = {"linear": "identity", "none": "identity"}.get(name, name)
    if key not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[key]


@dataclass
class ForwardCache:
    """What one forward pass leaves behind for a feedback rule.

    Attributes:
        inputs: ``[h_0 = x, h_1, ..., h_{L-1}]``: the input of every layer, shape (N, n_{l-1}).
        pre: ``[a_1, ..., a_L]``: every layer's pre-activation, shape (N, n_l); ``a_L`` is the output layer's.
        out: the network output ``y_hat = f_out(a_L)``.
        consistent: True when ``h_l == f(a_l)`` row by row.  False after averaging
            (chapter 4, :mod:`dfa_lib.averaging`), which makes the rules take f' from ``a``
            instead of from ``h``.
    """

    inputs: list
    pre: list
    out: torch.Tensor
    consistent: bool = True

    @property
    def hidden(self) -> list:
        """``[h_1, ..., h_{L-1}]``: the hidden layers' activations."""
        return self.inputs[1:]


def _init_linear(layer: nn.Linear, init) -> None:
    """Initialise one layer's weight; biases start at zero except for PyTorch's default."""
    if init == "default":
        layer.reset_parameters()
        return
    name, arg = (init, None) if isinstance(init, str) else init
    w = layer.weight
    with torch.no_grad():
        if name == "zeros":
            w.zero_()
        elif name == "uniform":
            w.uniform_(-arg, arg)
        elif name == "normal":
            w.normal_(0.0, arg)
        elif name == "xavier":
            nn.init.xavier_uniform_(w)
        else:
            raise ValueError(
                f"unknown init {init!r}; use 'default', 'zeros', 'xavier', ('uniform', a) or ('normal', std)"
            )
        if layer.bias is not None:
            layer.bias.zero_()


class MLP(nn.Module):
    """A fully connected network ``sizes[0] -> sizes[1] -> … -> sizes[-1]``.

    Args:
        sizes: widths including input and output, e.g. ``[784, 200, 10]``.
        hidden: hidden activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"identity"``.
        output: output function: ``"sigmoid"``, ``"identity"``, ``"softmax"`` or ``"tanh"``.
        bias: whether layers have biases.
        init: ``"default"`` (PyTorch's), ``"zeros"``, ``"xavier"``, ``("uniform", a)`` for
            U[-a, a] or ``("normal", std)`` for N(0, std); a list gives one per layer.

    Introduced in chapter 1 (``book/01_linear_fa.ipynb``).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden: str = "tanh",
        output: str = "sigmoid",
        bias: bool = True,
        init="default",
    ):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least an input and an output width, all >= 1; got {sizes}")
        if output not in OUTPUT_FUNCTIONS:
            raise ValueError(f"unknown output function {output!r}; choose one of {sorted(OUTPUT_FUNCTIONS)}")
        self.sizes = sizes
        self.activation = get_activation(hidden)
        self.output_name = output
        self.output_fn = OUTPUT_FUNCTIONS[output]
        self.layers = nn.ModuleList(nn.Linear(i, o, bias=bias) for i, o in zip(sizes[:-1], sizes[1:]))
        self.initialize(init)

    def initialize(self, init="default") -> "MLP":
        """Re-initialise every layer (see the class docstring for the options)."""
        inits = list(init) if isinstance(init, list) else [init] * len(self.layers)
        if len(inits) != len(self.layers):
            raise ValueError(f"init lists {len(inits)} entries for {len(self.layers)} layers")
        for layer, layer_init in zip(self.layers, inits):
            _init_linear(layer, layer_init)
        return self

    @property
    def n_hidden(self) -> int:
        return len(self.layers) - 1

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the expected shape unless ``x`` is (batch, sizes[0]);
        :func:`dfa_lib.train` calls it once on the training set before the first step."""
        if x.dim() != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(
                f"input must have shape (batch, {self.sizes[0]}) for a network of sizes {self.sizes}; "
                f"got {tuple(x.shape)}"
            )

    def _explain_failure(self, x: torch.Tensor, err: RuntimeError) -> None:
        """After torch refused the input: raise a clear error if its dtype or device is not the model's."""
        w = self.layers[0].weight
        if x.dtype != w.dtype:
            raise TypeError(
                f"input is {x.dtype} but the model's weights are {w.dtype}: convert one to the other, e.g. "
                f"x.to({w.dtype}) or model.to({x.dtype}) (train() converts the data to the model's dtype itself)"
            ) from err
        if x.device != w.device:
            raise ValueError(
                f"input is on {x.device} but the model is on {w.device}: move one of them, e.g. x.to({str(w.device)!r})"
            ) from err

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        try:  # free when nothing fails: the dtype check runs only after torch has raised
            h = x
            for layer in self.layers[:-1]:
                h = self.activation.fn(layer(h))
            return self.output_fn(self.layers[-1](h))
        except RuntimeError as err:
            self._explain_failure(x, err)
            raise

    def forward_cached(self, x: torch.Tensor) -> ForwardCache:
        """Forward pass that keeps every layer's input and pre-activation (no autograd graph)."""
        self.check_input(x)
        try:
            with torch.no_grad():
                inputs, pre = [x], []
                for layer in self.layers[:-1]:
                    a = layer(inputs[-1])
                    pre.append(a)
                    inputs.append(self.activation.fn(a))
                a_out = self.layers[-1](inputs[-1])
                pre.append(a_out)
                return ForwardCache(inputs, pre, self.output_fn(a_out))
        except RuntimeError as err:
            self._explain_failure(x, err)
            raise

    def hidden_derivative(self, cache: ForwardCache, l: int) -> torch.Tensor:
        """f'(a_l) for hidden layer ``l`` (1-based), from ``h_l`` when the cache allows it."""
        if cache.consistent:
            return self.activation.from_output(cache.inputs[l])
        return self.activation.from_pre(cache.pre[l - 1])

    def summary(self) -> str:
        """Print (and return) one row per layer: index, input/output shape, activation, parameters."""
        rows = [f"{'layer':<7}{'input':<12}{'output':<12}{'activation':<12}{'params':>10}", "-" * 53]
        for i, layer in enumerate(self.layers, start=1):
            act = self.activation.name if i < len(self.layers) else self.output_name
            n = sum(p.numel() for p in layer.parameters())
            rows.append(f"{i:<7}{layer.in_features:<12}{layer.out_features:<12}{act:<12}{n:>10,}")
        total = sum(p.numel() for p in self.parameters())
        rows += ["-" * 53, f"sizes {self.sizes}, {total:,} parameters"]
        text = "\n".join(rows)
        print(text)
        return text

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, hidden={self.activation.name}, output={self.output_name}"
