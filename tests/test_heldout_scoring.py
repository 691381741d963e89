"""Held-out scoring of a training run (pipelines/heldout.py): every question before and after,
written where `llmfs evaluate compare` reads it, a cheaper curve in between, and the paired
table in scores.json. The tiny random model is graded by a stand-in checker (as in
test_policy_training.py), so some answers are right and the comparison has something to count."""

import json

import pytest

from cli_helpers import run_cli


def _fake_checker(instance, completion: str) -> bool:
    return len(completion) % 2 == 0


@pytest.fixture
def fake_rewards(monkeypatch):
    import llm_from_scratch.tasks as tasks
    monkeypatch.setattr(tasks, "check_answer", _fake_checker)


def test_policy_defaults_score_the_questions_evaluate_tasks_scores():
    from llm_from_scratch.pipelines import GRPOConfig, RFTConfig, TaskEvalConfig
    from llm_from_scratch.pipelines.dpo import DPOConfig

    for config in (GRPOConfig(), DPOConfig(), RFTConfig()):
        assert config.eval_examples == TaskEvalConfig.num_examples == 200
        assert config.eval_seed == TaskEvalConfig.seed
        assert config.eval_tasks == TaskEvalConfig.tasks == "all"


def test_a_grpo_run_scores_all_questions_before_and_after_and_the_curve_in_between(
        base_checkpoint, tmp_path, fake_rewards, monkeypatch, capsys):
    from llm_from_scratch.pipelines import GRPOConfig, finetune_grpo
    from llm_from_scratch.pipelines.heldout import HeldoutScorer

    answered = []                          # how many questions each scoring answered
    real_records = HeldoutScorer.records
    monkeypatch.setattr(HeldoutScorer, "records",
                        lambda self, model, instances: answered.append(len(instances)) or real_records(self, model,
                                                                                                        instances))
    out = tmp_path / "run"
    result = finetune_grpo(GRPOConfig(checkpoint=base_checkpoint, tasks="addition", prompts_per_step=2, group_size=4,
                                      max_steps=4, max_new_tokens=6, eval_tasks="addition,compare", eval_examples=6,
                                      eval_curve_examples=2, eval_interval=2, out_dir=out, lr=1e-2, progress=False,
                                      precision="fp32", seed=5, grade_truncated=True))
    assert answered == [12, 4, 12]          # before: all 6 x 2 families; step 2: the curve's 2 x 2; the end: all
    before = json.loads((out / "heldout-before.json").read_text())
    after = json.loads((out / "heldout-after.json").read_text())
    assert [r["id"] for r in before["records"]] == [r["id"] for r in after["records"]]
    assert before["config"]["seed"] == 0 and before["summary"]["addition"]["count"] == 6
    # the curve's first point is the first 2 questions per family of the full "before" scoring
    assert len(result.history) == 4
    first = json.loads((out / "scores.json").read_text())["curve_before"]
    for family in ("addition", "compare"):
        records = [r for r in before["records"] if r["family"] == family][:2]
        assert first[family] == pytest.approx(sum(r["greedy_correct"] for r in records) / 2)
    scores = json.loads((out / "scores.json").read_text())
    paired = scores["paired"]
    for family in ("addition", "compare"):
        rows = [(b["greedy_correct"], a["greedy_correct"]) for b, a in zip(before["records"], after["records"])
                if b["family"] == family]
        assert paired[family]["n"] == 6
        assert paired[family]["b"] == sum(1 for x, y in rows if x and not y)
        assert paired[family]["c"] == sum(1 for x, y in rows if not x and y)
        assert scores["before"][family] == pytest.approx(sum(x for x, _ in rows) / 6)
    assert "paired McNemar" in capsys.readouterr().out
    code, stdout, stderr = run_cli(capsys, "evaluate", "compare", out / "heldout-before.json", out / "heldout-after.json")
    assert code == 0 and "addition" in stdout and "compare" in stdout, stderr


def test_no_comparison_without_both_ends_or_with_an_end_of_another_step(tmp_path):
    from llm_from_scratch.pipelines.heldout import HeldoutScorer, heldout_comparison
    from llm_from_scratch.pipelines.task_eval import gather_instances

    scorer = HeldoutScorer(gather_instances("addition", 2), None, max_new_tokens=8, batch_size=2, curve_examples=1,
                           model_name="m", out_dir=tmp_path)
    records = [{"family": "addition", "id": i, "greedy_correct": True} for i in range(2)]
    assert heldout_comparison(None, 3) is None
    (tmp_path / "heldout-before.json").write_text(json.dumps({"step": 0, "records": records}))
    assert heldout_comparison(scorer, 3) is None                        # stopped before its end
    (tmp_path / "heldout-after.json").write_text(json.dumps({"step": 2, "records": records}))
    assert heldout_comparison(scorer, 3) is None                        # an older end: not this run's
    assert heldout_comparison(scorer, 2)["addition"]["n"] == 2


def test_bad_sizes_are_clear_errors():
    from llm_from_scratch.pipelines.common import PipelineError
    from llm_from_scratch.pipelines.heldout import heldout_instances

    assert heldout_instances("none", 10, 5, 0) == [] and heldout_instances("", 10, 5, 0) == []
    with pytest.raises(PipelineError, match="at least 1"):
        heldout_instances("addition", 10, 0, 0)


