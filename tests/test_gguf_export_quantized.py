"""GGUF export with Q8_0 blocks, and GGUF export of Llama-family models (llama, qwen3).

References, independent of the code under test:
* Q8_0: the `gguf` package's own `gguf.quants.quantize` / `dequantize` (a port of ggml's reference
  C code): our blocks must be byte-identical;
* the files: `gguf.GGUFReader` reads tensor types, shapes and metadata back; the GPT-2 names are
  spelled out here from llama.cpp's loader; llama.cpp's q/k row permutation is written out here
  as its converter (convert_hf_to_gguf.py) writes it;
* Llama: our GGUF loader `load_llama_gguf` (written against files from llama.cpp's converter)
  must give back the model we exported.
Every model is tiny and random; the whole file runs in a few seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import run_cli
import torch

gguf = pytest.importorskip("gguf")

from llm_from_scratch.export.gguf_export import (  # noqa: E402
    QWEN2_PATTERN,
    convert_dtype,
    dequantize_q8_0,
    export_gguf,
    quantize_q8_0,
)
from llm_from_scratch.export.gguf_llama import permute_qk_rows  # noqa: E402
from llm_from_scratch.export.hf import ExportError  # noqa: E402
from llm_from_scratch.model import GPTConfig, GPTModel  # noqa: E402
from llm_from_scratch.model.llama import LlamaConfig, LlamaModel  # noqa: E402
from llm_from_scratch.model.qwen3 import Qwen3Config, Qwen3Model  # noqa: E402
from llm_from_scratch.tokenizers import CharTokenizer  # noqa: E402
from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer  # noqa: E402
from llm_from_scratch.weights.llama import load_llama_gguf, unpermute_qk_rows  # noqa: E402

Q8_0 = gguf.GGMLQuantizationType.Q8_0
# A Q8_0 value is d * q with q = round(x / d): off by at most d/2, plus what rounding d to float16
# costs (|q| <= 127 times at most d * 2^-11). 1e-6 * d covers float32 rounding of x * (1/d).
Q8_0_BOUND = 0.5 + 127 * 2.0 ** -11 + 1e-6


def _reader_field(reader, key: str):
    return reader.fields[key].contents()


def _dequantized(reader) -> dict[str, np.ndarray]:
    """Every tensor of the file as float32 in PyTorch's (rows, columns) order."""
    arrays = {}
    for tensor in reader.tensors:
        data = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        arrays[tensor.name] = np.asarray(data, dtype=np.float32).reshape([int(n) for n in reversed(tensor.shape)])
    return arrays


def _block_bound(weight: np.ndarray) -> np.ndarray:
    """Per value, the Q8_0 error bound of its block (see Q8_0_BOUND), shaped like ``weight``."""
    blocks = weight.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / 127
    return np.broadcast_to(d * Q8_0_BOUND, blocks.shape).reshape(weight.shape)


# --------------------------------------------------------------------------------------
# Q8_0 blocks against the gguf package
# --------------------------------------------------------------------------------------


def test_q8_0_bytes_equal_the_gguf_package():
    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(256) * scale for scale in (1e-4, 0.02, 1.0, 300.0)]
    ties = np.array([127, 0.5, 1.5, -2.5, -0.5, 126.5, -126.5] + [0.0] * 25)  # d = 1: q = x, ties away from 0
    spiky = rng.standard_normal(64) * 0.01
    spiky[5] = 40.0                                                            # one outlier per block pair
    x = np.stack([*rows, np.tile(ties, 8), np.tile(spiky, 4), np.zeros(256)]).astype(np.float32)
    ours, theirs = quantize_q8_0(x), gguf.quants.quantize(x, Q8_0)
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape == (7, 256 // 32 * 34)
    assert np.array_equal(ours, theirs)  # byte-identical, so equal after dequantization too
    assert np.array_equal(dequantize_q8_0(ours), gguf.quants.dequantize(theirs, Q8_0))
    assert list(ours[4, 2:9].view(np.int8)) == [127, 1, 2, -3, -1, 127, -127]
    # 1-D and 3-D arrays: blocks run along the last axis
    assert np.array_equal(quantize_q8_0(x[1]), gguf.quants.quantize(x[1], Q8_0))
    assert np.array_equal(quantize_q8_0(x.reshape(7, 2, 128)), gguf.quants.quantize(x.reshape(7, 2, 128), Q8_0))


def test_q8_0_error_bound_and_all_zero_block():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 96)) * rng.uniform(0.01, 3.0, (16, 1))).astype(np.float32)
    x[3, 32:64] = 0.0
    with np.errstate(all="raise"):  # an all-zero block (d = 0) must not divide by zero
        packed = quantize_q8_0(x)
    back = dequantize_q8_0(packed)
    assert np.all(np.abs(back - x) <= _block_bound(x))
    zero_block = packed[3, 34:68]
    assert not zero_block.any() and not back[3, 32:64].any()


