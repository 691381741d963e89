"""Exporting a compact-vocabulary model (`CompactTokenizer`): full vocabulary out, same choices.

References, independent of the code under test: `transformers` loads the Hugging Face folder and
computes its own logits and greedy generations from the full ids; the GGUF file is read back with
our GGUF reader (`weights.gguf_file.GGUFFile`, checked against the `gguf` package in
test_llama.py), a Llama file through `load_llama_gguf`, a GPT-2 file with test_export's NumPy
forward pass written from GGML's conventions. The compact model itself is the expectation:
kept ids keep their logits, every unseen id gets the reserved id's.
All in fp32 with random weights over the GPT-2 tokenizer (cached after the first fetch).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from llm_from_scratch.export.hf import ExportError, export_hf, export_vocab
from llm_from_scratch.model import create_model
from llm_from_scratch.model.compact_vocab import expand_to_full_vocabulary, is_compact
from llm_from_scratch.tokenizers import CompactTokenizer, get_tokenizer

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from test_export import _auto, _numpy_gpt2_from_gguf, _random_model  # noqa: E402

from llm_from_scratch.export.gguf_export import export_gguf  # noqa: E402
from llm_from_scratch.export.safetensors_io import load_model_safetensors, save_model_safetensors  # noqa: E402

CORPUS = ("Once upon a time there was a little dog. The dog liked to run in the park with his friend, "
          "a small cat. Every day they played and laughed until the sun went down. Then they went home, "
          "ate their dinner and slept.<|endoftext|>")
#: "zebra", "quantum" and "Tokyo" are not in the corpus: they read as the reserved id
PROMPT = "The little dog saw a zebra and a quantum cat in Tokyo. The"


@pytest.fixture(scope="module")
def compact() -> CompactTokenizer:
    base = get_tokenizer("gpt2")
    return CompactTokenizer(base, base.encode(CORPUS, allowed_special="all"))


def _compact_model(family: str, tokenizer: CompactTokenizer, tie: bool):
    """A random model of `family` over the compact ids: GPT (an untied one with a qkv bias), or a preset."""
    torch.manual_seed(0)
    if family == "gpt":
        return _random_model(tokenizer.vocab_size, tie=tie, qkv_bias=not tie)
    model = create_model(f"{family}-micro", vocab_size=tokenizer.vocab_size, context_length=32, tie_weights=tie)
    with torch.no_grad():  # norms away from 1, other weights spread beyond their init values
        for name, param in model.named_parameters():
            param.copy_(torch.empty_like(param).uniform_(0.5, 1.5) if "norm" in name
                        else param + torch.randn_like(param) * 0.05)
    return model.eval()


def _prompt_ids(tokenizer: CompactTokenizer) -> tuple[list[int], list[int]]:
    """(compact ids, full ids) of PROMPT, which has tokens outside the kept set."""
    full = tokenizer.base.encode(PROMPT)
    with warnings.catch_warnings():  # the tokenizer may warn about the unseen tokens: they are the point here
        warnings.simplefilter("ignore")
        compact = tokenizer.encode(PROMPT)
    assert compact == tokenizer.to_compact[full].tolist()
    assert compact.count(tokenizer.unknown_id) >= 3  # the unseen tokens: one reserved id each
    return compact, full


def _unseen_mask(tokenizer: CompactTokenizer) -> torch.Tensor:
    return torch.as_tensor(tokenizer.to_compact == tokenizer.unknown_id)


def _check_logits(full_logits: torch.Tensor, compact_logits: torch.Tensor, tokenizer: CompactTokenizer,
                  atol: float = 1e-5) -> None:
    """(a) kept ids: the compact model's logits at their compact ids; (b) unseen ids: the reserved id's."""
    kept = torch.as_tensor(tokenizer.to_full)
    unseen = _unseen_mask(tokenizer)
    torch.testing.assert_close(full_logits[..., kept], compact_logits[..., :tokenizer.unknown_id],
                               atol=atol, rtol=0)
    reserved = compact_logits[..., tokenizer.unknown_id:tokenizer.unknown_id + 1]
    torch.testing.assert_close(full_logits[..., unseen], reserved.expand(*reserved.shape[:-1], int(unseen.sum())),
                               atol=atol, rtol=0)


# --------------------------------------------------------------------------------------
# The expansion itself
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, tie", [("gpt", True), ("gpt", False), ("llama", False), ("qwen3", True)])
def test_expand_maps_rows_and_keeps_everything_else(compact, family, tie):
    model = _compact_model(family, compact, tie)
    full, base = expand_to_full_vocabulary(model, compact)
    assert base is compact.base and is_compact(compact) and not is_compact(base)
    assert type(full) is type(model) and full.cfg == model.cfg.replace(vocab_size=base.vocab_size)
    assert full.tok_emb.weight.shape == (base.vocab_size, model.cfg.emb_dim)
    assert (full.out_head.weight is full.tok_emb.weight) is tie
    to_compact = torch.as_tensor(compact.to_compact)
    for name in ("tok_emb.weight", "out_head.weight"):
        assert torch.equal(full.state_dict()[name], model.state_dict()[name][to_compact]), name
    for name, tensor in model.state_dict().items():
        if name not in ("tok_emb.weight", "out_head.weight"):
            assert torch.equal(full.state_dict()[name], tensor), name
            assert full.state_dict()[name].data_ptr() != tensor.data_ptr(), name  # a copy, not shared
    assert not full.training
    compact_ids, full_ids = _prompt_ids(compact)
    with torch.no_grad():
        _check_logits(full(torch.tensor([full_ids])), model(torch.tensor([compact_ids])), compact)


def test_expand_drops_padding_rows_and_keeps_dtype_and_mode(compact):
    model = _random_model(compact.vocab_size + 5, tie=False).to(torch.bfloat16).train()  # 5 padding rows
    full, _ = expand_to_full_vocabulary(torch.compile(model), compact)  # the wrapper is looked through
    assert full.cfg.vocab_size == 50257 and full.out_head.weight.shape[0] == 50257
    assert full.tok_emb.weight.dtype == torch.bfloat16 and full.training
    assert torch.equal(full.out_head.weight[compact.to_full], model.out_head.weight[:compact.unknown_id])


def test_expand_refuses_what_does_not_fit(compact):
    with pytest.raises(ValueError, match="needs a CompactTokenizer"):
        expand_to_full_vocabulary(_random_model(50257), compact.base)
    with pytest.raises(ValueError, match="ids but the model only"):
        expand_to_full_vocabulary(_random_model(compact.vocab_size - 1), compact)
    with pytest.raises(ExportError, match="model's own numbering"):  # a compact tokenizer never goes out as is
        export_vocab(compact)


# --------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("family, tie", [("gpt", True), ("gpt", False), ("llama", False), ("qwen3", True)])
def test_export_hf_compact_model_matches_transformers(tmp_path, compact, family, tie):
    from llm_from_scratch.generation import generate

    model = _compact_model(family, compact, tie)
    out = export_hf(model, compact, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == compact.full_vocab_size == 50257
    assert config["eos_token_id"] == compact.base.eot_id == 50256  # full ids in the config too
    hf_model, hf_tokenizer = _auto(out)
    compact_ids, full_ids = _prompt_ids(compact)
    assert hf_tokenizer(PROMPT, add_special_tokens=False)["input_ids"] == full_ids  # the full tokenizer

    # (a) + (b): one forward pass over a prompt with unseen tokens
    with torch.no_grad():
        ours = model(torch.tensor([compact_ids]))
        theirs = hf_model(torch.tensor([full_ids])).logits
    _check_logits(theirs, ours, compact)

    # (c) greedy generation: transformers' tokens are ours in full ids. Where ours is the reserved
    # id, theirs is some unseen id (all have its logit and its embedding), so compare in compact ids.
    x = torch.tensor([full_ids])
    hf_model.generation_config.eos_token_id = None  # ours does not stop at <|endoftext|> either
    theirs = hf_model.generate(x, max_new_tokens=10, do_sample=False, attention_mask=torch.ones_like(x),
                               pad_token_id=compact.base.eot_id)[0, len(full_ids):].tolist()
    ours = generate(model, torch.tensor([compact_ids]), 10, temperature=0.0)[0, len(compact_ids):].tolist()
    assert len(theirs) == len(ours) == 10
    assert compact.to_compact[theirs].tolist() == ours
    assert [t for t, o in zip(theirs, ours) if o != compact.unknown_id] == compact.full_ids(ours)
    assert hf_tokenizer.decode([t for t, o in zip(theirs, ours) if o != compact.unknown_id]) == compact.decode(ours)


# --------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------


def _check_gguf_rows(path, model, tokenizer, tie: bool) -> None:
    """Vocabulary size, token list and the embedding/output rows of a compact model's GGUF file."""
    from llm_from_scratch.weights.gguf_file import GGUFFile

    to_compact = torch.as_tensor(tokenizer.to_compact)
    with GGUFFile(path) as file:
        tokens = file.require("tokenizer.ggml.tokens")
        assert len(tokens) == tokenizer.full_vocab_size == 50257
        assert tokens[50256] == "<|endoftext|>" and tokens[464] == "The"
        assert file.require("tokenizer.ggml.eos_token_id") == 50256
        assert ("output.weight" in file.tensor_infos) is not tie
        names = ["token_embd.weight"] + ([] if tie else ["output.weight"])
        for name, ours in zip(names, (model.tok_emb.weight, model.out_head.weight)):
            stored = file.tensor(name)
            assert stored.shape == (50257, model.cfg.emb_dim), name
            assert torch.equal(stored, ours.detach()[to_compact]), name   # f32: the rows exactly
            unseen = stored[_unseen_mask(tokenizer)]
            assert torch.equal(unseen, ours.detach()[tokenizer.unknown_id].expand_as(unseen)), name


