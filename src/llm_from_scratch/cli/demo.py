"""`llmfs demo`: the whole pipeline in a couple of minutes, with nothing to download.

Text (the built-in tiny stories) -> character tokenizer -> sliding windows -> a gpt-micro model
-> training with evaluation and checkpoints -> a loss plot -> samples from the trained model.
The run is `llm_from_scratch.pipelines.run_demo`: this command turns the flags into a
`DemoConfig` and makes that one call.
"""

from __future__ import annotations

import argparse

from llm_from_scratch.cli.common import command_parser, add_precision_flag, config_from_args


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "demo", "train a tiny model on built-in text and print samples (no download)",
                       __doc__)
    p.add_argument("--max-steps", "--max_steps", dest="max_steps", type=int, default=1000,
                   help="optimizer steps (default: %(default)s, about two minutes on 2 CPU cores)")
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=16)
    p.add_argument("--out-dir", "--out_dir", dest="out_dir", default="checkpoints/demo",
                   help="where checkpoints, the log and loss.png go (default: %(default)s)")
    p.add_argument("--prompt", default="Mia went to", help="prompt for the samples (default: %(default)r)")
    p.add_argument("--seed", type=int, default=123)
    add_precision_flag(p)
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llm_from_scratch.pipelines import DemoConfig, run_demo

    run_demo(config_from_args(DemoConfig, args))
    return 0
