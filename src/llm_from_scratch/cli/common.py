"""Small helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import signal


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add `--some_flag` with its `--some-flag` twin (seed 002 uses underscores, litgpt dashes)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


def add_precision_flag(parser) -> None:
    """--precision, the same for every command that trains (see training/precision.py)."""
    add_flag(parser, "precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
             help="auto (default: bf16 on GPUs, and on AMX CPUs when a measured step of this model is "
                  "faster in bf16; else fp32), fp32, bf16 (autocast, CPU or GPU) or fp16 (CUDA, with a "
                  "gradient scaler). LLMFS_CPU_BF16=1|0 forces auto's choice on a CPU")


class CommandError(Exception):
    """A problem with the user's input: printed as a one-line error, exit code 2, no traceback."""


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """Schedulers and `kill` stop jobs with SIGTERM: during training, treat it like Ctrl-C so the
    trainer saves a checkpoint that --resume continues exactly. The previous handler comes back
    afterwards (child processes, e.g. tokenizer workers, must keep the default)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. a notebook worker): keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
