"""Exporting a `GPTModel` and its tokenizer as a Hugging Face `transformers` directory.

Our model *is* GPT-2's architecture (pre-norm blocks, learned positions, tanh-GELU, LayerNorm
with eps 1e-5), so it can be written as a `GPT2LMHeadModel` that anyone loads with::

    AutoModelForCausalLM.from_pretrained(out_dir)
    AutoTokenizer.from_pretrained(out_dir)

A Hugging Face model directory holds:

* ``config.json``: the architecture (``model_type: gpt2``, sizes, dropout, special ids);
* ``model.safetensors``: the weights, named and shaped like `transformers`' GPT-2
  (see :mod:`llm_from_scratch.model.hf_gpt2` for the Conv1D transposes). A tied output
  head is stored once: only ``transformer.wte.weight``, ``tie_word_embeddings: true`` says
  that ``lm_head`` reuses it;
* ``generation_config.json``: the defaults ``generate()`` uses (bos/eos ids);
* ``tokenizer.json`` + ``tokenizer_config.json``: the tokenizer, as a `tokenizers` pipeline.

**Tokenizers: from ranks to merges.** tiktoken-style byte-level BPE (GPT-2, cl100k_base,
o200k_base, our own :class:`~llm_from_scratch.tokenizers.BPETokenizer`) stores only *ranks*:
``{token bytes: id}``. Hugging Face's BPE model wants the *merges*: which two tokens were
joined to make each token. They can be recovered: encode a token's bytes with BPE using only
the tokens of lower rank; the process must stop at exactly two pieces, and those are the
pair it was merged from (it could not have been merged from anything made later). Tokens
are bytes, not always text, so both formats spell each byte as one printable character
(GPT-2's "byte-level" alphabet: printable ASCII stays itself, the space becomes ``Ġ``, the
newline ``Ċ``; see `tokenizers.hf_bpe.bytes_to_unicode`). The pre-split regex goes into a
``Split`` pre-tokenizer and the byte spelling into a ``ByteLevel`` step, so the exported
tokenizer gives the same ids as tiktoken.

The character tokenizer becomes a ``WordLevel`` model over single characters with a split
after every character. A character outside its vocabulary is an error in both worlds
(`tokenizers` says ``Missing [UNK] token from the vocabulary``).

**Compact vocabularies.** A model trained with a `CompactTokenizer` (only the ids its corpus
used, plus one reserved id) is written over the tokenizer's full vocabulary, with the full
tokenizer: `full_vocabulary` expands it (`model.compact_vocab`), so every id other tools can
send has a row and the next-token choices stay the model's.

The functions here need `tokenizers` and `transformers` (only to write the tokenizer's
config); :mod:`llm_from_scratch.export.gguf_export` reuses the vocabulary conversion.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from llm_from_scratch.io.atomic import atomic_path, write_json_atomically
from llm_from_scratch.io.checkpoints import is_tied, unwrap_model
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.model.hf_gpt2 import gpt2_state_keys, state_dict_to_hf
from llm_from_scratch.model.layers import GELU, LayerNorm
from llm_from_scratch.tokenizers.base import ENDOFTEXT, Tokenizer
from llm_from_scratch.tokenizers.hf_bpe import BYTE_TO_UNICODE, bytes_to_unicode

__all__ = ["ExportError", "ExportVocab", "export_hf", "export_checkpoint_hf", "exportable_gpt", "export_vocab",
           "build_hf_tokenizer", "save_hf_tokenizer", "hf_config", "hf_state_dict", "full_state_dict",
           "full_vocabulary", "merges_from_ranks", "byte_level", "bytes_to_unicode", "is_tied", "onig_pattern"]

#: What a HF export writes (other files in the folder are left alone).
HF_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json")


class ExportError(ValueError):
    """The model, tokenizer or output path cannot be exported as asked; the message says why and what to do."""


# --------------------------------------------------------------------------------------
# Which models can be exported
# --------------------------------------------------------------------------------------


def exportable_gpt(model: nn.Module) -> GPTModel:
    """The plain `GPTModel` inside ``model`` (compiled or DDP-wrapped is fine), checked.

    Raises ExportError for anything that is not GPT-2's architecture: another class, a
    LayerNorm eps other than 1e-5, extra weights (e.g. LoRA adapters that were not merged).
    """
    model = unwrap_model(model)
    if not isinstance(model, GPTModel):
        raise ExportError(
            f"only GPTModel (GPT-2's architecture) can be exported, got {type(model).__name__}. "
            "Other architectures have no GPT-2 layout in transformers or llama.cpp."
        )
    changed = model.cfg.changed_switches() if hasattr(model.cfg, "changed_switches") else {}
    if changed:
        raise ExportError(
            f"this GPT model is not GPT-2's architecture: it sets {changed} (e.g. trained with --recipe modern). "
            "GPT-2's layout in transformers and llama.cpp has none of these, so it cannot be exported; "
            "generate, chat and serve it with llmfs, or train with --recipe book to export.")
    for name, module in model.named_modules():
        if isinstance(module, LayerNorm) and module.eps != 1e-5:
            raise ExportError(f"{name} uses LayerNorm eps={module.eps}; GPT-2 (and the export) needs 1e-5")
        if isinstance(module, nn.LayerNorm) and module.eps != 1e-5:
            raise ExportError(f"{name} uses LayerNorm eps={module.eps}; GPT-2 (and the export) needs 1e-5")
    for i, block in enumerate(model.trf_blocks):
        if not isinstance(block.ff.layers[1], GELU):
            raise ExportError(f"block {i} uses {type(block.ff.layers[1]).__name__}, not GPT-2's tanh GELU")
    unexpected = sorted(set(model.state_dict()) - set(gpt2_state_keys(model.cfg)))
    if unexpected:
        raise ExportError(
            f"the model has weights GPT-2 does not have, e.g. {unexpected[:3]}. If these are LoRA "
            "adapters, merge them into the base weights first; other additions cannot be exported."
        )
    return model


def full_vocabulary(model: nn.Module, tokenizer: Tokenizer) -> tuple[nn.Module, Tokenizer]:
    """(model, tokenizer) as other tools need them: a compact-vocabulary model (`CompactTokenizer`)
    becomes a full-vocabulary copy with the full tokenizer (`model.compact_vocab`); anything else
    is returned as it is."""
    from llm_from_scratch.model.compact_vocab import expand_to_full_vocabulary, is_compact

    if not is_compact(tokenizer):
        return model, tokenizer
    try:
        return expand_to_full_vocabulary(model, tokenizer)
    except ValueError as error:
        raise ExportError(str(error)) from error


def full_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """Our state dict with GPT-2's always-present qkv bias filled in (zeros) when the model has none.

    GPT-2 (and llama.cpp's loader) always has a bias on the query/key/value projection; a
    model trained without one computes exactly what a zero bias computes.
    """
    state = {k: v.detach() for k, v in model.state_dict().items()}
    for i, block in enumerate(model.trf_blocks):
        key = f"trf_blocks.{i}.att.qkv.bias"
        if key not in state:
            weight = block.att.qkv.weight
            state[key] = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return state


# --------------------------------------------------------------------------------------
# Byte-level BPE: ranks -> merges, bytes -> printable characters
# --------------------------------------------------------------------------------------


def byte_level(token: bytes) -> str:
    """A token's bytes in GPT-2's byte-level spelling: ``b" hello"`` -> ``"Ġhello"``.

    The table is `tokenizers.hf_bpe`'s `bytes_to_unicode`: printable Latin-1 bytes stand for
    themselves, the other 68 get the characters from U+0100 upward (the space becomes U+0120).
    """
    return "".join(BYTE_TO_UNICODE[byte] for byte in token)


def _bpe_below_rank(token: bytes, ranks: Mapping[bytes, int], max_rank: int) -> list[bytes]:
    """BPE-encode ``token`` using only tokens with rank < ``max_rank`` (leftmost lowest rank first)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best_rank, best_index = max_rank, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < best_rank:
                best_rank, best_index = rank, i
        if best_index < 0:
            break
        parts[best_index:best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    return parts


# ranks dicts of the big tiktoken vocabularies live as long as the process (tiktoken caches
# them), so their merges are computed once per process; the dict itself is kept as the key's owner.
_MERGES_CACHE: dict[int, tuple[Mapping[bytes, int], list[tuple[bytes, bytes]]]] = {}


def merges_from_ranks(ranks: Mapping[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merges that built a byte-level BPE vocabulary, in rank order, recovered from its ranks.

    ``merges[k]`` is the pair of tokens whose concatenation is the k-th multi-byte token
    (by rank). Raises ExportError if the ranks are not a byte-level BPE vocabulary (a
    byte missing, or a token that is not the merge of two earlier tokens).
    """
    cached = _MERGES_CACHE.get(id(ranks))
    if cached is not None and cached[0] is ranks:
        return cached[1]
    missing = [byte for byte in range(256) if bytes([byte]) not in ranks]
    if missing:
        raise ExportError(
            f"not a byte-level BPE vocabulary: {len(missing)} single bytes have no token (e.g. {missing[:5]})"
        )
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = _bpe_below_rank(token, ranks, rank)
        if len(parts) != 2:
            raise ExportError(
                f"token {rank} ({token!r}) is not the merge of two tokens of lower rank, so the "
                "vocabulary has no BPE merge list: it cannot be exported as a BPE tokenizer"
            )
        merges.append((parts[0], parts[1]))
    if len(ranks) > 10_000:
        _MERGES_CACHE[id(ranks)] = (ranks, merges)
    return merges


# --------------------------------------------------------------------------------------
# Our tokenizers -> one neutral description
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportVocab:
    """A tokenizer described the way HF and GGUF both need it.

    ``kind`` is ``"byte_bpe"`` (tokens spelled byte-level, merges, a pre-split regex) or
    ``"char"`` (one token per character, spelled as itself). ``tokens`` maps every id the
    tokenizer uses to its string; ids need not be contiguous (cl100k_base has holes).
    """

    kind: str
    tokens: dict[int, str]
    special_tokens: dict[str, int]
    merges: list[tuple[str, str]] = field(default_factory=list)
    pattern: str | None = None
    eot_id: int | None = None
    name: str = ""

    @property
    def size(self) -> int:
        """Largest id + 1: the smallest embedding table that fits the tokenizer."""
        return max(self.tokens) + 1


def export_vocab(tokenizer: Tokenizer) -> ExportVocab:
    """Describe one of our tokenizers for export; ExportError for kinds that cannot be exported."""
    from llm_from_scratch.tokenizers.bpe import BPETokenizer
    from llm_from_scratch.tokenizers.char import CharTokenizer
    from llm_from_scratch.tokenizers.compact import CompactTokenizer
    from llm_from_scratch.tokenizers.tiktoken_bpe import TiktokenTokenizer

    if isinstance(tokenizer, CompactTokenizer):
        raise ExportError(
            "a CompactTokenizer's ids are its model's own numbering, which no other tool knows: export the "
            "model with export_hf / export_gguf (they expand it to the full vocabulary), or describe "
            "tokenizer.base, the full tokenizer"
        )
    if isinstance(tokenizer, TiktokenTokenizer):
        encoding = tokenizer.encoding
        ranks, pattern, specials = encoding._mergeable_ranks, encoding._pat_str, dict(encoding._special_tokens)
    elif isinstance(tokenizer, BPETokenizer):
        ranks, pattern, specials = tokenizer.ranks, tokenizer.pattern, dict(tokenizer.special_tokens)
    elif isinstance(tokenizer, CharTokenizer):
        return ExportVocab(kind="char", tokens=dict(enumerate(tokenizer.chars)), special_tokens={},
                           eot_id=None, name=tokenizer.name)
    else:
        raise ExportError(
            f"cannot export a {type(tokenizer).__name__} tokenizer: supported are tiktoken vocabularies "
            "(gpt2, cl100k_base, o200k_base, ranks files), BPETokenizer and CharTokenizer. Word-level "
            "teaching tokenizers lose whitespace and have no standard equivalent; retrain with one of those."
        )
    tokens = {rank: byte_level(token) for token, rank in ranks.items()}
    for special, special_id in specials.items():
        if special_id in tokens:
            raise ExportError(f"special token {special!r} has id {special_id}, which an ordinary token also has")
        if special in tokens.values():
            raise ExportError(f"special token {special!r} is spelled like an ordinary token")
        tokens[special_id] = special
    merges = [(byte_level(a), byte_level(b)) for a, b in merges_from_ranks(ranks)]
    return ExportVocab(kind="byte_bpe", tokens=tokens, special_tokens=specials, merges=merges,
                       pattern=pattern, eot_id=specials.get(ENDOFTEXT), name=tokenizer.name)


# `tokenizers` uses the Oniguruma regex engine (Ruby syntax), where ``X{1,3}+`` means "one or
# more runs of 1-3 X", not Python/tiktoken's possessive "1-3 X, no backtracking". Dropping the
# possessive ``+`` after a counted repeat keeps the meaning for tiktoken's patterns (each such
# repeat ends an alternative, so backtracking into it never changes the match).
_POSSESSIVE_COUNTED = re.compile(r"(\{\d+(?:,\d*)?\})\+")


def onig_pattern(pattern: str) -> str:
    """tiktoken's regex rewritten for `tokenizers` (Oniguruma): see the comment above."""
    return _POSSESSIVE_COUNTED.sub(r"\1", pattern)


# --------------------------------------------------------------------------------------
# The tokenizer files
# --------------------------------------------------------------------------------------


def build_hf_tokenizer(tokenizer: Tokenizer):
    """A `tokenizers.Tokenizer` that gives the same ids as ``tokenizer`` (with all specials allowed)."""
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
    from tokenizers import Tokenizer as HFTokenizer

    vocab = export_vocab(tokenizer)
    if vocab.kind == "char":
        hf = HFTokenizer(models.WordLevel({token: i for i, token in vocab.tokens.items()}, unk_token="[UNK]"))
        # one piece per character; [\s\S] also matches newlines, which "." would not
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        hf.decoder = decoders.Fuse()  # join the characters with nothing in between
        return hf
    hf = HFTokenizer(models.BPE(
        vocab={token: i for i, token in vocab.tokens.items()},
        merges=vocab.merges,
        ignore_merges=True,  # like tiktoken: a chunk that is a whole token is taken as is
        fuse_unk=False,
        byte_fallback=False,
    ))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(onig_pattern(vocab.pattern)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    hf.add_special_tokens([AddedToken(s, special=True, normalized=False)
                           for s, _ in sorted(vocab.special_tokens.items(), key=lambda item: item[1])])
    return hf


def save_hf_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, model_max_length: int | None = None) -> None:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` for ``AutoTokenizer.from_pretrained``."""
    transformers = _import_transformers()
    out_dir = Path(out_dir)
    hf = build_hf_tokenizer(tokenizer)
    eot = ENDOFTEXT if tokenizer.eot_id is not None else None
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf, bos_token=eot, eos_token=eot,
        model_max_length=model_max_length or int(1e30), clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(str(out_dir))
    # transformers 5 names the class "TokenizersBackend", which 4.x does not know, and
    # without a class AutoTokenizer would pick GPT2Tokenizer from config.json and rebuild
    # the pipeline with GPT-2's regex. "PreTrainedTokenizerFast" means "use tokenizer.json
    # as it is" in both versions.
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    write_json_atomically(config_path, config)


# --------------------------------------------------------------------------------------
# The model files
# --------------------------------------------------------------------------------------


def hf_config(cfg: GPTConfig, tokenizer: Tokenizer | None, tied: bool, dtype: torch.dtype) -> dict[str, Any]:
    """``config.json`` for GPT2LMHeadModel with our sizes (GPT2Config's field names)."""
    eot = tokenizer.eot_id if tokenizer is not None else None
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,  # older name, still read by llama.cpp's converter
        "n_embd": cfg.emb_dim,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": None,  # 4 * n_embd
        "activation_function": "gelu_new",  # GELU, tanh approximation (ours)
        "layer_norm_epsilon": 1e-5,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": tied,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
    }


def hf_state_dict(model: GPTModel) -> dict[str, torch.Tensor]:
    """The weights under `transformers`' GPT-2 names, tied head stored once, contiguous, on CPU."""
    hf = state_dict_to_hf(full_state_dict(model))
    if is_tied(model):
        hf.pop("lm_head.weight")  # transformers re-ties it to transformer.wte.weight
    return {name: tensor.detach().to("cpu").contiguous() for name, tensor in hf.items()}


def export_hf(model: nn.Module, tokenizer: Tokenizer, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` + ``tokenizer`` as a Hugging Face directory: GPT2LMHeadModel, or
    LlamaForCausalLM / Qwen3ForCausalLM for those families (names and config from `hf_llama`);
    returns ``out_dir``.

    A model with a compact vocabulary (``tokenizer`` a `CompactTokenizer`) is written over the
    full vocabulary with the full tokenizer (`full_vocabulary`).

    Refuses (ExportError) another architecture, a tokenizer that cannot be converted or that
    needs more ids than the model has, and an existing non-empty ``out_dir`` unless
    ``overwrite=True`` (then the export's files are replaced, other files stay).
    """
    from safetensors.torch import save_file

    from llm_from_scratch.model.llama import LlamaModel

    out_dir = Path(out_dir)
    check_output_dir(out_dir, overwrite)
    inner = unwrap_model(model)
    if not isinstance(inner, LlamaModel):
        inner = exportable_gpt(inner)  # refused before any copying
    inner, tokenizer = full_vocabulary(inner, tokenizer)
    if isinstance(inner, LlamaModel):  # Llama and Qwen3: names and config.json from hf_llama.py
        from llm_from_scratch.export.hf_llama import hf_llama_config, hf_llama_state_dict

        model = inner
        try:
            config = hf_llama_config(model.cfg, tokenizer, model.tok_emb.weight.dtype)
        except ValueError as error:
            raise ExportError(str(error)) from error
        tensors = hf_llama_state_dict(model)
    else:
        model = inner
        tensors = hf_state_dict(model)
        config = hf_config(model.cfg, tokenizer, is_tied(model), model.tok_emb.weight.dtype)
    if tokenizer.vocab_size > model.cfg.vocab_size:
        raise ExportError(
            f"the tokenizer has {tokenizer.vocab_size} ids but the model only {model.cfg.vocab_size} "
            "embedding rows: they do not belong together"
        )
    build_hf_tokenizer(tokenizer)  # fail on an unsupported tokenizer before writing anything
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json_atomically(out_dir / "config.json", config)
    generation: dict[str, Any] = {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id}
    write_json_atomically(out_dir / "generation_config.json", {k: v for k, v in generation.items() if v is not None})
    save_hf_tokenizer(tokenizer, out_dir, model_max_length=model.cfg.context_length)
    return out_dir


def export_checkpoint_hf(checkpoint_path: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """`export_hf` for a training checkpoint (``best_model.pt``): model and tokenizer come from it."""
    from llm_from_scratch.loading import load_checkpoint_model

    model, tokenizer, _ = load_checkpoint_model(checkpoint_path)
    return export_hf(model, tokenizer, out_dir, overwrite=overwrite)


# --------------------------------------------------------------------------------------
# Small helpers (shared with the GGUF export)
# --------------------------------------------------------------------------------------


def check_output_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} exists and is a file; give a folder path for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise ExportError(f"{out_dir} already exists and is not empty; choose a new folder or pass overwrite=True")


def check_output_file(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give a file path (e.g. model.gguf)")
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; choose another name or pass overwrite=True")


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ExportError(
            "exporting the tokenizer for Hugging Face needs the 'transformers' and 'tokenizers' "
            "packages: pip install 'llm-from-scratch[export]'"
        ) from error
    return transformers
