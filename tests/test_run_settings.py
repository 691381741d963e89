"""A resumed run keeps the settings and start model it started with (training/run_settings.py):
which changes are errors, which are notes, which pass, and the flags the error suggests."""

import pytest
import torch

from llm_from_scratch.training.run_settings import RunSettings, as_flag, check_resumed_settings, weights_fingerprint

SAVED = {"temperature": 1.0, "lr": 1e-5, "weight_decay": 0.0, "max_steps": 10, "eval_examples": 200,
         "batch_size": 64, "micro_batch": 16, "tasks": "learnable", "lora": False, "max_new_tokens": None,
         "precision": "auto", "device": "auto", "lora_rank": 16, "start_weights": "abc"}


def _check(current: dict, may_change=(), **kw):
    return check_resumed_settings(SAVED, RunSettings(current, frozenset(may_change)), "last.pt", **kw)


def test_the_same_settings_and_the_ones_that_may_change_pass():
    assert _check(dict(SAVED)) == []
    changed = {**SAVED, "max_steps": 40, "eval_examples": 20, "eval_tasks": "none", "device": "cpu",
               "precision": "fp32", "progress": False, "checkpoint": "moved/elsewhere.pt",
               "lora_rank": 8}                                       # LoRA off: its rank does not matter
    assert _check(changed, saved_precision="fp32") == []
    assert _check({**SAVED, "micro_batch": 4}, may_change=("micro_batch",)) == []
    with pytest.raises(ValueError, match="micro_batch"):                # only where the stage says so
        _check({**SAVED, "micro_batch": 4})


def test_each_setting_that_shapes_training_is_named_with_the_flag_that_keeps_it():
    current = {**SAVED, "temperature": 0.8, "batch_size": 8, "tasks": None, "lora": True, "max_new_tokens": 32}
    with pytest.raises(ValueError) as error:
        check_resumed_settings(SAVED, RunSettings(current), "runs/x/last.pt")
    message = str(error.value)
    for name in ("temperature", "batch_size", "tasks", "lora", "max_new_tokens"):
        assert f"{name}: the run has" in message, name
    assert "runs/x/last.pt" in message and "another --out_dir" in message
    assert ("--temperature 1.0 --batch_size 64 --tasks learnable without --lora without --max_new_tokens"
            in message)
    with pytest.raises(ValueError, match="lora_rank"):                  # with LoRA, its shape is checked
        check_resumed_settings({**SAVED, "lora": True}, RunSettings({**SAVED, "lora": True, "lora_rank": 8}), "p")


def test_other_start_weights_are_refused():
    with pytest.raises(ValueError, match="another start model"):
        _check({**SAVED, "start_weights": "def"})
    assert _check({k: v for k, v in SAVED.items() if k != "start_weights"}) == []   # not recorded: not checked


def test_the_learning_rate_and_weight_decay_are_notes_the_run_keeps_its_own():
    notes = _check({**SAVED, "lr": 2e-5, "weight_decay": 0.1})
    assert len(notes) == 2 and "lr 2e-05 is not used" in notes[0] and "its own lr 1e-05" in notes[0]
    assert check_resumed_settings({**SAVED, "lr": None}, RunSettings({**SAVED, "lr": 2e-5}), "p") == []


def test_an_explicit_other_precision_is_refused_auto_keeps_the_runs():
    with pytest.raises(ValueError, match="precision: the run has 'bf16', this command 'fp32'"):
        _check({**SAVED, "precision": "fp32"}, saved_precision="bf16")
    assert _check({**SAVED, "precision": "auto"}, saved_precision="bf16") == []


def test_settings_a_checkpoint_did_not_record_cannot_be_checked():
    assert check_resumed_settings(None, RunSettings(SAVED), "last.pt") == []
    assert check_resumed_settings({"lr": 1e-5}, RunSettings({**SAVED, "temperature": 0.1}), "p") == []


def test_flags_as_the_command_line_takes_them():
    assert as_flag("lr", 1e-05) == "--lr 1e-05"
    assert as_flag("lora", True) == "--lora" and as_flag("grade_truncated", False) == "without --grade_truncated"
    assert as_flag("scale_rewards", False) == "--no-scale_rewards"
    assert as_flag("max_new_tokens", None) == "without --max_new_tokens" and as_flag("tasks", None) == "--tasks none"
    assert as_flag("text_column", "a b") == "--text_column 'a b'"


@pytest.mark.parametrize("command", ["grpo", "dpo", "rft", "instruct", "classify"])
def test_the_hints_parse_as_the_commands_flags(command):
    """Each hint for a recorded setting is something `llmfs finetune COMMAND` accepts, and gives
    the setting its value."""
    import shlex

    from llm_from_scratch.cli.main import build_parser
    from llm_from_scratch.pipelines import ClassifierConfig, DPOConfig, GRPOConfig, InstructConfig, RFTConfig

    config = {"grpo": GRPOConfig, "dpo": DPOConfig, "rft": RFTConfig, "instruct": InstructConfig,
              "classify": ClassifierConfig}[command]()
    parser = build_parser()
    base = ["finetune", command, "--model", "smollm2-135m-instruct"]
    from llm_from_scratch.pipelines import rft

    for name, value in vars(config).items():
        if name in ("model", "checkpoint", "out_dir", "lr") or (command == "rft" and name in rft.RESUME_MAY_CHANGE):
            continue                                  # paths; lr (a note, never a hint); never checked
        if command == "rft" and name in ("mask_prompt", "allowed_max_length"):
            continue    # instruction settings RFT keeps at their defaults (no flag): checked, a new default = a new run
        flag = as_flag(name, value)
        args = parser.parse_args(base + ([] if flag.startswith("without") else shlex.split(flag)))
        assert hasattr(args, name), f"llmfs finetune {command} has no --{name}"
        got = getattr(args, name)
        assert got == value or str(got) == str(value), (name, flag, got)


def test_the_fingerprint_sees_the_weights_not_the_file():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    copy = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 2))
    copy.load_state_dict(model.state_dict())
    assert weights_fingerprint(model) == weights_fingerprint(copy)
    with torch.no_grad():
        copy[1].bias[0] += 1e-3
    assert weights_fingerprint(model) != weights_fingerprint(copy)
    assert weights_fingerprint(model.to(torch.bfloat16)) != weights_fingerprint(copy)   # any dtype hashes
    big, other = torch.nn.Embedding(1000, 16), torch.nn.Embedding(1000, 16)
    other.load_state_dict(big.state_dict())
    with torch.no_grad():
        other.weight[500] += 1.0                         # one row in the middle of the tensor
    assert weights_fingerprint(big) != weights_fingerprint(other)
