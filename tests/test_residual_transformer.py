"""Every rule on a residual network and a one-layer transformer, against hand derivations (float64).

What the rules mean there (dfa_lib.rules.graph, .points, .attention):
- FA, sign symmetry, Kolen-Pollack: each learning layer sends the gradient down through B in place
  of W; the skip addition, attention's products, softmax and layer norm keep their true derivative.
- DFA, DRTP: a FeedbackPoint after each block; the gradient arriving at a point is replaced by
  B_k e (or B_k y*), backprop runs inside the block only, nothing crosses a point.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import assert_same_gradients, fa_with_forward_weights, gradients
from dfa_lib import (BP, DFA, DRTP, FA, USF, FeedbackPoint, KolenPollack, SelfAttention, Shallow, alignment,
                     split_attention)

pytestmark = pytest.mark.usefixtures("double_precision")


# ------------------------------------------------------------------ the two models
class Residual(nn.Module):
    """h + W2 tanh(W1 h), then a FeedbackPoint on the stream (when asked for)."""

    def __init__(self, width, point):
        super().__init__()
        self.w1, self.w2 = nn.Linear(width, width), nn.Linear(width, width)
        self.point = FeedbackPoint() if point else nn.Identity()

    def forward(self, h):
        return self.point(h + self.w2(torch.tanh(self.w1(h))))


class ResidualMLP(nn.Module):
    """stem, then blocks h <- h + W2 tanh(W1 h), then a linear head; a FeedbackPoint after each block's sum."""

    def __init__(self, blocks=2, width=6, points=False):
        super().__init__()
        self.stem = nn.Linear(4, width)
        self.blocks = nn.Sequential(*(Residual(width, points) for _ in range(blocks)))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


class TinyTransformer(nn.Module):
    """Tokens (N, T, 4) -> linear embedding -> one nn.TransformerEncoderLayer -> mean over T -> head."""

    def __init__(self, point=False, embedding=False, norm_first=False):
        super().__init__()
        self.embed = nn.Embedding(5, 8) if embedding else nn.Linear(4, 8)
        self.encoder = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True,
                                                  norm_first=norm_first, activation="gelu" if norm_first else "relu")
        self.point = FeedbackPoint() if point else nn.Identity()
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.point(self.encoder(self.embed(x))).mean(1))


class ResidualCNN(nn.Module):
    """A reader's own residual CNN: conv stem, then h + conv2(tanh(bn(conv1(h)))), a FeedbackPoint after the sum
    (when asked for), a mean over the image and a linear head."""

    def __init__(self, point=False, channels=3):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(channels, channels, 3, padding=1), nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.point = FeedbackPoint() if point else nn.Identity()
        self.head = nn.Linear(channels, 3)

    def forward(self, x):
        h = self.stem(x)
        h = self.point(h + self.conv2(torch.tanh(self.bn(self.conv1(h)))))
        return self.head(h.mean((2, 3)))


def image_batch(n=6, side=5):
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, side, side, generator=g), torch.randint(0, 3, (n,), generator=g)


def residual_cnn(seed=0, **kw):
    torch.manual_seed(seed)
    return ResidualCNN(**kw)


def residual_batch(n=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def token_batch(n=4, t=3, ids=False):
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 5, (n, t), generator=g) if ids else torch.randn(n, t, 4, generator=g)
    return x, torch.randint(0, 3, (n,), generator=g)


def transformer(seed=0, **kw):
    torch.manual_seed(seed)
    return split_attention(TinyTransformer(**kw))


def output_error(model, x, y):
    """e = d(mean cross-entropy)/d(scores) = (softmax - one-hot) / N, from the model's own forward."""
    with torch.no_grad():
        out = model(x)
    return (out.softmax(1) - F.one_hot(y, 3)) / len(x)


# ------------------------------------------------------------------ attention as two nn.Linear layers
def test_split_attention_computes_pytorchs_encoder_layer_and_its_gradients():
    torch.manual_seed(0)
    original = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
    split = split_attention(__import__("copy").deepcopy(original))
    assert isinstance(split.self_attn, SelfAttention)
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    for kw in ({}, {"src_mask": mask, "is_causal": True}):
        a, b = original(x, **kw), split(x, **kw)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-13)
        w = torch.randn_like(a)
        ga = torch.autograd.grad((a * w).sum(), [x, original.self_attn.in_proj_weight, original.self_attn.in_proj_bias,
                                                 original.self_attn.out_proj.weight, original.linear1.weight])
        gb = torch.autograd.grad((b * w).sum(), [x, split.self_attn.in_proj.weight, split.self_attn.in_proj.bias,
                                                 split.self_attn.out_proj.weight, split.linear1.weight])
        for p, q in zip(ga, gb):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-12)
    original.eval(), split.eval()
    with torch.no_grad():
        torch.testing.assert_close(split(x), original(x), rtol=0, atol=1e-13)


