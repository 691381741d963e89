"""The quantization formats (llm_from_scratch.quantize.formats) at every shape, and their registry.

What PyTorch 2.13's CPU kernels do with awkward shapes was measured shape by shape, each in its
own process (quantize/int8.py and int4.py say what): `_weight_int8pack_mm` kills the process
(segmentation fault) or returns garbage unless the input width is a multiple of 16, and crashes
on an input whose rows are not contiguous. The layers must never hand it such an input. The
first test runs those shapes in a child process, so a crash fails the test instead of killing
the test runner; the in-process tests below only import names the fixed layers have.

Tolerance of a layer against the naive reference ``x @ W.T`` in fp32, W the layer's dequantized
weight: the kernels round the input to bf16 (relative error <= 2**-8 per element) and their fp32
sum to bf16 (<= 2**-8), so ``|out - ref| <= 2**-7 * (|x| @ |W|.T)`` up to fp32 rounding (1%
slack below); a bf16 result is rounded once more, 2**-7 of |ref|.
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

from llm_from_scratch.generation import generate
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.model.llama import LlamaConfig, LlamaModel
from llm_from_scratch.quantize import (FORMATS, QUANTIZE_MODES, Int4Linear, Int8Embedding, Int8Linear, QuantFormat,
                                       is_quantized, quantize_groups, quantize_model, quantize_per_channel,
                                       quantized_model_from_state, resolve_format)
from llm_from_scratch.quantize.formats import INT4, int4_format
from llm_from_scratch.quantize.int8 import KERNEL_WIDTH_MULTIPLE


def assert_within_kernel_rounding(out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias=None) -> None:
    """out against the fp32 reference x @ weight.T (+ bias), within the bound of the module docstring."""
    x32 = x.float()
    reference = x32 @ weight.T + (bias.float() if bias is not None else 0.0)
    bound = 1.01 * 2 ** -7 * (x32.abs() @ weight.abs().T) + 1e-6
    if out.dtype == torch.bfloat16:
        bound = bound + 2 ** -7 * reference.abs()
    assert out.shape == reference.shape
    excess = (out.float() - reference).abs() - bound
    assert torch.all(excess <= 0), f"off by more than the bf16 rounding: worst excess {excess.max().item():.3g}"


# ------------------------------------------------------------------------- the kernel's crash


CRASHING_WIDTHS = r"""
import torch, torch.nn as nn
from llm_from_scratch.quantize import Int8Linear
torch.manual_seed(0)
ok = True
for width in (7, 8, 20, 24, 40, 100):        # in_features % 16 != 0: the raw kernel crashes or errs
    for rows in (1, 2, 5):
        layer = Int8Linear.from_linear(nn.Linear(width, 17))
        x = torch.randn(rows, width)
        weight = layer.dequantized_weight()
        error = (layer(x) - (x @ weight.T + layer.bias)).abs()
        ok = ok and bool(torch.all(error <= 1.01 * 2 ** -7 * (x.abs() @ weight.abs().T) + 1e-6))
