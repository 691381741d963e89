"""`llmfs tokenizer`: train a byte-level BPE tokenizer on a corpus, or look at how text is encoded.

Examples:
  llmfs tokenizer train --dataset shakespeare --vocab-size 4096 --out tokenizer.json
  llmfs tokenizer train --dataset path/to/text.txt --vocab-size 8192 --out my.json --tiktoken-out my.tiktoken
  llmfs tokenizer encode --tokenizer tokenizer.json "To be, or not to be"
  llmfs tokenizer encode --tokenizer gpt2 "Tokenization is fun"

A trained tokenizer.json works wherever a tokenizer name does (e.g. `llmfs prepare --tokenizer
tokenizer.json`), and in Python: get_tokenizer("tokenizer.json").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llm_from_scratch.cli.common import command_parser, CommandError, add_flag, human_size


def add_parser(subparsers) -> None:
    p = command_parser(subparsers, "tokenizer", "train a BPE tokenizer, or show how text is tokenized", __doc__)
    actions = p.add_subparsers(dest="tokenizer_command", metavar="ACTION", required=True)

    train = actions.add_parser("train", help="train a byte-level BPE tokenizer on a corpus",
                               description="Train a byte-level BPE tokenizer (GPT-4 pre-split regex) on the "
                                           "train part of a corpus and measure it on the validation part.")
    add_flag(train, "dataset", required=True,
             help="a corpus name (shakespeare, wikitext2, chinese, the-verdict) or a path to UTF-8 text")
    add_flag(train, "vocab_size", type=int, default=4096,
             help="tokens in the vocabulary: 256 bytes + merges + special tokens (default: %(default)s)")
    add_flag(train, "out", default="tokenizer.json", help="where to save the tokenizer (default: %(default)s)")
    add_flag(train, "tiktoken_out", default=None,
             help="also write the ranks in tiktoken's .tiktoken format to this path")
    add_flag(train, "special_token", action="append", default=None,
             help="a special token (repeat for several; default: <|endoftext|>)")
    add_flag(train, "max_chars", type=int, default=None,
             help="train on at most this many characters from the start of the train text (default: all)")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.set_defaults(handler=run_train)

    encode = actions.add_parser("encode", help="print the token ids and pieces of a text",
                                description="Encode a text and show each token: a quick way to see how a "
                                            "tokenizer cuts words into pieces.")
    add_flag(encode, "tokenizer", default="gpt2",
             help="a name (gpt2, cl100k_base, o200k_base) or a saved tokenizer .json / .tiktoken file "
                  "(default: %(default)s)")
    encode.add_argument("text", nargs="?", default=None, help="the text (default: read standard input)")
    encode.set_defaults(handler=run_encode)


# --------------------------------------------------------------------------------------
# llmfs tokenizer train
# --------------------------------------------------------------------------------------


def read_corpus(dataset: str, max_chars: int | None = None) -> tuple[str, str, str]:
    """``(train text, validation text, description)`` of a named corpus or a text file.

    Named corpora come from :func:`llm_from_scratch.data.corpora.corpus_files`. Without that
    module, a text file is read directly and its last 10% (cut at a line break) is held out.
    """
    try:
        from llm_from_scratch.data.corpora import corpus_files
    except ModuleNotFoundError as error:
        if error.name != "llm_from_scratch.data.corpora":
            raise
        path = Path(dataset).expanduser()
        if not path.is_file():
            raise CommandError(f"--dataset {dataset!r}: no such text file") from None
        text = path.read_text(encoding="utf-8")
        cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1 or int(len(text) * 0.9)
        train_text, validation_text = text[:cut], text[cut:]
        description = f"{path} (last 10% held out)"
    else:
        files = corpus_files(dataset)
        with open(files.train, encoding="utf-8") as handle:
            train_text = handle.read(max_chars) if max_chars else handle.read()
        validation_text = files.validation.read_text(encoding="utf-8")
        description = f"{files.name} ({files.description})"
        max_chars = None  # already applied
    if max_chars:
        train_text = train_text[:max_chars]
    return train_text, validation_text, description


def run_train(args: argparse.Namespace) -> int:
    from llm_from_scratch.tokenizers.bpe import NUM_BYTE_TOKENS, BPETokenizer

    special_tokens = args.special_token if args.special_token is not None else ["<|endoftext|>"]
    if args.vocab_size < NUM_BYTE_TOKENS + len(special_tokens):
        raise CommandError(f"--vocab-size must be at least {NUM_BYTE_TOKENS + len(special_tokens)} "
                           f"(256 byte tokens + {len(special_tokens)} special), got {args.vocab_size}")
    train_text, validation_text, description = read_corpus(args.dataset, args.max_chars)
    train_bytes = len(train_text.encode("utf-8"))
    print(f"Training a {args.vocab_size}-token byte-level BPE on {human_size(train_bytes)} of {description}")

    started = time.perf_counter()
    tokenizer = BPETokenizer.train(train_text, args.vocab_size, special_tokens=special_tokens,
                                   progress=args.progress)
    seconds = time.perf_counter() - started
    specials = ", ".join(f"{token} = {token_id}" for token, token_id in tokenizer.special_tokens.items())
    print(f"Trained in {seconds:.1f} s: {tokenizer.num_merges} merges; vocabulary = 256 bytes + "
          f"{tokenizer.num_merges} merged tokens + {len(tokenizer.special_tokens)} special "
          f"({specials or 'none'}) = {tokenizer.vocab_size} tokens")

    measured_on = validation_text if validation_text.strip() else train_text
    which = "validation" if measured_on is validation_text else "train (no validation text)"
    num_tokens = len(tokenizer.encode(measured_on, allowed_special="all"))
    num_bytes = len(measured_on.encode("utf-8"))
    print(f"Compression on the {which} text ({human_size(num_bytes)}): {num_bytes / max(num_tokens, 1):.2f} bytes "
          f"per token ({num_tokens:,} tokens; 1.00 would mean no merges)")

    sample = _first_line(measured_on)
    print("Sample:")
    _print_encoding(tokenizer, sample, indent="  ")

    out = tokenizer.save(args.out)
    print(f"Saved to {out} ({human_size(out.stat().st_size)}); load it with get_tokenizer({str(out)!r}) "
          f"or --tokenizer {out}")
    if args.tiktoken_out:
        ranks = tokenizer.save_tiktoken(args.tiktoken_out)
        print(f"Ranks in tiktoken format: {ranks} (use the GPT-4 regex and these special tokens with it)")
    return 0


# --------------------------------------------------------------------------------------
# llmfs tokenizer encode
# --------------------------------------------------------------------------------------


def run_encode(args: argparse.Namespace) -> int:
    import llm_from_scratch.tokenizers.bpe  # noqa: F401  (registers the "bpe" type for saved files)
    from llm_from_scratch.tokenizers import get_tokenizer

    text = args.text if args.text is not None and args.text != "-" else sys.stdin.read()
    tokenizer = get_tokenizer(args.tokenizer)
    print(f"tokenizer: {tokenizer.name} (vocabulary {tokenizer.vocab_size:,})")
    _print_encoding(tokenizer, text)
    return 0


def token_pieces(tokenizer, ids: list[int]) -> list[str]:
    """How each token reads: its text, or its bytes when they are not whole UTF-8 characters."""
    pieces = []
    for token_id in ids:
        if hasattr(tokenizer, "token_to_bytes"):  # our BPETokenizer
            raw = tokenizer.token_to_bytes(token_id)
        elif hasattr(tokenizer, "encoding"):  # TiktokenTokenizer
            raw = tokenizer.encoding.decode_single_token_bytes(token_id)
        else:
            pieces.append(repr(tokenizer.decode([token_id])))
            continue
        try:
            pieces.append(repr(raw.decode("utf-8")))
        except UnicodeDecodeError:
            pieces.append(repr(raw))  # e.g. b'\xe4\xbd': part of a character
    return pieces


def _print_encoding(tokenizer, text: str, indent: str = "") -> None:
    ids = tokenizer.encode(text, allowed_special="all")
    num_bytes = len(text.encode("utf-8"))
    ratio = f", {num_bytes / len(ids):.2f} bytes/token" if ids else ""
    print(f"{indent}text:   {text!r} ({num_bytes} bytes -> {len(ids)} tokens{ratio})")
    print(f"{indent}ids:    {ids}")
    print(f"{indent}pieces: [{', '.join(token_pieces(tokenizer, ids))}]")


def _first_line(text: str, max_chars: int = 80) -> str:
    """A sample sentence: the first line of a few words (or of some length: Chinese has no spaces)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if len(line.split()) >= 6 or len(line) >= 30:
            return line[:max_chars]
    return (lines[0] if lines else text)[:max_chars]
