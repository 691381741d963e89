"""The native decode step and kernels (kernels/decode_cpu.c) against the PyTorch path they replace.

Precision: both paths compute in fp32 and differ in the order of the sums, so the logits agree to
~1e-5 of their size (2e-5 below). int4 matrix-vector products also round their input to 16 bits
per block of 32 (at most 2**-16 of the block's largest |x|, half a step): 2e-4 of the logits' size
after a dozen steps, and the kernel test checks the exact bound of that rounding.
The PyTorch path is forced by making `native_decoder_for` give None.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import llm_from_scratch.model.decoder as decoder_module
from llm_from_scratch.finetune.lora import apply_lora
from llm_from_scratch.generation.decoding import BatchedDecoding
from llm_from_scratch.kernels import native
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.registry import create_model
from llm_from_scratch.quantize import Int4Linear, Int8Linear, quantize_model
from llm_from_scratch.quantize.int4 import dequantize_groups, from_blocks, quantize_groups

pytestmark = pytest.mark.skipif(native.library() is None, reason=f"no native kernels here: {native.status()}")


def _model(name: str, quantize: str, **overrides):
    torch.manual_seed(0)
    model = create_model(name, drop_rate=0.0, **overrides).eval()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so that they matter
        for module in model.modules():
            for pname, param in module.named_parameters(recurse=False):
                if "norm" in type(module).__name__.lower() or pname in ("bias", "shift"):
                    param.add_(0.1 * torch.randn_like(param))
    return quantize_model(model, quantize) if quantize != "none" else model


def _decode(model, prompts, steps: list[list[int]], native_on: bool, monkeypatch=None) -> torch.Tensor:
    """Logits (steps + 1, b, vocab): after the prefill, then after each step's tokens. The prompts'
    quantized products run in fp32 on every CPU (bf16 BLAS would round both paths' inputs to 8
    bits, and inputs that differ in their last fp32 bit may round apart: see the kernel tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native, "cpu_multiplies_bf16_natively", lambda: False)
        if not native_on:
            patch.setattr(decoder_module, "native_decoder_for", lambda model: None)
        with torch.no_grad():
            decoding = BatchedDecoding(model, prompts, max_new_tokens=len(steps) + 1)
            logits = [decoding.logits.clone()]
            for tokens in steps:
                logits.append(decoding.step(torch.tensor(tokens)).clone())
    if monkeypatch is not None:
        monkeypatch.undo()
    return torch.stack(logits)


MODELS = {
    "gpt2": ("gpt-micro", {}),                                        # LayerNorm, learned positions, biases, GELU
    "gpt-modern": ("gpt-micro", {"norm": "rmsnorm", "positions": "rope", "mlp": "relu2", "qk_norm": True}),
    "llama": ("llama-micro", {}),                                     # RMSNorm, RoPE, SwiGLU, grouped KV heads
    "llama-window": ("llama-micro", {"sliding_window": 4}),
    "qwen3": ("qwen3-micro", {}),                                     # + QK-norm
    "qwen3-wide-heads": ("qwen3-micro", {"head_dim": 128}),           # heads wider than the model
}


@pytest.mark.parametrize("quantize", ["none", "int8", "int4"])
@pytest.mark.parametrize("family", list(MODELS))
def test_native_step_computes_what_the_pytorch_step_computes(family, quantize, monkeypatch):
    name, overrides = MODELS[family]
    model = _model(name, quantize, **overrides)
    vocab = model.arch.vocab_size
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(vocab, (n,), generator=g).tolist() for n in (7, 3, 5)]  # left padding
    steps = torch.randint(vocab, (9, 3), generator=g).tolist()
    native_logits = _decode(model, prompts, steps, True, monkeypatch)
    assert model.decode_path.startswith("decode step: native"), model.decode_path
    torch_logits = _decode(model, prompts, steps, False, monkeypatch)
    assert model.decode_path.startswith("decode step: native")  # (the patched run leaves it)
    scale = torch_logits.abs().max().item()
    tolerance = 2e-4 if quantize == "int4" else 2e-5
    torch.testing.assert_close(native_logits, torch_logits, rtol=0, atol=tolerance * scale)


