"""Any model: how a rule reaches the learning layers of an ordinary ``nn.Module``.

*Learning layers* are the model's ``nn.Linear`` and ``nn.Conv2d`` modules (an attention's
projections become such layers with :func:`dfa_lib.split_attention`).  What each rule means on
any graph, a residual network or a transformer included (chapters 10, 11 and 12):

- BP: autograd through the whole graph (nothing to do: no hooks).
- FA, sign symmetry (uSF, frSF, brSF), Kolen-Pollack: each learning layer's backward sends the
  gradient at its output down to its input through a backward weight ``B`` (shape of ``W``) in
  place of ``W``; its own weight gradient is the true one (output gradient times the true input).
  Every other operation keeps its true derivative: the skip addition ``x + f(x)``, attention's
  products of activations and its softmax, layer norm, pooling, activations (as BioTorch does).
  On a residual stream the gradient therefore flows through the skip path exactly and through
  each learning layer via ``B``.  No blocks are needed, and the layers may be registered in any
  order (the first registered must run first), each run once per forward pass.
- DFA, DRTP: the gradient at every *block* output comes straight from the output error (DFA) or
  the target (DRTP) through one matrix product, and backprop runs only inside a block.  By
  default a block is a learning layer and everything after it up to the next learning layer, a
  chain; a skip connection or a branch between them is refused at the first forward pass (it
  would carry one block's signal into another), asking for :class:`~dfa_lib.FeedbackPoint`
  modules, which mark the blocks instead (:mod:`.points`: each block hears only its own signal,
  as in TinyDFA and Launay et al. 2020).
- Shallow: no gradient reaches a hidden block: only the last learning layer (and what follows it)
  learns; feedback points change nothing.

The mechanism, for every rule but BP: a forward pre-hook on each learning layer cuts the
graph at its input (the layer sees a detached copy; the attached tensor is kept), and a
forward hook wraps the layer's output in :class:`_Tap`, an identity whose backward receives
the gradient at that output and returns the gradients of kept tensors (FA: its own input,
through ``B``; DFA: every block output, from the last layer's tap).  One ordinary
``loss.backward()`` then gives every weight its gradient, conv or not, and autograd carries the
true derivative of everything between learning layers.  With feedback points (DFA, DRTP), the
layers are left alone; each point cuts the graph at its input instead and a tap on the model's
output sends the projected signal to every point.  The book explains it in chapter 10; chapter 11
uses it on a convolutional network, chapter 12 on a transformer.  :func:`dfa_lib.alignment` uses
a *measuring* pass of the same hooks (:meth:`RuleGraph.measuring_tap`) to get BP's and the rule's
gradients from one forward pass.

What trains every parameter (checked when the rule is attached, :func:`check_parameters`):

- the weight and bias of every ``nn.Linear`` and ``nn.Conv2d``: the rule;
- the affine parameters of normalisation layers (``BatchNorm1d/2d/3d``, ``LayerNorm``,
  ``GroupNorm``): trained by autograd from the signal the rule gives the output they feed
  (inside a block: *locally*; on a residual stream: the true derivative of what reaches them);
- parameters with ``requires_grad=False``: nothing (frozen);
- with feedback points (DFA, DRTP): every parameter, by backprop inside its block (an
  ``nn.Embedding`` before the first point from that point's signal, the head after the last
  point from the loss);
- otherwise any other parameter (``nn.Embedding``, ``nn.LSTM``, ``nn.Conv1d``, an unsplit
  ``nn.MultiheadAttention``, an ``nn.Parameter`` used in ``forward``): refused, with the modules'
  names (an embedding before the first learning layer would never learn: no rule but BP sends a
  gradient below the first learning layer).

At the first forward pass with gradients the model is checked once more (:class:`_FirstForwardCheck`):
it must return one tensor of scores that depends on the last registered learning layer, every
learning layer must have run, no trained parameter may sit before the first learning layer,
where the rule cuts the graph, and DFA's and DRTP's default blocks must form a chain.  Later
forward passes cost a few tuple compares: the block shapes DFA was built for, and the device and
dtype the rule's matrices must follow (``model.to(...)``).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .points import feedback_points

LEARNING_LAYERS = (nn.Linear, nn.Conv2d)
LOCAL_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm, nn.GroupNorm)
SUPPORTED = ("a rule trains the weights and biases of nn.Linear and nn.Conv2d layers, and inside a block "
             "(after the first of them) the affine parameters of BatchNorm, LayerNorm and GroupNorm")
GRAPH_WALK_LIMIT = 20000  # autograd nodes visited by a one-time check before it gives up (says nothing)


def learning_layers(model: nn.Module) -> list:
    """The ``nn.Linear`` and ``nn.Conv2d`` modules of ``model``, in registration order."""
    layers = [m for m in model.modules() if isinstance(m, LEARNING_LAYERS)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear or nn.Conv2d layer for a feedback rule to train")
    return layers


def _module_label(name: str, module: nn.Module) -> str:
    return f"'{name}' ({type(module).__name__})" if name else f"the model itself ({type(module).__name__})"


def check_parameters(model: nn.Module) -> None:
    """Refuse a model with trained parameters that no rule can train (see the module docstring).

    A parameter of an ``nn.Embedding``, ``nn.LSTM``, ``nn.Conv1d`` ... would silently keep its
    initial value (before the first learning layer the rule cuts its input) or be trained by
    backprop through its own weights (inside a block): neither is the rule the reader chose.
    """
    refused = []
    for name, module in model.named_modules():
        if isinstance(module, LEARNING_LAYERS + LOCAL_LAYERS):
            continue
        own = [p_name for p_name, p in module.named_parameters(recurse=False) if p.requires_grad]
        if own:
            listed = ", ".join(own[:4]) + (", ..." if len(own) > 4 else "")
            refused.append(f"{_module_label(name, module)}: {listed}")
    if refused:
        attention = any(isinstance(m, nn.MultiheadAttention) for m in model.modules())
        hint = (" For nn.MultiheadAttention (and nn.TransformerEncoderLayer), call dfa_lib.split_attention(model) "
                "first: its projections become nn.Linear layers the rules train." if attention else "")
        raise ValueError(
            "the feedback rules cannot train the parameters of " + "; ".join(refused) + ". " + SUPPORTED + ". "
            "Freeze those parameters (module.requires_grad_(False)), replace the modules by supported layers, "
            "or train this model with BP (plain autograd). DFA and DRTP train any parameter by backprop inside "
            "a block when the model marks its blocks with dfa_lib.FeedbackPoint()." + hint)


def _same_padding(layer: nn.Conv2d) -> list:
    """Total zero padding of each spatial dimension for ``padding="same"`` (stride 1)."""
    return [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]


def input_gradient(layer: nn.Module, weight: torch.Tensor, g: torch.Tensor, input_shape) -> torch.Tensor:
    """The gradient at a layer's input for gradient ``g`` at its output, with ``weight`` in place of W.

    With ``weight = layer.weight`` this is exactly what autograd computes (the layer is linear
    in its input); FA-type rules pass their backward weight ``B`` instead.  A Linear layer takes
    inputs with any leading dimensions (``g @ W``); a conv layer any numeric padding and
    ``padding="valid"`` or ``"same"`` (chapter 11).
    """
    if isinstance(layer, nn.Linear):
        return g @ weight
    if isinstance(layer, nn.Conv2d):
        if layer.padding_mode != "zeros":
            raise ValueError(f"{layer}: only padding_mode='zeros' is supported by the feedback rules")
        padding = layer.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            totals = _same_padding(layer)
            if any(t % 2 for t in totals):
                return _asymmetric_same_input_gradient(layer, weight, g, input_shape, totals)
            padding = tuple(t // 2 for t in totals)
        return torch.nn.grad.conv2d_input(input_shape, weight, g, layer.stride, padding, layer.dilation,
                                          layer.groups)
    raise TypeError(f"no input gradient for {type(layer).__name__}")


def _asymmetric_same_input_gradient(layer, weight, g, input_shape, totals) -> torch.Tensor:
    """``padding="same"`` with an odd total padding (an even kernel): PyTorch pads ``total // 2``
    before and the rest after.  The gradient at the zero-padded input, cropped to the real input,
    is the gradient at the input (the padding zeros are constants)."""
    before = [t // 2 for t in totals]
    padded = (*input_shape[:2], *(n + t for n, t in zip(input_shape[2:], totals)))
    grad = torch.nn.grad.conv2d_input(padded, weight, g, 1, 0, layer.dilation, layer.groups)
    h, w = input_shape[2:]
    return grad[:, :, before[0]:before[0] + h, before[1]:before[1] + w]


class _Tap(torch.autograd.Function):
    """Identity on a layer's output; its backward asks ``handler(g)`` for the kept block outputs' gradients."""

    @staticmethod
    def forward(ctx, handler, out, *kept):
        ctx.handler = handler
        # an alias that autograd does not count as a view, so that an in-place activation after the
        # layer (nn.ReLU(inplace=True)) is allowed: Linear and Conv2d do not keep their output for backward
        return out.detach()

    @staticmethod
    def backward(ctx, g):
        grads = ctx.handler(g)
        # a kept tensor that needs no gradient (the data, under a measuring pass) gets none
        return (None, g, *(grad if need else None for grad, need in zip(grads, ctx.needs_input_grad[2:])))


class _PreHook:
    """Cuts the graph at learning layer ``k``'s input and keeps the attached input."""

    def __init__(self, graph: "RuleGraph", k: int):
        self.graph, self.k = graph, k

    def __call__(self, layer, args):
        graph = self.graph
        if not torch.is_grad_enabled():
            return None
        if self.k == 0:
            graph.start_forward()
        elif graph.in_order:
            if len(graph.inputs) != self.k:
                raise RuntimeError(graph.order_message(self.k))
        elif not graph.inputs or graph.inputs[self.k] is not None:
            raise RuntimeError(graph.order_message(self.k))
        x = args[0]
        shapes = graph.block_shapes
        if shapes is not None and self.k > 0 and x.shape[1:] != shapes[self.k - 1]:
            raise ValueError(graph.block_shape_message(self.k, x))
        if graph.in_order:
            graph.inputs.append(x)
        else:
            graph.inputs[self.k] = x
        if graph.active and (graph.measuring or (graph.cuts_layers and graph.rule.cuts(self.k, graph.n_layers))):
            return (x.detach(),) + tuple(args[1:])
        return None


