"""Sampling many answers with log-probabilities, and the task metrics: pass@k, majority vote, the
`llmfs evaluate tasks` command. Precision: log-probabilities from the decoding loop (KV cache,
left padding) against a teacher-forced forward pass, fp32, within 1e-4."""

import itertools
import json
import math

import pytest
import torch

from cli_helpers import run_cli
from llm_from_scratch.evaluation.tasks import majority_vote, pass_at_k, summarize
from llm_from_scratch.generation import SamplingParams, generate_batch, sample_completions


def test_pass_at_k_equals_counting_every_draw():
    """The unbiased estimator equals the share of all k-subsets of the n samples with a right one."""
    for n, c, k in [(8, 0, 1), (8, 1, 1), (8, 3, 2), (8, 3, 8), (5, 2, 3), (6, 6, 4)]:
        samples = [True] * c + [False] * (n - c)
        draws = list(itertools.combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(d) for d in draws) / len(draws), abs=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 2)


def test_majority_vote_ignores_missing_answers_and_breaks_ties_by_first_seen():
    assert majority_vote(["3", None, "4", "4", None, None]) == "4"
    assert majority_vote(["7", "5", "5", "7"]) == "7"        # tie: 7 came first
    assert majority_vote([None, None]) is None


def test_summary_per_family_and_overall():
    records = [
        {"family": "a", "greedy_correct": True, "sample_correct": [True, False], "vote_correct": True,
         "pass_at_k": 1.0, "sample_tokens": [3, 5]},
        {"family": "a", "greedy_correct": False, "sample_correct": [False, False], "vote_correct": False,
         "pass_at_k": 0.0, "sample_tokens": [4, 4]},
        {"family": "b", "greedy_correct": True, "sample_correct": [True, True], "vote_correct": True,
         "pass_at_k": 1.0, "sample_tokens": [2, 2]},
    ]
    summary = summarize(records, k=2)
    assert summary["a"] == {"count": 2, "greedy": 0.5, "pass@2": 0.5, "vote@2": 0.5, "sampled": 0.25,
                            "mean_tokens": 4.0}
    assert summary["all"]["greedy"] == pytest.approx(2 / 3) and summary["all"]["count"] == 3


@pytest.fixture
def tiny_lm():
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.tokenizers import get_tokenizer

    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2,
                               drop_rate=0.0)).eval()
    return model, get_tokenizer("gpt2")


def test_greedy_completions_are_generate_batch_tokens(tiny_lm):
    model, tokenizer = tiny_lm
    prompts = [tokenizer.encode("Hello there"), tokenizer.encode("What is two plus two? Say it")]
    completions = sample_completions(model, tokenizer, prompts, SamplingParams(max_tokens=6, temperature=0.0),
                                     num_samples=2, batch_size=3, stop_ids=[])
    expected = generate_batch(model, prompts, 6)
    assert [[c.token_ids for c in group] for group in completions] == [[e, e] for e in expected]
    assert all(c.finish_reason == "length" and c.text == tokenizer.decode(c.token_ids)
               for group in completions for c in group)


def test_recorded_logprobs_equal_a_teacher_forced_pass(tiny_lm):
    """The decoding loop's per-token log-probabilities (batched, left-padded, KV cache) are the
    model's: the same as one forward pass over prompt + answer."""
    from llm_from_scratch.finetune.sequences import pack_completions, token_logprobs

    model, tokenizer = tiny_lm
    prompts = [tokenizer.encode("A"), tokenizer.encode("The cat sat on the mat and")]
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    groups = sample_completions(model, tokenizer, prompts, params, num_samples=3, batch_size=4, stop_ids=[],
                                record_logprobs=True)
    flat = [(p, c) for p, group in zip(prompts, groups) for c in group]
    packed = pack_completions([p for p, _ in flat], [c.training_ids for _, c in flat], pad_id=0)
    with torch.no_grad():
        forced = token_logprobs(model, packed.input_ids)
    for row, (prompt, completion) in enumerate(flat):
        start = len(prompt) - 1
        expected = forced[row, start:start + len(completion.training_ids)]
        assert torch.allclose(torch.tensor(completion.logprobs), expected, atol=1e-4)
    # seeded: the same call gives the same answers; samples of one prompt differ
    again = sample_completions(model, tokenizer, prompts, params, num_samples=3, batch_size=4, stop_ids=[])
    assert [[c.token_ids for c in g] for g in again] == [[c.token_ids for c in g] for g in groups]
    assert len({tuple(c.token_ids) for c in groups[1]}) > 1