def test_native_step_handles_a_batch_of_one_and_a_cache_that_fills(monkeypatch):
    model = _model("llama-micro", "int8", context_length=16)
    prompt = [[5, 6, 7]]
    steps = [[t] for t in range(8, 20)]                            # up to the last column of the cache
    a = _decode(model, prompt, steps, True, monkeypatch)
    b = _decode(model, prompt, steps, False, monkeypatch)
    torch.testing.assert_close(a, b, rtol=0, atol=2e-5 * b.abs().max().item())


@pytest.mark.parametrize("rows", [1, 2, 5, 16, 17, 40])
@pytest.mark.parametrize("fmt", ["fp32", "int8", "int8-odd-width", "int4", "int4-group64"])
@pytest.mark.parametrize("bf16_cpu", [False, True])
def test_kernel_matmul_matches_the_dequantized_matrix_in_float64(fmt, rows, bf16_cpu, monkeypatch):
    """Every matrix format, through the matrix-vector loop (<= 16 rows) and the BLAS path (more
    rows), which multiplies in bf16 on CPUs with bf16 instructions and in fp32 elsewhere."""
    monkeypatch.setattr(native, "cpu_multiplies_bf16_natively", lambda: bf16_cpu)
    torch.manual_seed(2)
    cols = 40 if fmt == "int8-odd-width" else 128
    linear = nn.Linear(cols, 48)
    if fmt == "fp32":
        matrix, weight = native.linear(native.FORMAT_F32, linear.weight.data, cols, cols, bias=linear.bias.data), \
            linear.weight.data
        layer = None
    else:
        layer = Int8Linear.from_linear(linear) if fmt.startswith("int8") else \
            Int4Linear(*quantize_groups(linear.weight, 64 if fmt.endswith("64") else 32), linear.bias)
        matrix, weight = layer.kernel_matrix(with_bias=True), layer.dequantized_weight()
    x = torch.randn(rows, cols)
    expected = x.double() @ weight.double().T + linear.bias.double()
    got = native.matmul(native.library(), matrix, x)
    tolerance = torch.full_like(expected, 1e-5)                      # fp32 sums
    if fmt.startswith("int4") and rows <= native.MATVEC_MAX_ROWS:    # + the 16-bit input, half a step per value
        step = x.reshape(rows, -1, 32).abs().amax(-1).double() / 32767               # (rows, blocks)
        q, d, m = (t.double() for t in from_blocks(layer.blocks, cols))
        weight_mass = (q.reshape(48, -1, 32) * d[..., None]).abs().sum(-1)           # (48, blocks)
        tolerance += step @ weight_mass.T / 2
    if bf16_cpu and rows > native.MATVEC_MAX_ROWS:                   # x, W and the product rounded to bf16
        tolerance += (x.double().abs() @ weight.double().abs().T) * 2 ** -7 + expected.abs() * 2 ** -8
    assert torch.all((got.double() - expected).abs() <= tolerance)
    if layer is not None:  # the layer's own forward: the same numbers, any leading shape
        with torch.no_grad():
            out = layer(x.reshape(1, rows, cols))
        assert torch.all((out.reshape(rows, -1).double() - expected).abs() <= tolerance)


def test_int4_blocks_hold_fp16_scales_that_keep_every_weight_within_half_a_step():
    torch.manual_seed(3)
    weight = torch.randn(32, 128) * 3
    q, scale, minimum = quantize_groups(weight, 32)
    assert torch.equal(scale, scale.half().float()) and torch.equal(minimum, minimum.half().float())
    error = (dequantize_groups(q, scale, minimum) - weight).abs().reshape(32, 4, 32)
    assert torch.all(error <= scale[..., None] / 2 * (1 + 1e-6))
    layer = Int4Linear(q, scale, minimum)
    assert torch.equal(layer.int4_values(), q)
    assert torch.equal(layer.dequantized_weight(), dequantize_groups(q, scale, minimum))
    assert layer.blocks.shape == (32, 4 * 20)  # llama.cpp's Q4_1 block: 20 bytes per 32 weights