class _PostHook:
    """Wraps learning layer ``k``'s output in the rule's tap (if the rule taps that layer)."""

    def __init__(self, graph: "RuleGraph", k: int):
        self.graph, self.k = graph, k

    def __call__(self, layer, args, out):
        graph = self.graph
        if not torch.is_grad_enabled():
            return None
        if graph.in_order:
            if len(graph.inputs) != self.k + 1:
                raise RuntimeError(graph.order_message(self.k))
            graph.outputs.append(out)
        else:
            if not graph.inputs or graph.inputs[self.k] is None or graph.outputs[self.k] is not None:
                raise RuntimeError(graph.order_message(self.k))
            graph.outputs[self.k] = out
        if graph.active and graph.measuring:
            handler, kept = graph.measuring_tap(self.k, layer)
        else:
            handler, kept = graph.rule.tap(self.k, graph) if graph.active and graph.cuts_layers else (None, ())
        if handler is not None:
            out = _Tap.apply(handler, out, *kept)
        if self.k == graph.n_layers - 1:
            graph.last_output = out
        return out if handler is not None else None


def _reaches(start, found, limit: int = GRAPH_WALK_LIMIT):
    """Walk the autograd graph from node ``start``: the first node for which ``found(node)`` is true,
    ``None`` when the whole graph was walked without one, ``...`` when ``limit`` nodes did not suffice."""
    stack, seen = [start], {start}
    while stack:
        node = stack.pop()
        if found(node):
            return node
        if len(seen) > limit:
            return ...
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)
    return None


