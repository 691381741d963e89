"""A compact-vocabulary model turned back into a full-vocabulary one, for tools that know only the full tokenizer.

A model trained with a `CompactTokenizer` (`tokenizers/compact.py`) has an embedding and an
output head over the ids its corpus used plus one reserved id for all the others: 1,095 rows
instead of cl100k_base's 100,277. That is our private numbering. `transformers`, llama.cpp and
every other tool speak the tokenizer's own ids, so an export must give them a model over the
**full** vocabulary that makes the same predictions:

    full id f, kept        row f = the compact model's row of f     (`to_compact[f]`)
    full id f, never seen  row f = the reserved id's row            (`to_compact[f]` = `unknown_id`)

One gather does both, because `to_compact` already sends every unseen id to the reserved id::

    full_table = compact_table[to_compact]        # (full_vocab, emb) from (compact_vocab, emb)

This applies to the token embedding (an unseen id in a prompt reads as the reserved id, as in
our model) and to the output head, whose rows make the logits: every unseen id gets the
reserved id's logit. Our softmax adds log(number of unseen ids) to the reserved id's logit
(`attach_vocabulary`), so the reserved id's probability is that of all unseen ids together and
the two models are the same distribution (tested to 1e-10 in float64). Instruction tuning never
makes the reserved id a target (data/instructions.py). A head bias (our families have none)
would be gathered the same way. Everything else (blocks, norms, positions) is copied.

A tied model stays tied: the head *is* the embedding, so it is gathered once. The full model
costs (full_vocab - compact_vocab) x emb_dim more numbers, which is the price of a file that
other tools read; our own formats (`.pt`, our `.safetensors`) keep the compact model and its
tokenizer config instead.

Padding: our configurations have no rounding rule for the vocabulary; a compact model whose
table has more rows than its tokenizer has ids (padding) has them only for speed, and no token
uses them, so the full model has exactly `full_vocab_size` rows.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from llm_from_scratch.io.checkpoints import is_tied, unwrap_model
from llm_from_scratch.tokenizers.compact import CompactTokenizer

__all__ = ["expand_to_full_vocabulary", "is_compact", "full_vocabulary_rows"]

#: The state-dict entries whose first axis is the vocabulary.
VOCAB_ROWS = ("tok_emb.weight", "out_head.weight", "out_head.bias")


def is_compact(tokenizer: Any) -> bool:
    """True for a `CompactTokenizer`: the model it belongs to numbers tokens its own way."""
    return isinstance(tokenizer, CompactTokenizer)


def full_vocabulary_rows(tokenizer: CompactTokenizer, device: torch.device | str = "cpu") -> torch.Tensor:
    """(full_vocab_size,) int64: the compact row that every full id takes (unseen -> `unknown_id`)."""
    return torch.as_tensor(tokenizer.to_compact, dtype=torch.long, device=device)


def attach_vocabulary(model: nn.Module, tokenizer: Any) -> nn.Module:
    """Make a model trained with a compact tokenizer the full-vocabulary distribution it stands
    for: its reserved id's logit gets + log(number of unseen ids) (`CompactTokenizer.logit_offset`),
    so its probability is that of all unseen ids together, exactly as in the model an export
    writes; and decoding never writes the reserved id (`generation_vocab_size`): it stands for
    *some* token the corpus never had, not one that could be written. A model with a full
    tokenizer is left alone. Everything that builds a model for a tokenizer calls this
    (pretraining, `loading.load_model`)."""
    target = unwrap_model(model)
    if is_compact(tokenizer) and hasattr(target, "set_logit_offset"):
        target.set_logit_offset(torch.from_numpy(tokenizer.logit_offset(target.cfg.vocab_size)))
        target.generation_vocab_size = tokenizer.unknown_id
    return model


def expand_to_full_vocabulary(model: nn.Module, tokenizer: CompactTokenizer) -> tuple[nn.Module, Any]:
    """(a full-vocabulary copy of ``model``, ``tokenizer.base``): see the module docstring.

    ``model`` is one of our `DecoderLM`s (GPT, Llama, Qwen3; compiled or DDP-wrapped is fine)
    with float weights, trained with the compact ``tokenizer``. The copy has the same family,
    configuration (but ``vocab_size = tokenizer.full_vocab_size``), dtype, device and train/eval
    mode; it shares no tensor with ``model``. ValueError for a tokenizer that is not compact, a
    model with fewer rows than the tokenizer has ids, or one without float embedding/head
    weights (quantized for inference: expand the float model).
    """
    from llm_from_scratch.model.registry import model_from_config

    if not is_compact(tokenizer):
        raise ValueError(f"expand_to_full_vocabulary needs a CompactTokenizer, got {type(tokenizer).__name__}")
    model = unwrap_model(model)
    cfg = getattr(model, "cfg", None)
    if not hasattr(cfg, "replace"):
        raise ValueError(f"expand_to_full_vocabulary takes one of our models (GPT, Llama, Qwen3), "
                         f"got {type(model).__name__}")
    if cfg.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"the compact tokenizer has {tokenizer.vocab_size} ids but the model only "
                         f"{cfg.vocab_size} embedding rows: they do not belong together")
    state = model.state_dict()
    for name in ("tok_emb.weight", "out_head.weight"):
        if name not in state or not state[name].is_floating_point():
            raise ValueError(f"the model has no float {name} (quantized for inference?): expand the float model")

    rows = full_vocabulary_rows(tokenizer, state["tok_emb.weight"].device)
    full_state = {name: tensor.index_select(0, rows) if name in VOCAB_ROWS else tensor.clone()
                  for name, tensor in state.items()}
    with torch.device("meta"):   # no random init of a big table that is overwritten at once
        full = model_from_config(cfg.replace(vocab_size=tokenizer.full_vocab_size))
    full.load_state_dict(full_state, strict=True, assign=True)  # our tensors become the parameters
    if is_tied(model):
        # assign=True gave head and embedding separate (equal) tensors: share one again
        full.out_head.weight = full.tok_emb.weight
    rope = getattr(full, "rope", None)
    if rope is not None:
        rope.rebuild()                     # the position tables built on "meta": compute them
        rope.to(state["tok_emb.weight"].device)
    return full.train(model.training), tokenizer.base
