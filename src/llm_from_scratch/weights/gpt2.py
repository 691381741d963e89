"""OpenAI's pretrained GPT-2 (every size) in our `GPTModel`: the book's chapter 5 "loading
pretrained weights".

Training a 124M-parameter GPT-2 from scratch takes days of GPU time; OpenAI published the
weights in 2019. Our `GPTModel` is GPT-2's architecture exactly (pre-norm blocks, GELU-tanh,
learned positions, biased fused query/key/value, tied embedding and head), so loading them is
pure bookkeeping: every published tensor has exactly one place in our model. Three things need
care:

* **Names.** OpenAI's TensorFlow code called the blocks ``h0, h1, ...``, the norms ``ln_1``
  (gain ``g``, bias ``b``), the attention projections ``attn/c_attn`` (query, key and value side
  by side: our fused ``qkv``) and ``attn/c_proj``, the MLP ``mlp/c_fc`` and ``mlp/c_proj``. Hugging
  Face kept those names (``h.0.ln_1.weight``). `hf_gpt2.py` maps them onto ours.
* **Transposes.** OpenAI implemented every linear layer as a 1x1 convolution, ``conv1d``, whose
  weight has shape ``[1, in, out]`` and computes ``x @ w``. Hugging Face dropped the 1
  (``Conv1D``, ``[in, out]``). ``nn.Linear`` stores ``[out, in]`` and computes ``x @ W.T``. So:
  squeeze the 1, then transpose.
* **The tied head.** GPT-2 has no separate output matrix: the logits are ``h @ wte.T``, reusing the
  token embedding. Our ``out_head.weight`` is *the same Parameter* as ``tok_emb.weight``.

Where the files come from, for a name (``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"``,
``"gpt2-xl"`` or the book's ``"124M"``, ``"355M"``, ``"774M"``, ``"1558M"``), first that works:

1. the cache, ``<cache>/weights/gpt2/<name>/`` (Hugging Face files) or
   ``<cache>/weights/gpt2/<name>/openai/`` (OpenAI's files);
2. the Hugging Face hub: ``config.json`` and ``model.safetensors`` from
   ``https://huggingface.co/openai-community/<name>/resolve/main/`` (``LLMFS_HF_ENDPOINT`` or
   ``HF_ENDPOINT`` replace the host, e.g. for a mirror);
3. OpenAI's TensorFlow checkpoint, as the book downloads it:
   ``https://openaipublic.blob.core.windows.net/gpt-2/models/<124M|...>/<file>``
   (``LLMFS_OPENAI_ENDPOINT`` replaces the host), read by `tf_checkpoint` without TensorFlow;
4. an `AssetUnavailableError` that lists what was tried and how to fix it.

What is checked: ``config.json`` / ``hparams.json`` must describe the named architecture; a
safetensors file must list every GPT-2 tensor with the right shape and a float dtype, and its size
must be exactly header + data (a truncated download fails); a TensorFlow checkpoint must list every
tensor with the right shape, its data file must be long enough, and after a download the CRC-32C
of every tensor is verified. (There are no published SHA-256 sums we could pin.)

Memory: the model is built on PyTorch's ``meta`` device (shapes, no storage, no random
initialization). Each weight is read from the file into one reused scratch buffer and copied once
into the tensor that becomes the parameter, transposed and converted to the requested dtype by
that same copy; those tensors are then *assigned* into the model
(``load_state_dict(assign=True)``). The peak is the model plus its largest tensor, so GPT-2 XL
(1.6 B parameters, 6.2 GB in float32, 3.1 GB in bfloat16) never needs two copies.
"""

from __future__ import annotations

import json
import os
import re
import struct
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_from_scratch import assets
from llm_from_scratch.assets import (
    CACHE_DIR_ENV,
    OFFLINE_ENV,
    Source,
    VerificationError,
    cache_dir,
    load_from_sources,
    offline_mode,
)
from llm_from_scratch.model.config import GPTConfig, preset_config
from llm_from_scratch.model.gpt import GPTModel
from llm_from_scratch.model.hf_gpt2 import _BLOCK_NAMES, _TOP_NAMES, config_from_hf
from llm_from_scratch.tokenizers import Tokenizer, get_tokenizer
from llm_from_scratch.weights.tf_checkpoint import (
    TFCheckpoint,
    parse_bundle_entry,
    read_sstable,
    resolve_checkpoint_prefix,
)