def test_a_stop_token_ends_an_answer_and_comes_back_for_training(tiny_lm):
    model, tokenizer = tiny_lm
    prompt = tokenizer.encode("Hello")
    greedy = sample_completions(model, tokenizer, [prompt], SamplingParams(max_tokens=5), stop_ids=[])[0][0]
    stop = greedy.token_ids[2]
    ended = sample_completions(model, tokenizer, [prompt], SamplingParams(max_tokens=5), stop_ids=[stop],
                               record_logprobs=True)[0][0]
    assert ended.token_ids == greedy.token_ids[:2] and ended.finish_reason == "stop"
    assert ended.stop_token_id == stop and ended.training_ids == greedy.token_ids[:3]
    assert len(ended.logprobs) == 3


def test_evaluate_tasks_command_writes_a_table_json_and_png(base_checkpoint, tmp_path, capsys):
    out = tmp_path / "eval" / "tasks"
    code, stdout, err = run_cli(capsys, "evaluate", "tasks", "--checkpoint", base_checkpoint, "--tasks",
                                "addition,reverse_words", "--num_examples", 3, "--num_samples", 2,
                                "--max_new_tokens", 4, "--out", out, "--no-progress")
    assert code == 0, err
    assert "pass@2" in stdout and "vote@2" in stdout and "reverse_words" in stdout
    report = json.loads((tmp_path / "eval" / "tasks.json").read_text())
    assert (tmp_path / "eval" / "tasks.png").stat().st_size > 1000
    assert len(report["records"]) == 6 and set(report["summary"]) == {"addition", "reverse_words", "all"}
    for record in report["records"]:
        assert len(record["samples"]) == 2 and record["pass_at_k"] == float(any(record["sample_correct"]))
    # held-out questions: the "test" split, never the ones GRPO/DPO train on
    from llm_from_scratch.tasks import make_instances
    train = {i.prompt for i in make_instances("addition", 300, split="train", seed=0)}
    assert not train & {r["prompt"] for r in report["records"] if r["family"] == "addition"}


def test_evaluate_tasks_bad_input_is_one_clear_line(base_checkpoint, tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", "tasks", "--checkpoint", base_checkpoint, "--tasks", "nonsense")
    assert code == 2 and "nonsense" in err and "addition" in err
    code, _, err = run_cli(capsys, "evaluate", "tasks", "--checkpoint", base_checkpoint, "--temperature", 0)
    assert code == 2 and "temperature" in err
    code, _, err = run_cli(capsys, "evaluate", "tasks", "--checkpoint", base_checkpoint, "--tasks", "none",
                           "--gsm8k", tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err


def test_math_constants_of_the_metrics():
    # pass@k with one right answer in n: k/n (the chance it is among the k drawn)
    assert pass_at_k(10, 1, 3) == pytest.approx(0.3)
    assert math.isclose(pass_at_k(8, 2, 1), 0.25)


def test_math_answers_of_equal_value_vote_together():
    from llm_from_scratch.evaluation.tasks import same_answers_together
    from llm_from_scratch.tasks import extract_answer

    answers = [extract_answer(t, "math") for t in (r"\boxed{0.5}", "no idea", r"\boxed{\frac{1}{2}}",
                                                    r"\boxed{3}", r"\boxed{\dfrac{1}{2}}")]
    grouped = same_answers_together(answers)
    assert grouped[1] is None and grouped[0] == grouped[2] == grouped[4] != grouped[3]
    assert majority_vote(grouped) == grouped[0]


def test_interleaved_families_take_turns_so_every_training_step_mixes_them():
    from llm_from_scratch.pipelines.task_eval import gather_instances

    blocks = gather_instances("addition,compare,count_letters", 5, split="train", seed=3)
    mixed = gather_instances("addition,compare,count_letters", 5, split="train", seed=3, interleave=True)
    assert [q.family for q in blocks[:5]] == ["addition"] * 5          # family after family
    assert [q.family for q in mixed[:6]] == ["addition", "compare", "count_letters"] * 2
    assert sorted(q.id for q in mixed) == sorted(q.id for q in blocks)  # the same questions, reordered
