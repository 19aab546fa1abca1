"""Random feedback: feedback alignment (FA) and direct feedback alignment (DFA).

Both replace the transposed forward weights of backpropagation by fixed random matrices,
kept as module buffers (so ``state_dict``, ``.to(device)`` and seeding just work)::

    FA    delta_l = (delta_{l+1} @ B_l^T) * f'(a_l)    B_l: (n_l, n_{l+1}), the shape of W_{l+1}^T
    DFA   delta_l = (e @ B_l^T)           * f'(a_l)    B_l: (n_l, n_out)

DFA forms all hidden signals with ONE matrix product ``e @ [B_1; ...; B_{L-1}]^T`` and never
runs the backward chain.  On any model (:mod:`.graph`) FA's ``B_l`` stands in for ``W_{l+1}^T`` at
every learning layer after the first (for a conv layer a fixed random kernel in the layout of
``W_{l+1}.transpose(0, 1)``, the layout of every rule's ``feedback``: :mod:`dfa_lib.rules`), and
DFA's ``B_l`` maps the output error to block ``l``'s output, whatever its shape (C x H x W after a
conv block).  FA is introduced in chapter 1, DFA in chapter 2, the feedback
scales of the seeds and of Nøkland 2016 in chapters 3 and 5, both on any model in chapters 10-11.

The matrices are drawn in the model's dtype on its device.  On chapter 1's MLP the defaults are
the papers' (FA: U[-0.5, 0.5]; DFA: N(0, 1.9^2)); on any other model they are BioTorch's
(Xavier's uniform range, :func:`xavier_bound`), the scale of a freshly initialised layer.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence, Union

import torch

import torch.nn as nn

from ..checks import FeedbackChecks, check_generator
from ..models import MLP, caches_forward
from .base import FeedbackRule, check_common_arguments, times_derivative
from .graph import input_gradient, layer_io_shapes, learning_layers

Scale = Union[float, Callable[[tuple], float]]


def random_tensor(shape: tuple, dist: str, generator: torch.Generator | None = None, dtype=None,
                  device=None) -> torch.Tensor:
    """U[-1, 1] (``dist="uniform"``) or N(0, 1) (``"normal"``) entries in ``dtype`` on ``device``.

    Drawn where the random stream lives: on the generator's device when one is given (a CPU
    generator for a GPU model, or a ``torch.Generator(device="cuda")``), else on ``device`` from
    that device's global stream (nothing is drawn on the CPU for a GPU or ``meta`` model); then
    moved.  Half-precision models get float32 draws rounded to their dtype, so a draw never
    depends on how the half type's random kernels are written.
    """
    check_generator(generator)
    dtype = dtype or torch.get_default_dtype()
    device = torch.device("cpu") if device is None else torch.device(device)
    draw_dtype = torch.promote_types(dtype, torch.float32)
    where = generator.device if generator is not None else device
    if dist == "uniform":
        r = torch.rand(*shape, generator=generator, dtype=draw_dtype, device=where).mul_(2).sub_(1)
    elif dist == "normal":
        r = torch.randn(*shape, generator=generator, dtype=draw_dtype, device=where)
    else:
        raise ValueError(f"unknown feedback distribution {dist!r}; choose 'uniform' or 'normal'")
    return r.to(device=device, dtype=dtype)


def init_feedback(
    shape: tuple, dist: str = "uniform", scale: Scale = 0.5, generator: torch.Generator | None = None, dtype=None,
    device=None,
) -> torch.Tensor:
    """A random feedback matrix, in ``dtype`` (default: torch's default dtype) on ``device`` (default: CPU).

    Args:
        shape: the matrix's shape.
        dist: ``"uniform"`` for U[-scale, scale] (Lillicrap: 0.5) or ``"normal"`` for
            N(0, scale), scale being the standard deviation (seed 001: 1.9; seed 003: 0.01).
        scale: a number, or a function of the matrix shape returning one, e.g.
            Nøkland's ``lambda shape: 1 / math.sqrt(shape[1])`` or :func:`xavier_bound`.
        generator: a ``torch.Generator`` for a reproducible draw; None draws from torch's
            global stream of ``device``.  See :func:`random_tensor` for where the draw is made.
    """
    s = float(scale(tuple(shape)) if callable(scale) else scale)
    if not math.isfinite(s) or s < 0:
        raise ValueError(f"feedback scale must be a finite number >= 0, got {s}")
    return random_tensor(shape, dist, generator, dtype, device).mul_(s)


def _fans(shape: tuple) -> tuple:
    """(fan-in, fan-out) of a weight of this shape, as ``torch.nn.init`` counts them."""
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def xavier_bound(shape: tuple) -> float:
    """``sqrt(6 / (fan_in + fan_out))``: the range of Glorot/Xavier's uniform initialisation.

    BioTorch's default (``"init": "xavier"``) draws every backward weight from
    U[-xavier_bound, xavier_bound], for a weight of this shape.  The sum of the fans is the same for
    a matrix and its transpose, so FA's ``W^T``-shaped matrices get the bound of ``W``.
    """
    fan_in, fan_out = _fans(tuple(shape))
    return math.sqrt(6.0 / (fan_in + fan_out))


def xavier_std(shape: tuple) -> float:
    """``sqrt(2 / (fan_in + fan_out))``: the standard deviation of Xavier's initialisation (uniform or normal)."""
    return xavier_bound(shape) / math.sqrt(3.0)


def nokland_scale(shape: tuple) -> float:
    """1/sqrt(fan-in of the feedback matrix): Nøkland 2016's U[-1/sqrt(n), 1/sqrt(n)]."""
    return 1.0 / math.sqrt(shape[1])


class RandomFeedback(FeedbackChecks, FeedbackRule):
    """Shared machinery of FA and DFA: fixed random matrices kept as module buffers.

    The matrices are drawn in the model's dtype on the model's device (so a float64 or GPU model
    needs no conversion, and a model on ``meta`` draws nothing).  ``dist=None`` and ``scale=None``
    pick the rule's defaults, which differ between chapter 1's :class:`~dfa_lib.models.MLP`
    (the papers' settings, kept so the chapters' numbers stay reproducible) and any other model
    (BioTorch's default, Xavier's uniform range): see :class:`FA` and :class:`DFA`.
    """

    has_fast_path = True
    needs_block_shapes = False  # DFA: the shapes of the block outputs it sends signals to
    mlp_defaults = ("uniform", 0.5)  # (dist, scale) on an MLP

    def __init__(self, model: nn.Module, dist: str | None, scale: Scale | None, generator: torch.Generator | None,
                 path: str = "auto", example_input: torch.Tensor | None = None):
        super().__init__()
        check_common_arguments(generator, example_input, path)
        self.is_mlp = caches_forward(model)  # an MLP (sizes, layers, forward_cached): the papers' defaults
        if self.is_mlp:
            if model.n_hidden == 0:
                raise ValueError(f"{type(self).__name__} needs at least one hidden layer; sizes are {model.sizes}")
            self.sizes = list(model.sizes)
            in_shapes, out_shape = [(n,) for n in self.sizes[:-1]], (self.sizes[-1],)
        else:
            self.sizes = None
            layers = learning_layers(model)
            if len(layers) < 2:
                raise ValueError(f"{type(self).__name__} needs at least two learning layers (one hidden block)")
            if self.needs_block_shapes:
                in_shapes, out_shape = layer_io_shapes(model, example_input)
            else:  # FA needs only the weights' shapes
                in_shapes, out_shape = [None] * len(layers), None
        layers = learning_layers(model)
        self.layer_kinds = [type(l).__name__ for l in layers]
        self.weight_shapes = [tuple(l.weight.shape) for l in layers]
        self.block_shapes = [None if s is None else tuple(s) for s in in_shapes[1:]]
        self.out_shape = None if out_shape is None else tuple(out_shape)
        self.dist, self.scale = self._default_distribution(dist, scale)
        self._draw(generator, layers[0].weight.dtype, layers[0].weight.device)
        self._choose_path(model, path)

    def _default_distribution(self, dist: str | None, scale: Scale | None) -> tuple:
        """(dist, scale) with the rule's defaults filled in: the papers' on an MLP, Xavier's on any other model."""
        mlp_dist, mlp_scale = self.mlp_defaults
        if dist is None:  # a scale the user gives means the same distribution on every model
            dist = mlp_dist if self.is_mlp or scale is not None else "uniform"
        if scale is None:
            scale = mlp_scale if self.is_mlp else (xavier_bound if dist == "uniform" else xavier_std)
        return dist, scale

    def _draw(self, generator, dtype, device) -> None:
        mats = [init_feedback(s, self.dist, self.scale, generator, dtype, device) for s in self.expected_shapes()]
        self._store(mats)

    def check_feedback_buffer(self, name: str, value) -> None:
        """Raise if ``value`` cannot be buffer ``name`` (``rule.B1 = ...``): :class:`~dfa_lib.checks.FeedbackChecks`
        asks this on every assignment to a buffer."""
        raise NotImplementedError

    def expected_shapes(self) -> list:
        raise NotImplementedError

    def _shape_meaning(self, l: int) -> str:
        raise NotImplementedError

    def _architecture(self) -> str:
        return f"sizes {self.sizes}" if self.is_mlp else f"learning layers {self.layer_kinds}"

    def reset_feedback(self, generator: torch.Generator | None = None) -> None:
        """Draw new feedback matrices from the rule's distribution (in the dtype and on the device of the old ones)."""
        ref = next(iter(self.buffers()))
        self._draw(generator, ref.dtype, ref.device)

    def set_feedback(self, matrices: Sequence[torch.Tensor]) -> None:
        """Replace the feedback matrices, one per hidden block, after checking their shapes."""
        matrices = list(matrices)
        shapes = self.expected_shapes()
        if len(matrices) != len(shapes):
            raise ValueError(
                f"{self.name} needs one feedback matrix per hidden layer: {len(shapes)} for "
                f"{self._architecture()}; got {len(matrices)}"
            )
        for l, (m, s) in enumerate(zip(matrices, shapes), start=1):
            if tuple(m.shape) != tuple(s):
                raise ValueError(
                    f"{self.name} feedback matrix for hidden layer {l} must have shape {tuple(s)} = "
                    f"{self._shape_meaning(l)}; got {tuple(m.shape)}"
                )
        ref = next(iter(self.buffers()))
        self._store([m.detach().to(device=ref.device, dtype=ref.dtype) for m in matrices])

    def _check_model(self, model: MLP) -> None:
        if list(model.sizes) != self.sizes:
            raise ValueError(f"{self.name} was built for sizes {self.sizes}, but the model has sizes {model.sizes}")

    @classmethod
    def batched(cls, rules):
        """The K rules' feedback matrices stacked along a leading network dimension (the MLP fast path's
        matrix products take it as a batch dimension)."""
        if not cls.has_fast_path or any(r.graph is not None for r in rules):
            return super().batched(rules)  # refused: the seeds train through the fast path only
        batched = copy.deepcopy(rules[0])
        batched.detach()  # the copy brought a copy of network 0 along and would stay hooked on it
        for name, _ in rules[0].named_buffers():  # register_buffer skips the single-network shape check
            batched.register_buffer(name, torch.stack([getattr(r, name) for r in rules]))
        return batched

    @classmethod
    def stacked(cls, big, rules):
        """Block-diagonal feedback matrices, so that each hidden unit of the stack hears only its own network."""
        if not cls.has_fast_path:
            return super().stacked(big, rules)
        rule = cls(big, dist="uniform", scale=0.0)
        rule.set_feedback([torch.block_diag(*mats) for mats in zip(*(r.feedback for r in rules))])
        return rule


def fan_in_scale(shape: tuple) -> float:
    """1/sqrt(fan-in) of a backward weight drawn as W^T (Linear) or in W's shape (conv): PyTorch's default range."""
    fan_in = shape[1] if len(shape) == 2 else math.prod(shape[1:])
    return 1.0 / math.sqrt(fan_in)


class FA(RandomFeedback):
    """Feedback alignment (Lillicrap et al. 2016): a fixed random B_l replaces W_{l+1}^T.

    ``feedback[l-1]`` (buffer ``B{l}``) stands in for ``W_{l+1}.transpose(0, 1)``, in its layout:
    (n_l, n_{l+1}) = ``W_{l+1}^T`` for a Linear layer, (C_l, C_{l+1}, kh, kw) for a conv layer (the
    kernel used in place of W when the signal is sent down, its channel axes swapped).  Setting each
    to ``W_{l+1}.transpose(0, 1)`` (``rule.set_feedback``) gives exactly backpropagation, for either kind.

    Defaults: on an :class:`~dfa_lib.models.MLP`, U[-0.5, 0.5] (Lillicrap et al.'s range, chapter 1).
    On any other model, Xavier's uniform range U[-b, b] with ``b = sqrt(6 / (fan_in + fan_out))``
    of the layer's weight (:func:`xavier_bound`): BioTorch's default for FA (its ``"init": "xavier"``;
    BioTorch also re-initialises W that way, this library leaves your model's W as it is).
    ``scale=fan_in_scale`` gives the range of PyTorch's own initialisation of W instead
    (BioTorch's ``"init": "kaiming"``).

    Args:
        model: the network: an :class:`~dfa_lib.models.MLP` or any ``nn.Module`` whose learning
            layers are ``nn.Linear``/``nn.Conv2d`` (at least two of them).
        dist: ``"uniform"`` (default) for U[-scale, scale] or ``"normal"`` for N(0, scale^2).
        scale: the range (uniform) or standard deviation (normal): a number, or a function of
            the shape the matrix is drawn in returning one (``W^T``'s for a Linear layer, the
            kernel's own for a conv layer, whose channel axes are swapped after the draw).  Default
            None: 0.5 on an MLP; on any other model :func:`xavier_bound` for uniform,
            :func:`xavier_std` for normal.
        generator: a ``torch.Generator`` that makes the draw reproducible (on the CPU or on the
            model's device; the matrices end up on the model's device either way).  Default None:
            torch's global random stream of the model's device.
        path: ``"auto"`` (default) takes the MLP fast path for an :class:`~dfa_lib.models.MLP` and
            the autograd hooks for any other model; ``"autograd"`` forces the hooks (chapter 10).
        example_input: not needed by FA (checked and ignored, so every rule can be built the same way).
    """

    name = "FA"
    feedback_stands_for_weights = True

    def __init__(self, model: nn.Module, dist: str = "uniform", scale: Scale | None = None,
                 generator: torch.Generator | None = None, path: str = "auto",
                 example_input: torch.Tensor | None = None):
        """Draw FA's feedback matrices for ``model`` and attach the rule (see the class docstring)."""
        super().__init__(model, dist, scale, generator, path, example_input)

    def expected_shapes(self):
        return [(s[1], s[0], *s[2:]) for s in self.weight_shapes[1:]]  # the shape of W.transpose(0, 1)

    def _draw(self, generator, dtype, device) -> None:
        mats = []
        for kind, s in zip(self.layer_kinds[1:], self.weight_shapes[1:]):
            if kind == "Linear":
                mats.append(init_feedback((s[1], s[0]), self.dist, self.scale, generator, dtype, device))
            else:  # drawn in the kernel's own layout, as it always was (the same numbers), then laid out as W^T
                B = init_feedback(s, self.dist, self.scale, generator, dtype, device)
                mats.append(B.transpose(0, 1).contiguous())
        self._store(mats)

    def _shape_meaning(self, l):
        if self.layer_kinds[l] == "Conv2d":
            return f"conv layer {l + 1}'s weight with its channel axes swapped, W_{l + 1}.transpose(0, 1)"
        return f"(width of layer {l}, width of layer {l + 1}), the shape of W_{l + 1}^T"

    def check_feedback_buffer(self, name, value):
        l = int(name[1:])  # B1, B2, ...: hidden block l's matrix
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        expected = tuple(self.expected_shapes()[l - 1])
        if shape != expected:
            got = shape if shape is not None else type(value).__name__
            raise ValueError(f"{self.name} feedback matrix for hidden layer {l} must have shape {expected} = "
                             f"{self._shape_meaning(l)}; got {got}")

    def _store(self, mats):
        for l, m in enumerate(mats, start=1):
            self.register_buffer(f"B{l}", m)
        self.conv_feedback_layout = "W^T"  # a conv layer's matrix swapped its channel axes when this was set

    def _load_from_state_dict(self, state_dict, prefix, *args):
        saved = state_dict.get(prefix + "_extra_state")
        kernel_layout = [[s[1], s[0]] if kind == "Linear" else list(s)
                         for kind, s in zip(self.layer_kinds[1:], self.weight_shapes[1:])]
        now = [list(s) for s in self.expected_shapes()]
        if isinstance(saved, dict) and saved.get("feedback_shapes") == kernel_layout != now:
            # saved when a conv layer's matrix was kept in the kernel's own layout: lay it out as W^T
            for l, kind in enumerate(self.layer_kinds[1:], start=1):
                if kind != "Linear" and prefix + f"B{l}" in state_dict:
                    state_dict[prefix + f"B{l}"] = state_dict[prefix + f"B{l}"].transpose(0, 1).contiguous()
            state_dict[prefix + "_extra_state"] = dict(saved, feedback_shapes=now)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __setstate__(self, state):
        if "conv_feedback_layout" not in state:  # pickled when a conv layer's matrix was in the kernel's own layout
            state["conv_feedback_layout"] = "W^T"
            for l, kind in enumerate(state.get("layer_kinds", [])[1:], start=1):
                if kind != "Linear":
                    state["_buffers"][f"B{l}"] = state["_buffers"][f"B{l}"].transpose(0, 1).contiguous()
        super().__setstate__(state)

    @property
    def feedback(self) -> list:
        return [getattr(self, f"B{l}") for l in range(1, len(self.layer_kinds))]

    def signals(self, model, cache, e):
        self._check_model(model)
        deltas = [e]
        for l, B in zip(range(model.n_hidden, 0, -1), reversed(self.feedback)):
            deltas.insert(0, times_derivative(model, cache, l, deltas[0] @ B.mT))
        return deltas

    def tap(self, k, graph):
        if k == 0:
            return None, ()
        layer, x = graph.layers[k], graph.inputs[k]
        B = self.feedback[k - 1].transpose(0, 1)  # in W's own layout, which the layer's backward takes
        if self.layer_kinds[k] != "Linear":
            B = B.contiguous()
        return (lambda g: (input_gradient(layer, B, g, x.shape),)), (x,)


class DFA(RandomFeedback):
    """Direct feedback alignment (Nøkland 2016): the output error goes straight to every layer.

    All hidden blocks' matrices are rows of ONE buffer ``B`` of shape (n_1 + ... + n_{L-1}, n_out);
    ``feedback[l-1]`` is the (n_l, n_out) view for hidden block l, n_l being the number of entries
    of the block's output (C*H*W after a conv block).  One matmul ``e @ B^T`` gives every block its
    signal.  With one hidden layer and ``B = W_2^T`` DFA is exactly BP.  On a model with conv
    layers pass ``example_input=x[:1]`` so the block shapes are known.

    Defaults: on an :class:`~dfa_lib.models.MLP`, N(0, 1.9^2), the feedback of the seed
    experiments (chapters 2-3; chapter 5 compares other scales).  On any other model, Xavier's
    uniform range U[-b, b] with ``b = sqrt(6 / (n_l + n_out))`` for each block's (n_l, n_out)
    matrix (:func:`xavier_bound`): BioTorch's default for DFA, which draws its (n_out, n_l)
    matrix that way.  For a conv block BioTorch instead uses one kernel per output class, shared
    over positions; here every entry of the block's output has its own row, scaled by the same formula.

    Args:
        model: the network: an :class:`~dfa_lib.models.MLP` or any ``nn.Module`` whose learning
            layers are ``nn.Linear``/``nn.Conv2d`` (at least two of them).
        dist: ``"uniform"`` for U[-scale, scale] or ``"normal"`` for N(0, scale^2).  Default None:
            ``"normal"``, except on a model that is not an MLP when ``scale`` is None too (then
            Xavier's uniform range, below), so that ``scale=s`` means N(0, s^2) on every model.
        scale: the range (uniform) or standard deviation (normal): a number, or a function of
            the matrix shape returning one (e.g. :func:`~dfa_lib.rules.nokland_scale`).  Default
            None: 1.9 on an MLP; on any other model :func:`xavier_bound` for uniform,
            :func:`xavier_std` for normal.
        generator: as for :class:`FA`: a ``torch.Generator`` for a reproducible draw, on the CPU
            or on the model's device; default None, torch's global stream of the model's device.
        path: as for :class:`FA`: ``"auto"`` (default, the MLP fast path on an MLP) or
            ``"autograd"`` (the hooks, chapter 10).
        example_input: one input row (``x[:1]``), needed when the model has conv layers, to learn
            the shapes of the block outputs; default None (enough for an MLP or Linear layers only).
    """

    name = "DFA"
    needs_block_shapes = True
    mlp_defaults = ("normal", 1.9)

    def __init__(self, model: nn.Module, dist: str | None = None, scale: Scale | None = None,
                 generator: torch.Generator | None = None, path: str = "auto",
                 example_input: torch.Tensor | None = None):
        """Draw DFA's feedback matrix for ``model`` and attach the rule (see the class docstring)."""
        super().__init__(model, dist, scale, generator, path, example_input)

    @property
    def block_sizes(self) -> list:
        return [math.prod(s) for s in self.block_shapes]

    def expected_shapes(self):
        return [(n, math.prod(self.out_shape)) for n in self.block_sizes]

    def _shape_meaning(self, l):
        return f"(width of hidden layer {l}, width of the output)"

    def check_feedback_buffer(self, name, value):
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
        shapes = [tuple(s) for s in self.expected_shapes()]
        hidden = [s[0] for s in shapes]
        expected = (sum(hidden), shapes[0][1])  # every hidden layer's matrix, stacked row-wise
        if shape != expected:
            got = shape if shape is not None else type(value).__name__
            raise ValueError(
                f"{self.name}.B stacks the feedback matrices of all hidden layers row-wise and must have shape "
                f"{expected} = (sum of the hidden widths {hidden}, width of the output); got {got}. To set one "
                f"matrix per hidden layer, use rule.set_feedback([...]) with shapes {shapes}")

    def _store(self, mats):
        self.register_buffer("B", torch.cat(mats, dim=-2))

    @property
    def feedback(self) -> list:
        return list(torch.split(self.B, self.block_sizes, dim=-2))

    def signals(self, model, cache, e):
        self._check_model(model)
        projected = torch.split(e @ self.B.mT, self.sizes[1:-1], dim=-1)  # the one matmul
        hidden = [times_derivative(model, cache, l, p) for l, p in enumerate(projected, start=1)]
        return hidden + [e]

    def direct_signals(self, source: torch.Tensor, kept: list) -> tuple:
        """``source @ B^T`` (one matmul), split and shaped like the kept block outputs.

        A signal also takes its block output's memory layout: for a channels-last feature map
        the matmul runs on B's rows reordered to (H, W, C), so the signal comes out channels-last
        with the same values, and autograd's pooling, activation and convolution backwards do
        not mix two layouts (which costs them copies and slow kernels).
        """
        source = source.reshape(len(source), -1)
        channels_last = tuple(_is_channels_last(x) for x in kept)
        B = self.B if not any(channels_last) else self.B.index_select(0, self._hwc_rows(channels_last))
        projected = torch.split(source @ B.T, self.block_sizes, dim=1)
        return tuple(p.reshape(x.shape[0], *x.shape[2:], x.shape[1]).permute(0, 3, 1, 2) if cl else p.reshape(x.shape)
                     for p, x, cl in zip(projected, kept, channels_last))

    def _hwc_rows(self, channels_last: tuple) -> torch.Tensor:
        """Row order of ``B`` that lists each channels-last block's entries as (H, W, C) (cached per layout)."""
        cache = self.__dict__.setdefault("_hwc_cache", {})
        key = (channels_last, self.B.device)
        if key not in cache:
            rows, start = [], 0
            for shape, cl in zip(self.block_shapes, channels_last):
                index = torch.arange(start, start + math.prod(shape))
                rows.append(index.view(shape).permute(1, 2, 0).reshape(-1) if cl else index)
                start += len(index)
            cache[key] = torch.cat(rows).to(self.B.device)
        return cache[key]

    def tap(self, k, graph):
        if k != graph.n_layers - 1:
            return None, ()
        kept = graph.inputs[1:]
        return (lambda g: self.direct_signals(g, kept)), tuple(kept)


def _is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor stored channels-last (NHWC) and not also plain contiguous (C > 1 and H * W > 1)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
