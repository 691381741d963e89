"""`llmfs finetune instruct|classify` and `llmfs classify` end to end on tiny models."""

import dataclasses
import csv
import json
import sys

import pytest
import torch

from llm_from_scratch.cli.main import main
from llm_from_scratch.finetune.classifier import SequenceClassifier
from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.pipelines.classifier import trim_padding
from llm_from_scratch.training.checkpoint import load_checkpoint


def run_cli(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("lora, precision", [(False, "fp32"), (True, "bf16")])
def test_finetune_instruct_trains_scores_and_leaves_a_usable_model(base_checkpoint, tmp_path, capsys, lora,
                                                                   precision):
    out = tmp_path / "instruct"
    code, stdout, err = run_cli(capsys, "finetune", "instruct", "--checkpoint", base_checkpoint, "--data",
                                "synthetic", "--num_examples", 60, "--max_steps", 3, "--max_new_tokens", 3,
                                "--out_dir", out, "--no-progress", "--mask_prompt", *(["--lora"] if lora else []),
                                "--precision", precision)
    assert code == 0, err
    scores = json.loads((out / "scores.json").read_text())
    # the precision flag is honoured, printed and recorded
    assert f"precision {precision} (as requested)" in stdout and scores["precision"] == precision
    assert load_checkpoint(out / "last.pt")["precision"] == precision
    assert 0.0 <= scores["before"]["exact_match"] <= 1.0 and "after" in scores
    responses = json.loads((out / "test-responses.json").read_text())
    assert len(responses) == 6 and all("model_response" in r and "output" in r for r in responses)
    assert "exact match" in stdout
    code, stdout, err = run_cli(capsys, "generate", "--checkpoint", out / "final_model.pt", "--prompt", "Hi",
                                "--max_new_tokens", 3)
    assert code == 0, err
    if lora:
        assert (out / "lora_adapters.safetensors").is_file()
        # the trainer's checkpoint (adapters not merged) loads too: merged on load
        code, stdout, err = run_cli(capsys, "generate", "--checkpoint", out / "last.pt", "--prompt", "Hi",
                                    "--max_new_tokens", 3)
        assert code == 0, err


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([["message", "kind"], *rows])
    return path


def test_finetune_classify_on_a_users_csv_then_classify(base_checkpoint, tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    words = "free cash prize winner call now hello mom see you at dinner tonight thanks".split()
    rows = []
    for i in range(60):
        n = int(torch.randint(3, 9, (1,), generator=g))
        text = " ".join(words[int(j)] for j in torch.randint(0, len(words), (n,), generator=g))
        rows.append([text, ["ham", "spam", "other"][i % 3]])
    data = write_csv(tmp_path / "mine.csv", rows)
    out = tmp_path / "clf"
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--checkpoint", base_checkpoint, "--dataset", data,
                                "--text_column", "message", "--label_column", "kind", "--max_steps", 4,
                                "--eval_interval", 2, "--out_dir", out, "--no-progress", "--trainable", "all")
    assert code == 0, err
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["accuracy"]) == {"train", "validation", "test"}
    used = load_checkpoint(out / "last.pt")["precision"]      # --precision auto: this machine's choice
    assert used in ("fp32", "bf16") and scores["precision"] == used and f"precision {used} (auto" in stdout
    assert (out / "accuracy.png").is_file()
    code, stdout, err = run_cli(capsys, "classify", "--checkpoint", out / "last.pt", "free cash now", "--probs")
    assert code == 0, err
    label = stdout.split()[0]
    assert label in ("ham", "spam", "other") and "spam " in stdout
    # A classifier is not a language model: generate says so.
    code, stdout, err = run_cli(capsys, "generate", "--checkpoint", out / "last.pt", "--prompt", "x")
    assert code == 2 and "llmfs classify" in err


def test_missing_columns_are_named(base_checkpoint, tmp_path, capsys):
    data = write_csv(tmp_path / "bad.csv", [["a", "b"]] * 20)
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--checkpoint", base_checkpoint, "--dataset", data,
                                "--out_dir", tmp_path / "o", "--no-progress")
    assert code in (1, 2) and "text" in err and "message" in err


