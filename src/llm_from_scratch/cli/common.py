"""Small helpers shared by the subcommands."""

from __future__ import annotations

import argparse


def add_flag(parser: argparse.ArgumentParser, name: str, **kwargs) -> None:
    """Add `--some_flag` with its `--some-flag` twin (seed 002 uses underscores, litgpt dashes)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


class CommandError(Exception):
    """A problem with the user's input: printed as a one-line error, exit code 2, no traceback."""
