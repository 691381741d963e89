"""Loading a model without extra copies: the same tensors as before, with far less memory on the way.

What the loaders promise (weights/skeleton.py, weights/llama.py, quantize/model.py), checked on a
tiny random Llama written here as a GGUF file (F32 or Q8_0/Q4_1 matrices, a byte-level vocabulary):

* a GGUF file loaded quantized, one matrix at a time, gives exactly the tensors of the same file
  loaded all at once and then built into quantized layers; and, for float matrices, exactly
  the tensors of `quantize_model` applied to the float model;
* while it loads, each matrix read from the file is freed before the next one is read, and no
  float tensor bigger than a few matrices' slices ever exists (never the float model);
* a model skeleton has no memory, no random initialization, and does not import PyTorch's
  compiler (`torch._dynamo`, +75 MB resident) the way ``nn.Embedding`` on the meta device does;
* the tokenizer keeps no merge table it does not use, and no second copy of its token strings.

No timings or resident-memory thresholds here: those figures are in benchmarks and docs.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode

gguf = pytest.importorskip("gguf")

from llm_from_scratch.model.llama import LlamaConfig  # noqa: E402
from llm_from_scratch.model.registry import model_from_config  # noqa: E402
from llm_from_scratch.quantize import Int4Linear, Int8Linear, quantize_model, quantized_model_from_state  # noqa: E402
from llm_from_scratch.quantize.gguf_blocks import GroupValues, read_blocks  # noqa: E402
from llm_from_scratch.quantize.int8 import quantize_per_channel  # noqa: E402
from llm_from_scratch.tokenizers.hf_bpe import BYTE_TO_UNICODE  # noqa: E402
from llm_from_scratch.weights.gguf_file import GGUFFile  # noqa: E402
from llm_from_scratch.weights.llama import (gguf_readers, llama_config_from_gguf, load_llama_gguf,  # noqa: E402
                                            state_dict_from_gguf)
from llm_from_scratch.weights.skeleton import model_skeleton, on_meta_without_init  # noqa: E402

Q = gguf.GGMLQuantizationType

# A byte-level BPE vocabulary: the 256 bytes, three merges, three special tokens.
MERGES = ["Ġ t", "h e", "Ġt he"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TOKENS = [BYTE_TO_UNICODE[b] for b in range(256)] + [m.replace(" ", "") for m in MERGES] + SPECIALS

# emb 64, 4 heads of 16, 2 key/value heads, feed-forward 96: every matrix fits the int4 kernel
CFG = LlamaConfig(vocab_size=len(TOKENS), context_length=32, emb_dim=64, n_heads=4, n_kv_heads=2, n_layers=6,
                  hidden_dim=96, rope_base=10000.0, tie_weights=True)


def write_gguf(path, *, matrix_type=None, tied: bool = True, seed: int = 0) -> None:
    """A random llama GGUF of shape `CFG`: the embedding (and an untied head) as Q8_0, the blocks'
    matrices as `matrix_type` (None: F32), the norms as F32."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(CFG.context_length)
    writer.add_embedding_length(CFG.emb_dim)
    writer.add_block_count(CFG.n_layers)
    writer.add_feed_forward_length(CFG.hidden_dim)
    writer.add_head_count(CFG.n_heads)
    writer.add_head_count_kv(CFG.n_kv_heads)
    writer.add_rope_freq_base(CFG.rope_base)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(TOKENS)
    writer.add_token_types([3 if token in SPECIALS else 1 for token in TOKENS])
    writer.add_token_merges(MERGES)
    writer.add_eos_token_id(TOKENS.index("<|im_end|>"))

    def add(name: str, shape: tuple[int, ...], qtype=None) -> None:
        values = (rng.uniform(0.5, 1.5, shape) if len(shape) == 1 else rng.normal(0.0, 0.1, shape)).astype(np.float32)
        if qtype is None:
            writer.add_tensor(name, values)
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)

    emb, hidden, kv = CFG.emb_dim, CFG.hidden_dim, CFG.n_kv_heads * CFG.head_dim
    add("token_embd.weight", (CFG.vocab_size, emb), Q.Q8_0)
    add("output_norm.weight", (emb,))
    if not tied:
        add("output.weight", (CFG.vocab_size, emb), Q.Q8_0)
    for layer in range(CFG.n_layers):
        for name, shape in [("attn_q", (emb, emb)), ("attn_k", (kv, emb)), ("attn_v", (kv, emb)),
                            ("attn_output", (emb, emb)), ("ffn_gate", (hidden, emb)), ("ffn_up", (hidden, emb)),
                            ("ffn_down", (emb, hidden))]:
            add(f"blk.{layer}.{name}.weight", shape, matrix_type)
        add(f"blk.{layer}.attn_norm.weight", (emb,))
        add(f"blk.{layer}.ffn_norm.weight", (emb,))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def config_of(gguf_file: GGUFFile) -> LlamaConfig:
    return llama_config_from_gguf(gguf_file.metadata, vocab_size=gguf_file.tensor_infos["token_embd.weight"].shape[0],
                                  tie_weights="output.weight" not in gguf_file.tensor_infos)