@pytest.mark.parametrize("tie", [True, False])
def test_export_gguf_gpt2_compact_model(tmp_path, compact, tie):
    model = _compact_model("gpt", compact, tie)
    path = export_gguf(model, compact, tmp_path / "m.gguf")
    _check_gguf_rows(path, model, compact, tie)
    compact_ids, full_ids = _prompt_ids(compact)
    logits = torch.from_numpy(_numpy_gpt2_from_gguf(gguf.GGUFReader(path), full_ids)).float()
    with torch.no_grad():
        _check_logits(logits, model(torch.tensor([compact_ids]))[0], compact, atol=1e-4)


def test_export_gguf_llama_compact_model_loads_back(tmp_path, compact):
    from llm_from_scratch.weights.llama import load_llama_gguf

    model = _compact_model("llama", compact, tie=False)
    path = export_gguf(model, compact, tmp_path / "llama.gguf")
    _check_gguf_rows(path, model, compact, tie=False)
    back, tokenizer = load_llama_gguf(path)
    assert back.cfg.vocab_size == 50257
    compact_ids, full_ids = _prompt_ids(compact)
    assert tokenizer.encode(PROMPT) == full_ids
    with torch.no_grad():
        _check_logits(back(torch.tensor([full_ids])), model(torch.tensor([compact_ids])), compact)


