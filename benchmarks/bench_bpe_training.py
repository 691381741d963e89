"""How fast does our BPE trainer learn a vocabulary? Ours (pure Python) vs Hugging Face `tokenizers` (Rust).

What is measured
----------------
Training a byte-level BPE vocabulary of V tokens (default 4096, including one special token,
``<|endoftext|>``) on a few MB of text, from the text file on disk to the finished tokenizer:

    A  ours                            BPETokenizer.train(text, V): GPT-4 pre-split regex,
                                       incremental pair counts, pure Python, one thread
    B  HF tokenizers, ByteLevel        BpeTrainer(vocab_size=V, special_tokens=[<|endoftext|>]) with
                                       the ByteLevel pre-tokenizer (GPT-2's regex): the usual setup
    C  HF tokenizers, GPT-4 split      the same trainer, pre-split with our GPT-4 regex (then
                                       ByteLevel without its own regex), on the same text
                                       string as A: the same work as A

B trains with ``tokenizer.train([file])``, HF's usual way: it reads the file line by line (so
no chunk spans two lines) and uses all cores unless ``--threads`` says otherwise. A and C read
the file and train on the whole text as one string (C: ``train_from_iterator([text])``), so C
gets exactly A's input. Besides the time, each trial reports how well its vocabulary compresses held-out
text: **tokens per byte** (lower is better; 1.0 = no merges) on text not used for training.

The default text is the ``shakespeare`` corpus (train split, about 4.5 MB, via
``llm_from_scratch.data.corpora.corpus_files``) plus 2000 built-in tiny stories; the held-out
text is the corpus' validation split. Without the corpus: 20 000 tiny stories (about 5 MB),
last 10% held out. ``--text PATH`` trains on your own UTF-8 file (last 10% held out).

How it is measured (the project's rules for benchmarks)
-------------------------------------------------------
* Correctness first: a ``--check`` child trains A, B and C on the first 300 KB and stops the
  benchmark unless all three give V tokens and decode(encode(x)) == x on held-out text, and
  unless every merge of C is a most frequent pair at its step (replayed with our pair counts):
  A and C then run the same algorithm and may differ only in how they break ties.
* Fresh process per trial: the script starts itself with ``--trial NAME``; the child imports
  everything and trains once on a tiny text (warm-up), then times one real training.
* Interleaved rounds A B C A B C ... (default 3), medians and ratios.

Run it
------
    .venv/bin/python benchmarks/bench_bpe_training.py                    # ~1 min on 2 cores
    .venv/bin/python benchmarks/bench_bpe_training.py --vocab-size 8192 --rounds 5
    .venv/bin/python benchmarks/bench_bpe_training.py --text path/to/text.txt --only A,C

Options: --rounds (>= 3), --vocab-size, --text, --only, --threads (HF's threads; default: the
cores this process may use), --out (JSON, default benchmarks/results/bpe_training.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness import available_cores, cpu_model, run_child

IMPLEMENTATIONS = {
    "A": "ours, GPT-4 split (Python)",
    "B": "HF, ByteLevel (GPT-2 split)",
    "C": "HF, GPT-4 split",
}
ENDOFTEXT = "<|endoftext|>"
CHECK_BYTES = 300_000
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bpe_training.json"


# ----------------------------------------------------------------------------------------------
# The text (made once by the parent, read by every child)
# ----------------------------------------------------------------------------------------------

def build_text(args) -> tuple[str, str, str]:
    """(training text, held-out text, description)."""
    from llm_from_scratch.data.tiny_stories import tiny_stories

    if args.text:
        text = Path(args.text).read_text(encoding="utf-8")
        cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1 or int(len(text) * 0.9)
        return text[:cut], text[cut:], f"{args.text} (last 10% held out)"
    try:
        from llm_from_scratch.data.corpora import corpus_files

        files = corpus_files("shakespeare", progress=False)
        train = files.train.read_text(encoding="utf-8") + "\n" + tiny_stories(num_stories=2000)
        held_out = files.validation.read_text(encoding="utf-8")
        return train, held_out, "shakespeare train split + 2000 tiny stories; held out: shakespeare validation"
    except Exception as error:  # no corpora module, or no way to get the corpus
        print(f"(shakespeare corpus unavailable: {error}; using tiny stories only)", file=sys.stderr)
        text = tiny_stories(num_stories=20_000)
        cut = text.rfind("\n", 0, int(len(text) * 0.9)) + 1
        return text[:cut], text[cut:], "20000 tiny stories (last 10% held out)"


# ----------------------------------------------------------------------------------------------
# Training (in the child processes)
# ----------------------------------------------------------------------------------------------

def gpt4_pattern_for_oniguruma() -> str:
    """Our GPT-4 regex in HF's regex dialect (Oniguruma reads `{1,3}+` as a repeat, not possessive)."""
    from llm_from_scratch.tokenizers.bpe import GPT4_SPLIT_PATTERN

    return GPT4_SPLIT_PATTERN.replace(r"\p{N}{1,3}+", r"(?>\p{N}{1,3})")


