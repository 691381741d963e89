"""AdamW with weight decay on matrices only, and GPT's learning-rate schedule."""

from __future__ import annotations

import inspect
import math

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """Decay the weight matrices (embeddings, linear layers) but not biases and norm
    scales/shifts: shrinking those towards zero only hurts, they have no "size" to regularize."""
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {}
    # The fused kernel updates all parameters in one pass (CPU and CUDA in recent PyTorch).
    if "fused" in inspect.signature(torch.optim.AdamW).parameters:
        kwargs["fused"] = True
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **kwargs)
    except (RuntimeError, ValueError):  # fused not available for this device/dtype
        return torch.optim.AdamW(groups, lr=lr, betas=betas)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning-rate multiplier: linear warmup from ~0 to 1, then cosine decay to min_lr_ratio.

    Warmup keeps the first updates small while Adam's statistics are still noisy; the cosine
    decay lets the model settle into a minimum at the end.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr_ratio
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                    min_lr_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps, min_lr_ratio))
