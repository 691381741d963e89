"""Check our GGUF export against real llama.cpp (through llama-cpp-python). Not a unit test.

Two phases, because llama-cpp-python is usually installed in its own environment (it needs no
torch, and it compiles llama.cpp when installed):

1. ``prepare`` (the project's venv: torch + llm_from_scratch): tiny random GPT models with
   several tokenizers are exported with `export_gguf` (f32, f16, bf16), and our own logits and
   token ids are saved next to them (``expected.json`` + ``*.npy``);
2. ``check`` (any Python with ``llama_cpp`` and numpy): every GGUF is loaded with
   ``llama_cpp.Llama(model_path=..., logits_all=True)``, the same tokens are evaluated and
   llama.cpp's logits are compared with ours; its tokenizer must give our ids for each text.

Run both in one go from the project's venv, pointing at the interpreter that has llama_cpp::

    .venv/bin/python scripts/check_gguf_with_llama_cpp.py --llama-python /work/llamacpp-venv/bin/python

(or without ``--llama-python`` if ``llama_cpp`` is importable in the project's venv).
Separately: ``... prepare --out DIR`` then ``OTHER_PYTHON scripts/check_gguf_with_llama_cpp.py check --dir DIR``.

What to expect: llama.cpp's CPU GELU reads a float16 lookup table, and with f16/bf16 weights
it also rounds the activations to 16 bits before each matrix product, so its logits differ
from ours by ~1e-3 relative even with f32 weights; the greedy next tokens should agree.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

TEXTS = [
    "Hello world! It's 12345 o'clock.",
    "def f(x):\n    return x ** 2  # square\n",
    "人工智能 你好，世界。",
    "naïve café 🙂 <|endoftext|> after",
    "  spaces   and\n\n\nnewlines \t tabs",
]
# Only tokenized (not run through the model): corner cases of the pre-split regexes.
TOKENIZER_TEXTS = [
    "\n\n  \n x", "a\r\n\r\nb", "x   \n  y", "1234567 89", "   leading and trailing   ",
    "I'm you'LL HE'S", "CamelCaseWord and ALLCAPS", "tabs\t\tand\u00a0nbsp", "日本語のテキスト",
    "mixed123abc 3.14159", "<|endoftext|><|endoftext|>", "x = {'a': [1, 2]}\n\tif x:\n\t\tpass",
    "éCafé ÉCOLE école", "Straße ÜBERall ñandú", "ÀbcDéf àBC", "\n \n\n", " \n\n \n", "a \n\n\n  b",
    "x\r\n \r\ny", "ǅemal ǈ", "Ωmega ωMEGA", "  \n\t\n  z", "12345678901", "résumé’s", "HTTPServer getHTTP",
]
DTYPES = ("f32", "f16", "bf16")


# --------------------------------------------------------------------------------------
# Phase 1: our side (needs torch and llm_from_scratch)
# --------------------------------------------------------------------------------------


def _tokenizers(include_tiktoken: bool):
    from llm_from_scratch.tokenizers import BPETokenizer, CharTokenizer, get_tokenizer

    text = " ".join(TEXTS) * 3 + " The quick brown fox jumps over the lazy dog. " * 20
    yield "char", CharTokenizer("".join(TEXTS) + "abcdefghijklmnopqrstuvwxyz.,!?'")
    yield "bpe", BPETokenizer.train(text, vocab_size=380, progress=False)
    if include_tiktoken:
        for name in ("gpt2", "cl100k_base", "o200k_base"):
            try:
                yield name, get_tokenizer(name)
            except Exception as error:  # no cached vocabulary and no registry: skip it
                print(f"skipping {name}: {error}", file=sys.stderr)


def prepare(out_dir: Path, include_tiktoken: bool = True) -> None:
    import numpy as np
    import torch

    from llm_from_scratch.export.gguf_export import export_gguf
    from llm_from_scratch.model import GPTConfig, GPTModel

    torch.set_num_threads(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = []
    for tok_name, tokenizer in _tokenizers(include_tiktoken):
        # the char model: untied head, no qkv bias, padded vocabulary; the others tied, with bias
        is_char = tok_name == "char"
        cfg = GPTConfig(vocab_size=tokenizer.vocab_size + (5 if is_char else 0), context_length=64, emb_dim=64,
                        n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=not is_char, tie_weights=not is_char)
        torch.manual_seed(0)
        model = GPTModel(cfg).eval()
        with torch.no_grad():  # bigger random weights than the init, so the logits spread out
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        encodable = []
        for text in TEXTS + TOKENIZER_TEXTS:
            try:
                encodable.append((text, tokenizer.encode(text, allowed_special="all")))
            except ValueError:
                pass  # e.g. the char tokenizer without a character of this text
        ids = [i for text, t in encodable if text in TEXTS for i in t][: cfg.context_length]
        for dtype in DTYPES:
            path = out_dir / f"{tok_name}-{dtype}.gguf"
            export_gguf(model, tokenizer, path, dtype, overwrite=True)
            # our logits with the matrices rounded as the file stores them
            rounded = GPTModel(cfg).eval()
            rounded.load_state_dict(model.state_dict())
            if dtype != "f32":
                torch_dtype = torch.float16 if dtype == "f16" else torch.bfloat16
                with torch.no_grad():
                    for name, p in rounded.named_parameters():
                        if p.ndim == 2 and "pos_emb" not in name:
                            p.copy_(p.to(torch_dtype).float())
            with torch.no_grad():
                logits = rounded(torch.tensor([ids]))[0].numpy()
            np.save(out_dir / f"{tok_name}-{dtype}.npy", logits)
            cases.append({"gguf": path.name, "logits": f"{tok_name}-{dtype}.npy", "tokenizer": tok_name,
                          "dtype": dtype, "ids": ids, "texts": [[t, i] for t, i in encodable],
                          "vocab_size": cfg.vocab_size})
    (out_dir / "expected.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"prepared {len(cases)} GGUF files in {out_dir}")


# --------------------------------------------------------------------------------------
# Phase 2: llama.cpp's side (needs llama_cpp and numpy only)
# --------------------------------------------------------------------------------------


def check(out_dir: Path) -> int:
    import numpy as np
    from llama_cpp import Llama

    cases = json.loads((out_dir / "expected.json").read_text(encoding="utf-8"))
    failures = 0
    print(f"{'file':24} {'max|dlogit|':>12} {'rel':>9} {'argmax agree':>13}  tokenizer ids")
    for case in cases:
        llm = Llama(model_path=str(out_dir / case["gguf"]), logits_all=True, n_ctx=64, n_threads=1,
                    n_batch=64, verbose=False)
        ours = np.load(out_dir / case["logits"])
        ids = case["ids"]
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)[:, : ours.shape[1]]
        diff = float(np.abs(theirs - ours).max())
        rel = diff / float(np.abs(ours).max())
        agree = float((theirs.argmax(-1) == ours.argmax(-1)).mean())
        token_report = []
        for text, expected in case["texts"]:
            got = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            token_report.append("." if got == expected else "X")
            if got != expected:
                print(f"    {case['gguf']}: {text!r}\n      ours  {expected}\n      llama {got}")
        ok_logits = rel < 2e-2 and agree >= 0.9
        failures += (not ok_logits) + token_report.count("X")
        print(f"{case['gguf']:24} {diff:12.2e} {rel:9.2e} {agree:13.2f}  {''.join(token_report)}")
        del llm
    print("all agree" if failures == 0 else f"{failures} disagreement(s)")
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", nargs="?", choices=("prepare", "check", "all"), default="all")
    parser.add_argument("--dir", "--out", dest="dir", default=None, help="folder for the GGUF files")
    parser.add_argument("--llama-python", default=None, help="Python interpreter that has llama_cpp")
    parser.add_argument("--no-tiktoken", action="store_true", help="only the char and trained-BPE tokenizers")
    args = parser.parse_args(argv)
    out_dir = Path(args.dir or tempfile.mkdtemp(prefix="gguf-check-"))
    if args.phase == "prepare":
        prepare(out_dir, not args.no_tiktoken)
        return 0
    if args.phase == "check":
        return check(out_dir)
    prepare(out_dir, not args.no_tiktoken)
    if args.llama_python:
        env = {**os.environ, "PYTHONPATH": ""}
        return subprocess.call([args.llama_python, __file__, "check", "--dir", str(out_dir)], env=env)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print(f"llama_cpp is not importable here; run the check with it:\n"
              f"  OTHER_PYTHON {__file__} check --dir {out_dir}", file=sys.stderr)
        return 2
    return check(out_dir)


if __name__ == "__main__":
    sys.exit(main())
