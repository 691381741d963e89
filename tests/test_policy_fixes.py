"""DPO and GRPO off their headline path: each test here failed on the policy trainer as it was
before it moved onto the one training loop (found by a review, 2026-12-04).

- PPO epochs (`inner_steps`) took one optimizer step for N identical passes: now one per pass;
- dropout made the log-probabilities noisy (ratio != 1, DPO's first loss != log 2): now off;
- DPO's reference ran in fp32 beside a bf16 policy: now the same batches and precision;
- GRPO asked each family for steps x questions-per-step questions: now they wrap around;
- top-p sampling with full-softmax log-probabilities: refused; the vocabulary cut is shared;
- the sampling seeds of step s, batch 1 were those of step s + 1, batch 0: now unrelated;
- on-policy DPO pairs could be answers cut off mid-sentence: now skipped;
- a default max_new_tokens that did not fit the model's context: now it fits, and an explicit
  one that does not is an error that names the largest that does.

The tiny random models never say their end-of-turn token, so the checker is replaced by a
deterministic stand-in where a test needs rewards (as in test_policy_training.py)."""

import math

import pytest
import torch

from llm_from_scratch.training.checkpoint import load_checkpoint


def _fake_checker(instance, completion: str) -> bool:
    return len(completion) % 2 == 0


@pytest.fixture
def fake_rewards(monkeypatch):
    import llm_from_scratch.tasks as tasks
    monkeypatch.setattr(tasks, "check_answer", _fake_checker)


@pytest.fixture
def dropout_checkpoint(tmp_path):
    """A tiny GPT with dropout 0.1 (as the GPT-2 presets and --dropout 0.1 give), our checkpoint."""
    from conftest import save_tiny_gpt

    return save_tiny_gpt(tmp_path / "dropout.pt", drop_rate=0.1)


def _grpo(checkpoint, out_dir, **changes):
    from llm_from_scratch.pipelines import GRPOConfig, finetune_grpo
    settings = dict(checkpoint=checkpoint, tasks="addition", prompts_per_step=2, group_size=4, max_steps=2,
                    max_new_tokens=6, eval_tasks="none", out_dir=out_dir, lr=1e-2, progress=False,
                    precision="fp32", seed=5, grade_truncated=True)
    return finetune_grpo(GRPOConfig(**{**settings, **changes}))


def _pairs_file(path):
    import json
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f"Answer: {2 * i}", "rejected": f"Answer: {2 * i + 1}"}
            for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_ppo_epochs_take_an_optimizer_update_per_pass_and_the_clip_acts(base_checkpoint, tmp_path, fake_rewards):
    result = _grpo(base_checkpoint, tmp_path / "run", inner_steps=3, max_steps=2, clip_eps=0.05, lr=5e-2)
    optimizer = load_checkpoint(tmp_path / "run" / "last.pt")["optimizer"]
    assert {int(s["step"]) for s in optimizer["state"].values()} == {2 * 3}     # 2 steps x 3 passes
    for record in result.history:
        # the first pass sees pi == pi_old; the last has moved by two updates: clipped tokens
        assert record["clip_fraction_last"] > 0
        assert record["ratio_mean_last"] != pytest.approx(1.0, abs=1e-4)


def test_one_update_per_step_keeps_the_ratio_exactly_one(base_checkpoint, tmp_path, fake_rewards):
    result = _grpo(base_checkpoint, tmp_path / "run", inner_steps=1)
    assert all(r["ratio_mean"] == 1.0 and r["clip_fraction"] == 0.0 for r in result.history)


def test_dropout_is_off_for_the_policy_so_the_ratio_starts_at_one(dropout_checkpoint, tmp_path, fake_rewards):
    """lr 0: the policy never moves, so every ratio pi / pi_old of every pass must be exactly 1.
    With dropout on, the two forward passes drew different masks and the ratio wandered."""
    result = _grpo(dropout_checkpoint, tmp_path / "run", inner_steps=2, lr=0.0, kl_coef=0.1)
    for record in result.history:
        assert record["ratio_mean"] == 1.0 and record["clip_fraction"] == 0.0 and record["kl"] == 0.0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("lora", [False, True])