def eager_quantized_load(path, mode: str):
    """The loading as it was: every matrix read from the file first, then the layers built."""
    with GGUFFile(path) as gguf_file:
        cfg = config_of(gguf_file)
        return quantized_model_from_state(cfg, state_dict_from_gguf(gguf_file, cfg, keep_blocks=True), mode)


def assert_same_tensors(model: nn.Module, reference: nn.Module) -> None:
    state, expected = model.state_dict(), reference.state_dict()
    assert list(state) == list(expected)
    for name, tensor in expected.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name
    for (name, buffer), (_, expected_buffer) in zip(model.named_buffers(), reference.named_buffers()):
        assert torch.equal(buffer, expected_buffer), name  # RoPE tables too (not in the state dict)


def greedy_tokens(model: nn.Module, steps: int = 8) -> list[int]:
    ids = [TOKENS.index("<|im_start|>"), 70, 101, 256]
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids


# --------------------------------------------------------------------------------------
# Same tensors, bit for bit
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode,matrix_type", [("int8", Q.Q4_1), ("int4", Q.Q4_1), ("int8", Q.Q8_0),
                                              ("int4", Q.Q8_0)])
@pytest.mark.parametrize("tied", [True, False])
def test_layer_by_layer_gguf_load_equals_the_all_at_once_load(tmp_path, mode, matrix_type, tied):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, matrix_type=matrix_type, tied=tied)
    model, tokenizer = load_llama_gguf(path, quantize=mode)
    reference = eager_quantized_load(path, mode)
    assert isinstance(model.trf_blocks[0].ff.fc1, Int4Linear if mode == "int4" and matrix_type == Q.Q4_1 else Int8Linear)
    assert_same_tensors(model, reference)
    assert greedy_tokens(model) == greedy_tokens(reference)
    assert tokenizer.encode(" the") == [TOKENS.index("Ġthe")]


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("tied", [True, False])
def test_quantized_load_of_float_matrices_equals_quantizing_the_float_model(tmp_path, mode, tied):
    path = tmp_path / "float.gguf"
    write_gguf(path, matrix_type=None, tied=tied)
    model, _ = load_llama_gguf(path, quantize=mode)
    float_model, _ = load_llama_gguf(path)
    reference = quantize_model(float_model, mode)
    assert_same_tensors(model, reference)
    assert greedy_tokens(model) == greedy_tokens(reference)


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_1"])
def test_int8_from_blocks_does_not_depend_on_the_slicing(kind):
    weight = np.random.default_rng(1).normal(size=(37, 96)).astype(np.float32)
    values = read_blocks(gguf.quants.quantize(weight, getattr(Q, kind)), kind, 96)
    whole_q, whole_scale = quantize_per_channel(values.dequantize())
    for rows_per_slice in (None, 1, 5, 37, 1000):
        q, scale = values.to_int8(rows_per_slice)
        assert torch.equal(q, whole_q) and torch.equal(scale, whole_scale)


def test_quantize_model_still_quantizes_a_float_model_in_place():
    model = model_from_config(CFG).eval()
    embedding = model.tok_emb.weight.detach().clone()
    quantize_model(model, "int8")
    assert model.out_head.q is model.tok_emb.q  # a tied head reads the embedding's table
    assert torch.equal(model.tok_emb.q, quantize_per_channel(embedding)[0])


# --------------------------------------------------------------------------------------
# One matrix at a time, never the float model
# --------------------------------------------------------------------------------------


class FloatTensorWatcher(TorchDispatchMode):
    """Records the most float values alive at once in CPU tensors that PyTorch operations make
    (tensors sharing a storage counted once)."""

    def __init__(self):
        super().__init__()
        self.alive: list[weakref.ref] = []
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return self.record(func(*args, **(kwargs or {})))

    def record(self, out):
        for tensor in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.device.type == "cpu":
                self.alive.append(weakref.ref(tensor))
        self.alive = [ref for ref in self.alive if ref() is not None]
        storages = {ref().untyped_storage().data_ptr(): ref().untyped_storage().nbytes() // ref().element_size()
                    for ref in self.alive if ref() is not None}
        self.peak = max(self.peak, sum(storages.values()))
        return out


