"""The compiled decode step (generation.compiled) and the fixed-width KV cache it needs.

Precision: fp32 throughout; greedy tokens must be identical, logits equal within 1e-5 (the
compiled graph may sum in another order)."""

from __future__ import annotations

import logging

import pytest
import torch

from llm_from_scratch.generation import generate, generate_batch
from llm_from_scratch.generation.compiled import compile_decoding, is_compiled, uncompile_decoding
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.model.kv_cache import KVCache
from llm_from_scratch.model.registry import create_model


def tiny(family: str):
    torch.manual_seed(0)
    return (GPTModel.from_preset("gpt-micro") if family == "gpt" else create_model("llama-micro")).eval()


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_fixed_width_cache_computes_what_the_growing_cache_computes(family):
    model = tiny(family)
    ids = torch.randint(0, model.cfg.vocab_size, (2, 9))
    arch = model.arch
    growing = model.new_kv_cache(2, 20)
    fixed = KVCache(arch.n_layers, 2, arch.n_kv_heads, arch.head_dim, 32, fixed_width=True)
    for cache in (growing, fixed):
        cache.set_left_padding([3, 0])  # left-padded rows: the masks must agree too
    with torch.no_grad():
        a, b = model(ids, kv_cache=growing), model(ids, kv_cache=fixed)
        torch.testing.assert_close(a[1], b[1], atol=1e-5, rtol=0)
        torch.testing.assert_close(a[0, 3:], b[0, 3:], atol=1e-5, rtol=0)
        for token in (5, 7, 11):
            step = torch.tensor([[token], [token]])
            torch.testing.assert_close(model(step, kv_cache=growing), model(step, kv_cache=fixed), atol=1e-5, rtol=0)
    assert fixed.keys.shape[3] == 32 and fixed.length == growing.length == 12


@pytest.mark.parametrize("family", ["gpt", "llama"])
def test_traced_step_gives_the_eager_tokens_in_every_surface(family):
    model = tiny(family)
    ids = torch.randint(0, model.cfg.vocab_size, (1, 7))
    eager = generate(model, ids, 12)
    batch = generate_batch(model, [[1, 2, 3], [4, 5, 6, 7, 8]], 6)
    assert "compiled" in compile_decoding(model, backend="eager")   # trace only: quick
    assert is_compiled(model) and model.new_kv_cache(1, 40).fixed_width
    assert model.new_kv_cache(1, 40).max_len == 64                   # rounded up: one graph for many lengths
    assert torch.equal(generate(model, ids, 12), eager)
    assert generate_batch(model, [[1, 2, 3], [4, 5, 6, 7, 8]], 6) == batch   # the server's batched loop
    uncompile_decoding(model)
    assert not model.new_kv_cache(1, 40).fixed_width


def test_inductor_compiled_step_gives_the_eager_greedy_tokens():
    model = tiny("gpt")
    ids = torch.randint(0, model.cfg.vocab_size, (1, 6))
    eager = generate(model, ids, 10)
    compile_decoding(model)                                           # real code generation (C++ on a CPU)
    assert torch.equal(generate(model, ids, 10), eager)


def test_a_failing_compiler_falls_back_to_eager_and_says_so(caplog):
    model = tiny("gpt")
    ids = torch.randint(0, model.cfg.vocab_size, (1, 5))
    eager = generate(model, ids, 6)
    compile_decoding(model, backend="eager")

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    model.compiled_layers.compiled = broken
    with caplog.at_level(logging.WARNING):
        assert torch.equal(generate(model, ids, 6), eager)
    assert "decoding runs eagerly" in caplog.text and "no C++ compiler" in caplog.text
    assert not is_compiled(model)


def test_compile_refuses_what_it_cannot_compile():
    assert compile_decoding(torch.nn.Linear(2, 2)).startswith("not compiled")
