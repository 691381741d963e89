"""The `llmfs` command line: one program, one subcommand per job."""

from __future__ import annotations

import argparse
import sys

from llm_from_scratch import __version__
from llm_from_scratch.cli import demo

# One module per subcommand; each adds its own parser (more arrive with later chapters).
COMMANDS = [demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmfs", description=__doc__)
    parser.add_argument("--version", action="version", version=f"llmfs {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
