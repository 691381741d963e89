"""The cells of the command matrix (tests/test_matrix.py) and the helpers its tests share.

A cell is one tiny model: a family (GPT-2's architecture, Llama, Qwen3, or GPT with the modern
recipe), a training precision, a dropout rate and a width. `llmfs train` has no width flags, so
each cell's size is a preset registered here for the module's duration (`register_presets`);
everything after training reads the architecture from the checkpoint, as for any preset.

"Full" cells use the GPT-2 tokenizer and a 128-token context (gpt-micro's) and go through every
downstream stage; "light" cells use the character tokenizer and a 64-token context, and go
through train, resume, generate and evaluate.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llm_from_scratch.cli.main import main


@dataclass(frozen=True)
class Cell:
    name: str
    family: str                 # gpt | llama | qwen3 | modern
    precision: str              # fp32 | bf16 (--precision of llmfs train)
    dropout: float
    settings: dict[str, Any]    # the preset's architecture (width, heads, layers, ...)
    tokenizer: str              # gpt2 | char
    full: bool                  # every downstream stage, or train/resume/generate/evaluate only
    extra_train_flags: tuple[str, ...] = field(default=())

    @property
    def preset(self) -> str:
        return f"mx-{self.name}"

    @property
    def context(self) -> int:
        return self.settings["context_length"]

    @property
    def width(self) -> int:
        return self.settings["emb_dim"]


def _gpt(emb_dim, n_heads, context):
    return dict(context_length=context, emb_dim=emb_dim, n_heads=n_heads, n_layers=2, drop_rate=0.0,
                tie_weights=True)


def _llama(emb_dim, n_heads, n_kv_heads, hidden_dim, context, **more):
    return dict(context_length=context, emb_dim=emb_dim, n_heads=n_heads, n_kv_heads=n_kv_heads, n_layers=2,
                hidden_dim=hidden_dim, rope_base=10000.0, tie_weights=True, drop_rate=0.0, **more)


# Widths: 40 and 100 are no multiple of 16; 40/4 = 10 and 100/5 = 20 are even head sizes (RoPE
# needs one, and says so clearly otherwise). Qwen3's 4 heads of 24 = 96 != its width 100, as in
# real Qwen3 models (own head size). Hidden sizes 108/120/176 are odd multiples of 4.
CELLS: dict[str, Cell] = {c.name: c for c in [
    Cell("gpt-fp32-d0-w40", "gpt", "fp32", 0.0, _gpt(40, 4, 128), "gpt2", True),
    Cell("gpt-bf16-d0.1-w48", "gpt", "bf16", 0.1, _gpt(48, 4, 64), "char", False),
    Cell("llama-fp32-d0.1-w40", "llama", "fp32", 0.1, _llama(40, 4, 2, 108, 128), "gpt2", True, ("--vocab", "full")),
    Cell("llama-bf16-d0-w64", "llama", "bf16", 0.0, _llama(64, 4, 1, 176, 64), "char", False),
    Cell("qwen3-bf16-d0-w100", "qwen3", "bf16", 0.0, _llama(100, 4, 2, 120, 128, head_dim=24), "gpt2", True),
    Cell("qwen3-fp32-d0.1-w48", "qwen3", "fp32", 0.1, _llama(48, 4, 2, 96, 64, head_dim=12), "char", False),
    Cell("modern-fp32-d0-w40", "modern", "fp32", 0.0, _gpt(40, 4, 128), "gpt2", True, ("--recipe", "modern")),
    Cell("modern-bf16-d0.1-w100", "modern", "bf16", 0.1, _gpt(100, 5, 64), "char", False, ("--recipe", "modern")),
]}
FULL = [name for name, c in CELLS.items() if c.full]
ALL = list(CELLS)
TRAIN_STEPS = 4


def register_presets(monkeypatch) -> None:
    """Each cell's size as a preset of its family (what `llmfs train --model_type` looks up)."""
    from llm_from_scratch.model.config import PRESETS
    from llm_from_scratch.model.llama import LLAMA_TRAIN_PRESETS
    from llm_from_scratch.model.qwen3 import QWEN3_TRAIN_PRESETS

    table = {"gpt": PRESETS, "modern": PRESETS, "llama": LLAMA_TRAIN_PRESETS, "qwen3": QWEN3_TRAIN_PRESETS}
    for cell in CELLS.values():
        monkeypatch.setitem(table[cell.family], cell.preset, dict(cell.settings))


