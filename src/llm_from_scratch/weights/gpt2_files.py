"""GPT-2 weights on disk: which format they are in, which configuration, and reading their tensors.

`load_gpt2` accepts three formats, all holding the same numbers:

* **safetensors** (Hugging Face today): ``config.json`` + ``model.safetensors`` (or shards listed in
  ``model.safetensors.index.json``). The file is 8 bytes of header length, a JSON header (each
  tensor's dtype, shape and byte range), then the raw bytes. We read that header ourselves
  (:func:`read_safetensors_header`), check the file is exactly as long as it says (a truncated
  download fails here), and read each tensor with plain file reads;
* **pytorch_model.bin** (older Hugging Face folders): a pickled state dict, memory-mapped;
* **OpenAI's TensorFlow checkpoint** (``hparams.json`` + ``model.ckpt.*``), read by
  :mod:`.tf_checkpoint` without TensorFlow.

:func:`inspect_gpt2_path` finds out which one a path holds and checks every tensor's name and shape
*before* anything big is read; :func:`file_tensors` then yields the tensors one at a time, in
Hugging Face's names and layout, for `gpt2.build_gpt2` to copy into the model.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_from_scratch.assets import VerificationError
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.hf_gpt2 import config_from_hf
from llm_from_scratch.weights.gpt2_names import (
    check_tensor_shapes,
    hf_gpt2_shapes,
    normalize_hf_name,
    openai_gpt2_shapes,
    openai_to_hf_name,
)
from llm_from_scratch.weights.tf_checkpoint import TFCheckpoint, resolve_checkpoint_prefix

SOURCES = ("auto", "hf", "openai")  # which kind of files to accept: any, Hugging Face's, OpenAI's


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
            hf_name = normalize_hf_name(name)
            if hf_name is None:
                continue
            if info["dtype"] not in _SAFETENSORS_FLOAT_DTYPES:
                raise VerificationError(f"{shard.name}: {name} has dtype {info['dtype']}, expected a float type")
            shapes[hf_name] = tuple(info["shape"])
    return shapes


def config_from_json(path: Path) -> GPTConfig:
    try:
        hf_config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise VerificationError(f"{path} is not a readable JSON file ({error})") from error
    model_type = hf_config.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"{path} describes a {model_type!r} model; load_gpt2 loads GPT-2 models only")
    return config_from_hf(hf_config)


def config_from_hparams(path: Path) -> GPTConfig:
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


def inspect_hf_folder(folder: Path, weights: str) -> GPT2Files:
    cfg = config_from_json(folder / "config.json")
    if weights == "safetensors":
        shards = _safetensors_shards(folder)
        shapes = _safetensors_shapes(shards)
        paths = shards
    else:
        path = folder / "pytorch_model.bin"
        shapes = {}
        for name, tensor in _torch_load(path).items():
            hf_name = normalize_hf_name(name)
            if hf_name is not None:
                shapes[hf_name] = tuple(tensor.shape)
        paths = (path,)
    check_tensor_shapes(shapes, hf_gpt2_shapes(cfg), str(folder))
    return GPT2Files(weights, paths, cfg)


def inspect_openai_checkpoint(prefix_or_dir: Path, verify: bool) -> GPT2Files:
    prefix = resolve_checkpoint_prefix(prefix_or_dir)
    cfg = config_from_hparams(prefix.parent / "hparams.json")
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
    source = check_source(source)
    path = Path(path).expanduser()
    if not path.exists() and not path.with_name(path.name + ".index").is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".safetensors":
        if source == "openai":
            raise ValueError(f"{path} is a safetensors file, not OpenAI's TensorFlow checkpoint (source='openai')")
        shapes = _safetensors_shapes((path,))
        config_file = path.with_name("config.json")
        cfg = config_from_json(config_file) if config_file.is_file() else _config_from_shapes(shapes, path)
        check_tensor_shapes(shapes, hf_gpt2_shapes(cfg), str(path))
        return GPT2Files("safetensors", (path,), cfg)
    if path.is_dir():
        has = {p.name for p in path.iterdir()}
        if source in ("auto", "hf") and "config.json" in has:
            if "model.safetensors" in has or "model.safetensors.index.json" in has:
                return inspect_hf_folder(path, "safetensors")
            if "pytorch_model.bin" in has:
                return inspect_hf_folder(path, "pytorch")
        if source in ("auto", "openai") and "hparams.json" in has:
            return inspect_openai_checkpoint(path, verify=True)
        wanted = {
            "hf": "config.json + model.safetensors (or pytorch_model.bin)",
            "openai": "hparams.json + checkpoint + model.ckpt.index + model.ckpt.data-00000-of-00001",
        }
        kinds = [wanted[kind] for kind in ("hf", "openai") if source in ("auto", kind)]
        shown = ", ".join(sorted(has)[:12]) or "nothing"
        raise FileNotFoundError(f"{path} holds no GPT-2 weights: expected {' or '.join(kinds)}; it has {shown}")
    if source != "hf" and (path.name.endswith(".index") or path.with_name(path.name + ".index").is_file()):
        return inspect_openai_checkpoint(path, verify=True)
    raise ValueError(
        f"{path}: give a folder (Hugging Face or OpenAI files), a .safetensors file or a TensorFlow "
        "checkpoint prefix"
    )


def check_source(source: str) -> str:
    source = {"tf": "openai"}.get(source, source)
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    return source



def _torch_load(path: Path) -> dict[str, torch.Tensor]:
    try:  # memory-mapped: tensors are read from the file when used
        return torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except RuntimeError:  # files from torch < 1.6 (not zip-based) cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def file_tensors(files: GPT2Files) -> Iterator[tuple[str, torch.Tensor]]:
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
                    hf_name = normalize_hf_name(name)
                    if hf_name in wanted:
                        yield hf_name, _read_safetensors_tensor(file, data_start, info, scratch)
    elif files.format == "pytorch":
        state = _torch_load(files.paths[0])  # memory-mapped; released when `state` goes
        for name in list(state):
            hf_name = normalize_hf_name(name)
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
