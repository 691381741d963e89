"""A model's skeleton: every module and every tensor's shape, but no memory and no random values.

A loader of pretrained weights first needs the model's modules, to put the file's tensors into.
Building it the ordinary way (`model_from_config(cfg)`) would allocate every parameter and fill
it with random numbers, only to throw them away: 540 MB of float32 for SmolLM2-135M. So loaders
build it on PyTorch's ``meta`` device, whose tensors have a shape and a dtype but no storage,
then assign the real tensors in (`load_state_dict(..., assign=True)`) or replace whole layers
(the quantized ones).

One catch, measured with PyTorch 2.13: ``nn.Embedding`` initializes its table with
``normal_``, and on the meta device ``normal_`` runs a Python reference implementation that
imports ``torch._dynamo`` (and with it sympy, the compiler's symbolic shapes and ~800 more
modules): +75 MB of resident memory for the rest of the process, a third of what a quantized
SmolLM2 needs. Random values on tensors that have no values are pointless anyway, so
`model_skeleton` skips the initializers (`torch.nn.init`'s functions and the tensors' own
``normal_``/``uniform_``) while it builds on the meta device. Nothing else changes: the modules,
shapes and dtypes are exactly those of `model_from_config(cfg)`.

    model = model_skeleton(cfg)       # every parameter on "meta": shapes only
    model.load_state_dict(tensors, assign=True)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

__all__ = ["model_skeleton", "on_meta_without_init"]

#: The functions that only fill a tensor with (random or constant) initial values, in place.
INITIALIZERS: frozenset[Callable[..., Any]] = frozenset(
    [getattr(nn.init, name) for name in dir(nn.init) if name.endswith("_") and not name.startswith("_")]
    + [torch.Tensor.normal_, torch.Tensor.uniform_])


class _SkipInitializersOnMeta(TorchFunctionMode):
    """Returns a meta tensor unchanged where an initializer would fill it (see the module's docstring)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in INITIALIZERS:
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


@contextmanager
def on_meta_without_init() -> Iterator[None]:
    """Inside: new tensors are created on the meta device, and initializers of meta tensors do nothing."""
    with torch.device("meta"), _SkipInitializersOnMeta():
        yield


def model_skeleton(cfg: Any) -> nn.Module:
    """The model of configuration `cfg` (any family, `model.registry.model_from_config`) with every
    parameter and buffer on the meta device: shapes and dtypes only, nothing allocated or initialized."""
    from llm_from_scratch.model.registry import model_from_config

    with on_meta_without_init():
        return model_from_config(cfg)