def test_dpo_starts_at_exactly_log_2_with_dropout_in_every_precision(dropout_checkpoint, tmp_path, precision,
                                                                      lora):
    from llm_from_scratch.pipelines import DPOConfig, finetune_dpo

    result = finetune_dpo(DPOConfig(checkpoint=dropout_checkpoint, tasks=None, data=_pairs_file(tmp_path / "p.jsonl"),
                                    pairs_per_step=4, max_steps=1, micro_batch=4, eval_tasks="none", lora=lora,
                                    out_dir=tmp_path / "run", progress=False, precision=precision, beta=0.1))
    first = result.history[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-7)   # policy == reference: every reward 0
    assert first["reward_margin"] == 0.0 and first["reward_chosen"] == 0.0


def test_grpo_questions_wrap_around_for_any_run_length():
    """Multiplication at level 1 has about 600 training questions; 300 steps x 8 asked for 2,400."""
    from llm_from_scratch.pipelines.grpo import GRPOConfig, GRPOMethod, training_questions

    config = GRPOConfig(tasks="multiplication", difficulty=1, prompts_per_step=8, max_steps=300)
    questions = training_questions(config)
    assert 8 <= len(questions) <= 600 and len({q.id for q in questions}) == len(questions)
    steps = GRPOMethod.questions_of
    fake = type("M", (), {"c": config, "questions": questions})()
    late = steps(fake, 299)
    assert all(0 <= i < len(questions) for i in late) and len(late) == 8


def test_grpo_refuses_top_p_with_the_reason():
    from llm_from_scratch.pipelines.common import PipelineError
    from llm_from_scratch.pipelines.grpo import GRPOConfig, check_grpo_config

    with pytest.raises(PipelineError, match="top-p"):
        check_grpo_config(GRPOConfig(top_p=0.9))


def test_log_probabilities_use_the_vocabulary_sampling_uses():
    """A model whose embedding has more rows than the tokenizer has tokens samples among the
    tokenizer's ids only; the log-probabilities must be of that same distribution (fp32, 1e-6)."""
    from llm_from_scratch.finetune.sequences import token_logprobs
    from llm_from_scratch.generation.completions import sampling_vocab_size
    from llm_from_scratch.model import GPTConfig, GPTModel

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=64, context_length=16, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0))
    tokenizer = type("T", (), {"vocab_size": 50})()
    assert sampling_vocab_size(model, tokenizer) == 50
    ids = torch.randint(0, 50, (2, 9))
    got = token_logprobs(model, ids, temperature=0.7, vocab_size=50)
    logits = model(ids)[:, :-1, :50] / 0.7
    expected = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(token_logprobs(model, ids, temperature=0.7), expected, atol=1e-3)


def test_sampling_seed_streams_of_nearby_seeds_are_unrelated():
    from llm_from_scratch.generation.completions import batch_seed

    seeds = {batch_seed(seed, batch) for seed in range(200) for batch in range(20)}
    assert len(seeds) == 200 * 20                     # step s, batch 1 is not step s + 1, batch 0
    assert batch_seed(7, 3) == batch_seed(7, 3)       # and the same call gives the same stream