strided = torch.randn(3, 4, 48).to(torch.bfloat16)[:, -1, :]   # rows 4 * 48 apart: crashed the raw kernel
layer = Int8Linear.from_linear(nn.Linear(48, 16))
ok = ok and bool(torch.isfinite(layer(strided)).all())
print("close" if ok else "wrong")
"""


def test_int8_layer_at_widths_that_crash_the_kernel_runs_and_is_right():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CRASHING_WIDTHS], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0, f"the child process died (return code {done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.strip() == "close", done.stdout + done.stderr[-500:]


# ------------------------------------------------------------------------- layers at odd shapes


INPUT_SHAPES = [(1,), (5,), (2, 3)]  # the leading dimensions of x: one row, many rows, 3-D


@pytest.mark.parametrize("in_features,out_features", [(7, 3), (20, 17), (40, 1), (100, 33), (48, 16)])
@pytest.mark.parametrize("leading", INPUT_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_linear_at_odd_widths_matches_the_naive_reference(in_features, out_features, leading, dtype):
    torch.manual_seed(in_features + out_features)
    linear = nn.Linear(in_features, out_features)
    layer = Int8Linear.from_linear(linear)
    assert layer.q.shape == (out_features, -(-in_features // KERNEL_WIDTH_MULTIPLE) * KERNEL_WIDTH_MULTIPLE)
    assert torch.all(layer.q[:, in_features:] == 0)  # the padding columns add nothing
    assert layer.dequantized_weight().shape == (out_features, in_features)
    x = torch.randn(*leading, in_features).to(dtype)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (*leading, out_features)
    assert_within_kernel_rounding(out, x, layer.dequantized_weight(), linear.bias)


def test_int8_linear_takes_a_strided_bf16_input():
    torch.manual_seed(0)
    layer = Int8Linear.from_linear(nn.Linear(48, 16, bias=False))
    hidden = torch.randn(3, 4, 48).to(torch.bfloat16)
    last = hidden[:, -1, :]                     # the rows of the last position: not contiguous
    assert not last.is_contiguous()
    assert_within_kernel_rounding(layer(last), last, layer.dequantized_weight())


def test_int8_reference_path_at_an_odd_width(monkeypatch):
    """Where there is no kernel (another device), the padded table gives the same products."""
    torch.manual_seed(1)
    layer = Int8Linear.from_linear(nn.Linear(20, 5))
    x = torch.randn(4, 20)
    kernel = layer(x)
    monkeypatch.setattr("llm_from_scratch.quantize.int8.int8_kernel_available", lambda device: False)
    reference = layer(x)
    torch.testing.assert_close(reference, x @ layer.dequantized_weight().T + layer.bias, rtol=1e-6, atol=1e-5)
    assert_within_kernel_rounding(kernel, x, layer.dequantized_weight(), layer.bias)


@pytest.mark.parametrize("embedding_dim", [20, 40, 64])
def test_int8_embedding_at_odd_widths_shares_its_padded_table_with_the_head(embedding_dim):
    torch.manual_seed(2)
    embedding = Int8Embedding.from_embedding(nn.Embedding(37, embedding_dim))
    table = embedding.dequantized_weight()
    ids = torch.tensor([[0, 5, 36], [5, 1, 2]])
    assert torch.equal(embedding(ids), table[ids])  # a lookup dequantizes exactly (fp32)
    head = embedding.as_head()
    assert head.q is embedding.q and head.in_features == embedding_dim
    for leading in INPUT_SHAPES:
        x = torch.randn(*leading, embedding_dim)
        assert_within_kernel_rounding(head(x), x, table)


def test_int8_scales_stay_exact_in_float32():
    """The kernel gets scales of 1; the fp32 scales multiply afterwards, and .to(bf16) keeps them."""
    torch.manual_seed(3)
    linear = nn.Linear(64, 48)
    q, scale = quantize_per_channel(linear.weight)
    layer = Int8Linear(q, scale, linear.bias).to(torch.bfloat16)
    assert layer.scale.dtype == torch.float32 and torch.equal(layer.scale, scale)
    assert layer.bias.dtype == torch.bfloat16
    embedding = Int8Embedding(q, scale).to(torch.bfloat16)
    assert embedding.scale.dtype == torch.float32 and embedding.dtype == torch.bfloat16


@pytest.mark.parametrize("out_features,in_features,group_size", [(16, 64, 32), (48, 96, 32), (32, 256, 64),
                                                                 (16, 256, 256)])
@pytest.mark.parametrize("leading", INPUT_SHAPES)
def test_int4_linear_matches_the_naive_reference(out_features, in_features, group_size, leading):
    torch.manual_seed(4)
    linear = nn.Linear(in_features, out_features)
    q, scale, minimum = quantize_groups(linear.weight, group_size)
    layer = Int4Linear(q, scale, minimum, linear.bias)
    assert torch.equal(layer.int4_values(), q)  # the 4-bit values, exactly
    x = torch.randn(*leading, in_features)
    assert_within_kernel_rounding(layer(x), x, layer.dequantized_weight(), linear.bias)
    strided = torch.randn(3, 2, in_features).to(torch.bfloat16)[:, -1, :]
    assert_within_kernel_rounding(layer(strided), strided, layer.dequantized_weight(), linear.bias)


@pytest.mark.parametrize("out_features,in_features", [(40, 40), (20, 64), (16, 48), (17, 100), (3, 7)])
def test_int4_format_makes_shapes_the_kernel_refuses_int8(out_features, in_features):
    torch.manual_seed(5)
    linear = nn.Linear(in_features, out_features)
    layer = INT4.linear(linear.weight, linear.bias)
    assert isinstance(layer, Int8Linear)
    x = torch.randn(2, 3, in_features)
    assert_within_kernel_rounding(layer(x), x, layer.dequantized_weight(), linear.bias)
    assert isinstance(INT4.linear(torch.randn(32, 64), None), Int4Linear)


def test_int4_layer_refuses_what_its_kernel_cannot_do():
    q, scale, minimum = quantize_groups(torch.randn(16, 64), 16)          # groups of 16: no kernel
    with pytest.raises(ValueError, match="group size in"):
        Int4Linear(q, scale, minimum)
    q, scale, minimum = quantize_groups(torch.randn(16, 64), 32)
    with pytest.raises(ValueError, match="shape"):
        Int4Linear(q, scale[:8], minimum[:8])                              # scales for 8 rows, q has 16
    with pytest.raises(ValueError, match="group size 16"):
        int4_format(16)


# ------------------------------------------------------------------------- bf16 scales of GGUF blocks

gguf = pytest.importorskip("gguf")


@pytest.mark.parametrize("kind", ["Q4_1", "Q4_0"])
def test_int4_from_gguf_blocks_keeps_the_file_bit_for_bit(kind):
    """The layer stores Q4_1 blocks: a Q4_1 tensor's bytes go in unchanged, a Q4_0 one's with
    m = -8 d (exact in fp16), so the layer multiplies by exactly the file's weights."""
    from llm_from_scratch.quantize.gguf_blocks import read_blocks

    qtype = getattr(gguf.GGMLQuantizationType, kind)
    weight = np.random.default_rng(0).normal(size=(32, 128)).astype(np.float32)
    raw = gguf.quants.quantize(weight, qtype)
    blocks = read_blocks(raw, kind, 128)
    layer = INT4.from_blocks(blocks, None)
    assert isinstance(layer, Int4Linear)
    assert torch.equal(layer.int4_values(), blocks.values())
    assert torch.equal(layer.dequantized_weight(), blocks.dequantize())
    if kind == "Q4_1":
        assert torch.equal(layer.blocks, torch.from_numpy(np.ascontiguousarray(raw)))


