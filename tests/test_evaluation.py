"""The trainer's loss figures are honest: each evaluation scores the same seeded sample of windows
spread over the whole split, the end of a run reports the whole split's loss in fp32 (equal to
disjoint-window perplexity), and a run without validation data says so instead of printing nan.

Precision: the trainers here run in fp32 (pinned), so equalities hold to 1e-5 relative."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from llm_from_scratch.data.shards import TokenWindowDataset
from llm_from_scratch.model import GPTModel
from llm_from_scratch.evaluation.perplexity import sequence_nll
from llm_from_scratch.training import GPTTrainer
from llm_from_scratch.training.evaluation import sample_indices, split_loss

CONTEXT = 8


def test_the_sample_is_seeded_spread_and_distinct():
    picked = sample_indices(1000, 40, seed=7)
    assert picked == sample_indices(1000, 40, seed=7)          # the same windows every time
    assert picked != sample_indices(1000, 40, seed=8)
    assert picked == sorted(set(picked)) and len(picked) == 40
    assert picked[0] < 250 and picked[-1] > 750                # not just the beginning of the split
    assert sample_indices(30, 40, seed=7) == list(range(30))   # small splits: everything
    assert sample_indices(30, None, seed=7) == list(range(30))


def _model_and_tokens(num_windows: int, seed: int = 0):
    torch.manual_seed(seed)
    model = GPTModel(dict(vocab_size=23, context_length=CONTEXT, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0))
    tokens = torch.cat([torch.randint(0, 5, (num_windows * CONTEXT // 2,)),
                        torch.randint(0, 23, (num_windows * CONTEXT // 2 + 1,))])
    return model, tokens


def _naive_mean_loss(model, dataset, indices):
    """The book's way, one window at a time, weighted by tokens."""
    total, count = 0.0, 0
    with torch.no_grad():
        for i in indices:
            x, y = dataset[i]
            logits = model(x[None])
            total += F.cross_entropy(logits.flatten(0, 1), y, reduction="sum").item()
            count += y.numel()
    return total / count


def test_evaluation_scores_the_same_spread_sample_every_time():
    model, tokens = _model_and_tokens(num_windows=200)
    val = TokenWindowDataset(tokens.numpy(), CONTEXT)
    train = DataLoader(val, batch_size=4, shuffle=True, drop_last=True)
    trainer = GPTTrainer(model, train, DataLoader(val, batch_size=4), precision="fp32", eval_batches=5,
                         max_steps=1, progress=False)
    _, first = trainer.method.sampled_losses()
    _, second = trainer.method.sampled_losses()
    assert first == second
    indices = sample_indices(len(val), 5 * 4, trainer.config.seed)
    assert max(indices) > len(val) // 2
    assert first == pytest.approx(_naive_mean_loss(model, val, indices), rel=1e-5)


def test_the_final_loss_is_the_whole_split_and_equals_disjoint_window_perplexity(tmp_path):
    model, tokens = _model_and_tokens(num_windows=60)   # exactly 60 windows: no partial tail
    val = TokenWindowDataset(tokens.numpy(), CONTEXT)
    train = DataLoader(val, batch_size=4, shuffle=True, drop_last=True)
    history = GPTTrainer(model, train, DataLoader(val, batch_size=7), precision="fp32", eval_batches=1,
                         max_steps=3, eval_interval=3, out_dir=str(tmp_path), progress=False,
                         final_eval_tokens="all").train()
    final = history[-1]
    assert final["final_val_whole_split"] is True and final["final_val_tokens"] == 60 * CONTEXT
    total, count = sequence_nll(model, tokens, stride=CONTEXT)
    assert count == 60 * CONTEXT
    assert final["final_val_loss"] == pytest.approx(total / count, rel=1e-5)
    assert final["final_val_loss"] == pytest.approx(_naive_mean_loss(model, val, range(len(val))), rel=1e-5)
    logged = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])
    assert logged["final_val_loss"] == final["final_val_loss"]