def test_on_policy_pairs_skip_answers_cut_off_mid_sentence(monkeypatch):
    from llm_from_scratch.generation.completions import Completion
    from llm_from_scratch.pipelines import DPOConfig
    from llm_from_scratch.pipelines.dpo import on_policy_pairs
    from llm_from_scratch.tasks import make_instances

    questions = make_instances("addition", 2, split="train", seed=0)
    right = [str(q.answer) for q in questions]

    def answers(model, tokenizer, instances, params, **kwargs):
        # question 0: its only right answer was cut off -> no pair; question 1: both ended -> a pair
        return [[Completion([1], f"Answer: {right[0]}", "length"), Completion([1], "Answer: -1", "stop")],
                [Completion([1], f"Answer: {right[1]}", "stop"), Completion([1], "Answer: -1", "stop"),
                 Completion([1], "Answer: -2 and then", "length")]]

    import llm_from_scratch.evaluation.tasks as task_eval
    monkeypatch.setattr(task_eval, "answer_tasks", answers)
    model = type("M", (), {"cfg": type("C", (), {"context_length": 1024})()})()
    tokenizer = type("T", (), {"encode": lambda self, text, **kw: [0] * 10, "eot_id": 0})()
    monkeypatch.setattr(task_eval, "task_prompts", lambda tok, inst, style="auto": [[0] * 10 for _ in inst])
    pairs, stats = on_policy_pairs(model, tokenizer, questions, DPOConfig(progress=False))
    assert [(p.chosen, p.rejected) for p in pairs] == [(f"Answer: {right[1]}", "Answer: -1")]
    assert stats["cut_off"] == pytest.approx(2 / 5)


def test_answer_budget_fits_the_context_or_names_the_largest_that_does():
    from llm_from_scratch.pipelines.common import PipelineError
    from llm_from_scratch.pipelines.policy import PolicyConfig, answer_budget

    prompts = [[0] * 94, [0] * 30]
    assert answer_budget(PolicyConfig(), prompts, 128) == 34          # default: what the context leaves
    assert answer_budget(PolicyConfig(), prompts, 1024) == 96         # ... at most 96
    assert answer_budget(PolicyConfig(max_new_tokens=20), prompts, 128) == 20
    with pytest.raises(PipelineError, match="at most 34"):
        answer_budget(PolicyConfig(max_new_tokens=96), prompts, 128)
    with pytest.raises(PipelineError, match="no room"):
        answer_budget(PolicyConfig(), [[0] * 128], 128)


def test_grpo_on_a_small_context_checkpoint_runs_with_default_flags(base_checkpoint, tmp_path, fake_rewards):
    """Context 128, addition prompts in the Alpaca template: the old default of 96 new tokens did
    not fit and the run stopped at start-up."""
    result = _grpo(base_checkpoint, tmp_path / "run", max_new_tokens=None, max_steps=1, group_size=2,
                   prompts_per_step=1)
    assert 0 < result.history[0]["completion_tokens"] <= 96


def test_kill_during_ppo_epochs_stops_after_the_step_and_resumes_exactly(base_checkpoint, tmp_path, fake_rewards,
                                                                        monkeypatch):
    """With several updates per step, most of a step is spent after its first update, when the
    step's start is no longer a point to save: a `kill` there finishes the step, saves, stops."""
    import os
    import signal

    from llm_from_scratch.training.trainer import GPTTrainer

    settings = dict(inner_steps=3, max_steps=3, lr=5e-2)
    _grpo(base_checkpoint, tmp_path / "whole", **settings)
    real_update = GPTTrainer.update

    def kill_in_step_2(self):
        norm = real_update(self)
        if self.state.step == 1 and self._updates == 1:      # after the first of step 2's 3 updates
            os.kill(os.getpid(), signal.SIGTERM)
        return norm

    monkeypatch.setattr(GPTTrainer, "update", kill_in_step_2)
    with pytest.raises(KeyboardInterrupt):
        _grpo(base_checkpoint, tmp_path / "cut", **settings)
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved["train_state"]["step"] == 2                    # step 2 was finished, then saved
    assert {int(s["step"]) for s in saved["optimizer"]["state"].values()} == {2 * 3}
    monkeypatch.setattr(GPTTrainer, "update", real_update)
    _grpo(base_checkpoint, tmp_path / "cut", resume=True, **settings)
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")["model"]
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")["model"]
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


