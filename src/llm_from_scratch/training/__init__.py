"""Training (chapter 5): loss, optimizer and schedule, checkpoints, and the training loop."""

from llm_from_scratch.training.checkpoint import load_checkpoint, save_checkpoint
from llm_from_scratch.training.losses import calc_loss_batch, calc_loss_loader, perplexity
from llm_from_scratch.training.optim import build_optimizer, build_scheduler, warmup_cosine
from llm_from_scratch.training.trainer import GPTTrainer, TrainerConfig

__all__ = ["GPTTrainer", "TrainerConfig", "calc_loss_batch", "calc_loss_loader", "perplexity",
           "build_optimizer", "build_scheduler", "warmup_cosine", "save_checkpoint", "load_checkpoint"]
