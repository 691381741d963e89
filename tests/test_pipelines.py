"""Pipeline stages called from Python (`llm_from_scratch.pipelines`), on tiny data made here.

Also: the Llama architecture trained from scratch (`llama-micro`), resumed bit-exactly, used by
`llmfs generate`; and the commands, which only map their flags to a config and make one call.
"""

import csv
import json

import pytest
import torch

from llm_from_scratch.cli.main import main
from llm_from_scratch.pipelines import (ClassifierConfig, InstructConfig, PipelineError, PretrainConfig,
                                        finetune_classifier, finetune_instruct, pretrain)
from llm_from_scratch.training import GPTTrainer, load_checkpoint


def tiny_run(corpus_dir, out_dir, **changes) -> PretrainConfig:
    settings = dict(dataset=str(corpus_dir), tokenizer="char", model_type="gpt-micro", context_length=32,
                    batch_size=4, eval_batches=2, max_steps=4, eval_interval=2, out_dir=out_dir,
                    precision="fp32", progress=False)
    return PretrainConfig(**{**settings, **changes})


def test_pretrain_returns_what_it_wrote(corpus_dir, tmp_path, capsys):
    result = pretrain(tiny_run(corpus_dir, tmp_path / "run"))
    printed = capsys.readouterr().out
    assert "llmfs train: gpt-micro" in printed and "Done in" in printed  # the command's lines
    assert result.out_dir == tmp_path / "run" and result.model_type == "gpt-micro"
    assert result.best_checkpoint.is_file() and result.last_checkpoint.is_file()
    assert [h["step"] for h in result.history] == [2, 4]
    assert result.final_val_loss == result.history[-1]["final_val_loss"]
    assert result.tokenizer.name == "char" and result.model.cfg.context_length == 32
    saved = load_checkpoint(result.last_checkpoint)["model"]
    for name, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), saved[name]), name


def test_pretrain_errors_are_pipeline_errors(corpus_dir, tmp_path):
    # an unknown model is refused before the corpus is even looked at
    with pytest.raises(PipelineError, match="Unknown model preset 'gpt-nano'.*llama-micro"):
        pretrain(PretrainConfig(model_type="gpt-nano", dataset="no-such-corpus", out_dir=tmp_path / "x"))
    with pytest.raises(PipelineError, match="no checkpoint at"):
        pretrain(tiny_run(corpus_dir, tmp_path / "x", resume=True))
    with pytest.raises(PipelineError, match="fewer than one batch"):
        pretrain(tiny_run(corpus_dir, tmp_path / "x", batch_size=100_000))
    pretrain(tiny_run(corpus_dir, tmp_path / "gpt", max_steps=1))
    with pytest.raises(PipelineError, match="is a gpt-micro checkpoint, not llama-micro"):
        pretrain(tiny_run(corpus_dir, tmp_path / "gpt", model_type="llama-micro", resume=True))