# --------------------------------------------------------------------------------------
# Our safetensors and the command
# --------------------------------------------------------------------------------------


def test_safetensors_keeps_the_compact_model_and_reloads_it(tmp_path, compact):
    model = _compact_model("gpt", compact, tie=True)
    path = save_model_safetensors(model, tmp_path / "m.safetensors", tokenizer=compact)
    loaded, tokenizer, _ = load_model_safetensors(path)
    assert isinstance(tokenizer, CompactTokenizer) and tokenizer.kept_ids == compact.kept_ids
    assert loaded.cfg.vocab_size == compact.vocab_size
    compact_ids, _ = _prompt_ids(compact)
    x = torch.tensor([compact_ids])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_cli_export_of_a_compact_checkpoint(tmp_path, compact, capsys):
    from cli_helpers import run_cli

    from llm_from_scratch.loading import load_model
    from llm_from_scratch.training.checkpoint import save_checkpoint

    model = _compact_model("gpt", compact, tie=True)
    ckpt = save_checkpoint(tmp_path / "best_model.pt", {"model": model.state_dict(),
                                                        "model_config": model.cfg.to_dict(),
                                                        "tokenizer": compact.to_config()})
    code, out, err = run_cli(capsys, "export", "--checkpoint", ckpt, "--format", "hf", "--out", tmp_path / "hf")
    assert code == 0, err
    assert "written over all 50,257 ids" in out
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 50257
    code, out, err = run_cli(capsys, "export", "--checkpoint", ckpt, "--format", "safetensors",
                             "--out", tmp_path / "m.safetensors")
    assert code == 0, err
    assert "kept compact" in out
    loaded = load_model(checkpoint=tmp_path / "m.safetensors", device="cpu")
    assert isinstance(loaded.tokenizer, CompactTokenizer) and loaded.model.cfg.vocab_size == compact.vocab_size
    x = torch.tensor([_prompt_ids(compact)[0]])
    from llm_from_scratch.model.compact_vocab import attach_vocabulary
    attach_vocabulary(model, compact)        # what loading gives it: the reserved id's offset
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.model(x).numpy(), model(x).numpy())