def test_trimmed_batches_give_the_same_logits_as_fully_padded_ones():
    torch.manual_seed(0)
    clf = SequenceClassifier(GPTModel(GPTConfig(vocab_size=30, context_length=16, emb_dim=16, n_heads=2,
                                                n_layers=1, drop_rate=0.0)), 2, pad_token_id=0).eval()
    batch = [(torch.tensor([5, 6, 7, 0, 0, 0, 0, 0]), 1), (torch.tensor([3, 4, 0, 0, 0, 0, 0, 0]), 0)]
    ids, labels = trim_padding(0)(batch)
    assert ids.shape == (2, 3) and labels.tolist() == [1, 0]
    full = torch.stack([b[0] for b in batch])
    torch.testing.assert_close(clf(ids), clf(full), rtol=1e-5, atol=1e-5)


def test_evaluate_perplexity_accuracy_and_an_unreachable_judge(base_checkpoint, tmp_path, capsys, monkeypatch):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 20)
    code, out, err = run_cli(capsys, "evaluate", "perplexity", "--checkpoint", base_checkpoint, "--text", text,
                             "--stride", 32)
    assert code == 0, err
    value = float(out.split("perplexity ")[1].split()[0])
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.evaluation.perplexity import perplexity_of_text
    loaded = load_model(checkpoint=base_checkpoint, device="cpu")
    expected = perplexity_of_text(loaded.model, loaded.tokenizer, text.read_text(), stride=32)["perplexity"]
    assert value == pytest.approx(expected, rel=1e-3)

    rows = [[f"word{i % 5} text {i}", ["a", "b"][i % 2]] for i in range(30)]
    data = write_csv(tmp_path / "c.csv", rows)
    out_dir = tmp_path / "clf"
    code, out, err = run_cli(capsys, "finetune", "classify", "--checkpoint", base_checkpoint, "--dataset", data,
                             "--text_column", "message", "--label_column", "kind", "--max_steps", 2,
                             "--out_dir", out_dir, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", "accuracy", "--checkpoint", out_dir / "last.pt", "--csv",
                             out_dir / "data" / "test.csv", "--text_column", "message", "--label_column", "kind")
    assert code == 0, err
    test_accuracy = json.loads((out_dir / "scores.json").read_text())["accuracy"]["test"]
    assert float(out.split("accuracy ")[1].split("%")[0]) / 100 == pytest.approx(test_accuracy, abs=1e-4)

    responses = tmp_path / "r.json"
    responses.write_text(json.dumps([{"instruction": "Say hi", "input": "", "output": "hi", "model_response": "hi"}]))
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    code, out, err = run_cli(capsys, "evaluate", "judge", "--responses", responses, "--judge",
                             "ollama:llama3@http://127.0.0.1:9")
    assert code == 2 and "ollama serve" in err