def test_rows_not_a_multiple_of_32_fall_back_to_f16():
    x = np.random.default_rng(2).standard_normal((4, 48)).astype(np.float32)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_q8_0(x)
    with pytest.raises(gguf.QuantError):  # the gguf package cannot either; llama.cpp's converter then writes F16
        gguf.quants.quantize(x, Q8_0)
    data, qtype = convert_dtype(x, "q8_0")
    assert qtype == gguf.GGMLQuantizationType.F16 and np.array_equal(data, x.astype(np.float16))
    data, qtype = convert_dtype(x[:, :32], "q8_0")
    assert qtype == Q8_0 and np.array_equal(data, gguf.quants.quantize(x[:, :32], Q8_0))


# --------------------------------------------------------------------------------------
# GPT-2 with Q8_0
# --------------------------------------------------------------------------------------

CHAR_TEXT = "hello world, the quick brown fox jumps over the lazy dog. 你好!\n"

# gguf name -> our state-dict name, as llama.cpp's gpt2 loader names the tensors
GPT2_TOP = {"token_embd.weight": "tok_emb.weight", "position_embd.weight": "pos_emb.weight",
            "output_norm.weight": "final_norm.scale", "output_norm.bias": "final_norm.shift",
            "output.weight": "out_head.weight"}
GPT2_BLOCK = {"attn_norm.weight": "norm1.scale", "attn_norm.bias": "norm1.shift",
              "attn_qkv.weight": "att.qkv.weight", "attn_qkv.bias": "att.qkv.bias",
              "attn_output.weight": "att.out_proj.weight", "attn_output.bias": "att.out_proj.bias",
              "ffn_norm.weight": "norm2.scale", "ffn_norm.bias": "norm2.shift",
              "ffn_up.weight": "ff.layers.0.weight", "ffn_up.bias": "ff.layers.0.bias",
              "ffn_down.weight": "ff.layers.2.weight", "ffn_down.bias": "ff.layers.2.bias"}


def _our_gpt2_name(gguf_name: str) -> str:
    if gguf_name in GPT2_TOP:
        return GPT2_TOP[gguf_name]
    _, block, rest = gguf_name.split(".", 2)
    return f"trf_blocks.{block}.{GPT2_BLOCK[rest]}"


@pytest.mark.parametrize("emb", [64, 48])  # 48: only ffn_down's rows (192) can be Q8_0, the rest F16
def test_gpt2_q8_0_types_values_and_logits(tmp_path, emb):
    tokenizer = CharTokenizer(CHAR_TEXT)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, emb_dim=emb, n_heads=4,
                               n_layers=2, drop_rate=0.0, qkv_bias=True, tie_weights=False)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.normal_(1.0 if name.endswith("scale") else 0.0, 0.1)
    path = export_gguf(model, tokenizer, tmp_path / "m.gguf", "q8_0")
    reader = gguf.GGUFReader(path)
    assert _reader_field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_Q8_0)

    ours = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    arrays = _dequantized(reader)
    for tensor in reader.tensors:
        expected = ours[_our_gpt2_name(tensor.name)]
        back = arrays[tensor.name]
        assert back.shape == expected.shape, tensor.name
        if expected.ndim == 1 or tensor.name == "position_embd.weight":  # norms, biases, positions: f32
            assert tensor.tensor_type.name == "F32" and np.array_equal(back, expected), tensor.name
        elif expected.shape[1] % 32:  # rows that do not split into blocks: f16
            assert tensor.tensor_type.name == "F16", tensor.name
            assert np.array_equal(back, expected.astype(np.float16).astype(np.float32))
        else:
            assert tensor.tensor_type.name == "Q8_0", tensor.name
            assert np.all(np.abs(back - expected) <= _block_bound(expected)), tensor.name
            assert not np.array_equal(back, expected)  # really rounded
    types = {t.tensor_type.name for t in reader.tensors}
    assert types == ({"F32", "Q8_0"} if emb == 64 else {"F32", "F16", "Q8_0"})

    rebuilt = GPTModel(model.cfg).eval()
    rebuilt.load_state_dict({_our_gpt2_name(n): torch.from_numpy(a.copy()) for n, a in arrays.items()}, strict=True)
    ids = torch.tensor([tokenizer.encode("the quick brown fox jumps")])
    with torch.no_grad():
        reference, quantized = model(ids), rebuilt(ids)
    _assert_q8_0_close(quantized, reference)