def test_the_pytorch_path_runs_where_the_native_step_does_not_apply(monkeypatch):
    model = _model("llama-micro", "none")
    with torch.no_grad():
        model.new_kv_cache(1)
    assert model.decode_path.startswith("decode step: native")
    # LoRA layers: described in the log, and the step stays on PyTorch operations
    apply_lora(model, rank=2)
    with torch.no_grad():
        model.new_kv_cache(1)
    assert "PyTorch operations" in model.decode_path and "LoRA" in model.decode_path
    assert model.__dict__["native_decoder"] is None
    # a step replaced on the instance (a test double, a user's own): that one runs
    replaced = _model("llama-micro", "none")
    replaced.layers = replaced.layers
    with torch.no_grad():
        replaced.new_kv_cache(1)
    assert "replaced" in replaced.decode_path and replaced.__dict__["native_decoder"] is None
    # bf16 activations
    bf16 = _model("llama-micro", "none").to(torch.bfloat16)
    with torch.no_grad():
        bf16.new_kv_cache(1)
    assert "fp32 activations" in bf16.decode_path and bf16.__dict__["native_decoder"] is None
    # train mode (dropout) or gradients: checked at every step
    float_model = _model("llama-micro", "none")
    cache = float_model.new_kv_cache(1)
    step = float_model.__dict__["native_decoder"]
    assert step is not None and not step.applies(float_model, cache, 1)  # gradients on: no graph from C
    with torch.no_grad():
        assert step.applies(float_model, cache, 1)
        assert not step.applies(float_model, cache, 2)                  # another batch than the cache's
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not step.applies(float_model, cache, 1)              # PyTorch computes in bf16 there
        float_model.train()
        assert not step.applies(float_model, cache, 1)


def test_moving_the_model_drops_the_native_step():
    model = _model("llama-micro", "none")
    with torch.no_grad():
        model.new_kv_cache(1)
    assert model.__dict__["native_decoder"] is not None
    model.to(torch.float32)
    assert "native_decoder" not in model.__dict__


def test_without_native_kernels_everything_runs_on_pytorch(monkeypatch):
    model = _model("llama-micro", "int4")
    prompt = [[3, 4, 5, 6]]
    with_native = _decode(model, prompt, [[7], [8]], True, monkeypatch)
    monkeypatch.setenv(native.DISABLE_ENV, "0")
    native.reset_for_tests()
    try:
        assert native.library() is None and "LLMFS_NATIVE=0" in native.status()
        without = _decode(model, prompt, [[7], [8]], True, monkeypatch)
        assert "PyTorch operations" in model.decode_path
    finally:
        monkeypatch.delenv(native.DISABLE_ENV, raising=False)
        native.reset_for_tests()
    # PyTorch's int4 kernel rounds activations and scales to bf16: close, not equal
    torch.testing.assert_close(without, with_native, rtol=0, atol=0.05 * with_native.abs().max().item())


def test_a_compiler_that_fails_is_reported_and_nothing_breaks(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", "/bin/false")
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path))  # no library built before
    native.reset_for_tests()
    try:
        assert native.library() is None
        assert "failed" in native.status() and "PyTorch operations" in native.status()
        layer = Int8Linear.from_linear(nn.Linear(32, 16))
        with torch.no_grad():
            assert layer(torch.randn(2, 32)).shape == (2, 16)
    finally:
        monkeypatch.undo()
        native.reset_for_tests()


@pytest.fixture(scope="module")
def portable_library():
    """The kernels built without AVX2 (`-march=x86-64`): the plain C loops every CPU runs."""
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the portable build is compared on x86-64")
    return native.load(native.compiler(), march="x86-64")


