"""Training recipes: an architecture and an optimizer that go together, under one name.

    llmfs train --recipe book      # the default: the book's GPT (chapter 4) and AdamW (chapter 5)
    llmfs train --recipe modern    # what the speedrun found faster on a CPU (docs/21-speedrun.md)

A recipe is only a set of defaults. It sets two kinds of settings:

* `model`: switches of the decoder core, i.e. fields of the model's configuration (for a GPT
  preset: `norm`, `positions`, `mlp`, `bias`, `qk_norm`, `logit_softcap`, `zero_init`,
  `tie_weights`; see `model/config.py`). Each one is also a flag of `llmfs train`.
* `training`: fields of `PretrainConfig` (`optimizer`, `lr`, `muon_lr`, `warmup_steps`,
  `windows`, ...), also flags.

A setting given explicitly (a flag, or a `PretrainConfig` field that is not None) always wins
over the recipe. The recipe's name is recorded in the checkpoint, so `--resume` continues with
the same one.

Why the modern recipe looks as it does is measured, not assumed: every switch was ablated on a
2-core CPU (`benchmarks/speedrun.py`); docs/21-speedrun.md has the numbers, including for the
candidates that did not pay and were left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Recipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    name: str
    summary: str
    model: dict[str, Any] = field(default_factory=dict)     # model configuration fields
    training: dict[str, Any] = field(default_factory=dict)  # PretrainConfig fields


RECIPES: dict[str, Recipe] = {
    "book": Recipe(
        "book", "the book's GPT (learned positions, LayerNorm, GELU) trained with AdamW and a cosine schedule"),
    "modern": Recipe(
        "modern", "RoPE, RMSNorm, ReLU^2, no biases, QK-norm and soft-capped logits; Muon for the blocks' "
                  "matrices",
        model=dict(positions="rope", norm="rmsnorm", mlp="relu2", bias=False, qk_norm=True, logit_softcap=15.0),
        training=dict(optimizer="muon", muon_lr=0.02, lr=3e-3, warmup_steps=50),
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(RECIPES)}")
    return RECIPES[name]
