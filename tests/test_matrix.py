"""The command matrix: every `llmfs` command over every model family and switch, on tiny models.

So that a feature cannot pass on its headline path only: each cell of `matrix_helpers.CELLS` (GPT-2's
architecture, Llama, Qwen3 and the modern recipe; trained in fp32 and bf16; dropout 0 and 0.1;
widths that are no multiple of 16; the vocabulary compact, the default for the GPT-2 tokenizer on
this corpus, or full) is trained once with `llmfs train` (a module-scoped fixture),
and each stage is a test parametrized over the cells:

    train -> resume (== the uninterrupted run) -> generate -> evaluate perplexity -> serve   (every cell)
    evaluate tasks, finetune classify / instruct / dpo / grpo, export hf / gguf / safetensors
                                                                             (one cell per family)

Everything runs in this process on built-in text; nothing is downloaded. DPO and GRPO run a few
steps from the cell's own checkpoint with their default flags (only the volume flags: steps,
prompts per step, held-out questions are made small), and once more without what those defaults
break on a small context, to check the rest of their path. A tiny random model answers no task
question right and never ends an answer: GRPO gets a stand-in checker (`odd_checker`), DPO a
file of preference pairs.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cli_helpers import run_cli
from matrix_helpers import (
    ALL, CELLS, FULL, TRAIN_STEPS, Cell, finite, greedy_new_ids, greedy_text, interrupt_at_step, llmfs, load,
    log_records, odd_checker, register_presets, serve_one_request, train_argv, write_corpus,
)
from llm_from_scratch.training.checkpoint import load_checkpoint

PROMPT = "The duck"           # in every cell's vocabulary (the character tokenizer's too)


@dataclass
class Trained:
    cell: Cell
    out_dir: Path
    code: int
    stdout: str
    stderr: str
    seconds: float

    def require(self) -> "Trained":
        assert self.code == 0, f"llmfs train failed for {self.cell.name}: {self.stderr[-2000:]}"
        return self

    @property
    def last(self) -> Path:
        return self.out_dir / "last.pt"


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """A private cache (shards) that still sees the offline tokenizer packages already fetched,
    offline mode, the cells' presets, and the corpus."""
    root = tmp_path_factory.mktemp("matrix")
    cache = root / "cache"
    cache.mkdir()
    real_cache = Path(os.environ.get("LLMFS_CACHE_DIR") or "~/.cache/llm-from-scratch").expanduser()
    for sub in ("packages", "package-files"):    # the GPT-2 vocabulary's offline copy (else fetched once)
        if (real_cache / sub).is_dir():
            (cache / sub).symlink_to(real_cache / sub, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMFS_CACHE_DIR", str(cache))
        mp.setenv("LLMFS_OFFLINE", "1")
        register_presets(mp)
        yield root, write_corpus(root / "stories")


@pytest.fixture(scope="module")
def trained(matrix):
    """cell name -> its Trained run (`llmfs train`, TRAIN_STEPS steps), trained on first use."""
    root, corpus = matrix
    runs: dict[str, Trained] = {}

    def get(name: str) -> Trained:
        if name not in runs:
            cell = CELLS[name]
            started = time.perf_counter()
            torch.manual_seed(0)
            code, out, err = llmfs(*train_argv(cell, corpus, root / name / "run"))
            runs[name] = Trained(cell, root / name / "run", code, out, err, time.perf_counter() - started)
        return runs[name]
    return get


@pytest.fixture
def corpus(matrix):
    return matrix[1]


@pytest.fixture
def fake_rewards(monkeypatch):
    import llm_from_scratch.tasks as tasks
    monkeypatch.setattr(tasks, "check_answer", odd_checker)


# ---------------------------------------------------------------------------------------------
# train, resume, generate, evaluate: every cell
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_train(trained, name):
    run = trained(name).require()
    cell = run.cell
    for file in ("best_model.pt", "last.pt", "log.jsonl", "loss.png"):
        assert (run.out_dir / file).is_file(), file
    ckpt = load_checkpoint(run.last)
    cfg = ckpt["model_config"]
    assert (cfg["emb_dim"], cfg["context_length"], cfg["drop_rate"]) == (cell.width, cell.context, cell.dropout)
    assert cfg.get("model_type", "gpt") == {"modern": "gpt"}.get(cell.family, cell.family)
    if cell.family == "modern":
        assert ckpt["recipe"] == "modern" and cfg["positions"] == "rope" and cfg["qk_norm"] is True
    assert ckpt["train_state"]["step"] == TRAIN_STEPS
    assert load(run.last).tokenizer.name == cell.tokenizer
    assert f"precision {cell.precision} (as requested)" in run.stdout
    records = log_records(run.out_dir)
    assert [r["step"] for r in records] == [2, 4]
    for record in records:
        assert finite(record["train_loss"]) and finite(record["val_loss"]), record
    assert finite(records[-1]["final_val_loss"])
    # a few steps from a random start: the loss is near ln(vocabulary), not exploded (a compact
    # vocabulary's loss is over all of the tokenizer's ids: model/compact_vocab.py)
    vocab = getattr(load(run.last).tokenizer, "full_vocab_size", cfg["vocab_size"])
    assert records[-1]["final_val_loss"] < 1.5 * torch.log(torch.tensor(float(vocab))).item()


@pytest.mark.parametrize("name", ALL)
def test_resume_reaches_the_uninterrupted_weights(trained, matrix, name):
    """Ctrl-C in step 3 saves last.pt at step 2; --resume then ends where the uninterrupted run
    ended, bit for bit (dropout, shuffling, bf16 and Muon included)."""
    run = trained(name).require()
    root, corpus = matrix
    cut = root / name / "cut"
    torch.manual_seed(0)
    with interrupt_at_step(3):
        code, _, err = llmfs(*train_argv(run.cell, corpus, cut))
    assert code == 130 and "interrupted" in err, err[-2000:]
    assert load_checkpoint(cut / "last.pt")["train_state"]["step"] == 2
    code, _, err = llmfs(*train_argv(run.cell, corpus, cut), "--resume")
    assert code == 0, err[-2000:]
    whole, resumed = load_checkpoint(run.last), load_checkpoint(cut / "last.pt")
    assert resumed["train_state"]["step"] == TRAIN_STEPS
    assert whole["model"].keys() == resumed["model"].keys()
    different = [k for k in whole["model"] if not torch.equal(whole["model"][k], resumed["model"][k])]
    assert not different, f"resumed weights differ from the uninterrupted run's: {different[:4]}"
    assert [r["val_loss"] for r in log_records(run.out_dir)] == [r["val_loss"] for r in log_records(cut)]


@pytest.mark.parametrize("name", ALL)
def test_generate(trained, capsys, name):
    """Greedy text past the context (the window slides) equals the library's; so do the default
    flags (100 tokens sampled as `generation.defaults` says, seeded) and greedy text in bf16."""
    from llm_from_scratch.generation import generate, text_to_token_ids, token_ids_to_text
    from llm_from_scratch.generation.defaults import SURFACE_DEFAULTS

    run = trained(name).require()
    cell = run.cell
    n = cell.context + 20
    code, out, err = run_cli(capsys, "generate", "--checkpoint", run.out_dir / "best_model.pt", "--prompt", PROMPT,
                             "--temperature", 0, "--max_new_tokens", n)
    assert code == 0, err[-2000:]
    loaded = load(run.out_dir / "best_model.pt")
    assert out == greedy_text(loaded, PROMPT, n) + "\n"
    assert len(greedy_new_ids(loaded, PROMPT, n)) == n    # a tiny model never says end-of-text here

    defaults = SURFACE_DEFAULTS["generate"]
    code, out, err = run_cli(capsys, "generate", "--checkpoint", run.last, "--prompt", PROMPT, "--seed", 1)
    assert code == 0, err[-2000:]
    loaded = load(run.last)
    ids = text_to_token_ids(PROMPT, loaded.tokenizer)
    sampled = generate(loaded.model, ids, defaults["max_tokens"], temperature=defaults["temperature"],
                       top_k=defaults["top_k"], top_p=defaults["top_p"], eos_id=loaded.tokenizer.eot_id,
                       generator=torch.Generator().manual_seed(1))
    assert sampled.shape[1] == ids.shape[1] + defaults["max_tokens"]
    assert out == token_ids_to_text(sampled, loaded.tokenizer) + "\n"

    code, out, err = run_cli(capsys, "generate", "--checkpoint", run.last, "--prompt", PROMPT, "--dtype", "bf16",
                             "--temperature", 0, "--max_new_tokens", 30)
    assert code == 0, err[-2000:]
    assert out == greedy_text(load(run.last, dtype="bf16"), PROMPT, 30) + "\n"


@pytest.mark.parametrize("name", ALL)
def test_evaluate_perplexity_equals_the_final_validation_loss(trained, corpus, capsys, name):
    run = trained(name).require()
    code, out, err = run_cli(capsys, "evaluate", "perplexity", "--checkpoint", run.last, "--dataset", corpus,
                             "--stride", run.cell.context)
    assert code == 0, err[-2000:]
    loss = float(out.split("(loss ")[1].split()[0].rstrip(")"))
    assert finite(loss)
    assert loss == pytest.approx(log_records(run.out_dir)[-1]["final_val_loss"], rel=5e-3)


@pytest.mark.parametrize("name", FULL)
def test_evaluate_tasks_with_default_flags(trained, capsys, name):
    """Greedy, pass@k and vote on every task family, default answer length (one question each)."""
    run = trained(name).require()
    code, out, err = run_cli(capsys, "evaluate", "tasks", "--checkpoint", run.last, "--num_examples", 1,
                             "--num_samples", 2, "--no-progress")
    assert code == 0, err[-2000:]
    for family in ("addition", "count_letters", "compare", "word_problems"):
        assert family in out


@pytest.mark.parametrize("name", ALL)
def test_serve_one_request(trained, name):
    run = trained(name).require()
    loaded = load(run.last)
    code, status, body = serve_one_request(run.last, "/v1/completions",
                                           {"model": "cell", "prompt": PROMPT, "max_tokens": 8, "temperature": 0})
    assert code == 0 and status == 200, body
    expected = greedy_new_ids(loaded, PROMPT, 8)
    assert body["choices"][0]["text"] == loaded.tokenizer.decode(expected)
    assert body["usage"]["completion_tokens"] == len(expected) == 8
    assert body["usage"]["prompt_tokens"] == len(loaded.tokenizer.encode(PROMPT))


# ---------------------------------------------------------------------------------------------
# fine-tuning: one cell per family (GPT-2 tokenizer, context 128)
# ---------------------------------------------------------------------------------------------

def _classification_csv(path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    words = "free cash prize winner call now hello mom see you at dinner tonight thanks".split()
    rows = []
    for i in range(60):
        n = int(torch.randint(3, 9, (1,), generator=g))
        rows.append([" ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g)),
                     ["ham", "spam", "other"][i % 3]])
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["message", "kind"], *rows])
    return path


