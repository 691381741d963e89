"""Native (C) kernels for the CPU: built on the user's machine on first use, optional everywhere.

`native.py` compiles `decode_cpu.c` with the system's C compiler and loads it; when that is not
possible (no compiler, another OS, LLMFS_NATIVE=0) everything runs on PyTorch operations instead.
"""