class _StartPoints:
    """Forward pre-hook on a model with feedback points: a new forward pass starts with no point seen."""

    def __init__(self, graph: "RuleGraph"):
        self.graph = graph

    def __call__(self, model, args):
        if torch.is_grad_enabled():
            self.graph.point_inputs = []


class _PointHook:
    """Forward hook on feedback point ``j``: keeps its input and cuts the graph there (:mod:`.points`)."""

    def __init__(self, graph: "RuleGraph", j: int):
        self.graph, self.j = graph, j

    def __call__(self, point, args, x):
        graph = self.graph
        if not torch.is_grad_enabled() or not graph.active:
            return None
        seen = len(graph.point_inputs)
        if seen != self.j:
            when = "a second time" if seen > self.j else f"before point {seen}"
            raise RuntimeError(
                f"feedback point {self.j} ran {when} in one forward pass: {graph.rule.name} takes the FeedbackPoint "
                "modules in the order model.modules() lists them, each run once per forward pass: define them in "
                "__init__ in the order forward uses "
                "them, and give each block its own point")
        expected = graph.point_shapes[self.j]
        if tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"feedback point {self.j} received blocks of shape {tuple(x.shape[1:])} per example, but "
                f"{graph.rule.name} was built for {expected} (from example_input): its feedback matrix has one row "
                "per entry of each point's input. Train on inputs of the example's shape (the same sequence "
                "length), or build the rule with example_input=x[:1] taken from the data you train on")
        graph.point_inputs.append(x)
        if graph.measuring:  # BP's gradient passes the point; the rule's does not
            return _Tap.apply(lambda g: (g if graph.backward_mode == "bp" else None,), x.detach(), x)
        return x.detach()


