"""A compiled decode step: `torch.compile` of the model's one-token forward pass, where it pays.

Each decoding step runs the same small graph: embed one token per row, run every block with
its KV cache, normalize. Run eagerly, every operation is a Python call and a kernel launch of
its own; `torch.compile` traces the graph once and generates fused code for it (on a CPU,
C++ through a C compiler), which removes the per-operation overhead and fuses the small
element-wise operations (norms, activations, residual adds).

A compiled graph has fixed tensor shapes, so the step must too. `compile_decoding(model)`
therefore also makes the model's caches fixed-width (`KVCache(fixed_width=True)`: the attention
reads every column of a preallocated cache, and a mask hides the unfilled ones) with lengths
rounded up to a power of two, so generations of different lengths share a graph. The prompt's
prefill (many tokens at once) stays eager. Everything that decodes (`generate`, `chat`, the
server's batches, evaluation, the judge) goes through `DecoderLM.hidden_states`, so all of them
use the compiled step once it is on.

Whether it pays depends on the machine: measure with `benchmarks/bench_generation.py`. On a
2-core AMD EPYC (AVX2) it did not: weight reads dominate a batch-1 step, and the compiled
matrix-vector products were slower than PyTorch's eager ones (see benchmarks/README.md). If
compiling fails (no C++ compiler, an unsupported operation), decoding falls back to the eager
step and the log says why.
"""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


class _CompiledLayers:
    """The compiled `model.layers`, falling back to the eager one (once, logged) if compiling fails."""

    def __init__(self, model, compiled):
        self.model = model
        self.compiled = compiled

    def __call__(self, in_idx, positions, kv_cache=None):
        try:
            return self.compiled(in_idx, positions, kv_cache)
        except Exception as exc:  # noqa: BLE001 - any compiler failure: decode eagerly instead
            # Compilation happens before the graph runs, so nothing was written to the cache.
            log.warning("torch.compile of the decode step failed (%s: %s); decoding runs eagerly",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            self.model.__dict__.pop("compiled_layers", None)
            return self.model.layers(in_idx, positions, kv_cache)


def compile_decoding(model, *, backend: str = "inductor", mode: str | None = None) -> str:
    """Compile `model`'s one-token decode step (in place). Returns a one-line status for the log.

    `backend`: torch.compile's backend ("inductor" generates code; "eager" only traces, for tests).
    Undo with `uncompile_decoding(model)`.
    """
    if not hasattr(model, "layers") or not hasattr(model, "new_kv_cache"):
        return "not compiled: the model has no decode step to compile (not one of our DecoderLM models)"
    if not hasattr(torch, "compile"):
        return f"not compiled: torch.compile needs PyTorch >= 2.0 (this is {torch.__version__})"
    try:
        compiled = torch.compile(model.layers, backend=backend, mode=mode)
    except Exception as exc:  # noqa: BLE001 - e.g. an unsupported Python version
        log.warning("torch.compile is not available here (%s); decoding runs eagerly", exc)
        return f"not compiled: {exc}"
    model.compiled_layers = _CompiledLayers(model, compiled)
    return (f"decode step compiled with torch.compile (backend {backend}); the first steps compile it, "
            "which takes a while on a CPU")


def uncompile_decoding(model) -> None:
    """Back to the eager decode step (and ordinary growing caches)."""
    model.__dict__.pop("compiled_layers", None)


def is_compiled(model) -> bool:
    return model.__dict__.get("compiled_layers") is not None