# --------------------------------------------------------------------------------------
# Names, URLs, cache folders
# --------------------------------------------------------------------------------------

GPT2_VOCAB_SIZE = 50257
# Hugging Face name -> the folder name OpenAI used (and the book uses).
OPENAI_SIZES = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
GPT2_NAMES = {
    **{name: name for name in OPENAI_SIZES},
    **{size: name for name, size in OPENAI_SIZES.items()},
    **{f"openai-community/{name}": name for name in OPENAI_SIZES},
}

HF_ENDPOINT_ENV = "LLMFS_HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
OPENAI_ENDPOINT_ENV = "LLMFS_OPENAI_ENDPOINT"
DEFAULT_OPENAI_ENDPOINT = "https://openaipublic.blob.core.windows.net"

HF_FILES = ("config.json", "model.safetensors")
# The book downloads 7 files; these 4 are all that loading needs (encoder.json and vocab.bpe are
# the tokenizer, which tiktoken provides; model.ckpt.meta is the TensorFlow graph).
OPENAI_FILES = ("checkpoint", "hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")
SOURCES = ("auto", "hf", "openai")


def gpt2_model_name(name: str) -> str | None:
    """``"355M"`` / ``"gpt2-medium"`` / ``"openai-community/gpt2-medium"`` -> ``"gpt2-medium"``; else None."""
    return GPT2_NAMES.get(name.strip()) if isinstance(name, str) else None


def gpt2_config(name: str) -> GPTConfig:
    """The architecture of OpenAI's released weights for ``name``."""
    hf_name = _require_name(name)
    return preset_config(hf_name, vocab_size=GPT2_VOCAB_SIZE)


def hf_url(name: str, filename: str) -> str:
    endpoint = os.environ.get(HF_ENDPOINT_ENV) or os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT
    return f"{endpoint.rstrip('/')}/openai-community/{_require_name(name)}/resolve/main/{filename}"


def openai_url(name: str, filename: str) -> str:
    endpoint = os.environ.get(OPENAI_ENDPOINT_ENV) or DEFAULT_OPENAI_ENDPOINT
    return f"{endpoint.rstrip('/')}/gpt-2/models/{OPENAI_SIZES[_require_name(name)]}/{filename}"


def gpt2_cache_dir(name: str) -> Path:
    """``<cache>/weights/gpt2/<name>``: Hugging Face files here, OpenAI's in its ``openai/``."""
    return cache_dir("weights", "gpt2", _require_name(name))


def _require_name(name: str) -> str:
    hf_name = gpt2_model_name(name)
    if hf_name is None:
        raise ValueError(f"unknown GPT-2 model {name!r}; known names: {', '.join(GPT2_NAMES)}")
    return hf_name


# --------------------------------------------------------------------------------------
# The tensors a GPT-2 checkpoint must have
# --------------------------------------------------------------------------------------