class _PointView:
    """What a DFA-type rule's ``tap`` reads of a graph, with the feedback points as the block outputs."""

    def __init__(self, kept: tuple):
        self.inputs, self.n_layers = [None, *kept], len(kept) + 1


class _OutputTap:
    """Forward hook on a model with feedback points: the gradient at the model's output becomes each point's signal."""

    def __init__(self, graph: "RuleGraph"):
        self.graph = graph

    def __call__(self, model, args, output):
        graph = self.graph
        if not torch.is_grad_enabled() or not graph.active:
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"{type(model).__name__} returned a {type(output).__name__}: {graph.rule.name} needs a "
                            "model that returns one tensor of scores, whose error it sends to the feedback points")
        if len(graph.point_inputs) != len(graph.points):
            raise RuntimeError(
                f"the forward pass ran {len(graph.point_inputs)} of the model's {len(graph.points)} FeedbackPoint "
                f"modules: {graph.rule.name} sends a signal to every point, so each must run once per forward pass")
        kept = tuple(graph.point_inputs)
        handler, kept = graph.rule.tap(len(kept), _PointView(kept))
        if graph.measuring:
            rule_handler, none = handler, (None,) * len(kept)
            handler = lambda g: none if graph.backward_mode == "bp" else rule_handler(g)  # noqa: E731
        return _Tap.apply(handler, output, *kept)


class _FirstForwardCheck:
    """A forward hook on the model itself: checks, at the first forward pass with gradients and
    the rule on, what only a forward pass shows (module docstring), then takes itself off."""

    def __init__(self, graph: "RuleGraph"):
        self.graph = graph

    def __call__(self, model, args, output):
        graph = self.graph
        if graph.checked or not torch.is_grad_enabled() or not graph.active or graph.measuring:
            return None
        if not isinstance(output, torch.Tensor):
            raise TypeError(
                f"{type(model).__name__} returned a {type(output).__name__}: the rules need a model that returns "
                "one tensor of scores (the output of its last nn.Linear/nn.Conv2d, or a function of it) for the "
                "loss. Return the scores alone, and compute anything else outside the model or in a second method")
        graph.check_all_layers_ran()
        graph.check_nothing_trains_before_the_first_layer(model)
        graph.check_output_depends_on_the_last_layer(output)
        if graph.block_shapes is not None:
            graph.check_blocks_form_a_chain()
        graph.checked = True
        if graph.check_handle is not None:
            graph.check_handle.remove()
        return None