def train(name: str, train_file: Path, vocab_size: int):
    """Train implementation `name` on the file; return an object with encode/decode/merges."""
    if name == "A":
        from llm_from_scratch.tokenizers.bpe import BPETokenizer

        text = train_file.read_text(encoding="utf-8")
        return BPETokenizer.train(text, vocab_size, special_tokens=[ENDOFTEXT], progress=False)

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    if name == "B":
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(gpt4_pattern_for_oniguruma()), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    if name == "B":
        tokenizer.train([str(train_file)], trainer)  # the usual way: HF reads the file line by line
    else:
        # Exactly our input: the whole text as one string (so chunks can span lines, as in ours).
        tokenizer.train_from_iterator([train_file.read_text(encoding="utf-8")], trainer)
    return tokenizer


def vocab_size_of(name: str, tokenizer) -> int:
    return tokenizer.vocab_size if name == "A" else tokenizer.get_vocab_size()


def count_tokens(name: str, tokenizer, text: str) -> int:
    """Tokens for the whole held-out text, encoded as one string by each tokenizer."""
    if name == "A":
        return len(tokenizer.encode(text, allowed_special="all"))
    return len(tokenizer.encode(text).ids)


def memory_mb(field: str) -> float | None:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc (Linux), in MB.

    Not ``resource.getrusage``: its ru_maxrss survives exec, so a child started by a big parent
    would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    if field == "VmHWM":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024
    return None


