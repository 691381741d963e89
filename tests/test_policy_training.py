"""The DPO and GRPO stages end to end on a tiny model: LoRA trains only the adapters, an
interrupted run resumes to the same weights, bad input is a clear error, the commands work.

A tiny random model answers no task question right, so these tests replace the checker by a
deterministic stand-in (`_fake_checker`) that rewards some answers: GRPO then has groups with
both rewards, and on-policy DPO has pairs. The checkers themselves are tested in test_tasks.py."""

import json
import math
import os
import signal

import pytest
import torch

from cli_helpers import run_cli
from llm_from_scratch.training.checkpoint import load_checkpoint


def _fake_checker(instance, completion: str) -> bool:
    """Right when the answer's text has an even length: about half the answers, fixed for a text."""
    return len(completion) % 2 == 0


@pytest.fixture
def fake_rewards(monkeypatch):
    import llm_from_scratch.tasks as tasks
    monkeypatch.setattr(tasks, "check_answer", _fake_checker)


def _grpo_config(base_checkpoint, out_dir, **changes):
    from llm_from_scratch.pipelines import GRPOConfig
    settings = dict(checkpoint=base_checkpoint, tasks="addition", prompts_per_step=2, group_size=4, max_steps=4,
                    max_new_tokens=6, eval_tasks="addition", eval_examples=2, eval_interval=2, out_dir=out_dir,
                    lr=1e-2, progress=False, precision="fp32", seed=5,
                    grade_truncated=True)  # a tiny random model never says its end-of-text token
    return GRPOConfig(**{**settings, **changes})


def test_grpo_with_lora_changes_only_the_adapters(base_checkpoint, tmp_path, fake_rewards):
    from llm_from_scratch.finetune.lora import load_lora, merge_lora
    from llm_from_scratch.loading import load_model
    from llm_from_scratch.pipelines import finetune_grpo

    result = finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "run", lora=True, max_steps=2))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["trainable"] and all(".lora." in name for name in last["trainable"])
    assert any(t.abs().sum() > 0 for name, t in last["trainable"].items() if name.endswith(".B"))
    history = result.history
    assert len(history) == 2 and 0 < history[0]["accuracy"] < 1 and history[0]["no_signal"] < 1
    for key in ("reward", "completion_tokens", "entropy", "loss", "kl", "clip_fraction"):
        assert key in history[-1]
    # the final model is the start model plus exactly the adapters' correction
    base = load_model(checkpoint=base_checkpoint, device="cpu").model
    final = load_checkpoint(result.final_model)["model"]
    expected = merge_lora(load_lora(base, tmp_path / "run" / "lora_adapters.safetensors")).state_dict()
    changed = [name for name in final if not torch.equal(final[name], load_model(
        checkpoint=base_checkpoint, device="cpu").model.state_dict()[name])]
    assert changed and all(name.endswith(".weight") and ("att" in name or "ff" in name) for name in changed)
    for name in final:
        assert torch.allclose(final[name], expected[name], atol=1e-6), name
    assert (tmp_path / "run" / "training.png").stat().st_size > 1000
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert set(scores["before"]) == {"addition"} and scores["steps"] == 2


@pytest.mark.parametrize("lora", [False, True])
def test_grpo_interrupted_and_resumed_equals_one_run(base_checkpoint, tmp_path, fake_rewards, monkeypatch, lora):
    from llm_from_scratch.pipelines import finetune_grpo
    from llm_from_scratch.pipelines.grpo import GRPOMethod

    finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "whole", lora=lora, kl_coef=0.1, inner_steps=2))
    real_call = GRPOMethod.train_step

    def interrupt_at_step_3(self, trainer, step):
        if step == 2:          # `kill` during the third step: saved like Ctrl-C (sigterm_as_ctrl_c)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, trainer, step)

    monkeypatch.setattr(GRPOMethod, "train_step", interrupt_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "cut", lora=lora, kl_coef=0.1, inner_steps=2))
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["train_state"]["step"] == 2
    assert (tmp_path / "cut" / "training.png").stat().st_size > 1000   # the curves so far
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after training
    monkeypatch.setattr(GRPOMethod, "train_step", real_call)
    finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "cut", lora=lora, kl_coef=0.1, inner_steps=2,
                               resume=True))
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")
    weights = "trainable" if lora else "model"          # LoRA: last.pt holds the adapters only
    assert set(whole[weights]) == set(resumed[weights])
    for name, tensor in whole[weights].items():
        assert torch.equal(tensor, resumed[weights][name]), name
    assert [h["reward"] for h in whole["train_state"]["history"]] == \
        [h["reward"] for h in resumed["train_state"]["history"]]
    assert len((tmp_path / "cut" / "log.jsonl").read_text().splitlines()) == 4


