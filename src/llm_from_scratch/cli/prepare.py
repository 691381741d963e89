"""`llmfs prepare`: tokenize a corpus once into memory-mapped token shards.

Reads the corpus' train and validation text files, tokenizes them in several processes and
writes train.bin, validation.bin and meta.json (by default into the project cache, in a folder
named after the corpus and the tokenizer). Training then reads the shards without loading the
corpus into memory. Running it again is instant unless the text or the tokenizer changed.

Examples:
  llmfs prepare --dataset shakespeare --tokenizer gpt2
  llmfs prepare --dataset path/to/folder --tokenizer cl100k_base --num-workers 4
"""

from __future__ import annotations

import argparse
import time

from llm_from_scratch.cli.common import command_parser, human_size


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "prepare", "tokenize a corpus once into memory-mapped token shards", __doc__)
    p.add_argument("--dataset", required=True,
                   help="a corpus name (see `llmfs download`), a folder with train.txt and validation.txt, "
                        "or your own text file / folder of .txt files")
    p.add_argument("--tokenizer", default="gpt2",
                   help="tokenizer name (gpt2, cl100k_base, o200k_base) or a saved tokenizer .json / "
                        ".tiktoken file (default: %(default)s)")
    p.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=None,
                   help="tokenizer processes (default: all CPU cores)")
    p.add_argument("--out-dir", "--out_dir", dest="out_dir", default=None,
                   help="where the shards go (default: <cache>/shards/<dataset>-<tokenizer hash>)")
    p.add_argument("--force", action="store_true", help="tokenize again even if up-to-date shards exist")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from llm_from_scratch.data.corpora import corpus_files
    from llm_from_scratch.data.shards import prepare_shards
    from llm_from_scratch.tokenizers import get_tokenizer

    corpus = corpus_files(args.dataset, progress=args.progress)
    tokenizer = get_tokenizer(args.tokenizer)
    started = time.perf_counter()
    shards = prepare_shards(corpus.train, corpus.validation, tokenizer, args.out_dir, name=corpus.name,
                            num_workers=args.num_workers, force=args.force, progress=args.progress)
    seconds = time.perf_counter() - started
    meta = shards.meta
    tokens = meta["counts"]
    total = sum(tokens.values())

    print(f"llmfs prepare: {corpus.name} with the {tokenizer.name or meta['tokenizer']['type']} tokenizer "
          f"(vocabulary {meta['vocab_size']:,}, ids stored as {meta['dtype']})")
    for split in ("train", "validation"):
        path = getattr(shards, split)
        text_size = meta["sources"][split]["size"]
        print(f"  {split:<10} {tokens[split]:>14,} tokens  {human_size(path.stat().st_size):>10}  {path}"
              f"  (from {human_size(text_size)} of text)")
    if meta.get("reused"):
        print(f"Up to date: reused the shards prepared {meta.get('created', '')} "
              f"({meta.get('tokens_per_second', 0):,} tokens/s then); --force tokenizes again.")
    else:
        print(f"Tokenized {total:,} tokens in {seconds:.1f} s ({total / max(seconds, 1e-9):,.0f} tokens/s, "
              f"{meta['num_workers']} worker{'s' if meta['num_workers'] != 1 else ''}).")
        if meta.get("inexact_cuts"):
            print(f"Note: {meta['inexact_cuts']} chunk cut(s) fell where ids may differ slightly from "
                  f"tokenizing the whole text at once (very long lines without spaces).")
    return 0
