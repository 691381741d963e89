"""Seed 001's one-stop import::

    from llm_from_scratch.gpt import GPT, GPTConfig, SimpleTokenizer, create_dataloaders, GPTTrainer

Everything here is re-exported from the modules that implement it (nothing is defined twice):
`GPT` is `model.gpt.GPTModel` with nanoGPT-style arguments, `SimpleTokenizer` is the character
tokenizer, `GPTTrainer` is the project's one training loop.
"""

from llm_from_scratch.data.sliding_window import create_dataloaders
from llm_from_scratch.generation import generate
from llm_from_scratch.model.config import GPTConfig
from llm_from_scratch.model.gpt import GPT, GPTModel
from llm_from_scratch.tokenizers.char import SimpleTokenizer
from llm_from_scratch.training.trainer import GPTTrainer, TrainerConfig

__all__ = ["GPT", "GPTConfig", "GPTModel", "SimpleTokenizer", "create_dataloaders", "GPTTrainer",
           "TrainerConfig", "generate"]