@pytest.mark.parametrize("task,lora", [("classify", False), ("classify", True), ("instruct", True)])
def test_sigterm_saves_a_fine_tuning_run_that_resumes_to_the_same_weights(base_checkpoint, tmp_path, capsys,
                                                                          monkeypatch, task, lora):
    """`kill` (SIGTERM) during `llmfs finetune` saves last.pt at the last finished step, like Ctrl-C;
    --resume then reaches the weights of a run that was never interrupted. Both runs happen in this
    one process, so this also checks that --seed alone fixes the new head and LoRA's initial weights."""
    import os
    import signal

    from llm_from_scratch.training.checkpoint import load_checkpoint
    from llm_from_scratch.training.trainer import GPTTrainer

    if task == "classify":
        rows = [[f"word{i % 5} text {i}", ["a", "b"][i % 2]] for i in range(40)]
        data = ["--dataset", write_csv(tmp_path / "c.csv", rows), "--text_column", "message", "--label_column", "kind"]
    else:
        data = ["--data", "synthetic", "--num_examples", 60, "--max_new_tokens", 2, "--skip_baseline"]
    if lora:
        data += ["--trainable", "lora"] if task == "classify" else ["--lora"]

    def finetune(out_dir, *extra):
        return run_cli(capsys, "finetune", task, "--checkpoint", base_checkpoint, *data, "--max_steps", 6,
                       "--eval_interval", 2, "--out_dir", out_dir, "--no-progress", *extra)

    code, _, err = finetune(tmp_path / "whole")
    assert code == 0, err

    from llm_from_scratch.training.next_token import NextTokenMethod
    real_step = NextTokenMethod.train_step

    def sigterm_during_step_4(self, trainer, step):
        if step == 3:                     # last.pt on disk is from step 2's evaluation
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(self, trainer, step)

    monkeypatch.setattr(NextTokenMethod, "train_step", sigterm_during_step_4)
    code, out, err = finetune(tmp_path / "cut")
    assert code == 130 and "interrupted" in err
    assert "saved" in out and load_checkpoint(tmp_path / "cut" / "last.pt")["train_state"]["step"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after training
    monkeypatch.setattr(NextTokenMethod, "train_step", real_step)
    code, _, err = finetune(tmp_path / "cut", "--resume")
    assert code == 0, err
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_the_training_flags_have_one_default_for_every_method():
    """instruct, classify, dpo and grpo share their training flags, each with one default; only
    the learning rate (LoRA-dependent for DPO/GRPO) and the run's length differ, on purpose."""
    from llm_from_scratch.cli.main import build_parser
    from llm_from_scratch.pipelines.finetuning import TrainingSettings

    parser = build_parser()
    defaults = {method: vars(parser.parse_args(["finetune", method, "--model", "x"]))
                for method in ("instruct", "classify", "dpo", "grpo")}
    differ_on_purpose = {"lr", "max_steps", "model"}
    for field in dataclasses.fields(TrainingSettings):
        if field.name in differ_on_purpose:
            continue
        values = {method: args[field.name] for method, args in defaults.items()}
        assert len(set(map(repr, values.values()))) == 1, (field.name, values)
        assert values["dpo"] == field.default, field.name


def test_a_resumed_fine_tuning_run_keeps_its_settings(base_checkpoint, tmp_path, capsys):
    """Instruction tuning (and so RFT, which trains through it) records its settings: --resume with
    another batch size is refused with the flag that continues the run; a longer run is fine."""
    args = ["finetune", "instruct", "--checkpoint", base_checkpoint, "--data", "synthetic", "--num_examples", 40,
            "--max_new_tokens", 2, "--skip_baseline", "--eval_interval", 2, "--out_dir", tmp_path / "run",
            "--no-progress"]
    code, _, err = run_cli(capsys, *args, "--max_steps", 2)
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--max_steps", 4, "--batch_size", 4, "--resume")
    assert code != 0 and "batch_size: the run has 8, this command 4" in err and "--batch_size 8" in err
    code, _, err = run_cli(capsys, *args, "--max_steps", 4, "--resume")
    assert code == 0, err


def test_a_resumed_lora_classifier_keeps_its_lora_scale(base_checkpoint, tmp_path, capsys):
    """Classification with LoRA: another --lora_alpha would change the adapters' scale under the same
    tensors; --resume refuses it."""
    rows = [[f"word{i % 5} text {i}", ["a", "b"][i % 2]] for i in range(40)]
    args = ["finetune", "classify", "--checkpoint", base_checkpoint, "--dataset", write_csv(tmp_path / "c.csv", rows),
            "--text_column", "message", "--label_column", "kind", "--trainable", "lora", "--eval_interval", 2,
            "--out_dir", tmp_path / "run", "--no-progress"]
    code, _, err = run_cli(capsys, *args, "--max_steps", 2)
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--max_steps", 3, "--lora_alpha", 64, "--resume")
    assert code == 2 and "lora_alpha: the run has 16.0, this command 64.0" in err
    code, _, err = run_cli(capsys, *args, "--max_steps", 3, "--resume")
    assert code == 0, err