def _attention_masks(n, t, heads):
    """Every mask SelfAttention takes (PyTorch's convention), none of which masks a whole row."""
    g = torch.Generator().manual_seed(3)
    causal = nn.Transformer.generate_square_subsequent_mask(t)
    pad = torch.zeros(n, t, dtype=torch.bool)
    pad[0, -1] = pad[1, -2:] = True
    return [{}, {"is_causal": True}, {"attn_mask": causal, "is_causal": True}, {"attn_mask": causal.isinf()},
            {"attn_mask": torch.randn(t, t, generator=g)}, {"attn_mask": torch.randn(n * heads, t, t, generator=g)},
            {"key_padding_mask": pad}, {"key_padding_mask": pad, "is_causal": True},
            {"key_padding_mask": pad, "attn_mask": torch.randn(t, t, generator=g)},
            {"key_padding_mask": torch.zeros(n, t).masked_fill(pad, float("-inf")), "attn_mask": causal.isinf()}]


@pytest.mark.parametrize("batch_first", [True, False])
def test_fused_attention_is_the_formula_written_out_with_its_gradients(batch_first):
    """fused=True runs F.scaled_dot_product_attention (without the weights), need_weights=True the formula
    by hand: the same output and the same gradients (input and both projections) under every mask."""
    torch.manual_seed(0)
    n, t, heads = 3, 5, 2
    attn = SelfAttention(8, heads, batch_first=batch_first)
    x = torch.randn(n, t, 8) if batch_first else torch.randn(t, n, 8)
    x.requires_grad_(True)
    params = [x, attn.in_proj.weight, attn.in_proj.bias, attn.out_proj.weight, attn.out_proj.bias]
    for kw in _attention_masks(n, t, heads):
        by_hand, weights = attn(x, x, x, need_weights=True, **kw)
        assert weights.shape == (n, t, t)
        w = torch.randn_like(by_hand)
        expected = torch.autograd.grad((by_hand * w).sum(), params)
        for attn.fused in (True, False):  # the fused kernel, and the formula without the weights
            out, none = attn(x, x, x, need_weights=False, **kw)
            assert none is None
            torch.testing.assert_close(out, by_hand, rtol=0, atol=1e-14, msg=f"fused={attn.fused}, {list(kw)}")
            for a, b in zip(torch.autograd.grad((out * w).sum(), params), expected):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-13, msg=f"gradients, fused={attn.fused}, {list(kw)}")


@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")  # PyTorch's module, on the mixed pair
@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("need_weights", [False, True])
def test_self_attention_is_pytorchs_module_under_every_mask(need_weights, fused):
    torch.manual_seed(0)
    n, t, heads = 3, 5, 2
    original = nn.MultiheadAttention(8, heads, batch_first=True)
    split = SelfAttention.from_torch(original)
    split.fused = fused
    x = torch.randn(n, t, 8)
    for kw in _attention_masks(n, t, heads):
        if kw.get("is_causal") and "attn_mask" not in kw:
            continue  # PyTorch's module takes is_causal only as a hint beside the mask itself
        (a, wa), (b, wb) = original(x, x, x, need_weights=need_weights, **kw), split(x, x, x, need_weights=need_weights, **kw)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-13, msg=f"output with {list(kw)}")
        if need_weights:
            torch.testing.assert_close(wb, wa, rtol=0, atol=1e-13, msg=f"weights with {list(kw)}")


def test_unsplit_attention_is_refused_with_the_way_out():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="split_attention") as error:
        FA(TinyTransformer())
    assert "'encoder.self_attn' (MultiheadAttention)" in str(error.value)


def test_self_attention_refuses_cross_attention():
    attn = SelfAttention(8, 2, batch_first=True)
    x = torch.randn(2, 3, 8)
    with pytest.raises(ValueError, match="self-attention only"):
        attn(x, torch.randn(2, 3, 8), x)


# ------------------------------------------------------------------ BP through the library is autograd
@pytest.mark.parametrize("make,batch", [(lambda: ResidualMLP(), residual_batch), (transformer, token_batch),
                                        (residual_cnn, image_batch)])