def test_a_policy_checkpoint_from_before_the_one_loop_resumes(base_checkpoint, tmp_path, fake_rewards):
    """last.pt of the old DPO/GRPO loop: the trainable tensors and a `policy_state`, no RNG."""
    from llm_from_scratch.training.checkpoint import save_checkpoint

    _grpo(base_checkpoint, tmp_path / "run", max_steps=2, lora=True)
    new = load_checkpoint(tmp_path / "run" / "last.pt")
    state = new.pop("train_state")
    new.pop("rng")
    new["policy_state"] = {"step": state["step"], "seconds": state["train_seconds"], "history": state["history"],
                           "evaluations": state["evaluations"]}
    save_checkpoint(tmp_path / "run" / "last.pt", new)
    result = _grpo(base_checkpoint, tmp_path / "run", max_steps=3, lora=True, resume=True)
    assert [r["step"] for r in result.history] == [1, 2, 3]


def test_final_eval_tokens_none_means_the_whole_split_and_bad_values_are_clear():
    from torch.utils.data import DataLoader

    from llm_from_scratch.data.shards import TokenWindowDataset
    from llm_from_scratch.model import GPTModel
    from llm_from_scratch.training import GPTTrainer

    model = GPTModel(dict(vocab_size=11, context_length=4, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0))
    windows = TokenWindowDataset(torch.randint(0, 11, (4 * 20 + 1,)).numpy(), 4)
    loaders = DataLoader(windows, batch_size=2, drop_last=True), DataLoader(windows, batch_size=2)
    trainer = GPTTrainer(model, *loaders, max_steps=2, final_eval_tokens=None, progress=False, precision="fp32")
    assert trainer.method.final_eval_tokens is None          # None: the earlier spelling of "all"
    with pytest.raises(ValueError, match="final_eval_tokens must be"):
        GPTTrainer(model, *loaders, max_steps=2, final_eval_tokens="ALL", progress=False)


def test_each_method_has_its_own_full_weights_learning_rate_and_the_help_says_it():
    from llm_from_scratch.cli.finetune import policy_lr_help
    from llm_from_scratch.pipelines import DPOConfig, GRPOConfig
    from llm_from_scratch.pipelines.policy import default_lr

    assert default_lr(GRPOConfig()) == 1e-5 and default_lr(DPOConfig()) == 2e-6     # chosen by ablation (docs 22)
    assert default_lr(GRPOConfig(lora=True)) == default_lr(DPOConfig(lora=True)) == 2e-4
    assert default_lr(GRPOConfig(lr=3e-3)) == 3e-3
    assert "1e-05 for all weights" in policy_lr_help(GRPOConfig) and "2e-06 for all weights" in policy_lr_help(DPOConfig)


def test_a_resumed_run_keeps_its_settings_or_says_which_changed(base_checkpoint, tmp_path, fake_rewards, capsys):
    """Resuming with another temperature (as after a change of defaults) would make the run a
    mixture of two recipes: a clear error naming each change and the flags that continue the run,
    raised before any file of the run changes. The learning rate comes back with the optimizer: a
    different one is a note, not an error, and the lr printed is the run's own. max_steps may grow."""
    from llm_from_scratch.pipelines import PipelineError

    _grpo(base_checkpoint, tmp_path / "run", max_steps=2, temperature=1.0, lr=3e-3)
    log = (tmp_path / "run" / "log.jsonl").read_text()
    (tmp_path / "run" / "log.jsonl").write_text(log + '{"step": 3}\n')     # logged after last.pt was saved
    with pytest.raises(PipelineError) as error:
        _grpo(base_checkpoint, tmp_path / "run", max_steps=3, temperature=0.8, max_new_tokens=None, resume=True)
    message = str(error.value)
    assert "temperature: the run has 1.0, this command 0.8" in message
    assert "max_new_tokens: the run has 6, this command None" in message
    assert "(--max_new_tokens 6 --temperature 1.0)" in message
    assert "max_steps" not in message and "lr" not in message
    assert (tmp_path / "run" / "log.jsonl").read_text() == log + '{"step": 3}\n', "a refused resume changed the log"
    capsys.readouterr()
    result = _grpo(base_checkpoint, tmp_path / "run", max_steps=3, temperature=1.0, lr=5e-2, resume=True)
    assert [r["step"] for r in result.history] == [1, 2, 3]
    out = capsys.readouterr().out
    assert "lr 0.003," in out and "lr 0.05 is not used" in out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["run_settings"]["lr"] == pytest.approx(3e-3)