class RuleGraph:
    """A rule's hooks on one model, and what the current forward pass left (chapter 10).

    ``inputs[k]`` is learning layer ``k``'s input as the previous block produced it (attached to
    that block's graph), ``outputs[k]`` the layer's output.  ``active=False`` turns the rule off
    (plain autograd: BP), which :func:`dfa_lib.metrics.alignment` uses for its reference.
    """

    def __init__(self, rule, model: nn.Module):
        self.rule, self.layers = rule, learning_layers(model)
        self.n_layers = len(self.layers)
        needs_shapes = getattr(rule, "needs_block_shapes", False)
        # DFA and DRTP on a model with feedback points: the points, not the learning layers, bound the blocks
        self.points = feedback_points(model) if needs_shapes else []
        self.cuts_layers = not self.points
        cuts_somewhere = self.cuts_layers and any(rule.cuts(k, self.n_layers) for k in range(self.n_layers))
        if cuts_somewhere:  # BP's hooks cut nothing: every parameter trains by autograd
            check_parameters(model)
        names = {m: n for n, m in model.named_modules()}
        self.names = [names[layer] for layer in self.layers]
        # the per-example shapes DFA and DRTP were built for: their one matrix product needs them
        self.block_shapes = [tuple(s) for s in rule.block_shapes] if needs_shapes else None
        self.point_shapes = self.block_shapes if self.points else None
        if self.points:
            self.block_shapes = None  # the learning layers' inputs are not block outputs here
        # DFA's and DRTP's default blocks form a chain, so the layers must run in registration order; every other
        # rule treats each layer on its own (the first registered must run first: it starts the forward pass)
        self.in_order = self.block_shapes is not None
        self.active = True
        self.measuring = False  # a measuring pass (dfa_lib.alignment): both rules' gradients on one graph
        self.backward_mode = "rule"  # under a measuring pass: "rule" or "bp", the gradients the next backward gives
        self.point_inputs = []
        self.inputs, self.outputs = [], []
        self.last_output = None
        self.placement = None  # (device, dtype) of the first layer's weight when the rule was last placed
        self.checked = not cuts_somewhere
        self.handles = []
        for k, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_pre_hook(_PreHook(self, k)))
            self.handles.append(layer.register_forward_hook(_PostHook(self, k)))
        self.check_handle = None
        if not self.checked:
            self.check_handle = model.register_forward_hook(_FirstForwardCheck(self))
            self.handles.append(self.check_handle)
        if self.points:
            self.handles.append(model.register_forward_pre_hook(_StartPoints(self)))
            for j, point in enumerate(self.points):
                self.handles.append(point.register_forward_hook(_PointHook(self, j)))
            self.handles.append(model.register_forward_hook(_OutputTap(self)))

    def start_forward(self) -> None:
        if self.in_order:
            self.inputs, self.outputs = [], []
        else:
            self.inputs, self.outputs = [None] * self.n_layers, [None] * self.n_layers
        self.last_output = None
        self.follow_model()
        self.rule.start_forward(self)

    def block_outputs(self) -> list:
        """The tensors the rule's blocks end at in the current forward pass: the feedback points' inputs,
        or on a chain the learning layers' inputs after the first."""
        return list(self.point_inputs) if self.points else self.inputs[1:]

    def measuring_tap(self, k: int, layer: nn.Module) -> tuple:
        """Layer ``k``'s tap under a measuring pass: every learning layer's input is cut, and the handler
        gives the rule's gradients (``backward_mode == "rule"``) or BP's (``"bp"``: W itself) on one graph."""
        x = self.inputs[k]
        rule_handler, rule_kept = self.rule.tap(k, self) if self.cuts_layers else (None, ())
        own_cut = self.cuts_layers and self.rule.cuts(k, self.n_layers)
        none = (None,) * len(rule_kept)

        def handler(g):
            exact = input_gradient(layer, layer.weight.detach(), g, x.shape)
            if self.backward_mode == "bp":
                return (exact, *none)
            return (None if own_cut else exact, *(rule_handler(g) if rule_handler is not None else none))

        return handler, (x, *rule_kept)

    def follow_model(self) -> None:
        """Move the rule to the device and dtype of the model's weights (after ``model.to(...)``,
        ``model.double()``).  ``nn.Module.to`` keeps a parameter object where it can (dtype changes,
        CPU to GPU), so an optimizer over Kolen-Pollack's ``B`` keeps working."""
        weight = self.layers[0]._parameters["weight"]  # the dict itself: Module.__getattr__ costs more than the check
        placement = (weight.device, weight.dtype)
        if placement == self.placement:
            return
        tensors = list(self.rule.parameters()) + list(self.rule.buffers())
        if any(t.device != weight.device or (t.is_floating_point() and t.dtype != weight.dtype) for t in tensors):
            self.rule.to(device=weight.device, dtype=weight.dtype)
        self.placement = placement

    # ---------------------------------------------------------------- messages and one-time checks
    def _layer(self, k: int) -> str:
        return f"'{self.names[k]}' ({self.layers[k]})" if self.names[k] else f"the model ({self.layers[k]})"

    def order_message(self, k: int) -> str:
        """Why learning layer ``k`` cannot run now, in the model's terms."""
        done = len(self.outputs) if self.in_order else 0
        if len(self.inputs) > k and self.inputs[k] is not None:
            what = (f"learning layer {self._layer(k)} ran a second time in one forward pass (a layer used twice, "
                    "e.g. shared weights)")
        else:
            what = (f"learning layer {self._layer(k)} ran before {self._layer(done)}, which is registered before it: "
                    "the layers ran in another order than they are defined in __init__")
        if self.in_order:
            return (f"{what}. {self.rule.name} takes the nn.Linear/nn.Conv2d layers as a chain in the order "
                    "model.modules() lists them, each run once per forward pass: define them in __init__ in the order "
                    "forward uses them, give each use its own layer, or train this model with BP")
        return (f"{what}. {self.rule.name} needs each nn.Linear/nn.Conv2d layer run once per forward pass, the first "
                "one registered in __init__ first: define the input layer first, give each use its own layer, or "
                "train this model with BP")

    def block_shape_message(self, k: int, x: torch.Tensor) -> str:
        expected, got = self.block_shapes[k - 1], tuple(x.shape[1:])
        layer = self.layers[k]
        if isinstance(layer, nn.Linear) and x.dim() > 2:
            return (f"learning layer {self._layer(k)} received inputs of shape {tuple(x.shape)}: {self.rule.name} "
                    f"sends each example's error to every block, so each row must be one example (N, features) and "
                    f"this block's output must have shape (N, {expected[-1]}). For tokens (N, T, d), flatten them to "
                    "(N*T, d) if each token is an example (and its targets to (N*T,)), or use FA, sign symmetry or "
                    "Kolen-Pollack, which take any leading dimensions")
        return (f"learning layer {self._layer(k)} received blocks of shape {got} per example, but {self.rule.name} "
                f"was built for {expected} (from example_input): its feedback matrix has one row per entry of each "
                "block. Train on inputs of the example's size (the same image size), or build the rule with "
                "example_input=x[:1] taken from the data you train on")

    def check_all_layers_ran(self) -> None:
        ran = [k for k, out in enumerate(self.outputs) if out is not None]
        if len(ran) != self.n_layers:
            missing = ", ".join(self._layer(k) for k in range(self.n_layers) if k not in ran)
            raise RuntimeError(
                f"the forward pass did not run learning layer(s) {missing} as modules: {self.rule.name} treats every "
                "nn.Linear/nn.Conv2d of the model as a layer of the chain, the last one as the output layer. "
                "Remove unused layers from the model, and call each layer as a module (layer(x), not its weight)")

    def check_nothing_trains_before_the_first_layer(self, model: nn.Module) -> None:
        """A trained parameter before the first learning layer would never train: the rule cuts its input."""
        x = self.inputs[0]
        if x.grad_fn is None or not self.rule.cuts(0, self.n_layers):
            return
        owner = {id(p): name for name, m in model.named_modules()
                 for p in m.parameters(recurse=False) if p.requires_grad}
        node = _reaches(x.grad_fn, lambda n: id(getattr(n, "variable", None)) in owner)
        if node is None or node is ...:
            return
        name = owner[id(node.variable)]
        module = model.get_submodule(name)
        raise ValueError(
            f"{_module_label(name, module)} runs before the first learning layer {self._layer(0)}, whose input "
            f"{self.rule.name} cuts off the graph: its parameters would never train. Move it after the first "
            "nn.Linear/nn.Conv2d, freeze it (requires_grad_(False)), or train this model with BP")

    def check_output_depends_on_the_last_layer(self, output: torch.Tensor) -> None:
        """The last registered learning layer is the output layer; the model must return its scores."""
        last = self.last_output
        if last is None or last.grad_fn is None or output.grad_fn is None:
            return  # nothing trained at the output: no signal depends on it
        target = last.grad_fn
        if _reaches(output.grad_fn, lambda n: n is target) is not None:
            return
        raise RuntimeError(
            f"the model's output does not depend on {self._layer(self.n_layers - 1)}, the last nn.Linear/nn.Conv2d "
            f"registered in the model, which {self.rule.name} takes as the output layer (its error feeds the hidden "
            "layers). Define the output layer last in __init__ (a probe or auxiliary head before it), or keep "
            "such extra layers out of the model")

    def check_blocks_form_a_chain(self) -> None:
        """DFA's and DRTP's default blocks (one per learning layer) need a chain: a skip connection or a branch
        would carry one block's signal into another by backprop.  Refused, asking for feedback points."""
        for k in range(2, self.n_layers):
            earlier = {h.grad_fn for h in self.inputs[1:k] if h.grad_fn is not None}
            if not earlier or self.inputs[k].grad_fn is None:
                continue
            if _reaches(self.inputs[k].grad_fn, lambda n: n in earlier) not in (None, ...):
                raise ValueError(
                    f"the input of learning layer {self._layer(k)} depends on an earlier block output other than "
                    f"through {self._layer(k - 1)}: a skip connection (x + f(x)) or a branch. {self.rule.name}'s "
                    "default blocks (one per nn.Linear/nn.Conv2d) are defined only for a chain, where no signal can "
                    "reach another block. Mark the blocks yourself: put a dfa_lib.FeedbackPoint() after each block "
                    "(on a residual stream, after each residual block's sum) and build the rule with "
                    "example_input=x[:1]; or use FA, sign symmetry or Kolen-Pollack, which take any graph")

    def remove(self) -> None:
        """Take the hooks off the model."""
        for h in self.handles:
            h.remove()
        self.handles = []
        self.check_handle = None

    def __getstate__(self):  # the hooks hold this object; pickle it without the live tensors
        state = dict(self.__dict__)
        state["inputs"], state["outputs"], state["handles"] = [], [], []
        state["point_inputs"] = []
        state["last_output"], state["check_handle"], state["placement"] = None, None, None
        return state

    def __setstate__(self, state):
        # a graph pickled before these attributes existed: its model was checked then
        self.__dict__.update(block_shapes=None, last_output=None, placement=None, checked=True, check_handle=None,
                             names=[""] * len(state.get("layers", ())), points=[], point_inputs=[], point_shapes=None,
                             cuts_layers=True, measuring=False, backward_mode="rule",
                             in_order=state.get("block_shapes") is not None)
        self.__dict__.update(state)