def hf_gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face names (``GPT2Model``, without ``transformer.``) and shapes (``Conv1D``: [in, out])."""
    e = cfg.emb_dim
    shapes = {"wte.weight": (cfg.vocab_size, e), "wpe.weight": (cfg.context_length, e)}
    for i in range(cfg.n_layers):
        shapes.update({
            f"h.{i}.ln_1.weight": (e,), f"h.{i}.ln_1.bias": (e,),
            f"h.{i}.attn.c_attn.weight": (e, 3 * e), f"h.{i}.attn.c_attn.bias": (3 * e,),
            f"h.{i}.attn.c_proj.weight": (e, e), f"h.{i}.attn.c_proj.bias": (e,),
            f"h.{i}.ln_2.weight": (e,), f"h.{i}.ln_2.bias": (e,),
            f"h.{i}.mlp.c_fc.weight": (e, 4 * e), f"h.{i}.mlp.c_fc.bias": (4 * e,),
            f"h.{i}.mlp.c_proj.weight": (4 * e, e), f"h.{i}.mlp.c_proj.bias": (e,),
        })
    shapes.update({"ln_f.weight": (e,), "ln_f.bias": (e,)})
    if not cfg.tie_weights:
        shapes["lm_head.weight"] = (cfg.vocab_size, e)
    return shapes


_OPENAI_NAME = re.compile(r"model/(?:h(\d+)/)?([a-z_0-9/]+)")
_OPENAI_LEAF = {"g": "weight", "b": "bias", "w": "weight"}


def openai_to_hf_name(name: str) -> str | None:
    """``model/h3/attn/c_attn/w`` -> ``h.3.attn.c_attn.weight``; ``model/wte`` -> ``wte.weight``.

    None for names that are not GPT-2 weights (``global_step``, optimizer slots...).
    """
    match = _OPENAI_NAME.fullmatch(name)
    if not match:
        return None
    layer, rest = match.groups()
    parts = rest.split("/")
    if parts in (["wte"], ["wpe"]):
        return f"{parts[0]}.weight"
    if len(parts) < 2 or parts[-1] not in _OPENAI_LEAF:
        return None
    hf = ".".join(parts[:-1] + [_OPENAI_LEAF[parts[-1]]])
    return f"h.{layer}.{hf}" if layer is not None else hf


def openai_gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """OpenAI's TensorFlow names and shapes (``conv1d`` weights carry a leading 1)."""
    shapes = {}
    for name, shape in hf_gpt2_shapes(cfg).items():
        if name == "lm_head.weight":
            continue  # OpenAI's GPT-2 always ties the head
        parts = name.split(".")
        leaf = {"weight": "w" if len(shape) == 2 and parts[0] == "h" else "g", "bias": "b"}[parts[-1]]
        if parts[0] == "h":
            tf_name = f"model/h{parts[1]}/" + "/".join(parts[2:-1]) + f"/{leaf}"
            shapes[tf_name] = (1, *shape) if leaf == "w" else shape
        elif parts[0] in ("wte", "wpe"):
            shapes[f"model/{parts[0]}"] = shape
        else:
            shapes[f"model/{parts[0]}/{leaf}"] = shape
    return shapes


def _normalize_hf_name(name: str) -> str | None:
    """Drop the ``transformer.`` prefix; None for buffers GPT-2 checkpoints may carry (masks)."""
    name = name.removeprefix("transformer.")
    if name.endswith((".attn.bias", ".attn.masked_bias")):
        return None
    return name