def _assert_q8_0_close(quantized: torch.Tensor, reference: torch.Tensor) -> None:
    """Logits of a Q8_0 model vs the float model's. A Q8_0 weight is off by ~0.5% rms of its
    block's spread (d / sqrt(12), d = max/127); over the ~10 matrices of these tiny models the
    logits move by ~1.5% of their norm (measured 0.4-1.6% over seeds): allowed 4%, and 15% of
    the logits' std for the largest single difference. Where the float model's top logit leads
    by more than twice that largest difference, the argmax cannot change."""
    difference = (quantized - reference).abs()
    assert (quantized - reference).norm() < 0.04 * reference.norm()
    assert difference.max() < 0.15 * reference.std()
    top2 = reference.topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 2 * difference.max()
    assert torch.equal(quantized.argmax(-1)[clear], reference.argmax(-1)[clear])


# --------------------------------------------------------------------------------------
# Llama family
# --------------------------------------------------------------------------------------

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
TRAINING_TEXT = ("The quick brown fox jumps over the lazy dog. It's 2024 and we've got 12345 ideas!\n"
                 "def add(a, b):\n    return a + b  # 42\n人工智能 Привет naïve café\n") * 10


@pytest.fixture(scope="module")
def hf_tokenizer():
    """A small byte-level BPE with SmolLM2's pre-tokenizer, as load_llama_gguf's own tests build one."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    byte_level = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Sequence(
        [tokenizers.pre_tokenizers.Digits(individual_digits=True), byte_level])
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TRAINING_TEXT], trainer=trainer)
    return HFBPETokenizer.from_tokenizer_json(json.loads(tok.to_str()), eos_token="<|im_end|>",
                                              bos_token="<|im_start|>", chat_template=TEMPLATE, name="tiny")


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights big enough for logits spread over a few units, norms away from 1 (so a mix-up of
    tensors shows). Much larger weights make a random network chaotic: tiny changes of a
    weight then flip later tokens, which would test the chaos rather than the export."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.uniform_(0.5, 1.5)
            else:
                param.normal_(0.0, 0.08)
    return model.eval()


def _same_config(loaded, exported) -> bool:
    """GGUF stores the norm's eps as float32 (1e-5 comes back as 9.99999975e-06); the rest exactly."""
    eps = float(np.float32(exported.rms_norm_eps))
    return loaded.rms_norm_eps == pytest.approx(eps, rel=1e-7) and \
        loaded.replace(rms_norm_eps=exported.rms_norm_eps) == exported


def tiny_llama(vocab_size: int, *, tie: bool = True) -> LlamaModel:
    return _randomize(LlamaModel(LlamaConfig(vocab_size=vocab_size, context_length=64, emb_dim=64, n_heads=4,
                                             n_kv_heads=2, n_layers=2, hidden_dim=96, rope_base=10000.0,
                                             rms_norm_eps=1e-5, tie_weights=tie)))