# ------------------------------------------------------------------------- whole models at odd widths


def _odd_model(family: str, tied: bool) -> nn.Module:
    """Widths the kernels do not take: emb 40 (GPT: qkv 120 x 40, feed-forward 160), or emb 64 with a
    100-wide feed-forward (Llama: qkv and out_proj fit int4, the feed-forward does not); vocab 101."""
    torch.manual_seed(7)
    if family == "gpt":
        cfg = GPTConfig(vocab_size=101, context_length=32, emb_dim=40, n_heads=4, n_layers=2, drop_rate=0.0,
                        qkv_bias=True, tie_weights=tied)
        return GPTModel(cfg).eval()
    cfg = LlamaConfig(vocab_size=101, context_length=32, emb_dim=64, n_heads=4, n_kv_heads=2, n_layers=2,
                      hidden_dim=100, tie_weights=tied)
    return LlamaModel(cfg).eval()


def _dequantized_copy(float_model: nn.Module, quantized: nn.Module) -> nn.Module:
    """The float model holding the quantized model's dequantized weights: the naive reference."""
    reference = copy.deepcopy(float_model)
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if hasattr(module, "dequantized_weight"):
                reference.get_submodule(name).weight.copy_(module.dequantized_weight())
    return reference


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("family,tied", [("gpt", True), ("gpt", False), ("llama", True), ("llama", False)])
def test_each_format_round_trips_a_model_at_odd_widths(fmt, family, tied):
    model = _odd_model(family, tied)
    quantized = quantize_model(copy.deepcopy(model), fmt)
    assert is_quantized(quantized) and quantized.quantization == fmt
    assert not any(isinstance(m, nn.Linear) for m in quantized.modules())
    if tied:
        assert quantized.out_head.q is quantized.tok_emb.q
    if fmt == "int4" and family == "llama":  # the kernel's shapes in int4, the others int8
        assert isinstance(quantized.trf_blocks[0].att.qkv, Int4Linear)
        assert isinstance(quantized.trf_blocks[0].ff.fc3, Int8Linear)
    reference = _dequantized_copy(model, quantized)
    ids = torch.randint(0, 101, (2, 9))
    with torch.no_grad():
        expected, logits = reference(ids), quantized(ids)
    # every matrix product rounds its input and its sum to bf16 (2**-7 of sum |x w|, see above); two
    # layers of them move the logits by well under 2% of the largest (measured: under 0.5%)
    assert (logits - expected).abs().max() <= 0.02 * expected.abs().max()
    tokens = generate(quantized, ids[:1, :4], 5)  # prefill (4 rows) and one-row decoding steps
    assert tokens.shape == (1, 9)
    # the state-dict path (the GGUF loader's) builds the same layers: the same logits, exactly
    from_state = quantized_model_from_state(model.cfg, dict(model.state_dict()), fmt)
    with torch.no_grad():
        assert torch.equal(from_state(ids), logits)


