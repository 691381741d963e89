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


@pytest.fixture
def corpus_dir(tmp_path, monkeypatch):
    """A small corpus folder (train.txt + validation.txt of built-in stories) and a private,
    offline cache: what `llmfs train --dataset <folder>` tests train on without downloads."""
    from llm_from_scratch.data.tiny_stories import tiny_stories

    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    folder = tmp_path / "stories"
    folder.mkdir()
    text = tiny_stories(num_stories=300)
    cut = int(len(text) * 0.9)
    (folder / "train.txt").write_text(text[:cut], encoding="utf-8")
    (folder / "validation.txt").write_text(text[cut:], encoding="utf-8")
    return folder


def save_tiny_gpt(path, drop_rate: float = 0.0, emb_dim: int = 32):
    """A tiny untrained GPT (context 128) with the GPT-2 tokenizer, saved as our checkpoint."""
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.tokenizers import get_tokenizer
    from llm_from_scratch.training.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=128, emb_dim=emb_dim, n_heads=2, n_layers=2,
                               drop_rate=drop_rate))
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                           "tokenizer": get_tokenizer("gpt2").to_config()})
    return path


@pytest.fixture
def base_checkpoint(tmp_path):
    """A tiny untrained GPT with the GPT-2 tokenizer: the starting point of the fine-tuning tests."""
    return save_tiny_gpt(tmp_path / "base.pt")