def test_llama_micro_trains_resumes_bit_exactly_and_generates(corpus_dir, tmp_path, capsys, monkeypatch):
    """`llama-micro` from the model registry: the overrides reach its config, a run interrupted at
    step 3 and resumed ends with the weights of a run that was never interrupted (dropout on, so
    the saved random state matters too), and `llmfs generate` reads the checkpoint."""
    llama = dict(model_type="llama-micro", dropout=0.1, max_steps=6)
    whole = pretrain(tiny_run(corpus_dir, tmp_path / "whole", **llama))
    ckpt = load_checkpoint(whole.last_checkpoint)
    assert ckpt["model_type"] == "llama-micro" and ckpt["model_config"]["model_type"] == "llama"
    assert ckpt["model_config"]["context_length"] == 32 and ckpt["model_config"]["drop_rate"] == 0.1
    assert type(whole.model).__name__ == "LlamaModel"

    from llm_from_scratch.training.next_token import NextTokenMethod
    real_step = NextTokenMethod.train_step

    def interrupted_during_step_4(self, trainer, step):
        if step == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or SIGTERM, in a pipeline) does
        return real_step(self, trainer, step)

    monkeypatch.setattr(NextTokenMethod, "train_step", interrupted_during_step_4)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_run(corpus_dir, tmp_path / "cut", **llama))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["train_state"]["step"] == 3
    monkeypatch.setattr(NextTokenMethod, "train_step", real_step)
    # resuming needs neither the model, its overrides nor the corpus: the checkpoint records them
    resumed = pretrain(tiny_run(corpus_dir, tmp_path / "cut", model_type=None, dropout=None, context_length=None,
                                dataset=None, tokenizer=None, max_steps=6, resume=True))
    assert resumed.model_type == "llama-micro"
    expected, got = ckpt["model"], load_checkpoint(resumed.last_checkpoint)["model"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    capsys.readouterr()

    argv = ["generate", "--checkpoint", str(resumed.best_checkpoint), "--prompt", "Mia", "--max_new_tokens", "20",
            "--seed", "1", "--model_type", "llama-micro"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.startswith("Mia") and len(first.strip()) >= 20
    assert main([*argv, "--stream"]) == 0
    assert capsys.readouterr().out == first


def test_finetune_classifier_from_python(base_checkpoint, tmp_path, capsys):
    data = tmp_path / "mine.csv"
    with open(data, "w", newline="") as f:
        csv.writer(f).writerows([["text", "label"], *([f"word{i % 5} text {i}", "ab"[i % 2]] for i in range(40))])
    result = finetune_classifier(ClassifierConfig(checkpoint=base_checkpoint, dataset=data, max_steps=2,
                                                  eval_interval=2, out_dir=tmp_path / "clf", precision="fp32",
                                                  progress=False))
    assert "llmfs finetune classify:" in capsys.readouterr().out
    assert result.label_names == ["a", "b"] and set(result.accuracy) == {"train", "validation", "test"}
    assert json.loads((tmp_path / "clf" / "scores.json").read_text())["accuracy"] == result.accuracy
    assert result.best_checkpoint.is_file() and [h["step"] for h in result.history] == [2]
    assert load_checkpoint(result.last_checkpoint)["task"]["label_names"] == ["a", "b"]

    with pytest.raises(PipelineError, match="must hold train.csv"):
        finetune_classifier(ClassifierConfig(checkpoint=base_checkpoint, dataset=tmp_path, out_dir=tmp_path / "o"))
    with pytest.raises(PipelineError, match="not both"):
        finetune_classifier(ClassifierConfig(model="gpt2", checkpoint=base_checkpoint, dataset=data))


def test_finetune_instruct_from_python(base_checkpoint, tmp_path, capsys):
    result = finetune_instruct(InstructConfig(checkpoint=base_checkpoint, num_examples=60, max_steps=2,
                                              max_new_tokens=2, skip_baseline=True, out_dir=tmp_path / "ins",
                                              precision="fp32", progress=False))
    assert "after fine-tuning: exact match" in capsys.readouterr().out
    assert "before" not in result.scores and 0.0 <= result.scores["after"]["exact_match"] <= 1.0
    assert result.final_model.is_file() and len(json.loads(result.responses.read_text())) == 6
    assert result.history[-1]["step"] == 2


def test_each_command_makes_one_call_with_its_flags(monkeypatch):
    import llm_from_scratch.pipelines as pipelines

    calls = []
    for name in ("pretrain", "finetune_classifier", "finetune_instruct", "run_demo"):
        monkeypatch.setattr(pipelines, name, lambda config, name=name: calls.append((name, config)))
    assert main(["train", "--model-type", "llama-micro", "--dropout", "0.2", "--no_fused_loss", "--resume",
                 "--no-progress"]) == 0
    assert main(["finetune", "classify", "--model", "gpt2", "--lora", "--max_steps", "3"]) == 0
    assert main(["finetune", "instruct", "--checkpoint", "c.pt", "--lora", "--no-progress"]) == 0
    assert main(["demo", "--max-steps", "5"]) == 0
    (_, train), (_, classify), (_, instruct), (_, demo) = calls
    assert [name for name, _ in calls] == ["pretrain", "finetune_classifier", "finetune_instruct", "run_demo"]
    assert (train.model_type, train.dropout, train.fused_loss, train.resume, train.progress, train.batch_size) == \
        ("llama-micro", 0.2, False, "auto", False, 16)
    assert (classify.model, classify.trainable, classify.max_steps, classify.epochs, classify.dataset) == \
        ("gpt2", "lora", 3, 5.0, "sms_spam")
    assert (instruct.checkpoint, instruct.lora, instruct.progress, instruct.epochs) == ("c.pt", True, False, 2.0)
    assert demo.max_steps == 5 and demo.out_dir == "checkpoints/demo"
