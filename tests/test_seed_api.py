"""Seed 001's README example, as written (with a real text in place of the placeholder)."""

import math

import pytest


def test_seed_001_example_runs_as_written():
    from llm_from_scratch.data.tiny_stories import tiny_stories

    # --- the seed's code, unchanged apart from the text ---
    from llm_from_scratch.gpt import (
        GPT, GPTConfig, SimpleTokenizer,
        create_dataloaders, GPTTrainer
    )

    text = tiny_stories(num_stories=100)

    tokenizer = SimpleTokenizer(text)

    train_loader, val_loader = create_dataloaders(
        text, tokenizer,
        block_size=64,
        batch_size=8
    )

    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        n_embd=128,
        n_layer=4,
        n_head=4,
        block_size=64
    )

    model = GPT(
        vocab_size=config.vocab_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        block_size=config.block_size
    )

    trainer = GPTTrainer(model, train_loader, val_loader)
    history = trainer.train()
    # --- end of the seed's code ---

    assert trainer.total_steps == min(1000, len(train_loader))  # bounded default length
    first, last = history[0], history[-1]
    assert math.isfinite(last["val_loss"]) and last["val_loss"] < first["val_loss"]
    assert last["val_loss"] < math.log(tokenizer.vocab_size) - 0.5  # it learned something


def test_seed_placeholder_text_gets_a_clear_error():
    from llm_from_scratch.gpt import SimpleTokenizer, create_dataloaders

    text = "Your training text here..."
    with pytest.raises(ValueError, match="too short"):
        create_dataloaders(text, SimpleTokenizer(text), block_size=64, batch_size=8)