def test_a_big_split_gets_a_stated_sample_for_the_final_loss():
    model, tokens = _model_and_tokens(num_windows=100)
    val = TokenWindowDataset(tokens.numpy(), CONTEXT)
    trainer = GPTTrainer(model, DataLoader(val, batch_size=4, drop_last=True), DataLoader(val, batch_size=4),
                         precision="fp32", final_eval_tokens=30 * CONTEXT, max_steps=1, progress=False)
    result = trainer.method.final_validation_loss()
    assert result["whole_split"] is False and result["tokens"] == 30 * CONTEXT


def test_split_loss_weights_batches_by_scored_tokens():
    """A last, smaller batch and masked (-100) targets must not skew the mean."""
    torch.manual_seed(0)
    model = GPTModel(dict(vocab_size=11, context_length=6, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0))
    inputs = torch.randint(0, 11, (5, 6))
    targets = torch.randint(0, 11, (5, 6))
    targets[0, :4] = -100
    data = list(zip(inputs, targets))

    def loss_fn(x, y):
        return model(x, targets=y)

    loss, count = split_loss(loss_fn, data, range(5), batch_size=2)
    with torch.no_grad():
        expected = F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten(), ignore_index=-100)
    assert count == 5 * 6 - 4
    assert loss == pytest.approx(expected.item(), rel=1e-5)


def test_no_validation_data_is_said_not_printed_as_nan(tmp_path, capsys):
    model, tokens = _model_and_tokens(num_windows=40)
    train = DataLoader(TokenWindowDataset(tokens.numpy(), CONTEXT), batch_size=4, shuffle=True)
    history = GPTTrainer(model, train, None, max_steps=2, eval_interval=1, out_dir=str(tmp_path),
                         progress=False).train()
    out = capsys.readouterr().out
    assert "no validation data" in out
    assert "nan" not in out.lower() and "inf" not in out.lower()
    assert history[-1]["val_loss"] is None and "final_val_loss" not in history[-1]

    def refuse(constant):
        raise AssertionError(f"log.jsonl holds {constant}, which is not JSON")
    for line in (tmp_path / "log.jsonl").read_text().splitlines():
        record = json.loads(line, parse_constant=refuse)
        assert math.isfinite(record["train_loss"])
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def _counting_run(monkeypatch, num_windows: int, batch_size: int = 4, val_batch_size: int = 4, **settings):
    """A tiny fp32 run; (trainer, tokens trained on, tokens scored by evaluations)."""
    from llm_from_scratch.training.next_token import NextTokenMethod

    model, tokens = _model_and_tokens(num_windows=num_windows)
    windows = TokenWindowDataset(tokens.numpy(), CONTEXT)
    scored = {"tokens": 0}
    real = NextTokenMethod.batch_loss

    def counting(self, inputs, targets):
        scored["tokens"] += inputs.numel()
        return real(self, inputs, targets)
    monkeypatch.setattr(NextTokenMethod, "batch_loss", counting)
    trainer = GPTTrainer(model, DataLoader(windows, batch_size=batch_size, shuffle=True, drop_last=True),
                         DataLoader(windows, batch_size=val_batch_size), precision="fp32", progress=False, **settings)
    trainer.train()
    return trainer, trainer.state.tokens_seen, scored["tokens"]


def test_a_short_run_spends_a_small_share_on_evaluation(monkeypatch):
    """20 steps used to get 10 evaluations of 2 x 20 batches and the whole split at the end: 25x
    the training tokens. Now all evaluations together score at most 0.3 of them (rounded up to
    whole batches: at least one batch for the final score and one per side per evaluation)."""
    from llm_from_scratch.training.next_token import EVAL_TOKEN_SHARE

    trainer, trained, scored = _counting_run(monkeypatch, num_windows=400, max_steps=20)
    batch_tokens = 4 * CONTEXT
    assert trainer.eval_interval == 20 and len(trainer.state.history) == 1     # one evaluation, at the end
    assert scored <= EVAL_TOKEN_SHARE * trained + 3 * batch_tokens
    assert trainer.state.history[-1]["final_val_whole_split"] is False         # a stated sample
    assert trainer.method.final_eval_tokens == int(EVAL_TOKEN_SHARE * trained / 2)


