"""Classification accuracy (chapter 6): the share of examples whose highest logit is the right class.

The book's `calc_accuracy_loader`, used while fine-tuning a classifier (a metric at every
evaluation), after it (train/validation/test accuracy) and by `llmfs evaluate accuracy`.
"""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def calc_accuracy_loader(data_loader, model: nn.Module, device, num_batches: int | None = None) -> float:
    """The material's accuracy: the share of examples whose highest logit is the right class."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for i, (input_ids, labels) in enumerate(data_loader):
        if num_batches is not None and i >= num_batches:
            break
        predicted = model(input_ids.to(device)).argmax(dim=-1)
        correct += int((predicted == labels.to(device)).sum())
        total += labels.shape[0]
    model.train(was_training)
    return correct / total if total else float("nan")