def test_bp_through_the_hooks_is_autograd(make, batch):
    model = make()
    x, y = batch()
    reference = gradients(model, x, y)
    BP(model, path="autograd")
    assert_same_gradients(gradients(model, x, y), reference)


# ------------------------------------------------------------------ FA family: B in place of W, every other derivative true
@pytest.mark.parametrize("make,batch", [(lambda: ResidualMLP(), residual_batch), (transformer, token_batch),
                                        (lambda: transformer(norm_first=True), token_batch),
                                        (residual_cnn, image_batch)])
def test_fa_with_b_equal_to_w_is_bp_on_every_parameter(make, batch):
    """Layer norm, batch norm, the skip additions, attention's products and softmax: all trained exactly."""
    model = make()
    x, y = batch()
    reference = gradients(model, x, y)
    fa_with_forward_weights(model)
    got = gradients(model, x, y)
    assert all(g is not None for g in got)
    assert_same_gradients(got, reference)


def test_fa_on_a_residual_block_by_hand():
    """h0 = S x; h1 = h0 + W2 tanh(W1 h0); out = H h1.  FA: g_h1 = e B_H, g_t = g_h1 B_2,
    g_u = g_t (1 - t^2), g_h0 = g_h1 (the skip, exact) + g_u B_1; dW = g^T (layer input)."""
    torch.manual_seed(0)
    model = ResidualMLP(blocks=1)
    x, y = residual_batch()
    rule = FA(model)
    B1, B2, BH = (b.transpose(0, 1) for b in rule.feedback)  # in W's layout: W1, W2, head
    S, W1, W2 = model.stem, model.blocks[0].w1, model.blocks[0].w2
    with torch.no_grad():
        h0 = S(x)
        t = torch.tanh(W1(h0))
        h1 = h0 + W2(t)
        e = output_error(model, x, y)
        g_h1 = e @ BH
        g_u = (g_h1 @ B2) * (1 - t**2)
        g_h0 = g_h1 + g_u @ B1
    got = gradients(model, x, y)
    names = [n for n, _ in model.named_parameters()]
    hand = {"stem.weight": g_h0.T @ x, "stem.bias": g_h0.sum(0), "blocks.0.w1.weight": g_u.T @ h0, "blocks.0.w1.bias": g_u.sum(0),
            "blocks.0.w2.weight": g_h1.T @ t, "blocks.0.w2.bias": g_h1.sum(0), "head.weight": e.T @ h1, "head.bias": e.sum(0)}
    for name, g in zip(names, got):
        torch.testing.assert_close(g, hand[name], rtol=0, atol=1e-12, msg=name)


def test_usf_with_unit_weights_is_bp():
    """uSF with scale sqrt(3) sends sign(W) back: with every |w| = 1 that is W itself, so uSF is BP."""
    model = transformer()
    with torch.no_grad():
        for layer in __import__("dfa_lib").learning_layers(model):
            layer.weight.copy_(layer.weight.sign())
    x, y = token_batch()
    reference = gradients(model, x, y)
    USF(model, scale=math.sqrt(3.0))
    assert_same_gradients(gradients(model, x, y), reference)


def test_dfa_with_one_point_and_b_the_heads_transpose_is_bp_on_a_residual_block():
    """One block, one point before the head: e B^T with B = H^T is the true gradient at the point."""
    torch.manual_seed(0)
    model = ResidualMLP(blocks=1, points=True)
    x, y = residual_batch()
    reference = gradients(model, x, y)
    rule = DFA(model, example_input=x[:1])
    rule.set_feedback([model.head.weight.detach().T])
    assert_same_gradients(gradients(model, x, y), reference)


def test_kolen_pollack_b_learns_ws_gradient_on_the_transformer():
    model = transformer()
    rule = KolenPollack(model, weight_decay=0.0)
    x, y = token_batch()
    gradients(model, x, y)
    layers = rule.layers
    for layer, B in zip(layers[1:], rule.feedback_parameters):
        torch.testing.assert_close(B.grad, layer.weight.grad, rtol=0, atol=0)
    with torch.no_grad():  # B = W: exactly BP
        for layer, B in zip(layers[1:], rule.feedback_parameters):
            B.copy_(layer.weight)
    rule.zero_grad(set_to_none=True)
    got = gradients(model, x, y)
    rule.detach()
    assert_same_gradients(got, gradients(model, x, y))