def _check_example_input(example_input) -> None:
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, a batch of one or more inputs such as x[:1]; got "
                        f"{type(example_input).__name__}: convert it with torch.as_tensor(x[:1])")


class _ExampleShapeCheck:
    """Forward pre-hook of :func:`layer_io_shapes`: is the input a learning layer receives a batch it can take?"""

    def __init__(self, k: int, name: str, example_shape: tuple):
        self.k, self.name, self.example_shape = k, name, example_shape

    def __call__(self, layer, args):
        x = args[0]
        where = (f"example_input of shape {self.example_shape} reached learning layer '{self.name}' ({layer}) "
                 f"with shape {tuple(x.shape)}")
        batch_fix = "pass a batch of one input shaped like your training inputs: example_input=x[:1], not x[0]"
        if isinstance(layer, nn.Conv2d):
            if x.dim() != 4:
                hint = batch_fix if x.dim() == 3 else \
                    "pass a batch of unflattened images (N, C, H, W), e.g. example_input=x[:1]"
                raise ValueError(f"{where}, but a conv layer needs (N, C, H, W): {hint}")
            if x.shape[1] != layer.in_channels:
                raise ValueError(f"{where}, but the layer takes {layer.in_channels} channels: pass a batch shaped "
                                 "like your training inputs, e.g. example_input=x[:1]")
            return None
        if x.dim() < 2:
            raise ValueError(f"{where}, which has no batch dimension: {batch_fix}")
        if x.dim() > 2:
            raise ValueError(
                f"{where}: DFA and DRTP send each example's error to every block, so each row must be one example "
                "(N, features). For tokens (N, T, d), flatten them to (N*T, d) if each token is an example, or "
                "use FA, sign symmetry or Kolen-Pollack, which take any leading dimensions")
        if x.shape[1] != layer.in_features:
            raise ValueError(f"{where}, but the layer takes {layer.in_features} features: pass a batch shaped like "
                             "your training inputs, e.g. example_input=x[:1]")
        return None


