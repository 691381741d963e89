"""Checkpoints written by an earlier version keep loading: same parameter names, same logits.

The fixtures (tests/fixtures/checkpoints_v0/, see its README) were written before the GPT and
Llama classes became configurations of one decoder core. Precision: fp32, logits within 1e-5.
"""

import json
from pathlib import Path

import pytest
import torch

from llm_from_scratch.loading import load_checkpoint_model

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints_v0"


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_an_old_checkpoint_loads_and_gives_the_same_logits(name):
    expected = json.loads((FIXTURES / "expected_logits.json").read_text())
    model, tokenizer, ckpt = load_checkpoint_model(FIXTURES / f"{name}.pt", device="cpu")
    assert ckpt["model_type"] == f"tiny-{name}" and tokenizer.name == "char"
    with torch.no_grad():
        logits = model(torch.tensor([expected["input_ids"]]))
    torch.testing.assert_close(logits, torch.tensor(expected["logits"][name]), rtol=1e-5, atol=1e-5)
    # strict loading: every saved name has its parameter, and the other way round
    assert set(ckpt["model"]) == set(model.state_dict())
