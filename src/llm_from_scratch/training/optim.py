"""The optimizers and learning-rate schedules of training.

* `build_optimizer`: AdamW with weight decay on matrices only (the book's recipe); or, with
  ``optimizer="muon"``, Muon for the hidden matrices and AdamW for the rest (`MuonWithAdamW`).
* `warmup_cosine` / `build_scheduler`: linear warmup, then cosine decay (GPT's schedule).

Muon (Jordan et al., 2024; `torch.optim.Muon`) updates a weight matrix with the
*orthogonalized* momentum: a few Newton-Schulz iterations turn the momentum matrix M = U S V^T
into about U V^T, so every direction of the update gets the same size, instead of the few
large singular directions dominating as they do in SGD or Adam. It only makes sense for 2-D
weights that map one hidden space to another: the matrices inside the transformer blocks.
Embeddings (a lookup, one row per token), the output head, norms and biases keep AdamW.
"""

from __future__ import annotations

import inspect
import math

import torch


OPTIMIZERS = ("adamw", "muon")


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 0.1,
                    betas: tuple[float, float] = (0.9, 0.95), optimizer: str = "adamw",
                    muon_lr: float = 0.02) -> torch.optim.Optimizer:
    """Decay the weight matrices (embeddings, linear layers) but not biases and norm
    scales/shifts: shrinking those towards zero only hurts, they have no "size" to regularize.

    ``optimizer="muon"``: the matrices of the transformer blocks go to Muon (learning rate
    `muon_lr`, the same weight decay), everything else to AdamW as above."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()  # tied weights once
    hidden: list[torch.Tensor] = []
    if optimizer == "muon":
        hidden_ids = {id(p) for p in hidden_matrices(model)}
        hidden = [p for p in params if id(p) in hidden_ids]
        params = [p for p in params if id(p) not in hidden_ids]
    adamw = _adamw(params, lr, weight_decay, betas)
    if not hidden:
        return adamw
    muon = torch.optim.Muon(hidden, lr=muon_lr, weight_decay=weight_decay, momentum=0.95, nesterov=True)
    return MuonWithAdamW(muon, adamw)


def hidden_matrices(model: torch.nn.Module) -> list[torch.Tensor]:
    """The 2-D weights inside the transformer blocks (`trf_blocks`): attention and feed-forward
    projections, which Muon optimizes. Not the embeddings, the head, norms or biases."""
    blocks = getattr(model, "trf_blocks", None)
    if blocks is None:
        raise ValueError(f"Muon needs a model with transformer blocks (trf_blocks); {type(model).__name__} has none")
    return [p for p in blocks.parameters() if p.requires_grad and p.dim() == 2]


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for some parameters and AdamW for the others, as one optimizer.

    The trainer, the learning-rate scheduler and checkpoints see one object: `param_groups` are
    the two optimizers' own groups (a scheduler's change of a group's "lr" reaches the optimizer
    that owns it, and each group keeps its own base rate), `step` steps both, and `state_dict`
    holds both states."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.optimizers = (muon, adamw)
        # The same group dicts as the two optimizers: torch.optim.Optimizer keeps the dict objects.
        super().__init__([group for opt in self.optimizers for group in opt.param_groups], {})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for opt in self.optimizers:
            opt.step()
        return loss

    def state_dict(self) -> dict:
        return {"muon": self.optimizers[0].state_dict(), "adamw": self.optimizers[1].state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        if set(state_dict) != {"muon", "adamw"}:
            raise ValueError("this optimizer state is not Muon + AdamW's: the checkpoint was trained with "
                             "another optimizer (resume with the recipe/--optimizer it was started with)")
        self.optimizers[0].load_state_dict(state_dict["muon"])
        self.optimizers[1].load_state_dict(state_dict["adamw"])
        # Loading replaces each optimizer's group dicts: share the new ones again, or a scheduler
        # would go on changing the learning rate of groups nobody uses.
        self.param_groups = [group for opt in self.optimizers for group in opt.param_groups]


def _adamw(params, lr: float, weight_decay: float, betas: tuple[float, float]) -> torch.optim.AdamW:
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
