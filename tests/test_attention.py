"""Tests for chapter 3: the teaching attention modules and the fused fast path.

The teaching modules are checked against each other (v1 == v2, wrapper == CausalAttention,
MultiHeadAttention == wrapper) and against a naive loop implementation written here; the fast
`FusedMultiHeadAttention` is checked to compute the same thing as `MultiHeadAttention` given
the same weights, including how dropout behaves in training.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llm_from_scratch.model.attention import (
    CausalAttention,
    MultiHeadAttention,
    MultiHeadAttentionWrapper,
    SelfAttention_v1,
    SelfAttention_v2,
)


@pytest.fixture
def fused_cls():
    # Imported here so a missing/broken fast path fails only the tests that use it.
    from llm_from_scratch.model.fused_attention import FusedMultiHeadAttention

    return FusedMultiHeadAttention


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def set_mode(module: nn.Module, mode: str) -> nn.Module:
    return module.train() if mode == "train" else module.eval()


def capture_attention_weights(module: nn.Module):
    """Record what goes *into* `module.dropout`: the softmax-ed attention weights."""
    captured = []
    handle = module.dropout.register_forward_hook(lambda mod, inputs, output: captured.append(inputs[0].detach()))
    return captured, handle


@torch.no_grad()
def copy_wrapper_into_mha(wrapper: MultiHeadAttentionWrapper, mha: MultiHeadAttention) -> None:
    """Head h of the wrapper becomes rows [h*hd, (h+1)*hd) of the MHA projections; out_proj = identity."""
    hd = mha.head_dim
    for h, head in enumerate(wrapper.heads):
        rows = slice(h * hd, (h + 1) * hd)
        for name in ("W_query", "W_key", "W_value"):
            src, dst = getattr(head, name), getattr(mha, name)
            dst.weight[rows] = src.weight
            if dst.bias is not None:
                dst.bias[rows] = src.bias
    mha.out_proj.weight.copy_(torch.eye(mha.d_out))
    mha.out_proj.bias.zero_()


def make_fused_like(fused_cls, mha: MultiHeadAttention, d_in: int, context_length: int, dropout: float, qkv_bias: bool):
    fused = fused_cls(d_in, mha.d_out, context_length, dropout, mha.num_heads, qkv_bias=qkv_bias)
    with torch.no_grad():
        fused.qkv.weight.copy_(torch.cat([mha.W_query.weight, mha.W_key.weight, mha.W_value.weight], dim=0))
        if qkv_bias:
            fused.qkv.bias.copy_(torch.cat([mha.W_query.bias, mha.W_key.bias, mha.W_value.bias], dim=0))
        else:
            assert fused.qkv.bias is None
        fused.out_proj.weight.copy_(mha.out_proj.weight)
        fused.out_proj.bias.copy_(mha.out_proj.bias)
    return fused


def naive_multi_head_attention(mha: MultiHeadAttention, x: torch.Tensor) -> torch.Tensor:
    """Multi-head causal attention spelled out with loops over batch, heads and positions (no dropout)."""
    b, T, _ = x.shape
    hd, H = mha.head_dim, mha.num_heads
    q, k, v = mha.W_query(x), mha.W_key(x), mha.W_value(x)  # (b, T, d_out)
    concat = torch.zeros(b, T, mha.d_out, dtype=x.dtype)
    for bi in range(b):
        for h in range(H):
            feats = slice(h * hd, (h + 1) * hd)
            for i in range(T):
                # token i may only look at tokens 0..i
                scores = [torch.dot(q[bi, i, feats], k[bi, j, feats]) / math.sqrt(hd) for j in range(i + 1)]
                top = max(s.item() for s in scores)
                exps = [torch.exp(s - top) for s in scores]
                total = sum(exps)
                out = torch.zeros(hd, dtype=x.dtype)
                for j in range(i + 1):
                    out = out + (exps[j] / total) * v[bi, j, feats]
                concat[bi, i, feats] = out
    return concat @ mha.out_proj.weight.T + mha.out_proj.bias


# ---------------------------------------------------------------------------------------------
# SelfAttention_v1 / v2
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("d_in,d_out,T", [(3, 2, 6), (5, 7, 1), (4, 4, 9)])
def test_self_attention_v1_matches_v2_with_transposed_weights(d_in, d_out, T):
    torch.manual_seed(0)
    v2 = SelfAttention_v2(d_in, d_out)
    v1 = SelfAttention_v1(d_in, d_out)
    with torch.no_grad():
        # nn.Linear stores (d_out, d_in); v1 multiplies x @ W with W of shape (d_in, d_out)
        v1.W_query.copy_(v2.W_query.weight.T)
        v1.W_key.copy_(v2.W_key.weight.T)
        v1.W_value.copy_(v2.W_value.weight.T)
    x = torch.randn(T, d_in)
    out1, out2 = v1(x), v2(x)
    assert out1.shape == out2.shape == (T, d_out)
    torch.testing.assert_close(out1, out2, atol=1e-6, rtol=1e-5)


def test_self_attention_v1_parameters_are_raw_matrices():
    torch.manual_seed(0)
    v1 = SelfAttention_v1(3, 2)
    names = dict(v1.named_parameters())
    assert set(names) == {"W_query", "W_key", "W_value"}
    for p in names.values():
        assert isinstance(p, nn.Parameter) and p.shape == (3, 2)
        assert (p >= 0).all() and (p < 1).all()  # torch.rand init


def test_self_attention_v2_uses_linear_layers_and_optional_bias():
    v2 = SelfAttention_v2(3, 2)
    assert all(isinstance(getattr(v2, n), nn.Linear) for n in ("W_query", "W_key", "W_value"))
    assert v2.W_query.bias is None
    assert SelfAttention_v2(3, 2, qkv_bias=True).W_key.bias is not None


def test_self_attention_output_is_weighted_average_of_values():
    # With every query = 0 all scores are equal, so each token gets the plain mean of the values.
    torch.manual_seed(0)
    v2 = SelfAttention_v2(4, 3)
    with torch.no_grad():
        v2.W_query.weight.zero_()
    x = torch.randn(5, 4)
    expected = v2.W_value(x).mean(dim=0, keepdim=True).expand(5, 3)
    torch.testing.assert_close(v2(x), expected)


# ---------------------------------------------------------------------------------------------
# CausalAttention
# ---------------------------------------------------------------------------------------------


def test_causal_attention_shapes_and_mask_buffer():
    torch.manual_seed(0)
    ca = CausalAttention(d_in=3, d_out=2, context_length=6, dropout=0.0)
    assert "mask" in dict(ca.named_buffers())
    assert "mask" in ca.state_dict()
    torch.testing.assert_close(ca.mask, torch.triu(torch.ones(6, 6), diagonal=1))
    assert not any(n == "mask" for n, _ in ca.named_parameters())
    x = torch.randn(2, 6, 3)
    assert ca(x).shape == (2, 6, 2)
    assert ca(x[:, :4]).shape == (2, 4, 2)  # shorter than context_length is fine


@pytest.mark.parametrize("module_name", ["CausalAttention", "MultiHeadAttention", "Fused"])
def test_later_tokens_do_not_change_earlier_outputs(module_name, fused_cls):
    torch.manual_seed(0)
    T, d_in = 7, 5
    if module_name == "CausalAttention":
        module = CausalAttention(d_in, 4, T, dropout=0.0)
    elif module_name == "MultiHeadAttention":
        module = MultiHeadAttention(d_in, 6, T, dropout=0.0, num_heads=3)
    else:
        module = fused_cls(d_in, 6, T, 0.0, 3)
    module.eval()
    x = torch.randn(2, T, d_in)
    for cut in range(1, T):
        changed = x.clone()
        changed[:, cut:] = torch.randn(2, T - cut, d_in) * 10
        before, after = module(x), module(changed)
        torch.testing.assert_close(before[:, :cut], after[:, :cut], atol=1e-6, rtol=0)
        assert not torch.allclose(before[:, cut:], after[:, cut:])

    # Stronger: the gradient of output i with respect to any later input is exactly zero.
    x = x.clone().requires_grad_(True)
    out = module(x)
    for i in range(T):
        (grad,) = torch.autograd.grad(out[:, i].sum(), x, retain_graph=True)
        assert torch.count_nonzero(grad[:, i + 1 :]) == 0
        assert torch.count_nonzero(grad[:, : i + 1]) > 0


def test_causal_attention_weights_rows_sum_to_one_and_hide_the_future():
    torch.manual_seed(0)
    T = 6
    ca = CausalAttention(d_in=4, d_out=3, context_length=8, dropout=0.0, qkv_bias=True).eval()
    captured, handle = capture_attention_weights(ca)
    try:
        x = torch.randn(2, T, 4)
        out = ca(x)
    finally:
        handle.remove()
    (weights,) = captured
    assert weights.shape == (2, T, T)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, T))
    assert (weights >= 0).all()
    assert torch.count_nonzero(torch.triu(weights, diagonal=1)) == 0  # no weight on the future
    torch.testing.assert_close(weights[:, 0, 0], torch.ones(2))  # first token only sees itself
    # and the output is exactly these weights applied to the values
    torch.testing.assert_close(out, weights @ ca.W_value(x))


def test_causal_attention_matches_naive_loop():
    torch.manual_seed(0)
    ca = CausalAttention(d_in=4, d_out=3, context_length=5, dropout=0.0, qkv_bias=True).eval()
    x = torch.randn(2, 5, 4)
    q, k, v = ca.W_query(x), ca.W_key(x), ca.W_value(x)
    expected = torch.zeros(2, 5, 3)
    for bi in range(2):
        for i in range(5):
            scores = torch.stack([q[bi, i] @ k[bi, j] for j in range(i + 1)]) / math.sqrt(3)
            w = torch.softmax(scores, dim=0)
            expected[bi, i] = sum(w[j] * v[bi, j] for j in range(i + 1))
    torch.testing.assert_close(ca(x), expected, atol=1e-6, rtol=1e-5)


def test_causal_attention_dropout_only_in_training():
    torch.manual_seed(0)
    ca = CausalAttention(d_in=4, d_out=3, context_length=6, dropout=0.5)
    x = torch.randn(2, 6, 4)
    ca.train()
    assert not torch.allclose(ca(x), ca(x))
    ca.eval()
    torch.testing.assert_close(ca(x), ca(x), atol=0, rtol=0)


# ---------------------------------------------------------------------------------------------
# MultiHeadAttentionWrapper
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_wrapper_with_one_head_equals_causal_attention(qkv_bias):
    torch.manual_seed(0)
    ca = CausalAttention(4, 3, 6, 0.0, qkv_bias=qkv_bias)
    wrapper = MultiHeadAttentionWrapper(4, 3, 6, 0.0, num_heads=1, qkv_bias=qkv_bias)
    wrapper.heads[0].load_state_dict(ca.state_dict())
    x = torch.randn(2, 6, 4)
    torch.testing.assert_close(wrapper(x), ca(x), atol=0, rtol=0)


def test_wrapper_shape_and_heads():
    torch.manual_seed(0)
    wrapper = MultiHeadAttentionWrapper(d_in=3, d_out=2, context_length=6, dropout=0.0, num_heads=4)
    assert isinstance(wrapper.heads, nn.ModuleList) and len(wrapper.heads) == 4
    assert all(isinstance(h, CausalAttention) for h in wrapper.heads)
    x = torch.randn(2, 5, 3)
    out = wrapper(x)
    assert out.shape == (2, 5, 4 * 2)
    # the concatenation is in head order
    torch.testing.assert_close(out[..., 2:4], wrapper.heads[1](x))


# ---------------------------------------------------------------------------------------------
# MultiHeadAttention
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "d_in,head_dim,num_heads,T,qkv_bias",
    [(3, 2, 2, 6, False), (4, 3, 3, 5, True), (5, 5, 1, 4, False), (6, 1, 4, 1, True)],
)
def test_multi_head_attention_equals_wrapper_with_same_weights(d_in, head_dim, num_heads, T, qkv_bias):
    torch.manual_seed(0)
    context_length = 6
    wrapper = MultiHeadAttentionWrapper(d_in, head_dim, context_length, 0.0, num_heads, qkv_bias=qkv_bias)
    mha = MultiHeadAttention(d_in, head_dim * num_heads, context_length, 0.0, num_heads, qkv_bias=qkv_bias)
    copy_wrapper_into_mha(wrapper, mha)
    x = torch.randn(3, T, d_in)
    out = mha(x)
    assert out.shape == (3, T, head_dim * num_heads)
    torch.testing.assert_close(out, wrapper(x), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("num_heads,d_out,T,qkv_bias", [(2, 4, 5, False), (3, 9, 4, True), (1, 3, 3, True)])
def test_multi_head_attention_matches_naive_per_head_loops(num_heads, d_out, T, qkv_bias):
    torch.manual_seed(0)
    mha = MultiHeadAttention(5, d_out, 6, 0.0, num_heads, qkv_bias=qkv_bias).double().eval()
    x = torch.randn(2, T, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(mha(x), naive_multi_head_attention(mha, x), atol=1e-12, rtol=1e-10)


def test_multi_head_attention_weights_are_per_head_causal_distributions():
    torch.manual_seed(0)
    mha = MultiHeadAttention(4, 6, 8, 0.0, num_heads=3).eval()
    captured, handle = capture_attention_weights(mha)
    try:
        mha(torch.randn(2, 5, 4))
    finally:
        handle.remove()
    (weights,) = captured
    assert weights.shape == (2, 3, 5, 5)  # (b, H, T, T)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 3, 5))
    assert torch.count_nonzero(torch.triu(weights, diagonal=1)) == 0


def test_multi_head_attention_layers_and_buffer():
    mha = MultiHeadAttention(d_in=5, d_out=8, context_length=7, dropout=0.1, num_heads=2, qkv_bias=True)
    assert mha.head_dim == 4
    for name in ("W_query", "W_key", "W_value"):
        layer = getattr(mha, name)
        assert isinstance(layer, nn.Linear) and layer.weight.shape == (8, 5) and layer.bias is not None
    assert isinstance(mha.out_proj, nn.Linear) and mha.out_proj.weight.shape == (8, 8)
    assert mha.out_proj.bias is not None
    assert isinstance(mha.dropout, nn.Dropout) and mha.dropout.p == 0.1
    torch.testing.assert_close(mha.mask, torch.triu(torch.ones(7, 7), diagonal=1))
    assert MultiHeadAttention(5, 8, 7, 0.0, 2).W_key.bias is None


# ---------------------------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------------------------


def test_d_out_not_divisible_by_num_heads_is_a_clear_error():
    with pytest.raises(ValueError, match=r"d_out \(10\) must be divisible by num_heads \(3\)"):
        MultiHeadAttention(d_in=4, d_out=10, context_length=8, dropout=0.0, num_heads=3)


def test_fused_rejects_d_out_not_divisible_by_num_heads(fused_cls):
    with pytest.raises(ValueError, match="divisible"):
        fused_cls(4, 10, 8, 0.0, 3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiHeadAttention(4, 6, 5, 0.0, 2),
        lambda: CausalAttention(4, 6, 5, 0.0),
        lambda: MultiHeadAttentionWrapper(4, 3, 5, 0.0, 2),
    ],
    ids=["MultiHeadAttention", "CausalAttention", "MultiHeadAttentionWrapper"],
)
def test_sequence_longer_than_context_length_is_a_clear_error(make):
    module = make()
    module(torch.randn(1, 5, 4))  # exactly context_length is fine
    with pytest.raises(ValueError, match=r"6 tokens.*context_length=5"):
        module(torch.randn(1, 6, 4))


def test_unbatched_input_is_a_clear_error():
    with pytest.raises(ValueError, match=r"\(batch, num_tokens, d_in\)"):
        MultiHeadAttention(4, 6, 5, 0.0, 2)(torch.randn(5, 4))


# ---------------------------------------------------------------------------------------------
# FusedMultiHeadAttention == MultiHeadAttention
# ---------------------------------------------------------------------------------------------

FUSED_SHAPES = [
    # (batch, T, context_length, d_in, d_out, num_heads)
    (2, 1, 8, 5, 6, 2),  # a single token
    (2, 8, 8, 5, 6, 2),  # exactly context_length tokens
    (3, 7, 7, 4, 15, 3),  # odd head size 5
    (1, 5, 9, 6, 21, 7),  # odd head size 3, many heads
    (2, 4, 4, 3, 4, 4),  # head size 1
    (2, 6, 10, 8, 8, 1),  # one head
    (4, 16, 16, 32, 32, 4),  # GPT-like proportions
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no_bias", "qkv_bias"])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=lambda s: "b{}-T{}-ctx{}-din{}-dout{}-h{}".format(*s))
def test_fused_equals_teaching_multi_head_attention(fused_cls, shape, qkv_bias, mode):
    b, T, context_length, d_in, d_out, num_heads = shape
    torch.manual_seed(0)
    mha = MultiHeadAttention(d_in, d_out, context_length, 0.0, num_heads, qkv_bias=qkv_bias)
    fused = make_fused_like(fused_cls, mha, d_in, context_length, 0.0, qkv_bias)
    set_mode(mha, mode)
    set_mode(fused, mode)
    x = torch.randn(b, T, d_in)
    expected, got = mha(x), fused(x)
    assert got.shape == expected.shape == (b, T, d_out)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("qkv_bias", [False, True], ids=["no_bias", "qkv_bias"])
def test_fused_gradients_equal_teaching_gradients(fused_cls, qkv_bias):
    # The GPT model trains through the fused module, so its backward pass must agree too.
    torch.manual_seed(0)
    mha = MultiHeadAttention(6, 12, 8, 0.0, 3, qkv_bias=qkv_bias).train()
    fused = make_fused_like(fused_cls, mha, 6, 8, 0.0, qkv_bias).train()
    x1 = torch.randn(2, 8, 6, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    target = torch.randn(2, 8, 12)
    ((mha(x1) - target) ** 2).sum().backward()
    ((fused(x2) - target) ** 2).sum().backward()
    tol = dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x2.grad, x1.grad, **tol)
    torch.testing.assert_close(
        fused.qkv.weight.grad,
        torch.cat([mha.W_query.weight.grad, mha.W_key.weight.grad, mha.W_value.weight.grad]),
        **tol,
    )
    if qkv_bias:
        torch.testing.assert_close(
            fused.qkv.bias.grad, torch.cat([mha.W_query.bias.grad, mha.W_key.bias.grad, mha.W_value.bias.grad]), **tol
        )
    torch.testing.assert_close(fused.out_proj.weight.grad, mha.out_proj.weight.grad, **tol)
    torch.testing.assert_close(fused.out_proj.bias.grad, mha.out_proj.bias.grad, **tol)


# ---------------------------------------------------------------------------------------------
# dropout: teaching vs fused
# ---------------------------------------------------------------------------------------------


def _make_pair(fused_cls, dropout: float):
    torch.manual_seed(0)
    d_in, d_out, ctx, heads = 6, 8, 6, 2
    mha = MultiHeadAttention(d_in, d_out, ctx, dropout, heads, qkv_bias=True)
    fused = make_fused_like(fused_cls, mha, d_in, ctx, dropout, qkv_bias=True)
    return mha, fused


@pytest.mark.parametrize("which", ["teaching", "fused"])
def test_dropout_random_in_train_deterministic_in_eval(fused_cls, which):
    mha, fused = _make_pair(fused_cls, dropout=0.3)
    module = mha if which == "teaching" else fused
    x = torch.randn(2, 6, 6)
    module.train()
    torch.manual_seed(1)
    a = module(x)
    b = module(x)
    assert not torch.allclose(a, b), "dropout should make two training-mode calls differ"
    module.eval()
    torch.testing.assert_close(module(x), module(x), atol=0, rtol=0)
    # and eval mode ignores dropout entirely: same as the dropout-free model
    torch.testing.assert_close(mha.eval()(x), fused.eval()(x), atol=1e-5, rtol=1e-5)


def test_dropout_keeps_the_expectation_and_both_modules_agree_statistically(fused_cls):
    """Inverted dropout on the attention weights: E[train output] == eval output.

    Each batch row is an independent draw of the dropout masks, so a big batch of copies of the
    same sequence gives many samples in one call. Both implementations must have the same mean
    (the eval output) and the same spread: a fused module that dropped the wrong tensor or used
    a different rate or scaling would show a different standard deviation.
    """
    p, n = 0.4, 20000
    mha, fused = _make_pair(fused_cls, dropout=p)
    torch.manual_seed(2)
    x = torch.randn(1, 6, 6)
    xs = x.expand(n, -1, -1)
    with torch.no_grad():
        reference = mha.eval()(x)[0]  # (T, d_out)
        torch.testing.assert_close(fused.eval()(x)[0], reference, atol=1e-5, rtol=1e-5)
        torch.manual_seed(3)
        samples = {"teaching": mha.train()(xs), "fused": fused.train()(xs)}  # (n, T, d_out)

    stds = {}
    for name, out in samples.items():
        mean, std = out.mean(dim=0), out.std(dim=0)
        stds[name] = std
        assert (std > 1e-3).all(), f"{name}: dropout seems inactive in train mode"
        standard_error = std / math.sqrt(n)
        # 5 standard errors per element (plus a hair of float slack): generous but meaningful
        excess = (mean - reference).abs() - 5 * standard_error - 1e-5
        assert (excess <= 0).all(), f"{name}: train-mode mean drifts from eval output by {excess.max():.4g}"
    # the two spreads agree to a few percent (sampling error of a std with n=20000 is ~0.5%)
    torch.testing.assert_close(stds["fused"], stds["teaching"], rtol=0.05, atol=1e-3)


def test_fused_with_zero_dropout_is_deterministic_in_train_mode(fused_cls):
    _, fused = _make_pair(fused_cls, dropout=0.0)
    fused.train()
    x = torch.randn(2, 6, 6)
    torch.testing.assert_close(fused(x), fused(x), atol=0, rtol=0)