@pytest.mark.parametrize("name", FULL)
def test_finetune_classify_then_classify(trained, tmp_path, capsys, name):
    run = trained(name).require()
    out = tmp_path / "clf"
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--checkpoint", run.last, "--dataset",
                                _classification_csv(tmp_path / "data.csv"), "--text_column", "message",
                                "--label_column", "kind", "--max_steps", 3, "--out_dir", out, "--no-progress")
    assert code == 0, err[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["accuracy"]) == {"train", "validation", "test"}
    assert all(0.0 <= v <= 1.0 for v in scores["accuracy"].values())
    code, stdout, err = run_cli(capsys, "classify", "--checkpoint", out / "last.pt", "free cash now", "--probs")
    assert code == 0, err[-2000:]
    label, probs = stdout.split("  (")
    assert label in ("ham", "spam", "other")
    values = [float(part.split()[1]) for part in probs.rstrip(")\n").split(", ")]
    assert len(values) == 3 and sum(values) == pytest.approx(1.0, abs=2e-3)
    code, stdout, err = run_cli(capsys, "evaluate", "accuracy", "--checkpoint", out / "last.pt", "--csv",
                                tmp_path / "data.csv", "--text_column", "message", "--label_column", "kind")
    assert code == 0, err[-2000:]
    assert 0.0 <= float(stdout.split("accuracy ")[1].split("%")[0]) <= 100.0