def test_rft_validation_is_split_by_question():
    from llm_from_scratch.pipelines.rft import split_by_question

    entries = [{"family": f, "id": i, "output": str(k)} for f in ("a", "b") for i in range(30) for k in range(i % 3 + 1)]
    train, validation = split_by_question(entries, every=20)
    assert len(train) + len(validation) == len(entries) and validation
    train_q = {(e["family"], e["id"]) for e in train}
    validation_q = {(e["family"], e["id"]) for e in validation}
    assert not train_q & validation_q and len(validation_q) == 3     # 60 questions, one in twenty
    one = [{"family": "a", "id": 0, "output": "x"}, {"family": "a", "id": 0, "output": "y"}]
    assert split_by_question(one) == (one, [])                       # a single question: all of it trains


def test_instruction_loaders_with_a_validation_set_train_on_every_entry():
    from llm_from_scratch.data.instructions import get_prompt_style
    from llm_from_scratch.finetune.instruct import instruction_loaders
    from llm_from_scratch.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    entries = [{"instruction": f"say {i}", "input": "", "output": str(i)} for i in range(7)]
    _, _, splits = instruction_loaders(entries, tokenizer, get_prompt_style("alpaca"), batch_size=2,
                                       validation=entries[:1])
    assert splits.train == entries and splits.validation == entries[:1] and splits.test == []


def _grpo(base_checkpoint, out_dir, **changes):
    from llm_from_scratch.pipelines import GRPOConfig
    settings = dict(checkpoint=base_checkpoint, tasks="addition", prompts_per_step=2, group_size=4, max_steps=2,
                    max_new_tokens=6, eval_tasks="addition", eval_examples=4, eval_curve_examples=2, out_dir=out_dir,
                    lr=1e-2, progress=False, precision="fp32", seed=5, grade_truncated=True)
    return GRPOConfig(**{**settings, **changes})


def test_a_resumed_run_scores_the_end_it_missed_and_refuses_other_questions(base_checkpoint, tmp_path, fake_rewards):
    from llm_from_scratch.pipelines import PipelineError, finetune_grpo

    out = tmp_path / "run"
    first = finetune_grpo(_grpo(base_checkpoint, out))
    (out / "heldout-after.json").unlink()           # as if Ctrl-C came during the final scoring
    again = finetune_grpo(_grpo(base_checkpoint, out, resume=True))   # "Nothing to do", then the missed scoring
    assert json.loads((out / "heldout-after.json").read_text())["step"] == 2
    assert again.scores["paired"]["addition"] == first.scores["paired"]["addition"]
    with pytest.raises(PipelineError, match="resume with the run's own"):
        finetune_grpo(_grpo(base_checkpoint, out, resume=True, max_steps=3, eval_examples=5))


def test_a_bad_scoring_setting_fails_before_any_sampling(base_checkpoint, tmp_path, monkeypatch):
    import llm_from_scratch.pipelines.dpo as dpo
    from llm_from_scratch.pipelines import DPOConfig, PipelineError, finetune_dpo

    monkeypatch.setattr(dpo, "on_policy_pairs", lambda *a, **k: pytest.fail("sampled before checking the settings"))
    with pytest.raises(PipelineError, match="eval_examples must be at least 1"):
        finetune_dpo(DPOConfig(checkpoint=base_checkpoint, tasks="addition", eval_examples=0, out_dir=tmp_path / "d",
                               progress=False))


@pytest.mark.parametrize("aggregation", ["token", "sequence", "constant"])
def test_grpo_micro_batches_add_up_to_the_whole_batchs_gradient(base_checkpoint, fake_rewards, aggregation):
    """One step's gradient with micro-batches of 2 rows equals the one of a single 8-row pass."""
    import contextlib

    import torch

    from llm_from_scratch.loading import load_model
    from llm_from_scratch.pipelines.grpo import GRPOMethod, training_questions

    class Recorder:                                  # what train_step needs of the trainer
        device = "cpu"

        def __init__(self, model):
            self.model, self.grads = model, None

        def autocast(self):
            return contextlib.nullcontext()

        def backward(self, loss):
            loss.backward()

        def update(self):
            self.grads = {n: p.grad.clone() for n, p in self.model.named_parameters() if p.grad is not None}
            self.model.zero_grad(set_to_none=True)

    grads = []
    for micro_batch in (8, 2):
        loaded = load_model(checkpoint=base_checkpoint, device="cpu")
        config = _grpo(base_checkpoint, None, aggregation=aggregation, micro_batch=micro_batch, batch_size=8)
        method = GRPOMethod(loaded.model.eval(), loaded.tokenizer, config, training_questions(config))
        recorder = Recorder(loaded.model)
        metrics = method.train_step(recorder, 0)
        assert 0 < metrics["accuracy"] < 1           # the stand-in checker gives the step some signal
        grads.append(recorder.grads)
    whole, parts = grads
    assert set(whole) == set(parts)
    for name in whole:                               # fp32; the sums differ only by their order
        assert torch.allclose(parts[name], whole[name], rtol=1e-4, atol=1e-6), name



def test_finetune_instruct_with_a_validation_file_trains_on_all_of_its_data(base_checkpoint, tmp_path, capsys):
    data = [{"instruction": f"Repeat {i}", "input": "", "output": str(i)} for i in range(12)]
    (tmp_path / "train.json").write_text(json.dumps(data))
    (tmp_path / "val.json").write_text(json.dumps(data[:2]))
    out = tmp_path / "instruct"
    code, stdout, err = run_cli(capsys, "finetune", "instruct", "--checkpoint", base_checkpoint, "--data",
                                tmp_path / "train.json", "--validation_data", tmp_path / "val.json", "--max_steps", 2,
                                "--out_dir", out, "--no-progress", "--precision", "fp32")
    assert code == 0, err
    assert "12 train / 2 validation / 0 test entries" in stdout and "trained on all 12 entries" in stdout
    assert (out / "final_model.pt").exists() and not (out / "test-responses.json").exists()
