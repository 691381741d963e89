"""The whole pipeline in a couple of minutes, with nothing to download: what `llmfs demo` does.

    from llm_from_scratch.pipelines import DemoConfig, run_demo

    result = run_demo(DemoConfig(max_steps=200))
    print(result.samples[0])

Text (the built-in tiny stories) -> character tokenizer -> sliding windows held in memory -> a
gpt-micro model -> the shared trainer (evaluation, checkpoints, loss.png in `out_dir`) -> three
samples from the trained model. Unlike `pretrain` there are no shards and no corpus files: the
text is small enough to tokenize on the spot, which keeps every step of the path visible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_from_scratch.pipelines.common import sigterm_as_ctrl_c


@dataclass
class DemoConfig:
    """The settings of the demo; the defaults are `llmfs demo`'s (about two minutes on 2 CPU cores)."""

    max_steps: int = 1000
    batch_size: int = 16
    out_dir: str | Path = "checkpoints/demo"
    prompt: str = "Mia went to"          # what the samples continue
    seed: int = 123
    precision: str = "auto"
    progress: bool = True


@dataclass
class DemoResult:
    out_dir: Path
    model: Any
    tokenizer: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)


def run_demo(config: DemoConfig) -> DemoResult:
    """Train a tiny model on built-in text, print and return three samples."""
    import torch

    from llm_from_scratch.data import create_dataloaders
    from llm_from_scratch.data.tiny_stories import tiny_stories
    from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text
    from llm_from_scratch.model.registry import create_model
    from llm_from_scratch.tokenizers import CharTokenizer
    from llm_from_scratch.training import GPTTrainer
    from llm_from_scratch.training.trainer import validation_summary

    c = config
    torch.manual_seed(c.seed)
    text = tiny_stories(num_stories=2000)
    tokenizer = CharTokenizer(text)
    model = create_model("gpt-micro", vocab_size=tokenizer.vocab_size)
    block_size = model.cfg.context_length
    train_loader, val_loader = create_dataloaders(text, tokenizer, block_size=block_size,
                                                  batch_size=c.batch_size, seed=c.seed)
    print(f"llmfs demo: {len(text):,} characters of built-in stories, character tokenizer "
          f"({tokenizer.vocab_size} symbols), gpt-micro model ({model.num_parameters():,} parameters), "
          f"{c.max_steps} steps of {c.batch_size} x {block_size} tokens")
    started = time.perf_counter()
    trainer = GPTTrainer(model, train_loader, val_loader, tokenizer=tokenizer, max_steps=c.max_steps,
                         lr=2e-3, eval_interval=max(1, c.max_steps // 10), sample_prompt=c.prompt,
                         out_dir=str(c.out_dir), seed=c.seed, progress=c.progress, precision=c.precision,
                         extra_checkpoint_info={"model_type": "gpt-micro"})
    print(f"device {trainer.device}, {trainer.precision_choice.describe()}")
    with sigterm_as_ctrl_c():
        history = trainer.train()
    minutes = (time.perf_counter() - started) / 60
    print(f"\nDone in {minutes:.1f} min: train loss {history[-1]['train_loss']:.3f}, {validation_summary(history)}. "
          f"Checkpoints, log and loss.png are in {Path(c.out_dir).resolve()}")

    generator = torch.Generator(device=trainer.device).manual_seed(c.seed)
    idx = text_to_token_ids(c.prompt, tokenizer).to(trainer.device)
    print("\nSamples (temperature 0.8, top-k 20):")
    samples = []
    for _ in range(3):
        out = generate(model, idx, max_new_tokens=160, temperature=0.8, top_k=20, generator=generator)
        samples.append(token_ids_to_text(out, tokenizer))
        print("  " + samples[-1].replace("\n", " "))
    return DemoResult(Path(c.out_dir), model, tokenizer, list(history), samples)
