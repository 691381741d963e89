"""The tensors a GPT-2 checkpoint must have: their names in OpenAI's and Hugging Face's files, and shapes.

Three spellings of the same weights meet when loading GPT-2:

* **OpenAI's TensorFlow checkpoint**: ``model/h3/attn/c_attn/w``, ``model/wte``, ``model/ln_f/g``
  (``g`` gain, ``b`` bias, ``w`` weight); linear layers are ``conv1d`` with a leading 1 in the
  weight's shape, ``[1, in, out]``;
* **Hugging Face**: ``h.3.attn.c_attn.weight`` (optionally behind ``transformer.``), ``Conv1D``
  weights ``[in, out]``;
* **ours**: ``trf_blocks.3.att.qkv.weight``, ``nn.Linear`` weights ``[out, in]``.

Hugging Face <-> ours is the one name table in :mod:`llm_from_scratch.model.hf_gpt2`; this module
adds OpenAI's names on top of Hugging Face's and works out the shapes every checkpoint must have,
from that table and our model's own parameter shapes, so no name is spelled twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from llm_from_scratch.assets import VerificationError
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.hf_gpt2 import our_to_hf_name
from llm_from_scratch.weights.skeleton import on_meta_without_init


def hf_gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Hugging Face names (``GPT2Model``, without ``transformer.``) and shapes (``Conv1D``: [in, out])."""
    from llm_from_scratch.model.gpt import GPTModel

    with on_meta_without_init():  # shapes only, no memory (weights/skeleton.py)
        model = GPTModel(cfg.replace(qkv_bias=True))  # GPT-2 always has the qkv bias
    shapes = {}
    for our_name, tensor in model.state_dict().items():
        if our_name == "out_head.weight" and cfg.tie_weights:
            continue  # a tied head is not stored
        hf_name, transpose = our_to_hf_name(our_name)
        shapes[hf_name] = tuple(reversed(tensor.shape)) if transpose else tuple(tensor.shape)
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


def normalize_hf_name(name: str) -> str | None:
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