def _run_example(model: nn.Module, example_input: torch.Tensor, handles: list):
    """The model's output on ``example_input``, without gradients and in eval mode (batch norm cannot
    take a single row in training mode); the model's mode is restored and the recording ``handles``
    removed whatever happens, and a failure says what to pass instead."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(example_input)
    except (RuntimeError, TypeError, IndexError) as error:
        raise ValueError(f"the model could not run on example_input of shape {tuple(example_input.shape)} "
                         f"({error}); pass a batch shaped like your training inputs, e.g. example_input=x[:1]") \
            from error
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def layer_io_shapes(model: nn.Module, example_input: torch.Tensor | None = None) -> tuple:
    """Per-example input shape of every learning layer and the last layer's output shape.

    Pure ``nn.Linear`` chains need no example (each input has ``in_features`` entries); a model
    with conv layers is run once, without gradients, on ``example_input`` (one or more rows,
    e.g. ``x[:1]``), whose shape is checked at every learning layer it reaches.

    On a model with :class:`~dfa_lib.FeedbackPoint` modules the blocks end at the points:
    ``[None, *point input shapes]`` and the output's shape, from one run on ``example_input``.
    """
    points = feedback_points(model)
    if points:
        return point_io_shapes(model, points, example_input)
    check_parameters(model)
    layers = learning_layers(model)
    if example_input is None:
        if all(isinstance(l, nn.Linear) for l in layers):
            return [(l.in_features,) for l in layers], (layers[-1].out_features,)
        raise ValueError(
            "this model has conv layers, so the shapes of its block outputs are only known after a forward "
            "pass: pass example_input=x[:1] (one input row) when you build the rule")
    _check_example_input(example_input)
    names = {m: n for n, m in model.named_modules()}
    shapes, handles = {}, []

    def record(k):
        def hook(module, args, out):
            shapes.setdefault(k, (tuple(args[0].shape[1:]), tuple(out.shape[1:])))
        return hook

    for k, layer in enumerate(layers):
        handles.append(layer.register_forward_pre_hook(_ExampleShapeCheck(k, names[layer], tuple(example_input.shape))))
        handles.append(layer.register_forward_hook(record(k)))
    _run_example(model, example_input, handles)
    if len(shapes) != len(layers):
        raise ValueError("example_input did not run through every nn.Linear/nn.Conv2d layer of the model")
    return [shapes[k][0] for k in range(len(layers))], shapes[len(layers) - 1][1]


def point_io_shapes(model: nn.Module, points: list, example_input) -> tuple:
    """``[None, *shape of each feedback point's input]`` and the model output's shape (per example),
    from one run without gradients on ``example_input``."""
    if example_input is None:
        raise ValueError("this model has FeedbackPoint modules, whose block shapes are only known after a forward "
                         "pass: pass example_input=x[:1] (one input row) when you build the rule")
    _check_example_input(example_input)
    shapes, handles = {}, []
    def record(j):
        def hook(module, args, out):
            shapes.setdefault(j, tuple(out.shape[1:]))
        return hook

    for j, point in enumerate(points):
        handles.append(point.register_forward_hook(record(j)))
    output = _run_example(model, example_input, handles)
    if len(shapes) != len(points):
        raise ValueError(f"example_input ran {len(shapes)} of the model's {len(points)} FeedbackPoint modules: "
                         "every point must run once per forward pass")
    if not isinstance(output, torch.Tensor) or output.dim() < 2:
        raise ValueError("a model with feedback points must return one tensor of scores of shape (N, outputs)")
    return [None] + [shapes[j] for j in range(len(points))], tuple(output.shape[1:])