def _pairs_file(path):
    rows = [{"prompt": f"What is {i} plus {i}?", "chosen": f"Answer: {2 * i}", "rejected": f"Answer: {2 * i + 1}"}
            for i in range(6)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _dpo_config(base_checkpoint, out_dir, **changes):
    from llm_from_scratch.pipelines import DPOConfig
    settings = dict(checkpoint=base_checkpoint, tasks=None, pairs_per_step=2, max_steps=4, micro_batch=2,
                    eval_tasks="none", eval_interval=2, out_dir=out_dir, lr=1e-2, progress=False, precision="fp32",
                    seed=5, beta=0.5)
    return DPOConfig(**{**settings, **changes})


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_from_a_file_learns_the_pairs_and_resumes_exactly(base_checkpoint, tmp_path, monkeypatch, lora):
    from llm_from_scratch.pipelines import finetune_dpo
    from llm_from_scratch.pipelines.dpo import DPOMethod

    data = _pairs_file(tmp_path / "pairs.jsonl")
    result = finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "whole", data=data, lora=lora, max_steps=6))
    first, last = result.history[0], result.history[-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-7)   # policy == reference at the start: log 2
    assert last["loss"] < first["loss"] and last["reward_margin"] > 0
    real_call = DPOMethod.train_step

    def interrupt_at_step_4(self, trainer, step):
        if step == 3:
            raise KeyboardInterrupt
        return real_call(self, trainer, step)

    monkeypatch.setattr(DPOMethod, "train_step", interrupt_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "cut", data=data, lora=lora, max_steps=6))
    monkeypatch.setattr(DPOMethod, "train_step", real_call)
    finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "cut", data=data, lora=lora, max_steps=6, resume=True))
    weights = "trainable" if lora else "model"
    whole = load_checkpoint(tmp_path / "whole" / "last.pt")[weights]
    resumed = load_checkpoint(tmp_path / "cut" / "last.pt")[weights]
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


@pytest.fixture
def answers_end(monkeypatch):
    """A tiny random model never says its end-of-turn token, so every sampled answer is cut off:
    mark them as ended, as a trained model's would be."""
    import llm_from_scratch.evaluation.tasks as task_eval
    real = task_eval.answer_tasks

    def ended(*args, **kwargs):
        groups = real(*args, **kwargs)
        for group in groups:
            for answer in group:
                answer.finish_reason = "stop"
        return groups
    monkeypatch.setattr(task_eval, "answer_tasks", ended)


@pytest.mark.parametrize("lora", [True, False])
def test_dpo_on_policy_pairs_come_from_the_checker(base_checkpoint, tmp_path, fake_rewards, answers_end, lora):
    """Also with all weights: the frozen reference is a copy of the model made *after* it sampled
    the pairs (once, the copy failed on the native decode step's C pointers)."""
    from llm_from_scratch.finetune.dpo import load_preference_pairs
    from llm_from_scratch.pipelines import finetune_dpo

    result = finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "run", tasks="addition", num_prompts=4,
                                      samples_per_prompt=4, max_new_tokens=5, max_steps=1, lora=lora))
    pairs = load_preference_pairs(result.pairs)
    assert pairs and all(_fake_checker(None, p.chosen) and not _fake_checker(None, p.rejected) for p in pairs)
    assert result.scores["pairs"]["pairs"] == len(pairs)