# ------------------------------------------------------------------ DFA and DRTP: feedback points
def test_dfa_without_points_refuses_a_skip_connection():
    model = ResidualMLP()
    x, y = residual_batch()
    DFA(model)
    with pytest.raises(ValueError, match="FeedbackPoint"):
        gradients(model, x, y)


def test_dfa_with_points_on_a_residual_net_by_hand():
    """Point k's gradient is replaced by e B_k^T; backprop inside block k only (the skip stops at the point)."""
    torch.manual_seed(0)
    model = ResidualMLP(blocks=2, points=True)
    x, y = residual_batch()
    rule = DFA(model, example_input=x[:1])
    assert [tuple(B.shape) for B in rule.feedback] == [(6, 3), (6, 3)]
    e = output_error(model, x, y)
    signals = [e @ B.T for B in rule.feedback]
    got = dict(zip([n for n, _ in model.named_parameters()], gradients(model, x, y)))
    # block 1 (stem, w1.0, w2.0): backprop of signal 1 from h1; block 2: of signal 2 from h2, h1 a constant
    h0 = model.stem(x)
    h1 = h0 + model.blocks[0].w2(torch.tanh(model.blocks[0].w1(h0)))
    block1 = [model.stem.weight, model.stem.bias, model.blocks[0].w1.weight, model.blocks[0].w1.bias, model.blocks[0].w2.weight,
              model.blocks[0].w2.bias]
    hand1 = torch.autograd.grad(h1, block1, signals[0])
    h1c = h1.detach()
    h2 = h1c + model.blocks[1].w2(torch.tanh(model.blocks[1].w1(h1c)))
    block2 = [model.blocks[1].w1.weight, model.blocks[1].w1.bias, model.blocks[1].w2.weight, model.blocks[1].w2.bias]
    hand2 = torch.autograd.grad(h2, block2, signals[1])
    names = ["stem.weight", "stem.bias", "blocks.0.w1.weight", "blocks.0.w1.bias", "blocks.0.w2.weight", "blocks.0.w2.bias",
             "blocks.1.w1.weight", "blocks.1.w1.bias", "blocks.1.w2.weight", "blocks.1.w2.bias"]
    for name, g in zip(names, hand1 + hand2):
        torch.testing.assert_close(got[name], g, rtol=0, atol=1e-12, msg=name)
    torch.testing.assert_close(got["head.weight"], e.T @ h2.detach(), rtol=0, atol=1e-12)


def _identity_feedback_for_the_mean_pool(model, t):
    """B with e B^T = the true gradient at the point before mean-pooling: each token gets H^T e / T."""
    return [(model.head.weight.detach().T / t).repeat(t, 1)]


def test_dfa_with_one_point_and_b_the_true_map_is_bp_on_the_transformer():
    model = transformer(point=True)
    x, y = token_batch()
    reference = gradients(model, x, y)
    rule = DFA(model, example_input=x[:1])
    rule.set_feedback(_identity_feedback_for_the_mean_pool(model, x.shape[1]))
    got = gradients(model, x, y)
    assert all(g is not None for g in got)
    assert_same_gradients(got, reference)


def test_dfa_with_one_point_and_b_the_true_map_is_bp_on_a_residual_cnn():
    """Point before a mean over the image: e B^T is the true gradient when each pixel of channel c gets H_c^T e / HW."""
    model = residual_cnn(point=True)
    x, y = image_batch()
    reference = gradients(model, x, y)
    rule = DFA(model, example_input=x[:1])
    pixels = x.shape[2] * x.shape[3]
    rule.set_feedback([(model.head.weight.detach().T / pixels).repeat_interleave(pixels, dim=0)])  # rows (c, h, w)
    got = gradients(model, x, y)
    assert all(g is not None for g in got)
    assert_same_gradients(got, reference)


def test_dfa_trains_an_embedding_before_the_first_point_by_backprop_from_its_signal():
    model = transformer(point=True, embedding=True)
    x, y = token_batch(ids=True)
    reference = gradients(model, x, y)
    rule = DFA(model, example_input=x[:1])
    rule.set_feedback(_identity_feedback_for_the_mean_pool(model, x.shape[1]))
    assert_same_gradients(gradients(model, x, y), reference)  # the embedding's gradient included