def check_tensor_shapes(found: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                        where: str) -> None:
    """Raise VerificationError naming the missing and misshapen tensors (extras are ignored)."""
    missing = [name for name in expected if name not in found]
    wrong = [f"{name} is {tuple(found[name])}, expected {expected[name]}"
             for name in expected if name in found and tuple(found[name]) != tuple(expected[name])]
    if missing or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
        if wrong:
            problems.append(f"{len(wrong)} with the wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise VerificationError(f"{where} is not the expected GPT-2 checkpoint: {' and '.join(problems)}")


# --------------------------------------------------------------------------------------
# Files on disk: what format, which configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GPT2Files:
    """GPT-2 weights found on disk: ``format`` is "safetensors", "pytorch" or "openai"."""

    format: str
    paths: tuple[Path, ...]  # safetensors shards / the .bin file / the TF checkpoint prefix
    config: GPTConfig
    verify_checksums: bool = True  # CRC-32C of TF tensors while loading (off once verified)


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and where its data starts, after checking the file
    is exactly as long as the header says.

    Layout: 8 bytes little-endian header length N, N bytes of JSON ``{name: {dtype, shape,
    data_offsets: [begin, end]}, "__metadata__": {...}}``, then the data, offsets relative to it.
    """
    size = path.stat().st_size
    with open(path, "rb") as file:
        start = file.read(8)
        if len(start) < 8:
            raise VerificationError(f"{path} is too short to be a safetensors file ({size} bytes)")
        (header_size,) = struct.unpack("<Q", start)
        if header_size > min(size - 8, 100 << 20):
            raise VerificationError(f"{path} is not a safetensors file (header size {header_size} does not fit)")
        try:
            header = json.loads(file.read(header_size))
        except ValueError as error:
            raise VerificationError(f"{path} is not a safetensors file (its header is not JSON: {error})") from error
    header.pop("__metadata__", None)
    data_start = 8 + header_size
    data_end = max((info["data_offsets"][1] for info in header.values()), default=0)
    if size != data_start + data_end:
        raise VerificationError(
            f"{path} has {size} bytes but its header describes {data_start + data_end}: the file is "
            "truncated or damaged (an interrupted download?). Delete it and fetch it again."
        )
    return header, data_start


_SAFETENSORS_FLOAT_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                              "F64": torch.float64}


def _safetensors_shards(folder: Path) -> tuple[Path, ...]:
    single = folder / "model.safetensors"
    if single.is_file():
        return (single,)
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return tuple(folder / name for name in sorted(set(index["weight_map"].values())))


def _safetensors_shapes(shards: tuple[Path, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for shard in shards:
        for name, info in read_safetensors_header(shard)[0].items():
            hf_name = _normalize_hf_name(name)
            if hf_name is None:
                continue
            if info["dtype"] not in _SAFETENSORS_FLOAT_DTYPES:
                raise VerificationError(f"{shard.name}: {name} has dtype {info['dtype']}, expected a float type")
            shapes[hf_name] = tuple(info["shape"])
    return shapes


def _config_from_json(path: Path) -> GPTConfig:
    try:
        hf_config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VerificationError(f"{path} is not a readable JSON file ({error})") from error
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{path} describes a {model_type!r} model; load_gpt2 loads GPT-2 models only")
    return config_from_hf(hf_config)


def _config_from_hparams(path: Path) -> GPTConfig:
    try:
        hp = json.loads(path.read_text())
        return GPTConfig(vocab_size=hp["n_vocab"], context_length=hp["n_ctx"], emb_dim=hp["n_embd"],
                         n_heads=hp["n_head"], n_layers=hp["n_layer"], qkv_bias=True, tie_weights=True)
    except (OSError, ValueError, KeyError) as error:
        raise VerificationError(
            f"{path} is not a GPT-2 hparams.json (needs n_vocab, n_ctx, n_embd, n_head, n_layer): {error!r}"
        ) from error


# OpenAI's sizes: the width tells the number of heads (for a lone .safetensors file).
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 20, 1600: 25}


def _config_from_shapes(shapes: Mapping[str, tuple[int, ...]], path: Path) -> GPTConfig:
    if "wte.weight" not in shapes or "wpe.weight" not in shapes:
        raise VerificationError(f"{path} has no wte/wpe tensors: it is not a GPT-2 checkpoint")
    vocab_size, emb_dim = shapes["wte.weight"]
    layers = {int(name.split(".")[1]) for name in shapes if name.startswith("h.")}
    if emb_dim not in _HEADS_BY_WIDTH:
        raise ValueError(
            f"{path}: cannot tell the number of attention heads of a width-{emb_dim} model from the "
            "tensors alone; put its config.json (from the same Hugging Face repository) next to it"
        )
    return GPTConfig(vocab_size=vocab_size, context_length=shapes["wpe.weight"][0], emb_dim=emb_dim,
                     n_heads=_HEADS_BY_WIDTH[emb_dim], n_layers=len(layers), qkv_bias=True,
                     tie_weights="lm_head.weight" not in shapes)


def _inspect_hf_folder(folder: Path, weights: str) -> GPT2Files:
    cfg = _config_from_json(folder / "config.json")
    if weights == "safetensors":
        shards = _safetensors_shards(folder)
        shapes = _safetensors_shapes(shards)
        paths = shards
    else:
        path = folder / "pytorch_model.bin"
        shapes = {}
        for name, tensor in _torch_load(path).items():
            hf_name = _normalize_hf_name(name)
            if hf_name is not None:
                shapes[hf_name] = tuple(tensor.shape)
        paths = (path,)
    check_tensor_shapes(shapes, hf_gpt2_shapes(cfg), str(folder))
    return GPT2Files(weights, paths, cfg)


def _inspect_openai_checkpoint(prefix_or_dir: Path, verify: bool) -> GPT2Files:
    prefix = resolve_checkpoint_prefix(prefix_or_dir)
    cfg = _config_from_hparams(prefix.parent / "hparams.json")
    checkpoint = TFCheckpoint(prefix, verify=verify)  # reads the index, checks the data files' lengths
    check_tensor_shapes(checkpoint.shapes, openai_gpt2_shapes(cfg), str(prefix))
    return GPT2Files("openai", (prefix,), cfg, verify_checksums=verify)


def inspect_gpt2_path(path: str | Path, source: str = "auto") -> GPT2Files:
    """Find GPT-2 weights at a local path and check them (without loading the tensors).

    ``path`` is a folder with Hugging Face files (``config.json`` + ``model.safetensors``, or
    sharded safetensors, or ``pytorch_model.bin``), a folder with OpenAI's TensorFlow files
    (``hparams.json``, ``checkpoint``, ``model.ckpt.index``, ``model.ckpt.data-*``), a TensorFlow
    checkpoint prefix or ``.index`` file, or a single ``.safetensors`` file.
    ``source="hf"`` / ``"openai"`` insists on one kind.
    """
    source = _check_source(source)
    path = Path(path).expanduser()
    if not path.exists() and not path.with_name(path.name + ".index").is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".safetensors":
        if source == "openai":
            raise ValueError(f"{path} is a safetensors file, not OpenAI's TensorFlow checkpoint (source='openai')")
        shapes = _safetensors_shapes((path,))
        config_file = path.with_name("config.json")
        cfg = _config_from_json(config_file) if config_file.is_file() else _config_from_shapes(shapes, path)
        check_tensor_shapes(shapes, hf_gpt2_shapes(cfg), str(path))
        return GPT2Files("safetensors", (path,), cfg)
    if path.is_dir():
        has = {p.name for p in path.iterdir()}
        if source in ("auto", "hf") and "config.json" in has:
            if "model.safetensors" in has or "model.safetensors.index.json" in has:
                return _inspect_hf_folder(path, "safetensors")
            if "pytorch_model.bin" in has:
                return _inspect_hf_folder(path, "pytorch")
        if source in ("auto", "openai") and "hparams.json" in has:
            return _inspect_openai_checkpoint(path, verify=True)
        wanted = {
            "hf": "config.json + model.safetensors (or pytorch_model.bin)",
            "openai": "hparams.json + checkpoint + model.ckpt.index + model.ckpt.data-00000-of-00001",
        }
        kinds = [wanted[kind] for kind in ("hf", "openai") if source in ("auto", kind)]
        shown = ", ".join(sorted(has)[:12]) or "nothing"
        raise FileNotFoundError(f"{path} holds no GPT-2 weights: expected {' or '.join(kinds)}; it has {shown}")
    if source != "hf" and (path.name.endswith(".index") or path.with_name(path.name + ".index").is_file()):
        return _inspect_openai_checkpoint(path, verify=True)
    raise ValueError(
        f"{path}: give a folder (Hugging Face or OpenAI files), a .safetensors file or a TensorFlow "
        "checkpoint prefix"
    )


def _check_source(source: str) -> str:
    source = {"tf": "openai"}.get(source, source)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    return source


# --------------------------------------------------------------------------------------
# Getting the files for a name: cache, Hugging Face, OpenAI
# --------------------------------------------------------------------------------------


_ARCHITECTURE_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "qkv_bias", "tie_weights")


def _check_architecture(found: GPTConfig, expected: GPTConfig, path: Path) -> None:
    differences = ", ".join(
        f"{key}={getattr(found, key)} (expected {getattr(expected, key)})"
        for key in _ARCHITECTURE_KEYS if getattr(found, key) != getattr(expected, key)
    )
    if differences:
        raise VerificationError(f"{path} is not the expected model: {differences}")


def _cached_hf(folder: Path, expected: GPTConfig) -> GPT2Files:
    missing = [name for name in HF_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"not there yet (no {', '.join(missing)})")
    files = _inspect_hf_folder(folder, "safetensors")
    _check_architecture(files.config, expected, folder / "config.json")
    return files


def _cached_openai(folder: Path, expected: GPTConfig) -> GPT2Files:
    missing = [name for name in OPENAI_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"not there yet (no {', '.join(missing)})")
    files = _inspect_openai_checkpoint(folder, verify=False)  # checksums were verified after the download
    _check_architecture(files.config, expected, folder / "hparams.json")
    return files


def _fetch(url: str, dest: Path, expected_size: int | None = None) -> Path:
    return assets.download(url, dest, expected_size=expected_size, desc=f"{dest.parent.name}/{dest.name}")


def _remove_complete_files(folder: Path, names: tuple[str, ...]) -> None:
    """Files the cache check rejected would be taken as already downloaded: remove them
    (partial ``.part`` files stay, so interrupted downloads still resume)."""
    for name in names:
        (folder / name).unlink(missing_ok=True)


def _download_hf(name: str, folder: Path, expected: GPTConfig) -> GPT2Files:
    _remove_complete_files(folder, HF_FILES)
    config_file = _fetch(hf_url(name, "config.json"), folder / "config.json")
    try:
        _check_architecture(_config_from_json(config_file), expected, config_file)
    except (ValueError, VerificationError):
        config_file.unlink(missing_ok=True)
        raise
    weights_file = _fetch(hf_url(name, "model.safetensors"), folder / "model.safetensors")
    try:
        return _cached_hf(folder, expected)
    except (ValueError, VerificationError):
        weights_file.unlink(missing_ok=True)  # a wrong file would fail again next time: drop it
        raise


def _download_openai(name: str, folder: Path, expected: GPTConfig) -> GPT2Files:
    _remove_complete_files(folder, OPENAI_FILES)
    for filename in OPENAI_FILES[:-1]:  # the small ones first: a wrong model fails before 500 MB
        _fetch(openai_url(name, filename), folder / filename)
    hparams = folder / "hparams.json"
    try:
        _check_architecture(_config_from_hparams(hparams), expected, hparams)
    except (ValueError, VerificationError):
        hparams.unlink(missing_ok=True)
        raise
    index_file = folder / "model.ckpt.index"
    try:
        entries = [parse_bundle_entry(key.decode(), value) for key, value in read_sstable(index_file) if key]
    except ValueError:
        index_file.unlink(missing_ok=True)
        raise
    data_size = max(entry.offset + entry.size for entry in entries)
    data_name = OPENAI_FILES[-1]
    data_file = _fetch(openai_url(name, data_name), folder / data_name, expected_size=data_size)
    try:
        files = _inspect_openai_checkpoint(folder, verify=True)
        # The CRC-32C of every tensor, once, right after the download (later loads trust the cache).
        TFCheckpoint(files.paths[0]).verify_checksums(openai_gpt2_shapes(files.config))
    except (ValueError, VerificationError):
        data_file.unlink(missing_ok=True)
        raise
    return GPT2Files("openai", files.paths, files.config, verify_checksums=False)


def find_gpt2_files(name: str, source: str = "auto") -> GPT2Files:
    """The files of OpenAI's GPT-2 ``name``: from the cache, else downloaded into it (see the module doc)."""
    hf_name = _require_name(name)
    source = _check_source(source)
    expected = gpt2_config(hf_name)
    folder = gpt2_cache_dir(hf_name)
    tf_folder = folder / "openai"
    use_hf, use_openai = source in ("auto", "hf"), source in ("auto", "openai")
    sources: list[Source[GPT2Files]] = []
    if use_hf:
        sources.append(Source(f"the cache: {folder} (Hugging Face's {' + '.join(HF_FILES)})",
                              lambda: _cached_hf(folder, expected)))
    if use_openai:
        sources.append(Source(f"the cache: {tf_folder} (OpenAI's {', '.join(OPENAI_FILES)})",
                              lambda: _cached_openai(tf_folder, expected)))
    if use_hf:
        sources.append(Source(f"Hugging Face: {hf_url(hf_name, 'config.json')} and model.safetensors",
                              lambda: _download_hf(hf_name, folder, expected), online_only=True))
    if use_openai:
        sources.append(Source(f"OpenAI: {openai_url(hf_name, '')}{{{','.join(OPENAI_FILES)}}}",
                              lambda: _download_openai(hf_name, tf_folder, expected), online_only=True))
    how_to_fix = []
    if offline_mode():
        how_to_fix.append(f"unset {OFFLINE_ENV} (it is set, so nothing was downloaded)")
    how_to_fix += [
        f"download the files where the web is reachable and pass their folder: load_gpt2('/path/to/folder'), "
        f"with Hugging Face's config.json + model.safetensors (https://huggingface.co/openai-community/{hf_name}) "
        f"or OpenAI's {OPENAI_SIZES[hf_name]} folder ({', '.join(OPENAI_FILES)})",
        f"or copy those files into the cache: {folder} (Hugging Face's) or {tf_folder} (OpenAI's); "
        f"{CACHE_DIR_ENV} moves the cache folder",
        f"use a Hugging Face mirror: {HF_ENDPOINT_ENV}=https://<mirror> (same /openai-community/... paths)",
        "check your network and proxy settings (HTTPS_PROXY); an interrupted download resumes when you run again",
    ]
    return load_from_sources(f"the pretrained {hf_name} weights", sources, how_to_fix)


# --------------------------------------------------------------------------------------
# Building the model without two copies of the weights
# --------------------------------------------------------------------------------------


def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:  # memory-mapped: tensors are read from the file when used
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # files from torch < 1.6 (not zip-based) cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def hf_to_our_name(hf_name: str) -> tuple[str, bool]:
    """``h.3.attn.c_attn.weight`` -> (``trf_blocks.3.att.qkv.weight``, True = transpose it).

    The table is `hf_gpt2`'s (the same mapping `state_dict_from_hf` applies to a whole dict).
    """
    if hf_name == "lm_head.weight":
        return "out_head.weight", False
    if hf_name in _TOP_NAMES:
        return _TOP_NAMES[hf_name], False
    _, layer, suffix = hf_name.split(".", 2)
    our_suffix, transpose = _BLOCK_NAMES[suffix]
    return f"trf_blocks.{layer}.{our_suffix}", transpose


def _file_tensors(files: GPT2Files) -> Iterator[tuple[str, torch.Tensor]]:
    """(Hugging Face name, tensor in Hugging Face's layout) for every GPT-2 weight in ``files``.

    The tensors of safetensors and TensorFlow files live in one scratch buffer, reused for the
    next tensor: the consumer copies each one out before asking for the next.
    """
    wanted = hf_gpt2_shapes(files.config)
    if files.format == "safetensors":
        headers = [(shard, *read_safetensors_header(shard)) for shard in files.paths]
        largest = max(info["data_offsets"][1] - info["data_offsets"][0]
                      for _, header, _ in headers for info in header.values())
        scratch = np.empty(largest, dtype=np.uint8)
        for shard, header, data_start in headers:
            with open(shard, "rb") as file:
                for name, info in header.items():
                    hf_name = _normalize_hf_name(name)
                    if hf_name in wanted:
                        yield hf_name, _read_safetensors_tensor(file, data_start, info, scratch)
    elif files.format == "pytorch":
        state = _torch_load(files.paths[0])  # memory-mapped; released when `state` goes
        for name in list(state):
            hf_name = _normalize_hf_name(name)
            if hf_name in wanted:
                yield hf_name, state.pop(name)
    else:
        checkpoint = TFCheckpoint(files.paths[0], verify=False)
        tf_names = list(openai_gpt2_shapes(files.config))
        if files.verify_checksums:
            checkpoint.verify_checksums(tf_names)  # all first, then read: see verify_checksums
        scratch = np.empty(max(checkpoint.entries[name].size for name in tf_names), dtype=np.uint8)
        for tf_name in tf_names:
            tensor = torch.from_numpy(checkpoint.read(tf_name, out=scratch))
            if tf_name.endswith("/w"):
                tensor = tensor[0]  # conv1d weight [1, in, out] -> Hugging Face's Conv1D layout [in, out]
            yield openai_to_hf_name(tf_name), tensor


def _read_safetensors_tensor(file, data_start: int, info: Mapping[str, Any], scratch: np.ndarray) -> torch.Tensor:
    """Read one tensor's bytes (little-endian, row-major, as stored) into the scratch buffer.

    Plain reads rather than a memory map (``safetensors.safe_open``): a map's pages count in the
    process's memory while any tensor still points into the file, which made the measured peak
    twice the model's size.
    """
    begin, end = info["data_offsets"]
    dtype = _SAFETENSORS_FLOAT_DTYPES[info["dtype"]]
    count = int(np.prod(info["shape"], dtype=np.int64))
    if count * dtype.itemsize != end - begin:
        raise VerificationError(f"{file.name}: a {info['dtype']} tensor of shape {info['shape']} cannot "
                                f"take {end - begin} bytes; the file is damaged")
    buffer = scratch[: end - begin]
    file.seek(data_start + begin)
    if file.readinto(buffer) != buffer.size:
        raise VerificationError(f"{file.name} ended early: the file is truncated")
    return torch.from_numpy(buffer).view(dtype).reshape(info["shape"])


def build_gpt2(files: GPT2Files, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> GPTModel:
    """A `GPTModel` (eval mode) holding the weights in ``files``, converted to ``dtype`` on ``device``.

    Each weight is copied exactly once, from the file's bytes into the tensor that becomes the
    parameter (transposed and converted by that same copy), so the peak memory is the model plus
    one tensor.
    """
    cfg = files.config
    with torch.device("meta"):
        model = GPTModel(cfg)  # shapes only: no memory, no random initialization
    targets = model.state_dict()  # our names -> meta tensors with the right shapes
    where = ", ".join(map(str, files.paths))
    state: dict[str, torch.Tensor] = {}
    for hf_name, tensor in _file_tensors(files):
        our_name, transpose = hf_to_our_name(hf_name)
        if transpose:
            tensor = tensor.t()  # Conv1D [in, out] -> nn.Linear [out, in] (a view; the copy below does it)
        if tensor.shape != targets[our_name].shape:
            raise VerificationError(f"{where}: {hf_name} has shape {tuple(tensor.shape)}, "
                                    f"{our_name} needs {tuple(targets[our_name].shape)}")
        state[our_name] = torch.empty(tensor.shape, dtype=dtype, device=device).copy_(tensor)
    if cfg.tie_weights:
        state["out_head.weight"] = state["tok_emb.weight"]
    missing = sorted(targets.keys() - state.keys())
    if missing:
        raise VerificationError(f"{where}: no weights for {', '.join(missing[:5])}")

    model.load_state_dict(state, strict=True, assign=True)  # our tensors become the parameters
    if cfg.tie_weights:
        # assign=True replaced both Parameters separately; make the head the embedding again.
        model.out_head.weight = model.tok_emb.weight
    left_on_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise RuntimeError(f"these tensors were not loaded: {left_on_meta}")
    return model.eval()


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, str):
        names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16,
                 "fp16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float64": torch.float64}
        if dtype.lower() not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(names)}")
        dtype = names[dtype.lower()]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype, not {dtype!r}")
    return dtype