def test_finetune_commands_and_their_errors(base_checkpoint, tmp_path, capsys, fake_rewards):
    code, out, err = run_cli(capsys, "finetune", "grpo", "--checkpoint", base_checkpoint, "--tasks", "compare",
                             "--prompts_per_step", 2, "--group_size", 2, "--max_steps", 1, "--max_new_tokens", 4,
                             "--eval_tasks", "compare", "--eval_examples", 2, "--out_dir", tmp_path / "g",
                             "--lora", "--grade_truncated", "--no-progress")
    assert code == 0, err
    assert "held-out greedy pass@1" in out and (tmp_path / "g" / "final_model.pt").is_file()
    record = json.loads((tmp_path / "g" / "log.jsonl").read_text().splitlines()[-1])
    assert record["truncated"] == 1.0 and record["accuracy"] > 0      # --grade_truncated: graded anyway
    code, _, err = run_cli(capsys, "finetune", "grpo", "--checkpoint", base_checkpoint, "--out_dir", tmp_path / "g",
                           "--no-progress")
    assert code == 2 and "--resume" in err                      # a run is there already
    code, _, err = run_cli(capsys, "finetune", "grpo", "--checkpoint", base_checkpoint, "--group_size", 1)
    assert code == 2 and "group_size" in err
    code, _, err = run_cli(capsys, "finetune", "dpo", "--checkpoint", base_checkpoint, "--data",
                           tmp_path / "none.jsonl", "--tasks", "none", "--out_dir", tmp_path / "d")
    assert code == 2 and "none.jsonl" in err
    code, _, err = run_cli(capsys, "finetune", "dpo", "--checkpoint", base_checkpoint, "--data",
                           _pairs_file(tmp_path / "p.jsonl"), "--out_dir", tmp_path / "d2")
    assert code == 2 and "one of the two" in err                # --data and --tasks both given


def test_lora_disabled_gives_the_base_model_back():
    """GRPO's KL reference with LoRA: the adapters switched off, the outputs are the base model's."""
    from llm_from_scratch.finetune.lora import apply_lora, lora_disabled
    from llm_from_scratch.model import GPTConfig, GPTModel

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=8, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0))
    x = torch.randint(0, 50, (2, 8))
    base = model(x).detach()
    apply_lora(model, rank=2, alpha=4.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".B"):
                p.normal_()
    assert not torch.allclose(model(x), base)
    with lora_disabled(model):
        assert torch.allclose(model(x), base, atol=1e-6)
    assert not torch.allclose(model(x), base)       # switched on again after the `with`


def test_grpo_on_several_families_mixes_them_in_every_step(base_checkpoint, tmp_path, fake_rewards):
    from llm_from_scratch.pipelines import finetune_grpo

    result = finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "run", tasks="addition,compare", max_steps=2,
                                        eval_tasks="none"))
    for record in result.history:       # one question of each family per step, each answered 4 times
        per_family = [record["accuracy/addition"], record["accuracy/compare"]]
        assert record["accuracy"] == pytest.approx(sum(per_family) / 2)


def test_grpo_gives_no_reward_to_an_answer_cut_off_at_max_new_tokens(base_checkpoint, tmp_path, fake_rewards):
    """The tiny model's answers all run to max_new_tokens; the stand-in checker would accept about
    half of them, but an answer that never ended states no final answer: reward 0, no signal."""
    from llm_from_scratch.pipelines import finetune_grpo

    result = finetune_grpo(_grpo_config(base_checkpoint, tmp_path / "run", max_steps=1, eval_tasks="none",
                                        grade_truncated=False))
    record = result.history[0]
    assert record["truncated"] == 1.0
    assert record["reward"] == record["accuracy"] == 0.0 and record["no_signal"] == 1.0


def test_a_resumed_dpo_run_uses_its_saved_pairs_and_checks_what_makes_new_ones(base_checkpoint, tmp_path, capsys):
    """On --resume DPO trains on the run's own pairs.jsonl, so another --data is not used (and
    says so); without that file the pairs are made anew, and then --data must be the run's."""
    from llm_from_scratch.pipelines import PipelineError, finetune_dpo

    data = _pairs_file(tmp_path / "pairs.jsonl")
    other = tmp_path / "other.jsonl"
    other.write_text(data.read_text().replace("Answer", "Reply"))
    finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "run", data=data, max_steps=2))
    capsys.readouterr()
    finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "run", data=other, max_steps=3, resume=True))
    assert "resuming on the run's own 6 pairs" in capsys.readouterr().out
    (tmp_path / "run" / "pairs.jsonl").unlink()
    with pytest.raises(PipelineError, match="data: the run has"):
        finetune_dpo(_dpo_config(base_checkpoint, tmp_path / "run", data=other, max_steps=4, resume=True))
