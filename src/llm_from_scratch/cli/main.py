"""The `llmfs` command line: one program, one subcommand per job."""

from __future__ import annotations

import argparse
import os
import sys

from llm_from_scratch import __version__
from llm_from_scratch.cli import (chat, classify, demo, download, evaluate, export, finetune, generate, prepare,
                                  serve, tokenizer, train)
from llm_from_scratch.cli.common import CommandError

# One module per subcommand; each adds its own parser (more arrive with later chapters).
COMMANDS = [download, tokenizer, prepare, train, generate, chat, finetune, classify, evaluate, export, serve, demo]


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
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: whatever had to be saved is saved (training writes last.pt); no traceback.
        parser.exit(130, f"llmfs {args.command}: interrupted\n")
    except CommandError as exc:
        parser.exit(2, f"llmfs {args.command}: error: {exc}\n")
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        # Our own errors say what is wrong and how to fix it; a traceback would bury that.
        # LLMFS_DEBUG=1 shows the traceback (for bugs).
        if os.environ.get("LLMFS_DEBUG"):
            raise
        parser.exit(1, f"llmfs {args.command}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