def write_corpus(folder: Path) -> Path:
    """Built-in stories (no download), 90/10 into train.txt / validation.txt."""
    from llm_from_scratch.data.tiny_stories import tiny_stories

    folder.mkdir(parents=True, exist_ok=True)
    text = tiny_stories(num_stories=300)
    cut = int(len(text) * 0.9)
    (folder / "train.txt").write_text(text[:cut], encoding="utf-8")
    (folder / "validation.txt").write_text(text[cut:], encoding="utf-8")
    return folder


def llmfs(*argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `llmfs *argv` in this process, without pytest's capsys (so
    module-scoped fixtures can call it too)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        except Exception:  # noqa: BLE001 (a crash: reported by every test of the cell, traceback included)
            import traceback

            traceback.print_exc()
            code = "crashed"
    return code, out.getvalue(), err.getvalue()


def train_argv(cell: Cell, corpus: Path, out_dir: Path, max_steps: int = TRAIN_STEPS) -> list[str]:
    return ["train", "--dataset", corpus, "--tokenizer", cell.tokenizer, "--model_type", cell.preset,
            "--dropout", cell.dropout, "--precision", cell.precision, *cell.extra_train_flags,
            "--batch_size", 4, "--max_steps", max_steps, "--eval_interval", 2, "--eval_batches", 2,
            "--out_dir", out_dir, "--no-progress"]


def log_records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines()]


def finite(x) -> bool:
    return x is not None and math.isfinite(float(x))


@contextlib.contextmanager
def interrupt_at_step(step: int):
    """Ctrl-C (KeyboardInterrupt) just before the update of optimizer step `step` (1-based), the
    gradients of that step already computed: a run interrupted mid-step. Hooks every optimizer
    (torch's global step pre-hook); the first to reach the step raises, before any update."""
    counts: dict[int, int] = {}

    def hook(optimizer, args, kwargs):
        counts[id(optimizer)] = counts.get(id(optimizer), 0) + 1
        if counts[id(optimizer)] == step:
            raise KeyboardInterrupt

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    handle = register_optimizer_step_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def load(checkpoint: Path, dtype: str = "fp32"):
    from llm_from_scratch.loading import load_model

    return load_model(checkpoint=checkpoint, device="cpu", dtype=dtype)


def greedy_text(loaded, prompt: str, n: int) -> str:
    """The reference continuation: the library's `generate`, greedy, the window sliding as in the book."""
    from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text

    ids = text_to_token_ids(prompt, loaded.tokenizer)
    out = generate(loaded.model, ids, n, temperature=0.0, eos_id=loaded.tokenizer.eot_id)
    return token_ids_to_text(out, loaded.tokenizer)


def greedy_new_ids(loaded, prompt: str, n: int) -> list[int]:
    from llm_from_scratch.generation import generate, text_to_token_ids

    ids = text_to_token_ids(prompt, loaded.tokenizer)
    out = generate(loaded.model, ids, n, temperature=0.0, eos_id=loaded.tokenizer.eot_id)
    return out[0, ids.shape[1]:].tolist()


def odd_checker(instance, completion: str) -> bool:
    """A stand-in for the task checkers (a tiny random model answers nothing right): an answer is
    "right" when its text has an odd length, so groups hold both rewards and DPO finds pairs."""
    return len(completion) % 2 == 1


def serve_one_request(checkpoint: Path, path: str, body: dict, timeout: float = 60.0):
    """`llmfs serve --checkpoint ...` as the command builds it (model in the main thread, uvicorn
    in a second one), one HTTP request, then stop: (status code, JSON body)."""
    import httpx

    from llm_from_scratch.cli import serve
    from llm_from_scratch.cli.main import build_parser
    from llm_from_scratch.serving.app import BackgroundServer

    result: dict[str, Any] = {}

    def until_one_request_is_answered(app, engine, host, port, log_level="info"):
        done = threading.Event()

        def client():
            try:
                with BackgroundServer(app) as server:      # a free loopback port, not --port
                    response = httpx.post(server.url + path, json=body, timeout=timeout)
                    result["status"], result["body"] = response.status_code, response.json()
            except BaseException as exc:  # noqa: BLE001 (reported by the test)
                result["error"] = exc
            finally:
                done.set()
                engine.shutdown()

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        engine.run_here(should_stop=done.is_set)
        thread.join(timeout)

    args = build_parser().parse_args(["serve", "--checkpoint", str(checkpoint), "--served_model_name", "cell",
                                      "--log_level", "warning"])
    original = serve.serve_until_stopped
    serve.serve_until_stopped = until_one_request_is_answered
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            code = serve.run(args)
    finally:
        serve.serve_until_stopped = original
    if "error" in result:
        raise result["error"]
    return code, result["status"], result["body"]