def llama_cpp_permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute, written out: (head, 2, d/2) -> (head, d/2, 2)."""
    return weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:]).swapaxes(1, 2) \
        .reshape(weight.shape)


def greedy(model, ids: list[int], steps: int) -> list[int]:
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


def test_permute_qk_rows_is_llama_cpps_and_the_loader_undoes_it():
    for heads in (1, 2, 4):
        w = np.random.default_rng(heads).standard_normal((heads * 8, 5)).astype(np.float32)
        assert np.array_equal(permute_qk_rows(w, heads), llama_cpp_permute(w, heads))
        assert torch.equal(unpermute_qk_rows(torch.from_numpy(permute_qk_rows(w, heads)), heads), torch.from_numpy(w))


@pytest.mark.parametrize("tie", [True, False])
def test_llama_f32_export_loads_back_exactly(tmp_path, hf_tokenizer, tie):
    model = tiny_llama(hf_tokenizer.vocab_size, tie=tie)
    path = export_gguf(model, hf_tokenizer, tmp_path / "llama.gguf", "f32")
    reader = gguf.GGUFReader(path)
    assert _reader_field(reader, "general.architecture") == "llama"
    assert _reader_field(reader, "llama.attention.head_count_kv") == 2
    assert _reader_field(reader, "llama.feed_forward_length") == 96
    assert _reader_field(reader, "tokenizer.ggml.pre") == "smollm"
    assert ("output.weight" in reader.fields or any(t.name == "output.weight" for t in reader.tensors)) == (not tie)
    # q and k went in with llama.cpp's row order, v as it is
    arrays = _dequantized(reader)
    q, k, v = np.split(model.trf_blocks[1].att.qkv.weight.detach().numpy(), [64, 96])  # 4x16, 2x16, 2x16
    assert np.array_equal(arrays["blk.1.attn_q.weight"], llama_cpp_permute(q, 4))
    assert np.array_equal(arrays["blk.1.attn_k.weight"], llama_cpp_permute(k, 2))
    assert np.array_equal(arrays["blk.1.attn_v.weight"], v)
    assert np.array_equal(arrays["blk.0.ffn_gate.weight"], model.trf_blocks[0].ff.fc1.weight.detach().numpy())

    back, tokenizer = load_llama_gguf(path)
    assert _same_config(back.cfg, model.cfg)
    ids = torch.randint(0, hf_tokenizer.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # fp32, same weights: equal up to summation order
        torch.testing.assert_close(back(ids), model(ids), atol=1e-5, rtol=0)
    text = "It's 2024: 人工智能  99 bottles <|im_end|>"
    assert tokenizer.encode(text, allowed_special="all") == hf_tokenizer.encode(text, allowed_special="all")
    assert tokenizer.token_to_id("<|im_end|>") == hf_tokenizer.token_to_id("<|im_end|>") == tokenizer.eot_id
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.bos_token == "<|im_start|>"
    assert tokenizer.chat_template == TEMPLATE


def test_llama_q8_0_export_is_close(tmp_path, hf_tokenizer):
    model = tiny_llama(hf_tokenizer.vocab_size, tie=False)
    path = export_gguf(model, hf_tokenizer, tmp_path / "llama-q8.gguf", "q8_0")
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.0.ffn_down.weight"] == types["output.weight"] == "Q8_0"
    assert types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"

    back, _ = load_llama_gguf(path)
    for name, param in model.state_dict().items():  # every matrix within its blocks' Q8_0 bound
        if param.ndim == 2:
            expected = param.numpy()
            assert np.all(np.abs(back.state_dict()[name].numpy() - expected) <= _block_bound(expected)), name
    ids = torch.randint(0, hf_tokenizer.vocab_size, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference, quantized = model(ids), back(ids)
    _assert_q8_0_close(quantized, reference)
    # A short greedy generation of the float model; the Q8_0 model, fed the same tokens, picks
    # the same next token at (nearly) every step. (Free-running, one early flip would change
    # every later token, so the comparison is made along one sequence.)
    prompt = hf_tokenizer.encode("The quick brown")
    generated = greedy(model, prompt, 16)
    with torch.no_grad():
        picks = back(torch.tensor([generated[:-1]]))[0, len(prompt) - 1:].argmax(-1).tolist()
    agree = sum(a == b for a, b in zip(picks, generated[len(prompt):]))
    assert agree >= 14, f"only {agree} of 16 greedy tokens agree"


def test_qwen3_export_has_qk_norms_and_unpermuted_rows(tmp_path, hf_tokenizer):
    from llm_from_scratch.weights.llama import GGUF_NAMES, TensorNames, model_from_state_dict

    model = _randomize(Qwen3Model(Qwen3Config(vocab_size=hf_tokenizer.vocab_size, context_length=64, emb_dim=64,
                                              n_heads=4, n_kv_heads=2, n_layers=2, hidden_dim=96, head_dim=32,
                                              tie_weights=False)))
    qwen_tokenizer = HFBPETokenizer.from_config({**hf_tokenizer.to_config(), "pre_tokenizer": "regex",
                                                 "pattern": QWEN2_PATTERN})
    reader = gguf.GGUFReader(export_gguf(model, qwen_tokenizer, tmp_path / "qwen3.gguf", "f32"))
    meta = {key: _reader_field(reader, key) for key in reader.fields if key.startswith("qwen3.")}
    assert _reader_field(reader, "general.architecture") == "qwen3"
    assert _reader_field(reader, "tokenizer.ggml.pre") == "qwen2"  # llama.cpp's name for Qwen's regex
    assert meta["qwen3.attention.key_length"] == meta["qwen3.attention.value_length"] == 32  # not 64 / 4
    cfg = Qwen3Config(vocab_size=meta["qwen3.vocab_size"], context_length=meta["qwen3.context_length"],
                      emb_dim=meta["qwen3.embedding_length"], n_heads=meta["qwen3.attention.head_count"],
                      n_kv_heads=meta["qwen3.attention.head_count_kv"], n_layers=meta["qwen3.block_count"],
                      hidden_dim=meta["qwen3.feed_forward_length"], head_dim=meta["qwen3.attention.key_length"],
                      rope_base=meta["qwen3.rope.freq_base"],
                      rms_norm_eps=meta["qwen3.attention.layer_norm_rms_epsilon"], tie_weights=False)
    assert _same_config(cfg, model.cfg)
    # Read back with the loader's GGUF names plus the QK-norms and *no* q/k permutation (qwen3 is
    # rotate-half in llama.cpp as in our model): the same model.
    arrays = _dequantized(reader)
    names = TensorNames(GGUF_NAMES.embedding, GGUF_NAMES.final_norm, GGUF_NAMES.head, GGUF_NAMES.block,
                        {**GGUF_NAMES.block_names, "attn_q_norm.weight": "att.q_norm.weight",
                         "attn_k_norm.weight": "att.k_norm.weight"}, GGUF_NAMES.qkv)
    assert set(arrays) == names.names(cfg, head=True)
    back = model_from_state_dict(cfg, names.state_dict(lambda n: torch.from_numpy(arrays[n].copy()), cfg))
    ids = torch.randint(0, cfg.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(back(ids), model(ids), atol=1e-5, rtol=0)


class FakeInt8Linear(torch.nn.Module):
    """What inference quantization leaves in place of an nn.Linear: int8 values and a scale, no float weight."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        scale = linear.weight.abs().amax(dim=1, keepdim=True) / 127
        self.register_buffer("q", torch.round(linear.weight / scale).to(torch.int8))
        self.register_buffer("scale", scale)

    def forward(self, x):
        return x @ (self.q.float() * self.scale).T


