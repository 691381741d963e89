import os

import pytest
import torch

# Tests must never reach for the web; assets come from the cache or the package registries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The test models are tiny: one intra-op thread is as fast as two, and it keeps the suite from
# slowing down badly (OpenMP threads spin-waiting) when the machine is shared with other work.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_cfg():
    from llm_from_scratch.model import GPTConfig
    return GPTConfig(vocab_size=97, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


@pytest.fixture
def sample_text():
    """A few KB of varied English made here (no downloads)."""
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
             "jolly zebras and boxing pilots mix frozen quartz").split()
    g = torch.Generator().manual_seed(1)
    sentences = []
    for _ in range(400):
        n = int(torch.randint(4, 12, (1,), generator=g))
        idx = torch.randint(0, len(words), (n,), generator=g).tolist()
        sentences.append(" ".join(words[i] for i in idx).capitalize() + ".")
    return " ".join(sentences)
