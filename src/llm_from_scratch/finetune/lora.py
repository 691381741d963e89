"""LoRA: fine-tune a big matrix through a small low-rank correction (the material's appendix E).

Full fine-tuning updates every weight matrix W (d_out x d_in). LoRA freezes W and learns

    W' = W + (alpha / rank) * (A @ B)^T        A: (d_in, rank), B: (rank, d_out)

so a layer computes ``x @ W.T + (alpha / rank) * (x @ A @ B)``. With rank 16 and a 768 x 768
matrix that is 24,576 trainable numbers instead of 589,824. B starts at zero, so at the start
the model is exactly the pretrained one; A starts random (Kaiming-uniform, as nn.Linear does),
so the gradient of B is not zero.

After training the correction can be merged into W (`merge_lora`): the model is then an
ordinary model again, with the same outputs and no extra cost, and exports like any other.
The adapters alone are small enough to save separately (`lora_state_dict`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn


class LoRALayer(nn.Module):
    """The low-rank correction alone: x -> (alpha / rank) * x @ A @ B."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.A = nn.Parameter(torch.empty(in_dim, rank))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))  # like nn.Linear's own initialization
        self.B = nn.Parameter(torch.zeros(rank, out_dim))  # zero: training starts from the base model
        self.rank, self.alpha = rank, alpha

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * (x @ self.A @ self.B)

    def delta_weight(self) -> torch.Tensor:
        """The correction in nn.Linear's layout (out_dim, in_dim)."""
        return self.scaling * (self.A @ self.B).T


class LinearWithLoRA(nn.Module):
    """A frozen nn.Linear plus a trainable LoRALayer beside it. `lora_enabled = False` switches
    the correction off: the layer is the base layer again (DPO and GRPO read their frozen
    reference model that way, without a second copy of the weights)."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.linear = linear
        self.lora = LoRALayer(linear.in_features, linear.out_features, rank, alpha)
        self.lora.to(device=linear.weight.device, dtype=linear.weight.dtype)
        self.lora_enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.lora_enabled:
            return self.linear(x)
        return self.linear(x) + self.lora(x)


def replace_linear_with_lora(model: nn.Module, rank: int, alpha: float,
                             skip: tuple[str, ...] = ()) -> nn.Module:
    """Wrap every nn.Linear of `model` (in place) with LoRA, except modules whose name is in `skip`.

    Like the material, this does not freeze anything itself; `apply_lora` below does both.
    """
    for name, child in list(model.named_children()):
        if name in skip:
            continue
        if isinstance(child, nn.Linear):
            setattr(model, name, LinearWithLoRA(child, rank, alpha))
        else:
            replace_linear_with_lora(child, rank, alpha, skip)
    return model


def apply_lora(model: nn.Module, rank: int = 16, alpha: float = 16.0,
               train_also: tuple[str, ...] = ()) -> nn.Module:
    """Freeze `model`, add LoRA to its linear layers; only the adapters (and modules named in
    `train_also`, e.g. a new classification head "out_head") train.

    The output head gets no adapter: it is either tied to the token embedding (GPT-2, SmolLM2:
    its matrix is the embedding's too), a new head that trains fully, or read directly by the
    fused training loss (`model(x, targets=y)` uses `out_head.weight`).
    """
    for parameter in model.parameters():
        parameter.requires_grad = False
    replace_linear_with_lora(model, rank, alpha, skip=("out_head",))
    for name in train_also:
        for parameter in model.get_submodule(name).parameters():
            parameter.requires_grad = True
    return model


class lora_disabled:
    """Inside the `with`, every LoRA adapter of `model` is switched off: the model computes what
    its base model computes (the frozen reference of DPO/GRPO, without a second copy)."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, LinearWithLoRA)]

    def __enter__(self):
        for layer in self.layers:
            layer.lora_enabled = False
        return self

    def __exit__(self, *exc):
        for layer in self.layers:
            layer.lora_enabled = True
        return False


def has_lora(model: nn.Module) -> bool:
    return any(isinstance(m, LinearWithLoRA) for m in model.modules())


@torch.no_grad()
def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its linear layer and remove it (in place): same outputs, plain model."""
    for name, child in list(model.named_children()):
        if isinstance(child, LinearWithLoRA):
            child.linear.weight += child.lora.delta_weight().to(child.linear.weight.dtype)
            setattr(model, name, child.linear)
        else:
            merge_lora(child)
    return model


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapters' tensors (names as in the full state dict)."""
    return {name: tensor for name, tensor in model.state_dict().items() if ".lora." in name}


def save_lora(model: nn.Module, path: str | Path, rank: int, alpha: float) -> Path:
    """Write the adapters (with rank and alpha) to a safetensors file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tensors = {k: v.contiguous() for k, v in lora_state_dict(model).items()}
    save_file(tensors, str(tmp), metadata={"rank": str(rank), "alpha": str(alpha)})
    tmp.replace(path)
    return path


def load_lora(model: nn.Module, path: str | Path) -> nn.Module:
    """Add adapters saved by `save_lora` to a base model (in place)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as file:
        meta = file.metadata() or {}
        tensors = {name: file.get_tensor(name) for name in file.keys()}
    if "rank" not in meta:
        raise ValueError(f"{path} is not a LoRA adapter file written by save_lora (no rank in its metadata)")
    if not has_lora(model):
        apply_lora(model, int(meta["rank"]), float(meta["alpha"]))
    missing = set(lora_state_dict(model)) - set(tensors)
    unexpected = set(tensors) - set(lora_state_dict(model))
    if missing or unexpected:
        raise ValueError(f"{path} does not fit this model: missing {sorted(missing)[:3]}, "
                         f"unexpected {sorted(unexpected)[:3]}")
    model.load_state_dict(tensors, strict=False)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each tensor counted once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in unique if p.requires_grad), sum(p.numel() for p in unique)