def test_a_run_of_an_older_version_resumes_with_its_own_lr_and_records_it(base_checkpoint, tmp_path, fake_rewards,
                                                                         capsys, monkeypatch):
    """A run saved before its default learning rate changed (older versions recorded the settings
    as "grpo_config", a default lr as None) resumes with its own learning rate, says so, and its
    new checkpoints record that lr, so that a second resume with it is not refused."""
    from llm_from_scratch.pipelines.grpo import GRPOConfig
    from llm_from_scratch.training.checkpoint import save_checkpoint

    _grpo(base_checkpoint, tmp_path / "run", max_steps=2, lr=None)
    old = load_checkpoint(tmp_path / "run" / "last.pt")
    used = old["run_settings"]["lr"]
    old["grpo_config"] = {**old.pop("run_settings"), "lr": None}
    save_checkpoint(tmp_path / "run" / "last.pt", old)
    monkeypatch.setattr(GRPOConfig, "FULL_WEIGHTS_LR", used * 7)   # the default changes in between
    capsys.readouterr()
    _grpo(base_checkpoint, tmp_path / "run", max_steps=3, lr=None, resume=True)
    out = capsys.readouterr().out
    assert f"lr {used:g}," in out and f"lr {used * 7:g}," not in out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["run_settings"]["lr"] == pytest.approx(used)
    capsys.readouterr()
    _grpo(base_checkpoint, tmp_path / "run", max_steps=4, lr=used, resume=True)
    assert "is not used" not in capsys.readouterr().out


def test_a_resumed_run_keeps_its_precision_and_start_model(base_checkpoint, tmp_path, fake_rewards):
    """--precision auto keeps the run's precision; an explicit other one is refused. The start model
    is compared by its weights: a renamed copy is fine, other weights under the same name are not."""
    import shutil

    from llm_from_scratch.pipelines import PipelineError

    _grpo(base_checkpoint, tmp_path / "run", max_steps=1, precision="fp32")
    with pytest.raises(PipelineError, match=r"precision: the run has 'fp32', this command 'bf16'.*--precision fp32"):
        _grpo(base_checkpoint, tmp_path / "run", max_steps=2, precision="bf16", resume=True)
    _grpo(base_checkpoint, tmp_path / "run", max_steps=2, precision="auto", resume=True)
    (tmp_path / "moved").mkdir()
    renamed = tmp_path / "moved" / "another-name.pt"
    shutil.copy(base_checkpoint, renamed)
    _grpo(renamed, tmp_path / "run", max_steps=3, resume=True)
    other = load_checkpoint(base_checkpoint)
    first = next(iter(other["model"]))
    other["model"][first] = other["model"][first] + 0.01
    (tmp_path / "same-name").mkdir()
    torch.save(other, tmp_path / "same-name" / base_checkpoint.name)
    with pytest.raises(PipelineError, match="another start model"):
        _grpo(tmp_path / "same-name" / base_checkpoint.name, tmp_path / "run", max_steps=4, resume=True)


def test_a_run_trained_in_fp16_does_not_resume_on_a_cpu_with_precision_auto(base_checkpoint, tmp_path, fake_rewards):
    """--precision auto keeps the run's precision; fp16 (a GPU run) cannot continue on a CPU: a clear error."""
    from llm_from_scratch.pipelines import PipelineError
    from llm_from_scratch.training.checkpoint import save_checkpoint

    _grpo(base_checkpoint, tmp_path / "run", max_steps=1)
    saved = load_checkpoint(tmp_path / "run" / "last.pt")
    saved["precision"] = "fp16"                      # as if it had trained on a GPU
    save_checkpoint(tmp_path / "run" / "last.pt", saved)
    with pytest.raises(PipelineError, match="fp16, which needs a CUDA GPU"):
        _grpo(base_checkpoint, tmp_path / "run", max_steps=2, precision="auto", resume=True)
