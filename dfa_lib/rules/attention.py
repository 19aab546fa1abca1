"""Self-attention whose projections are ``nn.Linear`` layers, so that every rule can reach them.

PyTorch's ``nn.MultiheadAttention`` keeps its input projection as a bare parameter
(``in_proj_weight``) and calls it functionally (``F.multi_head_attention_forward``): no
``nn.Linear`` module runs, so no rule can put its backward weight there.  :class:`SelfAttention`
computes the same function with two ``nn.Linear`` layers, ``in_proj`` (d -> 3d: queries, keys,
values, packed as PyTorch packs them) and ``out_proj`` (d -> d); between them the attention
itself, ``softmax(q k^T / sqrt(d_head) + mask) v``, runs as an ordinary autograd function, so that
autograd takes its true derivative.  Two paths compute it, with the same output and the same
gradients up to rounding (tested in float64): the formula written out
(:meth:`SelfAttention.attention_by_hand`, the reference, and the only one that returns the
attention weights, ``need_weights=True``), and PyTorch's fused ``F.scaled_dot_product_attention``
(its backward is the same derivative, in one kernel).  :attr:`SelfAttention.fused` chooses; by
default the fused kernel runs off the CPU and the formula on the CPU, where it measured faster at
the book's sizes (``benchmarks/transformer_speed.py --attention``, 28 tokens of head width 8).
:func:`split_attention` swaps every ``nn.MultiheadAttention`` of a model, those inside
``nn.TransformerEncoderLayer`` included, for one with the same weights.

What each rule then does in attention (chapter 12): the two projections are learning layers
like any other (FA, sign symmetry and Kolen-Pollack send the gradient back through B in place of
their W); the products of activations (``q k^T``, ``attention @ v``) and the softmax keep their
true derivative, as every operation that is not a learning layer does.  DFA and DRTP train the
projections by backprop inside the block that holds them, from the signal at the block's
:class:`~dfa_lib.FeedbackPoint`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class SelfAttention(nn.Module):
    """Multi-head self-attention equal to ``nn.MultiheadAttention`` called with query = key = value.

    Built by :func:`split_attention` from a PyTorch module (``SelfAttention.from_torch``), or
    directly.  The forward takes PyTorch's arguments (``attn_mask``, ``key_padding_mask``,
    ``need_weights``, ``average_attn_weights``, ``is_causal``), so ``nn.TransformerEncoderLayer``
    calls it unchanged; keys and values must be the query itself (self-attention).  Attention
    dropout draws its own mask, so under dropout the outputs differ from PyTorch's module by the
    random mask only; without dropout (or in eval mode) they are equal.

    Args:
        embed_dim: the model width d.
        num_heads: the number of heads (d must be a multiple of it).
        dropout: dropout on the attention weights (training mode only).
        bias: whether the projections have biases.
        batch_first: inputs (N, T, d) if True, (T, N, d) if False, as in PyTorch.

    Attributes:
        fused: ``True``: ``F.scaled_dot_product_attention`` whenever the weights are not asked for;
            ``False``: the formula by hand on every call; ``None`` (the default, also settable on
            the class): fused off the CPU only (module docstring).
    """

    # nn.TransformerEncoderLayer's fused inference path reads these; False keeps it on the plain path,
    # where the projections run as modules (and the rule's hooks see them)
    _qkv_same_embed_dim = False
    fused: bool | None = None

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 batch_first: bool = False, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of num_heads {num_heads}")
        self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        self.in_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, device=device, dtype=dtype)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)

    @classmethod
    def from_torch(cls, attention: nn.MultiheadAttention) -> "SelfAttention":
        """The same attention, with ``attention``'s weights copied into ``in_proj`` and ``out_proj``."""
        if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
            raise ValueError("split_attention takes nn.MultiheadAttention with kdim = vdim = embed_dim, no add_bias_kv "
                             "and no add_zero_attn")
        weight = attention.in_proj_weight
        new = cls(attention.embed_dim, attention.num_heads, attention.dropout, attention.in_proj_bias is not None,
                  attention.batch_first, device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(weight)
            new.out_proj.weight.copy_(attention.out_proj.weight)
            if attention.in_proj_bias is not None:
                new.in_proj.bias.copy_(attention.in_proj_bias)
                new.out_proj.bias.copy_(attention.out_proj.bias)
        new.in_proj.weight.requires_grad_(weight.requires_grad)
        new.out_proj.weight.requires_grad_(attention.out_proj.weight.requires_grad)
        new.train(attention.training)
        return new

    @property
    def in_proj_weight(self) -> torch.Tensor:  # read by nn.TransformerEncoder's checks
        return self.in_proj.weight

    @property
    def in_proj_bias(self):
        return self.in_proj.bias

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("SelfAttention computes self-attention only: call it with key and value the query itself "
                             "(attn(x, x, x)); cross-attention is not supported")
        x = query if self.batch_first else query.transpose(0, 1)  # (N, T, d)
        n, t, d = x.shape
        q, k, v = self.in_proj(x).view(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (N, h, T, dh)
        fused = not need_weights and (self.fused if self.fused is not None else x.device.type != "cpu")
        if attn_mask is None and is_causal and (not fused or key_padding_mask is not None):
            attn_mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.view(-1, self.num_heads, t, t)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.view(n, 1, 1, t)
        dropout = self.dropout if self.training else 0.0
        if not fused:
            heads, weights = self.attention_by_hand(q, k, v, attn_mask, key_padding_mask, dropout)
        else:
            mask = _sdpa_mask(attn_mask, key_padding_mask, q.dtype)
            heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                   is_causal=is_causal and mask is None)
        out = self.out_proj(heads.transpose(1, 2).reshape(n, t, d))
        out = out if self.batch_first else out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights

    def attention_by_hand(self, q, k, v, attn_mask=None, key_padding_mask=None, dropout: float = 0.0):
        """``softmax(q k^T / sqrt(d_head) + masks) v`` written out, and the attention weights.

        The reference for the fused path (``F.scaled_dot_product_attention``), and the path taken
        when the weights are asked for.  ``q, k, v``: (N, h, T, d_head); masks in PyTorch's
        convention (``True`` or ``-inf``: not attended), broadcastable to (N, h, T, T).
        """
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        for mask in (attn_mask, key_padding_mask):
            if mask is not None:
                scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        weights = torch.softmax(scores, dim=-1)
        if dropout > 0:
            weights = F.dropout(weights, dropout)
        return weights @ v, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"


def _sdpa_mask(attn_mask, key_padding_mask, dtype):
    """PyTorch's module masks (``True``: not attended, or an additive float) as one mask for
    ``F.scaled_dot_product_attention``, whose boolean masks mean the opposite (``True``: attended)."""
    masks = [m for m in (attn_mask, key_padding_mask) if m is not None]
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        return ~masks[0] if len(masks) == 1 else ~(masks[0] | masks[1])
    total = None
    for m in masks:
        m = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf")) \
            if m.dtype == torch.bool else m
        total = m if total is None else total + m
    return total


def split_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` by an equal :class:`SelfAttention` (in place).

    Returns ``model``.  Call it before building the rule (and before the optimizer, which must hold
    the new projections' parameters).  ``nn.TransformerEncoder``'s nested-tensor inference path is
    turned off (it bypasses the attention module).  Chapter 12.
    """
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, child_name, SelfAttention.from_torch(child))
        if isinstance(module, nn.TransformerEncoder):
            module.use_nested_tensor = False
    if isinstance(model, nn.MultiheadAttention):
        raise TypeError("split_attention changes a model in place: pass the model that holds the attention, or "
                        "use SelfAttention.from_torch(attention)")
    return model