def test_drtp_with_points_sends_the_target():
    model = transformer(point=True)
    x, y = token_batch()
    rule = DRTP(model, example_input=x[:1])
    (B,) = rule.feedback
    got = dict(zip([n for n, _ in model.named_parameters()], gradients(model, x, y, rule)))
    p = model.encoder(model.embed(x))
    signal = ((F.one_hot(y, 3).to(x.dtype) / len(x)) @ B.T).view_as(p)
    hand = torch.autograd.grad(p, [model.encoder.linear1.weight, model.embed.weight], signal)
    torch.testing.assert_close(got["encoder.linear1.weight"], hand[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(got["embed.weight"], hand[1], rtol=0, atol=1e-12)


def test_an_embedding_is_refused_by_the_fa_family_and_shallow_learning_trains_only_the_head():
    with pytest.raises(ValueError, match="'embed' \\(Embedding\\)"):
        FA(transformer(embedding=True))
    model = transformer(point=True)
    x, y = token_batch()
    Shallow(model)
    got = dict(zip([n for n, _ in model.named_parameters()], gradients(model, x, y)))
    assert {n for n, g in got.items() if g is not None} == {"head.weight", "head.bias"}


def test_a_point_that_does_not_run_is_an_error():
    class Skips(TinyTransformer):
        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(1))

    torch.manual_seed(0)
    model = split_attention(Skips(point=True))
    x, y = token_batch()
    with pytest.raises(ValueError, match="ran 0 of the model's 1 FeedbackPoint"):
        DFA(model, example_input=x[:1])


# ------------------------------------------------------------------ alignment from one forward pass
def _count_forwards(model):
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_alignment_per_learning_layer_on_the_residual_net_and_the_transformer():
    for model, (x, y) in [(ResidualMLP(), residual_batch()), (transformer(), token_batch())]:
        fa_with_forward_weights(model)
        calls = _count_forwards(model)
        angles = alignment(model, __import__("dfa_lib").rule_of(model), x, y)
        assert len(calls) == 1
        n = len(__import__("dfa_lib").learning_layers(model))
        assert len(angles["signal"]) == len(angles["update"]) == n - 1
        assert max(angles["signal"] + angles["update"] + angles["weight"]) < 1e-5


def test_alignment_per_feedback_point():
    model = transformer(point=True)
    x, y = token_batch()
    rule = DFA(model, example_input=x[:1])
    rule.set_feedback(_identity_feedback_for_the_mean_pool(model, x.shape[1]))
    calls = _count_forwards(model)
    angles = alignment(model, rule, x, y)
    assert len(calls) == 1 and len(angles["signal"]) == 1
    assert angles["signal"][0] < 1e-5 and max(angles["update"]) < 1e-5
    rule.reset_feedback(torch.Generator().manual_seed(0))
    angles = alignment(model, rule, x, y)
    assert 1.0 < angles["signal"][0] < 179.0
    # a measuring pass leaves no gradient behind and training still works after it
    assert all(p.grad is None for p in model.parameters())
    assert all(g is not None for g in gradients(model, x, y))


class Lists(nn.Module):
    """The residual MLP with its layers in two lists: registered W1, W1', W2, W2', run W1, W2, W1', W2'."""

    def __init__(self, width=6):
        super().__init__()
        self.stem = nn.Linear(4, width)
        self.w1 = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.w2 = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        h = self.stem(x)
        for w1, w2 in zip(self.w1, self.w2):
            h = h + w2(torch.tanh(w1(h)))
        return self.head(h)


@pytest.mark.parametrize("Rule", [FA, USF, KolenPollack])
def test_the_fa_family_takes_layers_in_any_registration_order(Rule):
    """Each learning layer's backward uses its own B: no chain, so the order the layers are defined in is free."""
    torch.manual_seed(0)
    model = Lists()
    x, y = residual_batch()
    reference = gradients(model, x, y)
    rule = Rule(model, weight_decay=0.0) if Rule is KolenPollack else Rule(model)
    layers = __import__("dfa_lib").learning_layers(model)
    with torch.no_grad():
        if Rule is FA:
            rule.set_feedback([l.weight.detach().transpose(0, 1) for l in layers[1:]])
        elif Rule is KolenPollack:
            for layer, B in zip(layers[1:], rule.feedback_parameters):
                B.copy_(layer.weight)
    got = gradients(model, x, y)
    if Rule is USF:  # sign(W) scaled: not BP, but every parameter trained and the skip path exact at the stem
        assert all(g is not None for g in got)
    else:
        assert_same_gradients(got, reference)
    assert len(alignment(model, rule, x, y)["signal"]) == 5


def test_a_copied_model_with_points_carries_its_rule_and_detach_takes_all_its_hooks_off():
    import copy

    import dfa_lib

    model = transformer(point=True)
    x, y = token_batch()
    reference = gradients(model, x, y)
    DFA(model, example_input=x[:1])
    twin = copy.deepcopy(model)
    assert dfa_lib.rule_of(twin) is not None
    dfa_lib.detach(twin)
    assert dfa_lib.rule_of(twin) is None
    assert_same_gradients(gradients(twin, x, y), reference)
    with torch.no_grad():
        torch.testing.assert_close(model(x), twin(x), rtol=0, atol=0)  # the points are the identity


class Encoder(nn.Module):
    """PyTorch's nn.TransformerEncoder (two layers) between a linear embedding and a mean-pooled head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 8)
        layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=12, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


def test_pytorchs_transformer_encoder_takes_fa_and_dfa_with_a_point_after_each_layer():
    import dfa_lib

    torch.manual_seed(0)
    model = split_attention(Encoder())
    x, y = token_batch()
    reference = gradients(model, x, y)
    fa_with_forward_weights(model)
    assert_same_gradients(gradients(model, x, y), reference)
    dfa_lib.detach(model)
    dfa_lib.add_feedback_points(model.encoder.layers)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    assert_same_gradients(gradients(model, x, y), reference)  # points are the identity without DFA
    rule = DFA(model, example_input=x[:1])
    assert [tuple(B.shape) for B in rule.feedback] == [(24, 3), (24, 3)]
    got = dict(zip([n for n, _ in model.named_parameters()], gradients(model, x, y)))
    assert all(g is not None for g in got.values())
    e = output_error(model, x, y)
    # the last layer's block: backprop of e B_2^T from its point, the first layer's output a constant
    first = model.encoder.layers[0].module(model.embed(x)).detach()
    out = model.encoder.layers[1].module(first)
    hand = torch.autograd.grad(out, model.encoder.layers[1].module.linear1.weight,
                               (e @ rule.feedback[1].T).view_as(out))[0]
    torch.testing.assert_close(got["encoder.layers.1.module.linear1.weight"], hand, rtol=0, atol=1e-12)
    assert len(alignment(model, rule, x, y)["signal"]) == 2


@pytest.mark.parametrize("name", ["bp", "fa", "dfa", "shallow", "usf", "frsf", "brsf", "kp", "drtp"])
def test_every_rule_trains_the_transformer_with_train_in_one_line(name):
    import dfa_lib

    model = transformer(point=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(48, 3, 4, generator=g)
    y = x[:, :, :3].sum(1).argmax(1)
    before = [p.detach().clone() for p in model.parameters()]
    rule = dfa_lib.make_rule(name, model, example_input=x[:1], generator=torch.Generator().manual_seed(1))
    history = dfa_lib.train(model, rule, dfa_lib.Data(x[:32], y[:32], x[32:], y[32:]), epochs=1, batch_size=16,
                            lr=0.05, loss="ce", progress=False)
    assert history is not None
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), before)]
    assert moved[-2] and moved[-1]  # the head learns under every rule
    assert all(moved) or name == "shallow"
    if name != "bp":
        angles = dfa_lib.alignment(model, rule, x[:16], y[:16])
        assert len(angles["signal"]) == (1 if name in ("dfa", "drtp") else len(dfa_lib.learning_layers(model)) - 1)


@pytest.mark.parametrize("name", ["bp", "fa", "dfa", "shallow", "usf", "frsf", "brsf", "kp", "drtp"])
def test_every_rule_trains_a_residual_cnn_in_a_plain_loop(name):
    """A reader's own loop: one make_rule line, then zero_grad / loss.backward() / step."""
    import dfa_lib

    model = residual_cnn(point=True)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 5, 5, generator=g)
    y = (x[:, 0, :3, :3].sum((1, 2)) > 0).long() + (x[:, 0, 3:, 3:].sum((1, 2)) > 0).long()
    before = [p.detach().clone() for p in model.parameters()]
    rule = dfa_lib.make_rule(name, model, example_input=x[:1], generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(list(model.parameters()) + list(rule.parameters()), lr=0.05)  # KP: B learns too
    for start in range(0, 32, 8):
        xb, yb = x[start:start + 8], y[start:start + 8]
        opt.zero_grad()
        if name == "drtp":
            rule.observe_target(F.one_hot(yb, 3).to(xb.dtype))
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    moved = [not torch.equal(p, q) for p, q in zip(model.parameters(), before)]
    assert moved[-2] and moved[-1]  # the head learns under every rule
    assert all(moved) or name == "shallow"