def load_gpt2(name_or_path: str | Path, *, dtype: torch.dtype | str = torch.float32,
              device: str | torch.device = "cpu", source: str = "auto") -> tuple[GPTModel, Tokenizer]:
    """OpenAI's pretrained GPT-2 as ``(GPTModel in eval mode, GPT-2 tokenizer)``.

    ``name_or_path``: ``"gpt2"``, ``"gpt2-medium"``, ``"gpt2-large"``, ``"gpt2-xl"`` (or the book's
    ``"124M"``, ``"355M"``, ``"774M"``, ``"1558M"``), fetched as the module doc describes; or a
    local path (see `inspect_gpt2_path`; a ``Path`` or a string that is not one of the names).
    ``source``: ``"auto"``, ``"hf"`` (Hugging Face files only) or ``"openai"`` (OpenAI's TensorFlow
    checkpoint only). ``dtype``: the weights are converted while loading (``torch.bfloat16``
    halves the memory).
    """
    dtype = _as_dtype(dtype)
    tokenizer = get_tokenizer("gpt2")  # first: cheap, and a missing vocabulary should fail fast
    hf_name = gpt2_model_name(name_or_path) if isinstance(name_or_path, str) else None
    if hf_name is not None:
        files = find_gpt2_files(hf_name, source)
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists() and not path.with_name(path.name + ".index").is_file():
            raise FileNotFoundError(
                f"{str(name_or_path)!r} is neither a GPT-2 name ({', '.join(GPT2_NAMES)}) nor an existing path"
            )
        files = inspect_gpt2_path(path, source)
    model = build_gpt2(files, dtype=dtype, device=device)
    if model.cfg.vocab_size < tokenizer.vocab_size:
        warnings.warn(
            f"this model knows {model.cfg.vocab_size} token ids but the GPT-2 tokenizer makes up to "
            f"{tokenizer.vocab_size}: encode only text whose ids fit, or use the tokenizer it was trained with",
            stacklevel=2,
        )
    return model, tokenizer