def reset_peak_memory() -> None:
    """Linux: reset the peak-RSS mark to the current RSS, so the peak measures the training alone."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def run_trial(args) -> dict:
    name, work = args.trial, Path(args.work_dir)
    warmup_file = work / "warmup.txt"
    train(name, warmup_file, 300)  # imports, regex compilation, thread pools
    train_file = work / "train.txt"
    rss_before = memory_mb("VmRSS")
    reset_peak_memory()
    start = time.perf_counter()
    tokenizer = train(name, train_file, args.vocab_size)
    seconds = time.perf_counter() - start
    peak = memory_mb("VmHWM")
    held_out = (work / "held_out.txt").read_text(encoding="utf-8")
    held_out_bytes = len(held_out.encode("utf-8"))
    train_bytes = train_file.stat().st_size
    return {"impl": name, "seconds": seconds, "train_mb": train_bytes / 1e6,
            "mb_per_s": train_bytes / 1e6 / seconds, "vocab_size": vocab_size_of(name, tokenizer),
            "held_out_tokens": count_tokens(name, tokenizer, held_out), "held_out_bytes": held_out_bytes,
            "tokens_per_byte": count_tokens(name, tokenizer, held_out) / held_out_bytes,
            "rss_before_mb": rss_before, "peak_rss_mb": peak}


def hf_merges_as_bytes(tokenizer) -> list[tuple[bytes, bytes]]:
    # HF stores bytes as GPT-2's printable characters (its ByteLevel step): map them back.
    to_byte = {char: byte for byte, char in gpt2_bytes_to_unicode().items()}
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    pairs = [merge.split(" ") if isinstance(merge, str) else merge for merge in merges]
    return [tuple(bytes(to_byte[c] for c in part) for part in pair) for pair in pairs]


def gpt2_bytes_to_unicode() -> dict[int, str]:
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    return table


def replay_is_valid_bpe(text: str, merges: list[tuple[bytes, bytes]]) -> tuple[bool, int, int]:
    """Replay merges with our pair counts: is each one a most frequent pair at its step?

    Returns (valid, number of merges replayed, how many were ties won by another pair in ours).
    """
    from llm_from_scratch.tokenizers.bpe import IncrementalPairCounts, count_chunks

    counts = IncrementalPairCounts(count_chunks([text], special_tokens=[ENDOFTEXT]))
    ids = {bytes([byte]): byte for byte in range(256)}
    different_choice = 0
    for step, (left, right) in enumerate(merges):
        best = counts.most_frequent_pair()
        pair = (ids.get(left), ids.get(right))
        if best is None or None in pair or counts.pair_counts.get(pair, 0) != best[1]:
            return False, step, different_choice
        different_choice += pair != best[0]
        counts.merge(pair, 256 + step)
        ids[left + right] = 256 + step
    return True, len(merges), different_choice


def run_check(args) -> dict:
    work = Path(args.work_dir)
    check_file = work / "check.txt"
    held_out = (work / "held_out.txt").read_text(encoding="utf-8")[:50_000]
    result = {"vocab_size": {}, "round_trip": {}}
    trained = {}
    for name in args.only:
        tokenizer = train(name, check_file, args.vocab_size)
        trained[name] = tokenizer
        result["vocab_size"][name] = vocab_size_of(name, tokenizer)
        if name == "A":
            result["round_trip"][name] = tokenizer.decode(tokenizer.encode(held_out, allowed_special="all")) == held_out
        else:
            result["round_trip"][name] = tokenizer.decode(tokenizer.encode(held_out).ids) == held_out
    if "C" in trained:
        text = check_file.read_text(encoding="utf-8")
        valid, replayed, different = replay_is_valid_bpe(text, hf_merges_as_bytes(trained["C"]))
        result["C_is_valid_bpe"] = {"valid": valid, "merges_replayed": replayed,
                                    "ties_broken_differently_from_ours": different}
    return result


# ----------------------------------------------------------------------------------------------
# The parent: launch children, interleave, summarize
# ----------------------------------------------------------------------------------------------

def child_command(args, *extra: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *extra, "--work-dir", args.work_dir,
            "--vocab-size", str(args.vocab_size), "--threads", str(args.threads), "--only", ",".join(args.only)]


def child_env(threads: int) -> dict[str, str]:
    return {"RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}


def main_parent(args) -> None:
    import tokenizers

    train_text, held_out, description = build_text(args)
    with tempfile.TemporaryDirectory(prefix="bench_bpe_") as work_dir:
        args.work_dir = work_dir
        work = Path(work_dir)
        (work / "train.txt").write_text(train_text, encoding="utf-8")
        (work / "held_out.txt").write_text(held_out, encoding="utf-8")
        (work / "warmup.txt").write_text(train_text[:2000], encoding="utf-8")
        check_cut = train_text.rfind("\n", 0, CHECK_BYTES) + 1 or CHECK_BYTES
        (work / "check.txt").write_text(train_text[:check_cut], encoding="utf-8")
        train_mb = len(train_text.encode("utf-8")) / 1e6
        print(f"Python {platform.python_version()}, tokenizers {tokenizers.__version__}, CPU: {cpu_model()} "
              f"({available_cores()} cores available), HF threads {args.threads}")
        print(f"text: {description}: {train_mb:.2f} MB to train on, "
              f"{len(held_out.encode('utf-8')) / 1e6:.2f} MB held out")
        print(f"settings: vocab_size={args.vocab_size} (incl. {ENDOFTEXT}) rounds={args.rounds} "
              f"implementations={','.join(args.only)}\n")

        # 1. Correctness.
        check = run_child(child_command(args, "--check"), env=child_env(args.threads))
        problems = [f"{n} has {v} tokens, not {args.vocab_size}" for n, v in check["vocab_size"].items()
                    if v != args.vocab_size]
        problems += [f"{n} does not round-trip the held-out text" for n, ok in check["round_trip"].items() if not ok]
        if "C_is_valid_bpe" in check and not check["C_is_valid_bpe"]["valid"]:
            problems.append(f"C's merge {check['C_is_valid_bpe']['merges_replayed']} is not a most frequent pair")
        if problems:
            raise SystemExit("correctness check FAILED: " + "; ".join(problems))
        line = f"check (first {CHECK_BYTES // 1000} KB): {', '.join(args.only)} give {args.vocab_size} tokens and round-trip"
        if "C_is_valid_bpe" in check:
            c = check["C_is_valid_bpe"]
            line += (f"; all {c['merges_replayed']} merges of C are most frequent pairs at their step "
                     f"({c['ties_broken_differently_from_ours']} ties broken differently from ours)")
        print(line)

        # 2. Timing, interleaved, a fresh process per trial.
        trials: list[dict] = []
        for round_index in range(1, args.rounds + 1):
            for name in args.only:
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                result = run_child(child_command(args, "--trial", name), env=child_env(args.threads))
                result["round"] = round_index
                result["load_avg_1min_before"] = load
                trials.append(result)
                print(f"  round {round_index}/{args.rounds}  {name}  {result['seconds']:7.2f} s  "
                      f"{result['mb_per_s']:5.2f} MB/s  (load avg before: {load:.1f})", flush=True)
        print()

    # 3. Medians and ratios.
    summary = {}
    for name in args.only:
        mine = [t for t in trials if t["impl"] == name]
        seconds = [t["seconds"] for t in mine]
        summary[name] = {"what": IMPLEMENTATIONS[name], "median_seconds": statistics.median(seconds),
                         "min_seconds": min(seconds), "max_seconds": max(seconds),
                         "median_mb_per_s": statistics.median(t["mb_per_s"] for t in mine),
                         "tokens_per_byte": mine[0]["tokens_per_byte"],
                         "vocab_size": mine[0]["vocab_size"],
                         "median_rss_before_mb": statistics.median(t["rss_before_mb"] or 0 for t in mine),
                         "median_peak_rss_mb": statistics.median(t["peak_rss_mb"] for t in mine)}
    ratios = {f"A/{other} (time)": summary["A"]["median_seconds"] / summary[other]["median_seconds"]
              for other in ("B", "C") if "A" in summary and other in summary}

    print(f"BPE training, vocab {args.vocab_size}, {train_mb:.2f} MB of text, median of {args.rounds} rounds:")
    header = (f"{'impl':<4} {'what':<28} {'median s':>9} {'min..max s':>13} {'MB/s':>6} "
              f"{'tokens/byte':>12} {'RSS MB before..peak':>20}")
    print(header)
    print("-" * len(header))
    for name in args.only:
        s = summary[name]
        spread = f"{s['min_seconds']:.2f}..{s['max_seconds']:.2f}"
        print(f"{name:<4} {s['what']:<28} {s['median_seconds']:>9.2f} {spread:>13} {s['median_mb_per_s']:>6.2f} "
              f"{s['tokens_per_byte']:>12.4f} {s['median_rss_before_mb']:>11.0f}..{s['median_peak_rss_mb']:<8.0f}")
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x (ours takes {value:.2f} times as long)")

    results = {
        "benchmark": "bpe_training",
        "environment": {"python": platform.python_version(), "tokenizers": tokenizers.__version__,
                        "cpu": cpu_model(), "cores_available": available_cores(), "hf_threads": args.threads,
                        "platform": platform.platform()},
        "settings": {"vocab_size": args.vocab_size, "special_tokens": [ENDOFTEXT], "rounds": args.rounds,
                     "implementations": args.only, "text": description, "train_mb": train_mb},
        "check": check,
        "summary": summary,
        "ratios": ratios,
        "trials": trials,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {out}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (>= 3; default 3)")
    p.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size incl. <|endoftext|> (default 4096)")
    p.add_argument("--text", default=None, help="train on this UTF-8 file instead (last 10%% held out)")
    p.add_argument("--only", default="A,B,C", help="comma-separated subset of A,B,C (default all)")
    p.add_argument("--threads", type=int, default=None, help="HF's threads (default: available cores)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON results file")
    # Internal: what the child processes are started with.
    p.add_argument("--trial", choices=sorted(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--work-dir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.only = [n.strip().upper() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in args.only if n not in IMPLEMENTATIONS]
    if unknown or not args.only:
        p.error(f"--only takes a comma-separated subset of {','.join(IMPLEMENTATIONS)}, got {unknown or 'nothing'}")
    args.only = [n for n in IMPLEMENTATIONS if n in args.only]
    if args.rounds < 3:
        p.error("--rounds must be at least 3 (a median of fewer trials says little)")
    if args.vocab_size < 300:
        p.error("--vocab-size must be at least 300")
    if args.threads is None:
        args.threads = available_cores()
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.trial or args.check:
        print(json.dumps(run_check(args) if args.check else run_trial(args)))
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
