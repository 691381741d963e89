"""Weight-only quantization (llm_from_scratch.quantize) against float references.

Precision: the int8/int4 CPU kernels take their input in bf16 (8 significant bits) and
accumulate in fp32, so a layer's output is compared with the float computation on the same
bf16-rounded input within a bf16 rounding of the output (rtol 2**-7); the quantization error
itself is bounded exactly (half a step per weight) and checked against that bound.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from llm_from_scratch.generation import generate
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.model.registry import create_model
from llm_from_scratch.quantize import (Int4Linear, Int8Embedding, Int8Linear, check_quantize, dequantize_groups,
                                       dequantize_per_channel, is_quantized, quantize_groups, quantize_model,
                                       quantize_per_channel)
from llm_from_scratch.quantize.int4 import check_int4_device

gguf = pytest.importorskip("gguf")


def bf16_reference(x: torch.Tensor, weight: torch.Tensor, bias=None) -> torch.Tensor:
    """What the kernels compute: the input rounded to bf16, then an fp32 matmul."""
    return F.linear(x.to(torch.bfloat16).float(), weight, bias)


def assert_close_to_bf16(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual.float(), expected, atol=scale * 2 ** -7, rtol=2 ** -7)


# ---------------------------------------------------------------------------------- int8


def test_per_channel_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(40, 64) * torch.logspace(-3, 1, 40)[:, None]  # rows of very different sizes
    weight[3] = 0.0                                                     # an all-zero row
    q, scale = quantize_per_channel(weight)
    assert q.dtype == torch.int8 and q.abs().max() <= 127 and scale.shape == (40,)
    error = (dequantize_per_channel(q, scale) - weight).abs()
    assert torch.all(error <= scale[:, None] / 2 + 1e-7)
    assert torch.equal(dequantize_per_channel(q, scale)[3], torch.zeros(64))
    # each row uses its full range: its largest weight maps to +-127
    assert torch.equal(q[[0, 1, 39]].abs().amax(dim=1), torch.full((3,), 127, dtype=torch.int8))


@pytest.mark.parametrize("bias", [False, True])
def test_int8_linear_matches_float_reference(bias):
    torch.manual_seed(1)
    linear = nn.Linear(96, 80, bias=bias)
    layer = Int8Linear.from_linear(linear)
    x = torch.randn(3, 5, 96)
    out = layer(x)
    assert out.shape == (3, 5, 80) and out.dtype == torch.float32
    assert_close_to_bf16(out, bf16_reference(x, layer.dequantized_weight(), linear.bias))
    # and close to the unquantized layer: the per-weight error is at most half a step
    bound = x.abs().sum(-1, keepdim=True) * (layer.scale / 2) + 0.02 * linear(x).abs().max()
    assert torch.all((out - linear(x)).abs() <= bound)


def test_int8_reference_path_without_kernel_matches_kernel(monkeypatch):
    torch.manual_seed(2)
    layer = Int8Linear.from_linear(nn.Linear(64, 48))
    x = torch.randn(4, 64)
    kernel = layer(x)
    monkeypatch.setattr("llm_from_scratch.quantize.int8.int8_kernel_available", lambda device: False)
    reference = layer(x)  # dequantize-then-matmul in fp32: the kernel only adds bf16 rounding
    assert_close_to_bf16(kernel, reference)


def test_int8_embedding_rows_and_tied_head_share_one_table():
    torch.manual_seed(3)
    embedding = nn.Embedding(50, 32)
    quantized = Int8Embedding.from_embedding(embedding)
    ids = torch.tensor([[0, 7, 49], [3, 3, 1]])
    rows = quantized(ids)
    expected = dequantize_per_channel(quantized.q, quantized.scale)[ids]
    assert torch.equal(rows, expected)  # a lookup dequantizes exactly (fp32)
    head = quantized.as_head()
    assert head.q.data_ptr() == quantized.q.data_ptr()  # one int8 matrix for both
    assert quantized.to(torch.bfloat16)(ids).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------- int4


def test_group_quantization_error_is_at_most_half_a_step():
    torch.manual_seed(4)
    weight = torch.randn(32, 128)
    weight[0, :32] = 0.5  # a constant group
    q, scale, minimum = quantize_groups(weight, 32)
    assert q.dtype == torch.uint8 and int(q.max()) <= 15 and scale.shape == (32, 4)
    error = (dequantize_groups(q, scale, minimum) - weight).abs().reshape(32, 4, 32)
    assert torch.all(error <= scale[..., None] / 2 + 1e-6)
    with pytest.raises(ValueError, match="divisible by 32"):
        quantize_groups(torch.randn(16, 40), 32)


def test_int4_linear_holds_the_group_values_and_matches_float_reference():
    torch.manual_seed(5)
    linear = nn.Linear(64, 48, bias=True)
    q, scale, minimum = quantize_groups(linear.weight, 32)
    layer = Int4Linear(q, scale, minimum, linear.bias)
    x = torch.randn(2, 3, 64)
    dequantized = dequantize_groups(q, scale, minimum)
    assert_close_to_bf16(layer(x), bf16_reference(x, dequantized, linear.bias))
    # multiplying the identity reads the stored matrix back (bf16 output rounding only)
    eye = torch.eye(64)
    stored = (layer(eye) - linear.bias).t()
    torch.testing.assert_close(stored, dequantized, atol=dequantized.abs().max().item() * 2 ** -7, rtol=0)


def test_int4_refuses_devices_and_shapes_without_a_kernel():
    with pytest.raises(ValueError, match="CPU only"):
        check_int4_device("cuda")
    with pytest.raises(ValueError, match="CPU only"):
        check_quantize("int4", "mps")
    with pytest.raises(ValueError, match="unknown quantization"):
        check_quantize("int3")
    q, scale, minimum = quantize_groups(torch.randn(20, 64), 32)  # 20 rows: not a multiple of 16
    with pytest.raises(ValueError, match="out_features % 16"):
        Int4Linear(q, scale, minimum)


# ---------------------------------------------------------------------------------- models


def _tiny(family: str):
    torch.manual_seed(6)
    if family == "gpt":
        return GPTModel.from_preset("gpt-micro").eval()
    return create_model("llama-micro").eval()


@pytest.mark.parametrize("family", ["gpt", "llama"])
@pytest.mark.parametrize("mode", ["int8", "int4"])
def test_quantized_model_stays_close_to_float_model(family, mode):
    model = _tiny(family)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 24))
    with torch.no_grad():
        reference = model(ids)
    float_tokens = generate(model, ids[:1, :8], 16)
    quantize_model(model, mode)
    assert is_quantized(model) and model.quantization == mode
    assert not any(isinstance(m, nn.Linear) for m in model.modules())  # every matrix, the head too
    assert isinstance(model.tok_emb, Int8Embedding)
    if model.arch.tie_weights:
        assert model.out_head.q is model.tok_emb.q
    if mode == "int4":
        assert any(isinstance(m, Int4Linear) for m in model.modules())
    with torch.no_grad():
        logits = model(ids)
    # weight rounding + bf16 kernel inputs: logits move by a few percent of their range
    spread = reference.abs().max().item()
    assert (logits - reference).abs().max().item() < (0.05 if mode == "int8" else 0.25) * spread
    agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
    assert agree > (0.9 if mode == "int8" else 0.6)
    tokens = generate(model, ids[:1, :8], 16)   # the decoding loop and its KV cache work
    assert tokens.shape == float_tokens.shape
    with pytest.raises(ValueError, match="quantized for inference"):
        model(ids, targets=ids)


def test_quantize_model_in_bf16_keeps_bf16_activations_and_cache():
    model = _tiny("llama").to(torch.bfloat16)
    quantize_model(model, "int8")
    assert model.new_kv_cache(1, 8).keys.dtype == torch.bfloat16
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).dtype == torch.bfloat16


# ---------------------------------------------------------------------------------- GGUF blocks


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_read_like_the_gguf_package(kind):
    from llm_from_scratch.quantize.gguf_blocks import read_blocks

    qtype = getattr(gguf.GGMLQuantizationType, kind)
    weight = np.random.default_rng(0).normal(size=(16, 96)).astype(np.float32)
    packed = gguf.quants.quantize(weight, qtype)                       # (16, bytes per row)
    values = read_blocks(packed, kind, 96)
    expected = gguf.quants.dequantize(packed, qtype).reshape(16, 96)
    # the same fp16 scales times the same integers, in fp32: equal to float rounding
    np.testing.assert_allclose(values.dequantize().numpy(), expected, rtol=1e-6, atol=1e-6)
    assert values.exact_int4 == (kind != "Q8_0")
    q8, scale = values.to_int8()
    error = np.abs(dequantize_per_channel(q8, scale).numpy() - expected)
    assert np.all(error <= scale.numpy()[:, None] / 2 + 1e-6)


@pytest.mark.parametrize("kind,mode", [("Q4_1", "int4"), ("Q4_0", "int4"), ("Q4_1", "int8"), ("Q8_0", "int8")])
def test_quantized_gguf_load_matches_dequantized_load(kind, mode, tmp_path):
    from test_llama import make_hf_llama, train_hf_tokenizer, write_tiny_gguf

    from llm_from_scratch.weights.llama import load_llama_gguf

    tokenizer = train_hf_tokenizer("smollm", vocab_size=352)
    hf = make_hf_llama("gqa-tied", vocab_size=tokenizer.get_vocab_size())
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, hf, tokenizer, matrix_type=getattr(gguf.GGMLQuantizationType, kind))
    reference, _ = load_llama_gguf(path)                  # dequantized to fp32 (the old path)
    model, _ = load_llama_gguf(path, quantize=mode)       # blocks straight into quantized layers
    assert is_quantized(model)
    qkv = model.trf_blocks[0].att.qkv
    assert isinstance(qkv, Int4Linear if mode == "int4" else Int8Linear)
    if mode == "int4":  # the file's 4-bit values, unchanged: reading the layer back gives them
        stored = (qkv(torch.eye(32)) ).t()
        expected = reference.trf_blocks[0].att.qkv.weight
        torch.testing.assert_close(stored, expected, atol=expected.abs().max().item() * 2 ** -7, rtol=0)
    ids = torch.randint(0, hf.config.vocab_size, (2, 20))
    with torch.no_grad():
        expected_logits, logits = reference(ids), model(ids)
    spread = expected_logits.abs().max().item()
    assert (logits - expected_logits).abs().max().item() < 0.05 * spread
