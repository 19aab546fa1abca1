"""The multilayer perceptron every FA-family chapter trains.

An ``MLP`` is a stack of ``nn.Linear`` layers with one hidden activation.  Like every
PyTorch model it returns logits, the output layer's pre-activation ``a_L``; the output
function (sigmoid, softmax or none) belongs to the loss (:mod:`dfa_lib.losses`).  Besides
``forward`` it has ``forward_cached``, which keeps what each layer saw (its input
``h_{l-1}``) and computed (its pre-activation ``a_l``); the feedback rules in
:mod:`dfa_lib.rules` turn the output error into weight gradients from that cache.

Introduced in chapter 1 (``book/01_linear_fa.ipynb``); the cache is explained in chapter 2.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn


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


ACTIVATIONS = {
    "tanh": Activation("tanh", torch.tanh, _tanh_from_output, _tanh_from_pre),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_from_output, _sigmoid_from_pre),
    "relu": Activation("relu", torch.relu, _relu_derivative, _relu_derivative),
    "identity": Activation("identity", _identity, torch.ones_like, torch.ones_like),
}
# What MLP's former output= argument meant, and the loss that now applies that function.
_LOSS_FOR_OUTPUT = {"sigmoid": "bce", "softmax": "ce", "identity": "mse"}


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
        pre: ``[a_1, ..., a_L]``: every layer's pre-activation, shape (N, n_l); ``a_L`` is the output
            layer's, the logits (:attr:`logits`).
        out: the predictions ``y_hat``, the loss's output function of ``a_L``
            (:func:`dfa_lib.losses.predictions`), or None.  The model does not know the loss, so
            ``forward_cached`` leaves it None and the training step fills it in; seed 001's averaged
            loops average ``y_hat`` itself, not ``a_L`` (chapter 4, :mod:`dfa_lib.averaging`).
        consistent: True when ``h_l == f(a_l)`` row by row.  False after averaging
            (chapter 4, :mod:`dfa_lib.averaging`), which makes the rules take f' from ``a``
            instead of from ``h``.
    """

    inputs: list
    pre: list
    out: torch.Tensor | None = None
    consistent: bool = True

    @property
    def logits(self) -> torch.Tensor:
        """``a_L``, the output layer's pre-activation: what ``model(x)`` returns."""
        return self.pre[-1]

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


def _refuse_output_argument(output) -> None:
    """MLP lost its ``output=`` argument: say what replaced it instead of returning logits silently."""
    if output in _LOSS_FOR_OUTPUT:
        loss = _LOSS_FOR_OUTPUT[output]
        how = (f"drop output={output!r} and train with loss={loss!r}, which applies the {output} "
               f"itself{'' if output == 'identity' else f'; for probabilities use dfa_lib.predictions({loss!r}, model(x))'}")
    else:
        how = (f"no loss applies {output!r}: drop output= and train with loss='bce' (sigmoid), 'ce' (softmax) "
               f"or 'mse' (squared error on the logits)")
    raise TypeError(
        f"MLP no longer takes output=: it returns logits (the output layer's pre-activation), as PyTorch models "
        f"do, and the output function is part of the loss (loss='bce' is sigmoid + binary cross-entropy, 'ce' "
        f"softmax + cross-entropy, 'mse' squared error on the logits): {how}")


class MLP(nn.Module):
    """A fully connected network ``sizes[0] -> sizes[1] -> … -> sizes[-1]`` that returns logits.

    ``model(x)`` is the output layer's pre-activation ``a_L``, as for any PyTorch model; the loss
    applies the output function (``loss="bce"``: sigmoid, ``"ce"``: softmax, ``"mse"``: none), and
    :func:`dfa_lib.predictions` gives the probabilities, e.g. ``predictions("bce", model(x))``.

    Args:
        sizes: widths including input and output, e.g. ``[784, 200, 10]``.
        hidden: hidden activation: ``"tanh"``, ``"sigmoid"``, ``"relu"`` or ``"identity"``.
        bias: whether layers have biases (keyword only).
        init: ``"default"`` (PyTorch's), ``"zeros"``, ``"xavier"``, ``("uniform", a)`` for
            U[-a, a] or ``("normal", std)`` for N(0, std); a list gives one per layer (keyword only).
        output: removed.  The output function used to be applied in ``forward``
            (``output="sigmoid"``, the old default); it now lives in the loss, and passing it
            raises a TypeError that names the loss to use instead, so that old code does not
            get logits where it expected probabilities without noticing.

    Introduced in chapter 1 (``book/01_linear_fa.ipynb``).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        hidden: str = "tanh",
        *,
        bias: bool = True,
        init="default",
        output: str | None = None,
    ):
        super().__init__()
        if output is not None:
            _refuse_output_argument(output)
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise ValueError(f"sizes must list at least an input and an output width, all >= 1; got {sizes}")
        self.sizes = sizes
        self.activation = get_activation(hidden)
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
        """The logits ``a_L`` (no output function: the loss applies it)."""
        self.check_input(x)
        try:  # free when nothing fails: the dtype check runs only after torch has raised
            h = x
            for layer in self.layers[:-1]:
                h = self.activation.fn(layer(h))
            return self.layers[-1](h)
        except RuntimeError as err:
            self._explain_failure(x, err)
            raise

    def forward_cached(self, x: torch.Tensor) -> ForwardCache:
        """Forward pass that keeps every layer's input and pre-activation (no autograd graph); the
        logits are ``cache.logits``, and ``cache.out`` is left for the loss's predictions."""
        self.check_input(x)
        try:
            with torch.no_grad():
                inputs, pre = [x], []
                for layer in self.layers[:-1]:
                    a = layer(inputs[-1])
                    pre.append(a)
                    inputs.append(self.activation.fn(a))
                pre.append(self.layers[-1](inputs[-1]))
                return ForwardCache(inputs, pre)
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
            act = self.activation.name if i < len(self.layers) else "logits"
            n = sum(p.numel() for p in layer.parameters())
            rows.append(f"{i:<7}{layer.in_features:<12}{layer.out_features:<12}{act:<12}{n:>10,}")
        total = sum(p.numel() for p in self.parameters())
        rows += ["-" * 53, f"sizes {self.sizes}, {total:,} parameters"]
        text = "\n".join(rows)
        print(text)
        return text

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, hidden={self.activation.name}, returns logits"


def caches_forward(model: nn.Module) -> bool:
    """Whether ``model`` offers what the feedback rules' fast path works on, instead of autograd hooks.

    That is: ``sizes`` (the widths), ``n_hidden``, ``layers`` (its linear layers in order),
    ``activation`` (the hidden :class:`Activation`), ``check_input(x)``, ``forward_cached(x)``
    returning a :class:`ForwardCache`, and ``hidden_derivative(cache, l)``.  An :class:`MLP` and a
    :class:`~dfa_lib.seeds.SeedBatch` do; any other ``nn.Module`` trains through the rules' hooks
    (chapter 10).  :func:`dfa_lib.train`, the rules and the metrics ask this, not the model's type.
    """
    return (hasattr(model, "sizes") and hasattr(model, "n_hidden")
            and isinstance(getattr(model, "activation", None), Activation)
            and isinstance(getattr(model, "layers", None), nn.ModuleList)
            and all(callable(getattr(model, name, None)) for name in ("check_input", "forward_cached", "hidden_derivative")))
