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
  Face kept those names (``h.0.ln_1.weight``). `model/hf_gpt2.py` holds the one table that maps them
  onto ours; `gpt2_names.py` adds OpenAI's spelling and the shapes every checkpoint must have.
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

Where the pieces are: this module turns a name into files (cache, downloads) and files into a
model (`build_gpt2`, `load_gpt2`); `gpt2_files.py` recognizes and checks the formats on disk and
reads their tensors; `gpt2_names.py` knows the tensors' names and shapes; the names of the models
themselves are in the catalog (`catalog.py`) that `load_pretrained` uses too.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

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
from llm_from_scratch.model.hf_gpt2 import hf_to_our_name
from llm_from_scratch.tokenizers import Tokenizer, get_tokenizer
from llm_from_scratch.weights.catalog import GPT2_SIZES, PRETRAINED_MODELS, find_pretrained
from llm_from_scratch.weights.gpt2_files import (  # noqa: F401 - public names of this module too
    _HEADS_BY_WIDTH,
    SOURCES,
    GPT2Files,
    check_source,
    config_from_hparams,
    config_from_json,
    file_tensors,
    inspect_gpt2_path,
    inspect_hf_folder,
    inspect_openai_checkpoint,
    read_safetensors_header,
)
from llm_from_scratch.weights.gpt2_names import (  # noqa: F401 - public names of this module too
    check_tensor_shapes,
    hf_gpt2_shapes,
    openai_gpt2_shapes,
    openai_to_hf_name,
)
from llm_from_scratch.weights.skeleton import on_meta_without_init
from llm_from_scratch.weights.tf_checkpoint import TFCheckpoint, parse_bundle_entry, read_sstable

# --------------------------------------------------------------------------------------
# Names, URLs, cache folders
# --------------------------------------------------------------------------------------

GPT2_VOCAB_SIZE = 50257
OPENAI_SIZES = GPT2_SIZES  # Hugging Face name -> the folder name OpenAI used (and the book uses)
#: Every name of a GPT-2 model (from the catalog) -> its Hugging Face name.
GPT2_NAMES = {alias: model.name for model in PRETRAINED_MODELS.values() if model.family == "gpt2"
              for alias in (model.name, *model.aliases, model.hub_repo)}

HF_ENDPOINT_ENV = "LLMFS_HF_ENDPOINT"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
OPENAI_ENDPOINT_ENV = "LLMFS_OPENAI_ENDPOINT"
DEFAULT_OPENAI_ENDPOINT = "https://openaipublic.blob.core.windows.net"

HF_FILES = ("config.json", "model.safetensors")
# The book downloads 7 files; these 4 are all that loading needs (encoder.json and vocab.bpe are
# the tokenizer, which tiktoken provides; model.ckpt.meta is the TensorFlow graph).
OPENAI_FILES = ("checkpoint", "hparams.json", "model.ckpt.index", "model.ckpt.data-00000-of-00001")


def gpt2_model_name(name: str) -> str | None:
    """``"355M"`` / ``"gpt2-medium"`` / ``"openai-community/gpt2-medium"`` -> ``"gpt2-medium"``; else None."""
    model = find_pretrained(name, family="gpt2")
    return model.name if model is not None else None


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
    files = inspect_hf_folder(folder, "safetensors")
    _check_architecture(files.config, expected, folder / "config.json")
    return files


def _cached_openai(folder: Path, expected: GPTConfig) -> GPT2Files:
    missing = [name for name in OPENAI_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"not there yet (no {', '.join(missing)})")
    files = inspect_openai_checkpoint(folder, verify=False)  # checksums were verified after the download
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
        _check_architecture(config_from_json(config_file), expected, config_file)
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
        _check_architecture(config_from_hparams(hparams), expected, hparams)
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
        files = inspect_openai_checkpoint(folder, verify=True)
        # The CRC-32C of every tensor, once, right after the download (later loads trust the cache).
        TFCheckpoint(files.paths[0]).verify_checksums(openai_gpt2_shapes(files.config))
    except (ValueError, VerificationError):
        data_file.unlink(missing_ok=True)
        raise
    return GPT2Files("openai", files.paths, files.config, verify_checksums=False)


def find_gpt2_files(name: str, source: str = "auto") -> GPT2Files:
    """The files of OpenAI's GPT-2 ``name``: from the cache, else downloaded into it (see the module doc)."""
    hf_name = _require_name(name)
    source = check_source(source)
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


def build_gpt2(files: GPT2Files, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> GPTModel:
    """A `GPTModel` (eval mode) holding the weights in ``files``, converted to ``dtype`` on ``device``.

    Each weight is copied exactly once, from the file's bytes into the tensor that becomes the
    parameter (transposed and converted by that same copy), so the peak memory is the model plus
    one tensor.
    """
    cfg = files.config
    with on_meta_without_init():
        model = GPTModel(cfg)  # shapes only: no memory, no random initialization (weights/skeleton.py)
    targets = model.state_dict()  # our names -> meta tensors with the right shapes
    where = ", ".join(map(str, files.paths))
    state: dict[str, torch.Tensor] = {}
    for hf_name, tensor in file_tensors(files):
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


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
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
    dtype = as_dtype(dtype)
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