@pytest.mark.parametrize("name", FULL)
def test_finetune_instruct(trained, tmp_path, capsys, name):
    run = trained(name).require()
    out = tmp_path / "instruct"
    code, stdout, err = run_cli(capsys, "finetune", "instruct", "--checkpoint", run.last, "--data", "synthetic",
                                "--num_examples", 60, "--max_steps", 3, "--out_dir", out, "--no-progress")
    assert code == 0, err[-2000:]
    scores = json.loads((out / "scores.json").read_text())
    assert "before" in scores and "after" in scores
    responses = json.loads((out / "test-responses.json").read_text())
    assert responses and all(isinstance(r["model_response"], str) for r in responses)
    assert all(finite(r["train_loss"]) for r in log_records(out) if "train_loss" in r)
    code, stdout, err = run_cli(capsys, "generate", "--checkpoint", out / "final_model.pt", "--prompt", PROMPT,
                                "--max_new_tokens", 5, "--temperature", 0)
    assert code == 0 and stdout.startswith(PROMPT), err[-2000:]


def _check_policy_run(capsys, start: Path, out: Path, steps: int, must_change: bool):
    """The files and curves of a DPO/GRPO run; its final model differs from the start (when it
    must) and generates."""
    scores = json.loads((out / "scores.json").read_text())
    assert scores["steps"] == steps
    records = log_records(out)
    assert len(records) == steps and all(finite(r["loss"]) for r in records), records
    final = load_checkpoint(out / "final_model.pt")["model"]
    before = load_checkpoint(start)["model"]
    assert final.keys() == before.keys()
    if must_change:
        assert any(not torch.equal(final[k], before[k].to(final[k].dtype)) for k in final), "no weight changed"
    code, stdout, err = run_cli(capsys, "generate", "--checkpoint", out / "final_model.pt", "--prompt", PROMPT,
                                "--max_new_tokens", 5, "--temperature", 0)
    assert code == 0 and stdout.startswith(PROMPT), err[-2000:]
    return scores, records