def test_bf16_model_at_odd_width_runs_quantized():
    model = _odd_model("gpt", True).to(torch.bfloat16)
    quantize_model(model, "int8")
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert model.trf_blocks[0].att.qkv.scale.dtype == torch.float32


# ------------------------------------------------------------------------- the registry


def _quantize_actions(parser: argparse.ArgumentParser, path=()):
    """(command path, the --quantize action) for every (sub)command that has the flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _quantize_actions(sub, (*path, name))
        elif action.dest == "quantize":
            yield path, action


def test_the_cli_offers_exactly_the_registry():
    from llm_from_scratch.cli.main import build_parser

    assert QUANTIZE_MODES == ("none", *FORMATS)
    found = dict(_quantize_actions(build_parser()))
    assert {("generate",), ("chat",), ("serve",), ("evaluate", "perplexity")} <= set(found)
    for path, action in found.items():
        assert tuple(action.choices) == QUANTIZE_MODES, path
        for fmt in FORMATS.values():
            assert fmt.name in action.help


def test_resolve_format_checks_names_and_devices():
    assert resolve_format(None) is None and resolve_format("none") is None
    assert resolve_format("INT8") is FORMATS["int8"]
    assert resolve_format("int8", "cuda") is FORMATS["int8"]  # int8 runs anywhere (reference path off the CPU)
    assert resolve_format(FORMATS["int4"], "cuda") is FORMATS["int4"]  # a resolved format passes as it is
    with pytest.raises(ValueError, match=r"unknown quantization 'int3': use one of none, int8, int4"):
        resolve_format("int3")
    for device in ("cuda", "mps", "meta"):
        with pytest.raises(ValueError, match=r"--quantize int4 runs on the CPU only .*use --quantize int8 or none"):
            resolve_format("int4", device)


def test_bad_quantize_calls_are_clear_errors():
    model = _odd_model("gpt", True)
    with pytest.raises(ValueError, match="group_size applies to int4 only"):
        quantize_model(copy.deepcopy(model), "int8", group_size=64)
    with pytest.raises(ValueError, match="group size 48"):
        quantize_model(copy.deepcopy(model), "int4", group_size=48)
    quantize_model(model, "int8")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, "int4")
    with pytest.raises(ValueError, match="one scale per output row"):
        Int8Linear(torch.zeros(4, 8, dtype=torch.int8), torch.ones(3))
    with pytest.raises(ValueError, match="needs a format"):
        quantized_model_from_state(model.cfg, {}, "none")
    # an input of the wrong width: an error, not a silent reshape into other rows (2 x 20 = 1 x 40)
    with pytest.raises(ValueError, match=r"Int8Linear takes inputs of width 40, got shape \(2, 20\)"):
        Int8Linear.from_linear(nn.Linear(40, 8))(torch.randn(2, 20))
    with pytest.raises(ValueError, match=r"Int4Linear takes inputs of width 64"):
        INT4.linear(torch.randn(16, 64), None)(torch.randn(2, 32))


def test_int4_on_a_pytorch_without_its_kernel_says_what_to_do(monkeypatch):
    monkeypatch.setattr("llm_from_scratch.quantize.formats.int4_kernel_available", lambda: False)
    with pytest.raises(ValueError, match=r"--quantize int4 needs PyTorch >= 2\.6 .*use --quantize int8"):
        resolve_format("int4", "cpu")


@pytest.fixture
def count_checks(monkeypatch):
    calls = []
    real = QuantFormat.check
    monkeypatch.setattr(QuantFormat, "check", lambda self, device=None: (calls.append(self.name), real(self, device)))
    return calls


def test_one_check_per_checkpoint_load(base_checkpoint, count_checks):
    from llm_from_scratch.loading import load_model

    loaded = load_model(checkpoint=base_checkpoint, device="cpu", quantize="int4")
    assert is_quantized(loaded.model) and count_checks == ["int4"]


def test_one_check_per_gguf_load(tmp_path, count_checks):
    pytest.importorskip("transformers")
    from test_llama import make_hf_llama, train_hf_tokenizer, write_tiny_gguf

    from llm_from_scratch.loading import load_model

    tokenizer = train_hf_tokenizer("smollm", vocab_size=352)
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, make_hf_llama("gqa-tied", vocab_size=tokenizer.get_vocab_size()), tokenizer,
                    matrix_type=gguf.GGMLQuantizationType.Q4_1)
    loaded = load_model(model=str(path), device="cpu", quantize="int4")
    assert isinstance(loaded.model.trf_blocks[0].att.qkv, Int4Linear) and count_checks == ["int4"]