def test_the_portable_build_computes_what_the_pytorch_path_does(portable_library, monkeypatch):
    assert portable_library.llmfs_instruction_set() == b"portable C"
    model = _model("qwen3-micro", "int4")
    vocab = model.arch.vocab_size
    prompts = [[1, 2, 3, 4, 5], [6, 7]]
    steps = torch.randint(vocab, (6, 2), generator=torch.Generator().manual_seed(5)).tolist()
    reference = _decode(model, prompts, steps, False, monkeypatch)         # the PyTorch path
    monkeypatch.setattr(native, "_library", portable_library)
    monkeypatch.setattr(native, "_status", "portable build (test)")
    portable = _decode(model, prompts, steps, True, monkeypatch)           # (undoes the patches at the end)
    assert model.decode_path.startswith("decode step: portable build (test)")
    torch.testing.assert_close(portable, reference, rtol=0, atol=2e-4 * reference.abs().max().item())
    for layer in (Int8Linear.from_linear(nn.Linear(72, 24)), Int4Linear.from_linear(nn.Linear(96, 32))):
        x = torch.randn(3, layer.in_features)
        torch.testing.assert_close(native.matmul(portable_library, layer.kernel_matrix(), x),
                                   native.matmul(native.library(), layer.kernel_matrix(), x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("bf16_cpu", [False, True])
def test_a_many_row_product_converts_the_matrix_a_slice_at_a_time(bf16_cpu, monkeypatch):
    """A big matrix (a vocabulary head) is never converted to float whole: 48 rows in slices of 5."""
    monkeypatch.setattr(native, "cpu_multiplies_bf16_natively", lambda: bf16_cpu)
    monkeypatch.setattr(native, "SLICE_ELEMENTS", 5 * 64)
    torch.manual_seed(7)
    layer = Int8Linear.from_linear(nn.Linear(64, 48))
    x = torch.randn(30, 64)
    with torch.no_grad():
        expected = x @ layer.dequantized_weight().T + layer.bias
        got = layer(x)
    tolerance = 2e-2 if bf16_cpu else 1e-5
    torch.testing.assert_close(got, expected, rtol=0, atol=tolerance)


def test_the_parallel_loops_give_the_single_thread_result(monkeypatch):
    """The suite runs on one thread (conftest); the kernels' loops must not depend on it."""
    model = _model("qwen3-micro", "int4")
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    steps = [[9, 10], [11, 12], [13, 14]]
    one = _decode(model, prompts, steps, True, monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)                                       # more threads than rows of some loops
    try:
        three = _decode(model, prompts, steps, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(three, one, rtol=0, atol=1e-6 * one.abs().max().item())


# ---- paths a review found untested -------------------------------------------------------------


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_under_autocast_the_pytorch_path_runs_and_nothing_breaks(quantize, monkeypatch):
    """GRPO samples inside the trainer's autocast: bf16 layer outputs must never reach the kernels."""
    model = _model("llama-micro", quantize)
    prompts, steps = [[1, 2, 3, 4, 5], [6, 7]], [[8, 9], [10, 11]]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        native_on = _decode(model, prompts, steps, True)
        native_off = _decode(model, prompts, steps, False)
    assert torch.equal(native_on, native_off)


def test_a_batch_that_does_not_match_the_cache_is_an_error_not_a_crash():
    model = _model("llama-micro", "int8")
    with torch.no_grad():
        cache = model.new_kv_cache(1, 16)
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache)
        with pytest.raises(RuntimeError):
            model(torch.tensor([[4], [5]]), kv_cache=cache)             # two rows, a one-row cache


def test_weights_replaced_in_the_middle_of_a_generation_are_the_ones_used():
    torch.manual_seed(8)
    model, replacement = _model("llama-micro", "none"), create_model("llama-micro", drop_rate=0.0)

    def run(native_on: bool) -> torch.Tensor:
        with pytest.MonkeyPatch.context() as patch, torch.no_grad():
            if not native_on:
                patch.setattr(decoder_module, "native_decoder_for", lambda model: None)
            fresh = _model("llama-micro", "none")
            decoding = BatchedDecoding(fresh, [[1, 2, 3]], max_new_tokens=3)
            fresh.load_state_dict(replacement.state_dict(), assign=True)   # new tensors, the old ones freed
            fresh.tie_weights()
            return decoding.step(torch.tensor([4])).clone()

    assert torch.isfinite(run(True)).all()
    torch.testing.assert_close(run(True), run(False), rtol=0, atol=1e-5)
    del model


def test_a_model_that_made_a_cache_is_freed_without_the_garbage_collector():
    import gc
    import weakref

    gc.disable()
    try:
        model = _model("llama-micro", "int8")
        with torch.no_grad():
            model.new_kv_cache(1)
        alive = weakref.ref(model)
        del model
        assert alive() is None
    finally:
        gc.enable()


def test_int4_groups_far_from_zero_keep_every_weight_within_half_a_step():
    """A group in [10.006, 10.007]: its fp16 minimum must not land above its smallest weight."""
    weight = (10.006 + 0.001 * torch.rand(16, 64, generator=torch.Generator().manual_seed(9))).float()
    q, scale, minimum = quantize_groups(weight, 32)
    assert torch.all(minimum <= weight.reshape(16, 2, 32).amin(-1))
    error = (dequantize_groups(q, scale, minimum) - weight).abs().reshape(16, 2, 32)
    assert torch.all(error <= scale[..., None] / 2 * (1 + 1e-6))


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_batch_of_five_rows_through_the_decode_step(quantize, monkeypatch):
    """Four or more rows take the kernels' other matrix-vector path (a weight row made fp32 once)."""
    model = _model("gpt-micro", quantize, norm="rmsnorm", positions="rope", qkv_bias=True)
    prompts = [[i + 1] * (i + 2) for i in range(5)]
    steps = [[10, 11, 12, 13, 14], [15, 16, 17, 18, 19]]
    native_logits = _decode(model, prompts, steps, True)
    torch_logits = _decode(model, prompts, steps, False)
    tolerance = 2e-4 if quantize == "int4" else 2e-5
    torch.testing.assert_close(native_logits, torch_logits, rtol=0, atol=tolerance * torch_logits.abs().max().item())


def test_prompts_through_bf16_blas_on_a_bf16_cpu_match_the_pytorch_path(monkeypatch):
    """The model-level prefill with the many-row products in bf16 (what a CPU with bf16 instructions
    runs by default): both paths round the same way, up to inputs that differ in their last bits."""
    monkeypatch.setattr(native, "cpu_multiplies_bf16_natively", lambda: True)
    model = _model("llama-micro", "int8")
    prompt = torch.randint(model.arch.vocab_size, (2, 24), generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        native_logits = model(prompt, kv_cache=model.new_kv_cache(2))
        model.__dict__["native_decoder"] = None                        # a cache made by hand keeps it off
        arch = model.arch
        torch_logits = model(prompt, kv_cache=KVCache(arch.n_layers, 2, arch.n_kv_heads, arch.head_dim, 64))
    scale = torch_logits.abs().max().item()
    torch.testing.assert_close(native_logits, torch_logits, rtol=0, atol=3e-2 * scale)


def test_generate_with_a_sliding_window_gives_the_pytorch_paths_tokens(monkeypatch):
    """`generate` re-prefills when its context window slides: the native prefill then runs again."""
    from llm_from_scratch.generation import generate

    model = _model("llama-micro", "none")
    prompt = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        native_tokens = generate(model, prompt, 12, context_size=8)
        monkeypatch.setattr(decoder_module, "native_decoder_for", lambda model: None)
        torch_tokens = generate(model, prompt, 12, context_size=8)
    assert torch.equal(native_tokens, torch_tokens)


def test_int4_gradients_flow_to_the_input_through_the_dequantized_matrix():
    """LoRA on an int4 base: the layer's input needs a gradient, so the kernels step aside."""
    layer = Int4Linear.from_linear(nn.Linear(64, 32))
    x = torch.randn(3, 64, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, layer.dequantized_weight().sum(0).expand(3, 64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_a_big_batch_of_one_token_steps_goes_through_the_blas_path(quantize, monkeypatch):
    """More rows than the matrix-vector loop takes: one-token steps use the prefill's path."""
    model = _model("llama-micro", quantize)
    prompts = [[i % 7 + 1] * (i % 4 + 1) for i in range(native.MATVEC_MAX_ROWS + 2)]
    steps = [[(i * 3) % 50 + 1 for i in range(len(prompts))] for _ in range(2)]
    native_logits = _decode(model, prompts, steps, True)
    torch_logits = _decode(model, prompts, steps, False)
    torch.testing.assert_close(native_logits, torch_logits, rtol=0, atol=2e-5 * torch_logits.abs().max().item())


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_model_that_has_decoded_natively_can_be_copied_and_pickled(name):
    """DPO's frozen reference is `copy.deepcopy(model)` after the model sampled the pairs, when its
    `native_decoder` (C structures with pointers) was set: the copy must leave it behind (the
    copy builds its own with its next cache) and decode exactly as the original."""
    import copy
    import io
    import pickle

    model = _model(*MODELS[name][:1], "none", **MODELS[name][1])
    prompts = [[1, 2, 3], [4, 5, 6]]
    before = _decode(model, prompts, [[7, 8], [9, 10]], native_on=True)
    assert model.__dict__.get("native_decoder") is not None, "the model did not decode natively"
    twin = copy.deepcopy(model)
    assert "native_decoder" in model.__dict__ and "native_decoder" not in twin.__dict__
    assert torch.equal(_decode(twin, prompts, [[7, 8], [9, 10]], native_on=True), before)
    assert twin.__dict__.get("native_decoder") is not None         # its own, pointing into its own weights
    buffer = io.BytesIO()
    pickle.dump(model, buffer)                                      # torch.save of a whole model pickles it
    buffer.seek(0)
    assert torch.equal(_decode(pickle.load(buffer), prompts, [[7, 8], [9, 10]], native_on=True), before)