def test_quantized_gguf_load_never_holds_more_than_a_few_float_slices(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, matrix_type=Q.Q4_1)
    float_model_size = sum(p.numel() for p in model_from_config(CFG).parameters())
    largest_matrix = CFG.vocab_size * CFG.emb_dim
    watcher = FloatTensorWatcher()
    dequantize = GGUFFile.tensor  # (made with NumPy, which the dispatch mode does not see)
    monkeypatch.setattr(GGUFFile, "tensor", lambda self, *args, **kwargs: watcher.record(dequantize(self, *args, **kwargs)))
    with watcher:
        model, _ = load_llama_gguf(path, quantize="int8")
    rope_tables = 2 * CFG.context_length * CFG.head_dim  # (made once the layers are built)
    # a matrix's float values, and the quantization's temporaries of the same size (|w|, w / scale, round)
    assert watcher.peak <= 4 * largest_matrix + rope_tables < float_model_size / 2
    assert not any(p.is_floating_point() and p.numel() > CFG.emb_dim for p in model.parameters())


def test_each_matrix_is_freed_before_the_next_is_read(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path, matrix_type=Q.Q4_1)
    read_so_far: list[tuple[str, weakref.ref]] = []
    still_alive_at_a_read: list[str] = []

    def watched(name, read):
        def read_and_record():
            gc.collect()
            still_alive_at_a_read.extend(f"{earlier}, when {name} is read" for earlier, ref in read_so_far
                                         if ref() is not None)
            value = read()
            if isinstance(value, GroupValues):
                read_so_far.append((name, weakref.ref(value)))
            return value
        return read_and_record

    with GGUFFile(path) as gguf_file:
        cfg = config_of(gguf_file)
        readers = {name: watched(name, read) for name, read in gguf_readers(gguf_file, cfg, keep_blocks=True).items()}
        model = quantized_model_from_state(cfg, readers, "int4")
    assert not readers  # consumed
    assert len(read_so_far) == 1 + 5 * CFG.n_layers  # the embedding, then qkv, out_proj, fc1..fc3 of each block
    assert still_alive_at_a_read == []
    assert isinstance(model.trf_blocks[-1].ff.fc3, Int4Linear)


# --------------------------------------------------------------------------------------
# The skeleton
# --------------------------------------------------------------------------------------


def test_model_skeleton_has_the_models_shapes_and_no_memory():
    skeleton, model = model_skeleton(CFG), model_from_config(CFG)
    assert [(n, p.shape, p.dtype) for n, p in skeleton.named_parameters()] == \
        [(n, p.shape, p.dtype) for n, p in model.named_parameters()]
    assert all(t.is_meta for t in [*skeleton.parameters(), *skeleton.buffers()])
    assert skeleton.out_head.weight is skeleton.tok_emb.weight


def test_initializers_still_run_on_real_tensors_inside_the_skeleton_context():
    with on_meta_without_init():
        meta = torch.empty(3)
        real = torch.empty(3, device="cpu")
        nn.init.ones_(real)
        nn.init.normal_(meta)
    assert meta.is_meta and torch.equal(real, torch.ones(3))


def test_building_a_skeleton_does_not_import_the_compiler():
    code = ("import sys, torch\n"
            "from llm_from_scratch.model.llama import LlamaConfig, LLAMA_PRESETS\n"
            "from llm_from_scratch.weights.skeleton import model_skeleton\n"
            "model_skeleton(LlamaConfig(**LLAMA_PRESETS['smollm2-135m']))\n"
            "print('torch._dynamo' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# --------------------------------------------------------------------------------------
# The tokenizer and the file's metadata
# --------------------------------------------------------------------------------------


def test_tokenizer_shares_its_strings_and_makes_the_merge_table_only_when_used(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    _, tokenizer = load_llama_gguf(path)
    assert tokenizer.engine == "tiktoken"
    assert tokenizer.encode(" the he") == [TOKENS.index("Ġthe"), TOKENS.index("Ġ"), TOKENS.index("he")]
    assert "_merge_ranks" not in vars(tokenizer)  # tiktoken encoded it: no merge table was made
    by_text = {token: token for token in tokenizer.tokens}
    assert all(left is by_text[left] and right is by_text[right] for left, right in tokenizer.merges)
    assert tokenizer.encode_with_merges(" the he") == tokenizer.encode(" the he")  # made on first use
    assert tokenizer._merge_ranks == {("Ġ", "t"): 0, ("h", "e"): 1, ("Ġt", "he"): 2}


def test_gguf_file_forgets_metadata_by_prefix(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_gguf(path)
    with GGUFFile(path) as gguf_file:
        assert len(gguf_file.metadata["tokenizer.ggml.tokens"]) == len(TOKENS)
        gguf_file.forget_metadata("tokenizer.ggml.")
        assert not any(key.startswith("tokenizer.ggml.") for key in gguf_file.metadata)
        assert gguf_file.metadata["llama.block_count"] == CFG.n_layers
        assert gguf_file.tensor("output_norm.weight").shape == (CFG.emb_dim,)  # the tensors are still there
