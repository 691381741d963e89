"""Sampling defaults are written once, in `generation/defaults.py`, and every command reads them there.

Comparing a parser's default with the table is not enough: a value typed into the parser by hand
passes as long as it happens to agree. So each check also changes the table (to values no one
would pick) and builds the parsers again: a default that is read from the table follows, a
hard-coded one does not.
"""

import dataclasses
import inspect

import pytest

from llm_from_scratch.cli.main import build_parser
from llm_from_scratch.generation.defaults import (POLICY_SAMPLING_TEMPERATURE, SURFACE_DEFAULTS,
                                                  TASK_EVAL_MAX_NEW_TOKENS, TASK_EVAL_TEMPERATURE)

# (the command line with nothing but the required flags, the surface whose defaults it uses)
COMMANDS = [
    (["generate", "--model", "x"], "generate"),
    (["chat", "--model", "x"], "chat"),
    (["evaluate", "tasks", "--model", "x"], "tasks"),
]
FLAG_OF = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "max_tokens": "max_new_tokens"}
UNLIKELY = {"temperature": 0.123, "top_k": 7, "top_p": 0.456, "max_tokens": 77}


def parser_defaults(argv: list[str]) -> dict:
    args = build_parser().parse_args(argv)
    return {setting: getattr(args, flag) for setting, flag in FLAG_OF.items()}


@pytest.mark.parametrize("argv, surface", COMMANDS, ids=[surface for _, surface in COMMANDS])
def test_each_command_takes_its_sampling_defaults_from_the_table(argv, surface, monkeypatch):
    defaults = SURFACE_DEFAULTS[surface]
    # task evaluation's answer length is the table's value or what the context leaves: the flag's
    # default is None, and evaluate_on_tasks applies the table's value (tested below)
    fits_context = {"max_tokens"} if surface == "tasks" else set()
    expected = {setting: None if setting in fits_context else defaults[setting] for setting in FLAG_OF}
    assert parser_defaults(argv) == expected
    for setting, value in UNLIKELY.items():
        monkeypatch.setitem(defaults, setting, value)
    expected = {setting: None if setting in fits_context else value for setting, value in UNLIKELY.items()}
    assert parser_defaults(argv) == expected, f"`llmfs {' '.join(argv[:-2])}` hard-codes a default"


def test_the_named_constants_are_the_table_s_values():
    assert SURFACE_DEFAULTS["tasks"]["temperature"] == TASK_EVAL_TEMPERATURE > 0
    assert SURFACE_DEFAULTS["tasks"]["max_tokens"] == TASK_EVAL_MAX_NEW_TOKENS
    assert SURFACE_DEFAULTS["policy"]["temperature"] == POLICY_SAMPLING_TEMPERATURE


def test_task_evaluation_has_the_same_defaults_in_python_and_on_the_command_line():
    from llm_from_scratch.evaluation.tasks import evaluate_on_tasks
    from llm_from_scratch.pipelines.task_eval import TaskEvalConfig

    config = TaskEvalConfig()
    assert (config.temperature, config.max_new_tokens) == (TASK_EVAL_TEMPERATURE, None)
    parameters = inspect.signature(evaluate_on_tasks).parameters
    assert parameters["temperature"].default == TASK_EVAL_TEMPERATURE
    assert parameters["max_new_tokens"].default is None      # TASK_EVAL_MAX_NEW_TOKENS, or what fits
    # TaskEvalConfig says its defaults are `llmfs evaluate tasks`'s: every flag they share agrees.
    args = vars(build_parser().parse_args(["evaluate", "tasks", "--model", "x"]))
    shared = [field.name for field in dataclasses.fields(TaskEvalConfig) if field.name in args]
    assert {"temperature", "top_p", "top_k", "max_new_tokens", "num_samples"} <= set(shared)
    for name in shared:
        if name != "model":
            assert args[name] == getattr(config, name), name


@pytest.mark.parametrize("method", ["grpo", "dpo", "rft"])
def test_rl_samples_at_the_policy_temperature(method):
    args = build_parser().parse_args(["finetune", method, "--model", "x"])
    assert args.temperature == POLICY_SAMPLING_TEMPERATURE


def test_task_answers_default_to_what_the_context_leaves(monkeypatch):
    """A 64-token model: the default answer length (128) does not fit after the prompt, so it
    becomes what the context leaves; an explicit length that does not fit names the largest."""
    import torch

    from llm_from_scratch.evaluation.tasks import evaluate_on_tasks, task_prompts
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.tasks import make_instances
    from llm_from_scratch.tokenizers import get_tokenizer

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=96, emb_dim=16, n_heads=2, n_layers=1,
                               drop_rate=0.0)).eval()
    tokenizer = get_tokenizer("gpt2")
    instances = make_instances("compare", 2, seed=0)
    room = 96 - max(len(p) for p in task_prompts(tokenizer, instances))
    assert 0 < room < TASK_EVAL_MAX_NEW_TOKENS
    import llm_from_scratch.evaluation.tasks as task_eval
    asked = []
    real = task_eval.answer_tasks
    monkeypatch.setattr(task_eval, "answer_tasks", lambda *a, **k: asked.append(a[3].max_tokens) or real(*a, **k))
    evaluate_on_tasks(model, tokenizer, instances, num_samples=0)
    assert asked == [room]
    with pytest.raises(ValueError, match=f"at most {room}"):
        evaluate_on_tasks(model, tokenizer, instances, num_samples=0, max_new_tokens=room + 1)


@pytest.mark.parametrize("method", ["grpo", "dpo", "rft"])
def test_policy_methods_train_on_one_default_mix(method):
    """GRPO, DPO and RFT default to the same five families (docs 22 measured them on these)."""
    from llm_from_scratch.pipelines import DPOConfig, GRPOConfig, RFTConfig
    from llm_from_scratch.tasks import POLICY_TRAINING_TASKS, parse_task_list

    assert parse_task_list(POLICY_TRAINING_TASKS) == ["addition", "multiplication", "word_problems",
                                                      "count_letters", "compare"]
    args = build_parser().parse_args(["finetune", method, "--model", "x"])
    config = {"grpo": GRPOConfig, "dpo": DPOConfig, "rft": RFTConfig}[method]
    assert args.tasks == config.tasks == POLICY_TRAINING_TASKS