def _at_start(scores) -> float:
    """How close "policy == reference" must hold at step 1: float rounding only (bf16: its own)."""
    return 1e-5 if scores["precision"] == "fp32" else 2e-2


def _pairs_file(path: Path) -> Path:
    """Preference pairs of our own: a tiny random model never ends an answer (it never says
    end-of-text), so it cannot make whole on-policy pairs; a file is the path that always has some."""
    # answers in the corpus's words: a compact vocabulary reads words it never saw as one reserved id,
    # and two answers made only of such words would be the same answer to it. The rejected answers
    # are not the chosen ones shuffled: where the prompts read alike (digits a compact vocabulary never
    # saw), the step-1 gradient, mean(grad log p(chosen) - grad log p(rejected)), would cancel to 0.
    answers = ["The duck found a small box.", "The box was near the park.", "A small duck went to the park.",
               "The park had a box.", "The duck was happy.", "A box found the duck.", "The duck went home.",
               "The small park was near."]
    rows = [{"prompt": f"What is {i} plus {i + 3}?", "chosen": answers[i], "rejected": "The box. The box."}
            for i in range(8)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("name", FULL)
def test_finetune_dpo_with_default_flags(trained, tmp_path, capsys, name):
    """Pairs from a file, default settings otherwise (held-out scoring of every family included;
    only the steps and the held-out questions are few)."""
    run = trained(name).require()
    out = tmp_path / "dpo"
    code, stdout, err = run_cli(capsys, "finetune", "dpo", "--checkpoint", run.last, "--data",
                                _pairs_file(tmp_path / "pairs.jsonl"), "--tasks", "none", "--max_steps", 2,
                                "--eval_examples", 2, "--out_dir", out, "--no-progress")
    assert code == 0, err[-2000:]
    scores, records = _check_policy_run(capsys, run.last, out, 2, must_change=True)
    assert set(scores["before"]) == set(scores["after"]) and "all" in scores["before"]
    # at step 1 the policy is the reference: the DPO loss is log 2, whatever the model's dropout
    assert records[0]["loss"] == pytest.approx(0.693147, abs=_at_start(scores)), "DPO: policy != reference at step 1"


@pytest.mark.parametrize("name", FULL)
def test_finetune_grpo_with_default_flags(trained, tmp_path, capsys, fake_rewards, name):
    run = trained(name).require()
    out = tmp_path / "grpo"
    code, stdout, err = run_cli(capsys, "finetune", "grpo", "--checkpoint", run.last, "--max_steps", 2,
                                "--prompts_per_step", 2, "--eval_examples", 2, "--out_dir", out, "--no-progress")
    assert code == 0, err[-2000:]
    scores, records = _check_policy_run(capsys, run.last, out, 2, must_change=False)
    assert set(scores["before"]) == set(scores["after"]) and "all" in scores["before"]


@pytest.mark.parametrize("name", FULL)
def test_finetune_dpo_with_lora_and_no_heldout_scoring(trained, tmp_path, capsys, name):
    """The rest of DPO's path without the held-out answers (so without the default answer
    length): LoRA, the cell's training precision. Step 1's loss is log 2, with dropout too."""
    run = trained(name).require()
    out = tmp_path / "dpo"
    code, stdout, err = run_cli(capsys, "finetune", "dpo", "--checkpoint", run.last, "--data",
                                _pairs_file(tmp_path / "pairs.jsonl"), "--tasks", "none", "--max_steps", 2,
                                "--lora", "--lr", 1e-2,   # a step that shows in a bf16 cell's weights
                                "--eval_tasks", "none", "--out_dir", out, "--no-progress",
                                "--precision", run.cell.precision)
    assert code == 0, err[-2000:]
    scores, records = _check_policy_run(capsys, run.last, out, 2, must_change=True)
    assert records[0]["grad_norm"] > 1e-3, "DPO: no gradient at step 1 (the pairs cancel, or LoRA gets none)"
    assert (out / "lora_adapters.safetensors").is_file()
    assert records[0]["loss"] == pytest.approx(0.693147, abs=_at_start(scores)), "DPO: policy != reference at step 1"


@pytest.mark.parametrize("name", FULL)
def test_finetune_grpo_with_answers_that_fit_the_context(trained, tmp_path, capsys, fake_rewards, name):
    """The rest of GRPO's path: 16 new tokens, all weights, a KL penalty, cut-off answers graded
    (so there is a signal), the cell's training precision. At step 1 the policy is the reference:
    KL 0, with dropout too."""
    run = trained(name).require()
    code, stdout, err = run_cli(capsys, "finetune", "grpo", "--checkpoint", run.last, "--max_steps", 2,
                                "--prompts_per_step", 2, "--group_size", 4, "--max_new_tokens", 16,
                                "--grade_truncated", "--kl_coef", 0.1, "--eval_tasks", "count_letters",
                                "--eval_examples", 2, "--out_dir", tmp_path / "grpo", "--no-progress",
                                "--precision", run.cell.precision)
    assert code == 0, err[-2000:]
    scores, records = _check_policy_run(capsys, run.last, tmp_path / "grpo", 2, must_change=True)
    assert records[0]["no_signal"] < 1
    assert records[0]["kl"] == pytest.approx(0.0, abs=_at_start(scores)), "GRPO: policy != reference at step 1"


# ---------------------------------------------------------------------------------------------
# export: every cell (GPT-2 and character tokenizers, fp32- and bf16-trained)
# ---------------------------------------------------------------------------------------------

def _probe_ids(loaded) -> torch.Tensor:
    return torch.tensor([loaded.tokenizer.encode("The duck found a small box near the park.")])


def _as_exported(loaded):
    """What an export of `loaded` holds: a compact vocabulary (`llmfs train --vocab compact`, the
    default for the GPT-2 tokenizer on this small corpus) is written over all of the tokenizer's
    ids (model/compact_vocab.py, tested against the compact model in test_compact_export.py)."""
    from llm_from_scratch.model.compact_vocab import expand_to_full_vocabulary, is_compact

    if is_compact(loaded.tokenizer):
        model, tokenizer = expand_to_full_vocabulary(loaded.model, loaded.tokenizer)
        loaded = type(loaded)(**{**vars(loaded), "model": model.eval(), "tokenizer": tokenizer})
    return loaded


@pytest.mark.parametrize("name", ALL)
def test_export_hf(trained, tmp_path, capsys, name):
    run = trained(name).require()
    out = tmp_path / "hf"
    code, stdout, err = run_cli(capsys, "export", "--checkpoint", run.last, "--format", "hf", "--out", out)
    if run.cell.family == "modern":   # RoPE, RMSNorm, ReLU², QK-norm: no GPT-2 layout; refused, clearly
        assert code == 2 and "--recipe book" in err and not (out / "model.safetensors").exists(), err
        return
    assert code == 0, err[-2000:]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    loaded = _as_exported(load(run.last))
    ids = _probe_ids(loaded)
    assert AutoTokenizer.from_pretrained(out)("The duck found a small box near the park.")["input_ids"] \
        == ids[0].tolist()
    with torch.no_grad():
        ours, theirs = loaded.model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)
    assert torch.equal(theirs[0, -1].argmax(), ours[0, -1].argmax())
    from llm_from_scratch.generation import generate

    theirs_greedy = hf.generate(ids, max_new_tokens=6, do_sample=False, attention_mask=torch.ones_like(ids))
    assert torch.equal(theirs_greedy, generate(loaded.model, ids, 6, temperature=0.0))


