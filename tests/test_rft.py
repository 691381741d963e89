"""Rejection-sampling fine-tuning (pipelines/rft.py): what it keeps, and that it never sees a held-out question."""

from __future__ import annotations

import json

import pytest

from cli_helpers import run_cli
from llm_from_scratch.generation.completions import Completion


def _fabricated_answers(model, tokenizer, instances, *args, **kwargs):
    """Per question: a correct answer, the same again, a wrong one, another correct wording, and a
    correct one cut off at the token limit (what `answer_tasks` returns, made by hand)."""
    groups = []
    for instance in instances:
        right, wrong = str(instance.answer), str(instance.answer) + "1"
        groups.append([Completion([1], f"Answer: {right}", "stop"), Completion([1], f"Answer: {right}", "stop"),
                       Completion([1], f"Answer: {wrong}", "stop"),
                       Completion([1], f"Let me add them.\nAnswer: {right}", "stop"),
                       Completion([1], f"Answer: {right}", "length")])
    return groups


@pytest.fixture
def fabricated(monkeypatch):
    import llm_from_scratch.evaluation.tasks as task_eval
    monkeypatch.setattr(task_eval, "answer_tasks", _fabricated_answers)


def test_rft_keeps_only_checked_correct_finished_answers_once_each(fabricated):
    from llm_from_scratch.pipelines.rft import rejection_sample
    from llm_from_scratch.pipelines.task_eval import gather_instances
    from llm_from_scratch.tasks import check_answer

    instances = gather_instances("addition,count_letters", 4, split="train")
    entries, counts = rejection_sample(None, None, instances, samples_per_question=5, temperature=1.0,
                                       max_new_tokens=16)
    by_id = {(i.family, i.id): i for i in instances}
    assert len(entries) == 2 * len(instances)                      # the two distinct finished correct texts
    for entry in entries:
        instance = by_id[(entry["family"], entry["id"])]
        assert entry["instruction"] == instance.prompt and check_answer(instance, entry["output"])
    assert counts["addition"] == {"questions": 4, "samples": 20, "correct": 16, "kept": 8}
    assert counts["all"]["kept"] == len(entries)


def test_rft_trains_on_its_data_and_never_on_a_held_out_question(base_checkpoint, tmp_path, capsys, fabricated):
    from llm_from_scratch.pipelines.task_eval import gather_instances

    out = tmp_path / "rft"
    code, stdout, stderr = run_cli(capsys, "finetune", "rft", "--checkpoint", base_checkpoint, "--tasks", "addition",
                                   "--questions", 8, "--samples_per_question", 5, "--max_new_tokens", 8,
                                   "--max_steps", 2, "--out_dir", out, "--precision", "fp32", "--no-progress",
                                   "--eval_tasks", "addition,compare", "--eval_examples", 5)
    assert code == 0, stderr
    assert (out / "final_model.pt").exists() and "16 kept" in stdout
    data = json.loads((out / "rft-data.json").read_text())
    validation = json.loads((out / "rft-validation.json").read_text())
    held_out = {i.prompt for i in gather_instances("addition", 200, split="test")}
    assert len(data) + len(validation) == 16 and len(data) >= 14    # all but one question's answers train
    assert not {e["id"] for e in data} & {e["id"] for e in validation}
    assert not {entry["instruction"] for entry in data + validation} & held_out
    # held-out scoring before and after, on the same questions, compared pairwise
    before = json.loads((out / "heldout-before.json").read_text())["records"]
    after = json.loads((out / "heldout-after.json").read_text())["records"]
    assert len(before) == len(after) == 10 and [r["id"] for r in before] == [r["id"] for r in after]
    scores = json.loads((out / "scores.json").read_text())
    assert scores["paired"]["addition"]["n"] == 5 and "paired McNemar" in stdout


def test_rft_with_nothing_correct_says_what_to_change(base_checkpoint, tmp_path, monkeypatch):
    import llm_from_scratch.evaluation.tasks as task_eval
    from llm_from_scratch.pipelines import PipelineError, RFTConfig, finetune_rft

    monkeypatch.setattr(task_eval, "answer_tasks", lambda model, tokenizer, instances, *a, **k: [
        [Completion([1], "Answer: no idea", "stop")] for _ in instances])
    with pytest.raises(PipelineError, match="only 0 correct answers"):
        finetune_rft(RFTConfig(checkpoint=base_checkpoint, tasks="addition", questions=4, samples_per_question=1,
                               out_dir=tmp_path / "none", progress=False))


def test_rft_resumes_a_run_whose_data_has_no_validation_file_yet(base_checkpoint, tmp_path, capsys, fabricated):
    out = tmp_path / "rft"
    flags = ["finetune", "rft", "--checkpoint", base_checkpoint, "--tasks", "addition", "--questions", 8,
             "--samples_per_question", 5, "--max_new_tokens", 8, "--max_steps", 2, "--out_dir", out,
             "--precision", "fp32", "--no-progress", "--eval_tasks", "none"]
    code, _, stderr = run_cli(capsys, *flags)
    assert code == 0, stderr
    every = json.loads((out / "rft-data.json").read_text()) + json.loads((out / "rft-validation.json").read_text())
    (out / "rft-data.json").write_text(json.dumps(every))           # a run from before the split
    (out / "rft-validation.json").unlink()
    code, _, stderr = run_cli(capsys, *flags, "--resume")
    assert code == 0, stderr
    train = json.loads((out / "rft-data.json").read_text())
    validation = json.loads((out / "rft-validation.json").read_text())
    assert len(train) + len(validation) == 16 and validation
    assert not {e["id"] for e in train} & {e["id"] for e in validation}


def test_rft_with_one_question_says_it_cannot_validate(base_checkpoint, tmp_path, fabricated):
    from llm_from_scratch.pipelines import PipelineError, RFTConfig, finetune_rft

    with pytest.raises(PipelineError, match="2 questions"):
        finetune_rft(RFTConfig(checkpoint=base_checkpoint, tasks="addition", questions=1, samples_per_question=5,
                               max_new_tokens=8, eval_tasks="none", out_dir=tmp_path / "one", progress=False))


def test_a_resumed_rft_run_may_change_how_it_sampled_but_not_how_it_trains(base_checkpoint, tmp_path, capsys,
                                                                           fabricated):
    """A resumed RFT run trains on its saved answers: another --temperature is fine; another
    --style (how the answers are formatted for training) is refused, naming the flag."""
    out = tmp_path / "rft"
    flags = ["finetune", "rft", "--checkpoint", base_checkpoint, "--tasks", "addition", "--questions", 8,
             "--samples_per_question", 5, "--max_new_tokens", 8, "--out_dir", out, "--precision", "fp32",
             "--no-progress", "--eval_tasks", "none"]
    code, _, stderr = run_cli(capsys, *flags, "--max_steps", 2)
    assert code == 0, stderr
    code, _, stderr = run_cli(capsys, *flags, "--max_steps", 3, "--style", "phi3", "--resume")
    assert code == 2 and "style: the run has 'auto', this command 'phi3'" in stderr and "--style auto" in stderr
    code, _, stderr = run_cli(capsys, *flags, "--max_steps", 3, "--temperature", 1.3, "--resume")
    assert code == 0, stderr