def test_quantized_models_and_unsupported_configs_are_refused(tmp_path, hf_tokenizer):
    llama = tiny_llama(hf_tokenizer.vocab_size)
    llama.trf_blocks[0].ff.fc2 = FakeInt8Linear(llama.trf_blocks[0].ff.fc2)
    with pytest.raises(ExportError, match=r"trf_blocks\.0\.ff\.fc2 \(FakeInt8Linear\) holds q: int8.*float model"):
        export_gguf(llama, hf_tokenizer, tmp_path / "a.gguf", "q8_0")
    gpt = GPTModel(GPTConfig(vocab_size=hf_tokenizer.vocab_size, context_length=16, emb_dim=32, n_heads=4,
                             n_layers=1, drop_rate=0.0))
    gpt.trf_blocks[0].att.qkv = FakeInt8Linear(gpt.trf_blocks[0].att.qkv)
    with pytest.raises(ExportError, match="quantized for inference"):
        export_gguf(gpt, hf_tokenizer, tmp_path / "b.gguf")
    hollow = tiny_llama(hf_tokenizer.vocab_size)
    hollow.trf_blocks[1].att.out_proj = torch.nn.Identity()  # a replaced layer with no tensors at all
    with pytest.raises(ExportError, match=r"lacks the float weights.*out_proj.*float model"):
        export_gguf(hollow, hf_tokenizer, tmp_path / "c.gguf")

    from llm_from_scratch.finetune.lora import apply_lora, merge_lora
    adapted = apply_lora(tiny_llama(hf_tokenizer.vocab_size), rank=2, alpha=2.0)
    with pytest.raises(ExportError, match="LoRA adapters, merge them"):
        export_gguf(adapted, hf_tokenizer, tmp_path / "lora.gguf")
    export_gguf(merge_lora(adapted), hf_tokenizer, tmp_path / "merged.gguf")  # merged: fine
    (tmp_path / "merged.gguf").unlink()

    qk_norm_llama = LlamaModel(LlamaConfig(vocab_size=hf_tokenizer.vocab_size, context_length=16, emb_dim=32,
                                           n_heads=4, n_kv_heads=2, n_layers=1, hidden_dim=64, qk_norm=True))
    with pytest.raises(ExportError, match="no QK-norm"):
        export_gguf(qk_norm_llama, hf_tokenizer, tmp_path / "d.gguf")
    windowed = LlamaModel(LlamaConfig(vocab_size=hf_tokenizer.vocab_size, context_length=16, emb_dim=32,
                                      n_heads=4, n_kv_heads=2, n_layers=1, hidden_dim=64, sliding_window=8))
    with pytest.raises(ExportError, match="sliding window"):
        export_gguf(windowed, hf_tokenizer, tmp_path / "e.gguf")
    odd = HFBPETokenizer.from_config({**hf_tokenizer.to_config(), "pre_tokenizer": "regex", "pattern": r"\S+|\s+"})
    with pytest.raises(ExportError, match="no built-in pre-tokenizer.*llama_cpp_pre"):
        export_gguf(tiny_llama(odd.vocab_size), odd, tmp_path / "odd.gguf")
    export_gguf(tiny_llama(odd.vocab_size), odd, tmp_path / "odd.gguf", llama_cpp_pre="gpt-2")
    (tmp_path / "odd.gguf").unlink()
    with pytest.raises(ExportError, match="LlamaModel and Qwen3Model"):
        export_gguf(torch.nn.Linear(2, 2), hf_tokenizer, tmp_path / "f.gguf")
    with pytest.raises(ExportError, match="unsupported GGUF dtype 'q4_0'.*q8_0"):
        export_gguf(tiny_llama(hf_tokenizer.vocab_size), hf_tokenizer, tmp_path / "g.gguf", "q4_0")
    assert not list(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------


def test_cli_exports_a_llama_micro_checkpoint_as_q8_0(tmp_path, capsys, hf_tokenizer):
    from llm_from_scratch.model import create_model
    from llm_from_scratch.training.checkpoint import save_checkpoint

    model = _randomize(create_model("llama-micro", vocab_size=hf_tokenizer.vocab_size, context_length=64))
    ckpt = save_checkpoint(tmp_path / "best_model.pt", {"model": model.state_dict(),
                                                        "model_config": model.cfg.to_dict(),
                                                        "tokenizer": hf_tokenizer.to_config()})
    out = tmp_path / "x.gguf"
    code, stdout, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "gguf",
                                 "--dtype", "q8_0", "--out", str(out))
    assert code == 0, err
    assert "q8_0" in stdout and str(out) in stdout
    back, _ = load_llama_gguf(out)
    assert _same_config(back.cfg, model.cfg)
    ids = torch.tensor([hf_tokenizer.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():  # Q8_0 rounding only: the tolerances of _assert_q8_0_close
        _assert_q8_0_close(back(ids), model(ids))

    code, _, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "gguf", "--dtype", "q8_0",
                            "--out", str(out))
    assert code == 2 and "exists: pass --overwrite" in err
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "hf", "--dtype", "q8_0",
                            "--out", str(tmp_path / "hf"))
    assert code == 2 and "--dtype applies to --format gguf only" in err
    code, _, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "gguf", "--dtype", "q4_0",
                            "--out", str(tmp_path / "y.gguf"))
    assert code == 2 and "invalid choice: 'q4_0'" in err
    assert not (tmp_path / "hf").exists() and not (tmp_path / "y.gguf").exists()


def test_cli_offers_the_dtypes_the_export_writes():
    from llm_from_scratch.cli.export import GGUF_DTYPES as CLI_DTYPES
    from llm_from_scratch.export.gguf_export import GGUF_DTYPES

    assert CLI_DTYPES == GGUF_DTYPES