def test_a_long_run_gets_the_full_evaluation_and_explicit_sizes_win(monkeypatch):
    from llm_from_scratch.training.next_token import MAX_EVAL_BATCHES, MAX_EVALUATIONS, NextTokenMethod

    model, tokens = _model_and_tokens(num_windows=400)
    windows = TokenWindowDataset(tokens.numpy(), CONTEXT)

    def sized(**settings):
        trainer = GPTTrainer(model, DataLoader(windows, batch_size=4, shuffle=True, drop_last=True),
                             DataLoader(windows, batch_size=4), precision="fp32", progress=False, **settings)
        method: NextTokenMethod = trainer.method
        return trainer.eval_interval, method.eval_batches, method.final_eval_tokens

    whole_split = len(windows) * CONTEXT                     # fits in half of a long run's budget
    assert sized(max_steps=20_000) == (20_000 // MAX_EVALUATIONS, MAX_EVAL_BATCHES, whole_split)
    assert sized(max_steps=20, eval_interval=5, eval_batches=3, final_eval_tokens="all") == (5, 3, None)
    assert sized(max_steps=20, final_eval_tokens=64)[2] == 64
    interval, batches, _ = sized(max_steps=2000, eval_interval=100)           # 20 evaluations share the budget
    assert interval == 100 and 1 <= batches <= MAX_EVAL_BATCHES


def test_explicit_evaluation_settings_are_used_as_given(monkeypatch):
    trainer, trained, scored = _counting_run(monkeypatch, num_windows=60, max_steps=4, eval_interval=2,
                                             eval_batches=2, final_eval_tokens="all")
    assert [h["step"] for h in trainer.state.history] == [2, 4]
    # 2 evaluations x (train + validation) x 2 batches, and the whole split (60 windows) at the end
    assert scored == 2 * 2 * 2 * 4 * CONTEXT + 60 * CONTEXT


def test_the_budget_counts_validation_batches_of_another_size(monkeypatch):
    """Validation batches 8x the training batch: the sizing must count them at their size."""
    from llm_from_scratch.training.next_token import EVAL_TOKEN_SHARE

    trainer, trained, scored = _counting_run(monkeypatch, num_windows=400, max_steps=400, batch_size=2,
                                             val_batch_size=16)
    assert scored <= EVAL_TOKEN_SHARE * trained + 16 * CONTEXT


def test_ctrl_c_during_an_evaluation_saves_the_step_and_resumes_exactly(tmp_path, monkeypatch):
    from llm_from_scratch.training.next_token import NextTokenMethod

    def run(out, **extra):
        model, tokens = _model_and_tokens(num_windows=60)
        windows = TokenWindowDataset(tokens.numpy(), CONTEXT)
        trainer = GPTTrainer(model, DataLoader(windows, batch_size=4, shuffle=True, drop_last=True),
                             DataLoader(windows, batch_size=4), precision="fp32", progress=False, max_steps=6,
                             eval_interval=2, eval_batches=1, lr=3e-3, out_dir=str(out), **extra)
        trainer.train()
        return torch.nn.utils.parameters_to_vector(model.parameters())

    straight = run(tmp_path / "straight")
    real = NextTokenMethod.evaluate

    def interrupted_at_step_4(self, trainer, final):
        if trainer.state.step == 4:
            raise KeyboardInterrupt
        return real(self, trainer, final)
    monkeypatch.setattr(NextTokenMethod, "evaluate", interrupted_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["train_state"]["step"] == 4
    monkeypatch.setattr(NextTokenMethod, "evaluate", real)
    assert torch.equal(run(tmp_path / "cut", resume_from=str(tmp_path / "cut" / "last.pt")), straight)
