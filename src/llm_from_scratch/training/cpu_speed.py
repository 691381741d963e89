"""Settings that make training faster on a CPU, and why each one helps.

* `keep_freed_memory()`: glibc's allocator gives every allocation above 32 MB its own fresh
  `mmap` and returns it to the kernel on `free`. A training step allocates and frees several
  such buffers (GPT-2 124M: logits of 206 MB, an embedding gradient of 154 MB...), so every
  step page-faults and zero-fills hundreds of megabytes again (~350,000 page faults per step
  measured here). Telling glibc to serve everything from its heap and never trim it lets the
  next step reuse the same memory. Measured on GPT-2 124M: +25-40% tokens/s, for our model and
  for `transformers` alike (benchmarks/bench_training.py). The cost: memory freed by the
  process is kept for reuse instead of being returned to the system.

* Inference does the opposite (gives freed memory back): see `allocator.py`.

* Which precision (fp32 or bf16) is faster for a model on this CPU is decided in `precision.py`.
"""

from __future__ import annotations

from llm_from_scratch.allocator import NO_MALLOC_TUNING_ENV, glibc

__all__ = ["NO_MALLOC_TUNING_ENV", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # mallopt parameter numbers (malloc.h)
_tuned = False


def keep_freed_memory() -> bool:
    """Make glibc reuse big freed blocks instead of unmapping them. Returns True if applied.

    Process-wide and permanent (for this process); a no-op off Linux/glibc, and when the
    environment variable LLMFS_NO_MALLOC_TUNING is set to 1. Equivalent to starting Python with
    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=268435456.
    """
    global _tuned
    if _tuned:
        return True
    libc = glibc()  # None off Linux/glibc (musl has no mallopt) or when tuning is switched off
    if libc is None:
        return False
    mallopt = libc.mallopt
    ok = mallopt(_M_MMAP_MAX, 0) == 1                  # no separate mmap per big allocation
    ok &= mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1   # never give the heap's top back
    ok &= mallopt(_M_TOP_PAD, 256 * 2**20) == 1        # grow the heap in 256 MB steps
    _tuned = bool(ok)
    return _tuned
