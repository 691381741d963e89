"""How this process's C allocator (glibc's malloc) treats the memory PyTorch frees.

PyTorch's CPU tensors are allocated with the C library's `malloc`. On Linux with glibc, what
happens to a freed buffer depends on its size, and the right choice differs between training
and inference, so the project sets it per kind of work:

* Training keeps freed memory for reuse (`training/cpu_speed.keep_freed_memory`): a training
  step frees and allocates the same big buffers every step, and reusing them avoids page faults.

* Inference gives freed memory back (`give_back_freed_memory`, called by `load_model`). Loading
  a model makes hundreds of short-lived buffers (dequantized rows, int8 conversions, the float
  copy before quantizing). glibc serves buffers below its *mmap threshold* from its heaps, where
  freed memory mostly stays in the process, and bigger ones with their own `mmap`, returned to
  the system on free. The threshold starts at 128 KiB but glibc raises it to the size of each
  big buffer freed (up to 32 MiB), so after the first big temporary, later ones land in the heap
  and stay there: the resident size after loading depends on the order of frees. Measured on
  SmolLM2-135M with int8 weights (2-core EPYC): 530-830 MB resident after loading, run to run,
  peaks up to 866 MB; with the threshold fixed at 256 KiB, 498 MB every time (peak ~552 MB).
  A fixed threshold also stops the raising, for the rest of the process. `malloc_trim` then
  hands back what the heaps still hold free.

Both are no-ops off Linux/glibc (musl has no `mallopt`), and when LLMFS_NO_MALLOC_TUNING=1.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

__all__ = ["NO_MALLOC_TUNING_ENV", "glibc", "give_back_freed_memory", "trim_freed_memory"]

NO_MALLOC_TUNING_ENV = "LLMFS_NO_MALLOC_TUNING"

M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
#: Buffers at least this big get their own mapping, returned to the system when freed.
INFERENCE_MMAP_THRESHOLD = 256 * 1024


def glibc() -> Any | None:
    """The C library if it is glibc (has `mallopt`) and tuning is allowed, else None."""
    if os.environ.get(NO_MALLOC_TUNING_ENV, "").strip().lower() in {"1", "true", "yes"}:
        return None
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 -- both must exist (musl lacks them)
    except (OSError, AttributeError):
        return None
    return libc


def give_back_freed_memory(threshold: int = INFERENCE_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process. Returns True if applied.

    Buffers of at least `threshold` bytes are then mapped on their own and returned to the system
    when freed, whatever was freed before. Call it before loading a model for inference."""
    libc = glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1)


def trim_freed_memory() -> bool:
    """Return the free memory glibc's heaps hold to the system (`malloc_trim(0)`)."""
    libc = glibc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