@pytest.mark.parametrize("name", ALL)
def test_export_gguf(trained, tmp_path, capsys, name):
    import gguf

    run = trained(name).require()
    path = tmp_path / "model.gguf"
    code, stdout, err = run_cli(capsys, "export", "--checkpoint", run.last, "--format", "gguf", "--out", path)
    if run.cell.family == "modern":
        assert code == 2 and "--recipe book" in err and not path.exists(), err
        return
    assert code == 0, err[-2000:]
    reader = gguf.GGUFReader(path)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    assert arch == {"gpt": "gpt2", "llama": "llama", "qwen3": "qwen3"}[run.cell.family]
    loaded = _as_exported(load(run.last))
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    assert torch.equal(torch.from_numpy(embedding.data.copy()).reshape(loaded.model.tok_emb.weight.shape),
                       loaded.model.tok_emb.weight.detach())
    if run.cell.family == "llama":    # our GGUF reader takes the llama architecture: logits back
        from llm_from_scratch.loading import load_model

        back = load_model(model=str(path), device="cpu")
        ids = _probe_ids(loaded)
        assert back.tokenizer.encode("The duck found a small box near the park.") == ids[0].tolist()
        with torch.no_grad():
            torch.testing.assert_close(back.model(ids), loaded.model(ids), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_export_safetensors_generates_the_same_text(trained, tmp_path, capsys, name):
    run = trained(name).require()
    path = tmp_path / "model.safetensors"
    code, stdout, err = run_cli(capsys, "export", "--checkpoint", run.last, "--format", "safetensors", "--out", path)
    assert code == 0, err[-2000:]
    outputs = []
    for checkpoint in (run.last, path):
        code, stdout, err = run_cli(capsys, "generate", "--checkpoint", checkpoint, "--prompt", PROMPT,
                                    "--temperature", 0, "--max_new_tokens", 12)
        assert code == 0, err[-2000:]
        outputs.append(stdout)
    assert outputs[0] == outputs[1]
