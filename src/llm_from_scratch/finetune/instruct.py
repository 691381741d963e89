"""Instruction fine-tuning (chapter 7): teach a pretrained model to answer, then measure the answers.

The steps, each a function here:

1. `prompt_style_for(tokenizer, style)`: how an entry becomes text. "alpaca" (the material's
   "### Instruction: ... ### Response:"), "phi3", or "chat": the model's own chat template
   (the right choice for a chat model such as SmolLM2-Instruct, which already knows its template).
2. `instruction_loaders`: the 85/5/10 split and the collate of `data/instructions.py`.
3. Training: the shared `GPTTrainer`; the collate sets the targets of padding (and optionally of
   the prompt) to -100, which the model's fused loss ignores.
4. `generate_responses`: the test entries' prompts, decoded together in batches
   (`generation.generate_batch`, the project's one decoding loop), cut at the end of the
   answer, stored next to the entries.
5. `evaluation.scoring.score_exact_match`: answers compared after light normalization
   (`data/synthetic_instructions`). For open-ended answers, `evaluation/judge.py` asks a stronger
   model to score them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from llm_from_scratch.data.instructions import (ChatTemplateStyle, InstructionSplits, PromptStyle, get_prompt_style,
                                                instruction_dataloader, split_instruction_data)


def prompt_style_for(tokenizer, style: str = "auto", system: str | None = None) -> PromptStyle:
    """"auto" picks the chat template for a chat model and the material's Alpaca format otherwise."""
    if style == "auto":
        style = "chat" if getattr(tokenizer, "chat_template", None) else "alpaca"
    if style == "chat":
        from llm_from_scratch.tokenizers.chat_template import render_chat

        return ChatTemplateStyle(lambda messages, add_generation_prompt:
                                 render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt),
                                 system=system)
    return get_prompt_style(style)


def stop_ids_for(tokenizer) -> list[int]:
    from llm_from_scratch.tokenizers.chat_template import stop_token_ids

    return stop_token_ids(tokenizer)


def instruction_loaders(entries: Sequence[Mapping[str, Any]], tokenizer, style: PromptStyle, *,
                        batch_size: int = 8, mask_prompt: bool = False, allowed_max_length: int | None = None,
                        seed: int = 123, validation: Sequence[Mapping[str, Any]] | None = None):
    """(train_loader, val_loader, splits): the material's 85/5/10 split (in file order) and loaders.
    With `validation` given, all of `entries` trains, `validation` validates and the test split is empty."""
    if validation is not None:
        splits = InstructionSplits(train=list(entries), validation=list(validation), test=[])
    else:
        splits = split_instruction_data(list(entries))
    if validation is not None and not splits.validation:
        raise ValueError("the validation set is empty: give at least one entry to validate on")
    if not splits.train or not splits.validation:
        raise ValueError(f"{len(entries)} entries are too few to split 85/5/10 into non-empty parts; "
                         "use at least 20")
    if len(splits.train) < batch_size:   # the training loader drops an incomplete last batch
        raise ValueError(f"{len(splits.train)} training entries are fewer than one batch of {batch_size}: "
                         "give more data or a smaller --batch_size")
    pad = tokenizer.eot_id if tokenizer.eot_id is not None else 0
    options = dict(tokenizer=tokenizer, batch_size=batch_size, style=style, mask_prompt=mask_prompt,
                   allowed_max_length=allowed_max_length, pad_token_id=pad)
    train = instruction_dataloader(splits.train, shuffle=True, drop_last=True,
                                   generator=torch.Generator().manual_seed(seed), **options)
    val = instruction_dataloader(splits.validation, **options)
    return train, val, splits


def generate_responses(model, tokenizer, entries: Sequence[Mapping[str, Any]], style: PromptStyle, *,
                       max_new_tokens: int = 32, batch_size: int = 8, response_key: str = "model_response",
                       progress: bool = True) -> list[dict[str, Any]]:
    """Greedy answers for `entries`, decoded in batches; returns copies of the entries with the answer."""
    from tqdm.auto import tqdm

    from llm_from_scratch.generation import generate_batch

    allowed = getattr(style, "allowed_special", None)
    stop_ids = set(stop_ids_for(tokenizer))
    context = model.cfg.context_length
    results = []
    batches = range(0, len(entries), batch_size)
    for start in tqdm(batches, desc="answering", disable=not progress, unit="batch"):
        chunk = entries[start:start + batch_size]
        prompts = []
        for entry in chunk:
            text = style.generation_prompt(entry)
            ids = tokenizer.encode(text, allowed_special=allowed) if allowed else tokenizer.encode(text)
            prompts.append(ids[-(context - max_new_tokens):])
        outputs = generate_batch(model, prompts, max_new_tokens, stop_ids=stop_ids)
        for entry, new_ids in zip(chunk, outputs):
            answer = style.extract_response(tokenizer.decode(new_ids))
            results.append({**entry, response_key: answer})
    return results


def save_results(path: str | Path, results: Sequence[Mapping[str, Any]]) -> Path:
    """The entries with their answers, as the material's instruction-data-with-response.json."""
    from llm_from_scratch.assets import write_atomically

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(list(results), ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    return path
