"""Chapter 3: attention, built up one small step at a time.

Attention lets every token in a sequence build its new representation out of
*all* the tokens it is allowed to see, weighting each one by how relevant it is.
This module grows that idea from a toy into the layer a GPT actually uses.
Each class exists because the previous one is missing exactly one thing:

1. :class:`SelfAttention_v1` -- the bare mechanism. Three trainable matrices
   turn each token into a *query* ("what am I looking for?"), a *key* ("what do
   I contain?") and a *value* ("what do I hand over if chosen?"). Query-key dot
   products, scaled by ``sqrt(d_k)`` and pushed through a softmax, give the
   attention weights; the output is the weighted sum of the values. The
   matrices are plain ``nn.Parameter`` tensors so that nothing is hidden.
2. :class:`SelfAttention_v2` -- the same maths, but with ``nn.Linear`` layers.
   They do the matrix multiply for us, offer an optional bias and start from
   a better random initialisation, which makes training more stable.
3. :class:`CausalAttention` -- a language model predicts the *next* token, so
   a token must not peek at the ones after it. A causal mask hides the future
   (scores set to ``-inf`` before the softmax, so their weight becomes exactly
   0), dropout on the attention weights regularises training, and the input
   gains a batch dimension.
4. :class:`MultiHeadAttentionWrapper` -- one head learns one notion of
   "relevant". Running several independent causal heads side by side and
   concatenating their outputs lets the model attend to different things at
   once. Easy to read, but it runs the heads one after the other.
5. :class:`MultiHeadAttention` -- the same computation done efficiently: one
   big projection for all heads, then the result is *split* into heads with a
   ``view``/``transpose`` so every head is computed in a single batched matrix
   multiply. A final ``out_proj`` mixes the heads back together. This is the
   version the GPT model uses.

Everything here is written out by hand on purpose: this module is the lesson.
The fast path, which packs the three projections into one matrix and calls
PyTorch's fused ``scaled_dot_product_attention`` kernel, lives in
:mod:`llm_from_scratch.model.fused_attention` and is tested to produce the
same numbers as :class:`MultiHeadAttention`.

Shape names used in the comments:
    b = batch size, T = number of tokens, H = number of heads,
    d_in = input embedding size, d_out = output size, hd = d_out // H (head size).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "SelfAttention_v1",
    "SelfAttention_v2",
    "CausalAttention",
    "MultiHeadAttentionWrapper",
    "MultiHeadAttention",
]


def _check_batched_input(x: torch.Tensor, module_name: str) -> None:
    """Fail early with a readable message instead of a tuple-unpacking error."""
    if x.dim() != 3:
        raise ValueError(
            f"{module_name} expects a batch of shape (batch, num_tokens, d_in), "
            f"got a tensor with shape {tuple(x.shape)}; "
            "for a single sequence use x.unsqueeze(0)"
        )


def _check_context_length(num_tokens: int, context_length: int) -> None:
    """The causal mask is only ``context_length`` tokens wide: refuse longer inputs clearly.

    Without this check, slicing the mask silently returns a smaller matrix and
    the failure surfaces later as a confusing shape mismatch.
    """
    if num_tokens > context_length:
        raise ValueError(
            f"input has {num_tokens} tokens but this attention layer was built with "
            f"context_length={context_length}; truncate the input to the last "
            f"{context_length} tokens or build the model with a larger context_length"
        )


def _causal_mask(context_length: int) -> torch.Tensor:
    """Ones strictly above the diagonal: entry (i, j) is 1 when token j comes after token i.

    Those are exactly the positions a token must not look at.
    """
    return torch.triu(torch.ones(context_length, context_length), diagonal=1)


class SelfAttention_v1(nn.Module):
    """Self-attention with the weight matrices written out as raw parameters.

    Why it exists: to show that attention is nothing more than three matrix
    products, a scaled dot product and a softmax. Works on one sequence of
    shape ``(num_tokens, d_in)`` and returns ``(num_tokens, d_out)``.

    The weights start from ``torch.rand`` (uniform in [0, 1)), which is fine
    for a demonstration but not for training; v2 fixes that.
    """

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        # Each matrix maps a d_in-sized embedding to a d_out-sized vector: x @ W.
        self.W_query = nn.Parameter(torch.rand(d_in, d_out))
        self.W_key = nn.Parameter(torch.rand(d_in, d_out))
        self.W_value = nn.Parameter(torch.rand(d_in, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (T, d_in)
        queries = x @ self.W_query  # (T, d_out): what each token is looking for
        keys = x @ self.W_key  # (T, d_out): what each token offers to be matched on
        values = x @ self.W_value  # (T, d_out): what each token contributes if attended to

        # Row i holds how well token i's query matches every token's key.
        scores = queries @ keys.T  # (T, T)

        # Dividing by sqrt(d_k) keeps the scores from growing with the vector size;
        # large scores would make the softmax nearly one-hot and its gradients tiny.
        d_k = keys.shape[-1]
        weights = torch.softmax(scores / d_k**0.5, dim=-1)  # (T, T), each row sums to 1

        # Each output row is a weighted average of the value vectors.
        context = weights @ values  # (T, d_out)
        return context


class SelfAttention_v2(nn.Module):
    """Self-attention using ``nn.Linear`` projections.

    Why it exists: ``nn.Linear`` performs the same ``x @ W`` product (it stores
    the matrix transposed, as ``(d_out, d_in)``), can add a bias, and uses an
    initialisation scaled to the layer size, which trains much better than
    ``torch.rand``. The attention maths is unchanged from v1.
    """

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (T, d_in)
        queries = self.W_query(x)  # (T, d_out)
        keys = self.W_key(x)  # (T, d_out)
        values = self.W_value(x)  # (T, d_out)

        scores = queries @ keys.T  # (T, T)
        d_k = keys.shape[-1]
        weights = torch.softmax(scores / d_k**0.5, dim=-1)  # (T, T)

        context = weights @ values  # (T, d_out)
        return context


class CausalAttention(nn.Module):
    """Single-head causal (masked) self-attention over a batch of sequences.

    Why it exists: when generating text, token ``i`` must be predicted from the
    tokens before it only. We therefore hide every score where the key comes
    after the query by setting it to ``-inf``; after the softmax those weights
    are exactly 0 and each row still sums to 1 over the visible tokens.

    Dropout is applied to the attention weights during training, randomly
    dropping some of the connections between tokens so the model cannot rely
    on any single one. ``nn.Dropout`` rescales the survivors by ``1 / (1 - p)``
    so the expected output is unchanged, and it is a no-op in ``eval()`` mode.

    The mask is registered as a buffer: it is not trained, but it moves with
    the module on ``.to(device)`` and is saved in the ``state_dict``.

    Input ``(b, num_tokens, d_in)`` -> output ``(b, num_tokens, d_out)``, with
    ``num_tokens <= context_length``.
    """

    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        qkv_bias: bool = False,
    ):
        super().__init__()
        self.d_out = d_out
        self.context_length = context_length
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", _causal_mask(context_length))  # (ctx, ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batched_input(x, type(self).__name__)
        b, num_tokens, _ = x.shape  # x: (b, T, d_in)
        _check_context_length(num_tokens, self.context_length)

        queries = self.W_query(x)  # (b, T, d_out)
        keys = self.W_key(x)  # (b, T, d_out)
        values = self.W_value(x)  # (b, T, d_out)

        # Swap the last two dims of keys only, so the batch dim stays in front.
        scores = queries @ keys.transpose(1, 2)  # (b, T, T)

        # The buffer covers context_length tokens; use the top-left T x T corner.
        future = self.mask.bool()[:num_tokens, :num_tokens]  # (T, T), True = hide
        scores = scores.masked_fill(future, float("-inf"))  # broadcast over b

        d_k = keys.shape[-1]
        weights = torch.softmax(scores / d_k**0.5, dim=-1)  # (b, T, T), zeros above diagonal
        weights = self.dropout(weights)  # (b, T, T), only active in train()

        context = weights @ values  # (b, T, d_out)
        return context


class MultiHeadAttentionWrapper(nn.Module):
    """Several independent :class:`CausalAttention` heads, outputs concatenated.

    Why it exists: it is the most direct way to get multiple heads. Each head
    has its own query/key/value projections and can learn to look for a
    different kind of relationship. The cost is clarity over speed: the heads
    run one after the other in a Python loop.

    Note that each head produces ``d_out`` features, so the output has
    ``d_out * num_heads`` features. :class:`MultiHeadAttention` instead splits
    one ``d_out`` among its heads.

    Input ``(b, num_tokens, d_in)`` -> output ``(b, num_tokens, num_heads * d_out)``.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = nn.ModuleList(
            [
                CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                for _ in range(num_heads)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (b, T, d_in); each head returns (b, T, d_out)
        head_outputs = [head(x) for head in self.heads]
        # Stack the heads' features side by side.
        return torch.cat(head_outputs, dim=-1)  # (b, T, num_heads * d_out)


class MultiHeadAttention(nn.Module):
    """Efficient multi-head causal self-attention (the one the GPT model uses).

    Why it exists: the wrapper above runs ``num_heads`` small projections and
    attention computations in sequence. Here a single ``d_in -> d_out``
    projection computes the queries (and keys, and values) of *all* heads at
    once; we then reshape ``d_out`` into ``num_heads`` chunks of size
    ``head_dim = d_out // num_heads`` and treat the head as an extra batch
    dimension, so every head is handled by the same batched matrix multiply.

    The head outputs are joined back into ``d_out`` features and passed
    through ``out_proj``, a linear layer that lets the heads' results mix.

    Mathematically this equals a wrapper with ``num_heads`` heads of size
    ``head_dim`` whose weights are the corresponding row slices of
    ``W_query``/``W_key``/``W_value``, followed by ``out_proj``.

    Input ``(b, num_tokens, d_in)`` -> output ``(b, num_tokens, d_out)``.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be at least 1, got {num_heads}")
        if d_out % num_heads != 0:
            raise ValueError(
                f"d_out ({d_out}) must be divisible by num_heads ({num_heads}) so that "
                f"every head gets the same number of features; for example use "
                f"d_out={num_heads * max(1, d_out // num_heads)} or a num_heads that divides {d_out}"
            )
        self.d_out = d_out
        self.num_heads = num_heads
        self.head_dim = d_out // num_heads
        self.context_length = context_length

        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)  # mixes the concatenated heads
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("mask", _causal_mask(context_length))  # (ctx, ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batched_input(x, type(self).__name__)
        b, num_tokens, _ = x.shape  # x: (b, T, d_in)
        _check_context_length(num_tokens, self.context_length)
        H, hd = self.num_heads, self.head_dim

        # One projection per role, covering all heads at once.
        queries = self.W_query(x)  # (b, T, d_out)
        keys = self.W_key(x)  # (b, T, d_out)
        values = self.W_value(x)  # (b, T, d_out)

        # Split the last dim into heads: d_out = H * hd. Features [h*hd, (h+1)*hd) belong to head h.
        queries = queries.view(b, num_tokens, H, hd)  # (b, T, H, hd)
        keys = keys.view(b, num_tokens, H, hd)  # (b, T, H, hd)
        values = values.view(b, num_tokens, H, hd)  # (b, T, H, hd)

        # Move the head dim next to the batch dim so (b, H) act as one big batch.
        queries = queries.transpose(1, 2)  # (b, H, T, hd)
        keys = keys.transpose(1, 2)  # (b, H, T, hd)
        values = values.transpose(1, 2)  # (b, H, T, hd)

        # Every head compares its queries with its own keys.
        scores = queries @ keys.transpose(2, 3)  # (b, H, T, T)

        future = self.mask.bool()[:num_tokens, :num_tokens]  # (T, T), True = hide
        scores = scores.masked_fill(future, float("-inf"))  # broadcast over b and H

        # Scale by the size of one head's keys (hd), not by d_out.
        weights = torch.softmax(scores / hd**0.5, dim=-1)  # (b, H, T, T)
        weights = self.dropout(weights)  # (b, H, T, T), only active in train()

        context = weights @ values  # (b, H, T, hd)

        # Undo the split: put tokens back before heads, then glue the heads together.
        context = context.transpose(1, 2)  # (b, T, H, hd)
        # transpose only changes strides; contiguous() lays the data out so view() can merge dims.
        context = context.contiguous().view(b, num_tokens, self.d_out)  # (b, T, d_out)

        return self.out_proj(context)  # (b, T, d_out)
