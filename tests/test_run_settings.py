"""A resumed run keeps the settings it started with (training/run_settings.py): which changes are
errors, which are notes, which pass, and the flags the error suggests."""

import pytest

from llm_from_scratch.training.run_settings import as_flag, check_resumed_settings

SAVED = {"temperature": 1.0, "lr": 1e-5, "weight_decay": 0.0, "max_steps": 10, "eval_examples": 200,
         "batch_size": 64, "micro_batch": 16, "tasks": "learnable", "lora": False, "max_new_tokens": None,
         "precision": "auto", "device": "auto"}


def test_the_same_settings_and_the_ones_that_may_change_pass():
    assert check_resumed_settings(SAVED, dict(SAVED), "last.pt") == []
    changed = {**SAVED, "max_steps": 40, "eval_examples": 20, "eval_tasks": "none", "micro_batch": 4,
               "device": "cpu", "precision": "fp32", "progress": False}
    assert check_resumed_settings(SAVED, changed, "last.pt", saved_precision="fp32") == []


def test_each_setting_that_shapes_training_is_named_with_the_flag_that_keeps_it():
    current = {**SAVED, "temperature": 0.8, "batch_size": 8, "tasks": None, "lora": True, "max_new_tokens": 32}
    with pytest.raises(ValueError) as error:
        check_resumed_settings(SAVED, current, "runs/x/last.pt")
    message = str(error.value)
    for name in ("temperature", "batch_size", "tasks", "lora", "max_new_tokens"):
        assert f"{name}: the run has" in message, name
    assert "runs/x/last.pt" in message and "another --out_dir" in message
    assert ("--temperature 1.0 --batch_size 64 --tasks learnable without --lora without --max_new_tokens"
            in message)


def test_the_learning_rate_and_weight_decay_are_notes_the_run_keeps_its_own():
    notes = check_resumed_settings(SAVED, {**SAVED, "lr": 2e-5, "weight_decay": 0.1}, "last.pt")
    assert len(notes) == 2 and "--lr 2e-05 is not used" in notes[0] and "its own lr 1e-05" in notes[0]
    assert check_resumed_settings({**SAVED, "lr": None}, {**SAVED, "lr": 2e-5}, "last.pt") == []


def test_an_explicit_other_precision_is_refused_auto_keeps_the_runs():
    with pytest.raises(ValueError, match="precision: the run has 'bf16', this command 'fp32'"):
        check_resumed_settings(SAVED, {**SAVED, "precision": "fp32"}, "last.pt", saved_precision="bf16")
    assert check_resumed_settings(SAVED, {**SAVED, "precision": "auto"}, "last.pt", saved_precision="bf16") == []


def test_settings_a_checkpoint_did_not_record_cannot_be_checked():
    assert check_resumed_settings(None, SAVED, "last.pt") == []
    assert check_resumed_settings({"lr": 1e-5}, {**SAVED, "temperature": 0.1}, "last.pt") == []


def test_flags_as_the_command_line_takes_them():
    assert as_flag("lr", 1e-05) == "--lr 1e-05"
    assert as_flag("lora", True) == "--lora" and as_flag("grade_truncated", False) == "without --grade_truncated"
    assert as_flag("scale_rewards", False) == "--no-scale_rewards"
    assert as_flag("max_new_tokens", None) == "without --max_new_tokens" and as_flag("tasks", None) == "--tasks none"
