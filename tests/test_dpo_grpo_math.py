"""The math of DPO and GRPO, checked against hand computations, and the log-probs they rest on."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from llm_from_scratch.finetune.dpo import (PreferencePair, dpo_loss, load_preference_pairs,
                                           save_preference_pairs)
from llm_from_scratch.finetune.grpo import group_advantages, grpo_loss, k3_kl
from llm_from_scratch.finetune.sequences import (pack_completions, sequence_logprob, token_entropy,
                                                 token_logprobs, token_logprobs_and_entropy)
from llm_from_scratch.model import GPTConfig, GPTModel


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50, context_length=32, emb_dim=16, n_heads=2, n_layers=2,
                               drop_rate=0.0, qkv_bias=False))
    return model.eval()


def naive_token_logprobs(model, input_ids, temperature=1.0):
    log_probs = F.log_softmax(model(input_ids).float() / temperature, dim=-1)        # (n, T, vocab)
    return log_probs[:, :-1].gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (n, T-1)


# ---------------------------------------------------------------- sequences.py

def test_pack_completions_masks_and_padding():
    packed = pack_completions([[1, 2, 3], [4]], [[5, 6], []], pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 5, 6], [4, 0, 0, 0, 0]]
    # targets are input_ids[:, 1:] = [2, 3, 5, 6] and [0, 0, 0, 0]; only 5 and 6 are completion tokens
    assert packed.completion_mask.tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert packed.completion_mask.dtype == torch.float32
    assert packed.prompt_lengths == [3, 1] and packed.completion_lengths == [2, 0]


def test_pack_completions_truncates_the_prompt_from_the_left():
    packed = pack_completions([[1, 2, 3, 4, 5], [7]], [[8, 9], [10, 11]], pad_id=0, max_length=4)
    assert packed.input_ids.tolist() == [[4, 5, 8, 9], [7, 10, 11, 0]]
    assert packed.completion_mask.tolist() == [[0, 1, 1], [1, 1, 0]]
    assert packed.prompt_lengths == [2, 1] and packed.completion_lengths == [2, 2]


def test_pack_completions_errors():
    with pytest.raises(ValueError, match="leaves no room"):
        pack_completions([[1, 2]], [[3, 4, 5]], pad_id=0, max_length=3)
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        pack_completions([[]], [[3]], pad_id=0)
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        pack_completions([[1], [2]], [[3]], pad_id=0)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 11, 1024])   # 11 rows of T-1 = 11: 3, 7 split rows
def test_token_logprobs_equal_the_naive_computation_values_and_gradients(tiny_model, chunk_size):
    input_ids = torch.randint(0, 50, (3, 12))
    weights = torch.randn(3, 11)
    ours, entropies = token_logprobs_and_entropy(tiny_model, input_ids, chunk_size=chunk_size, temperature=0.7)
    assert ours.requires_grad and not entropies.requires_grad   # entropy is for logging only
    ours_grads = torch.autograd.grad((ours * weights).sum(), list(tiny_model.parameters()))
    naive = naive_token_logprobs(tiny_model, input_ids, temperature=0.7)
    naive_grads = torch.autograd.grad((naive * weights).sum(), list(tiny_model.parameters()))
    assert ours.shape == (3, 11)
    torch.testing.assert_close(ours, naive, rtol=0, atol=1e-6)
    for mine, reference in zip(ours_grads, naive_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_token_logprobs_at_the_answer_positions_only_equal_the_naive_computation(tiny_model, chunk_size):
    """`only=mask`: the head runs at the masked positions; there the values and the gradients of
    any masked sum equal the naive full computation (float32, atol 1e-6), elsewhere they are 0."""
    packed = pack_completions([[1, 2, 3, 4, 5], [6, 7]], [[8, 9], [10, 11, 12, 13]], pad_id=0)
    mask, input_ids = packed.completion_mask, packed.input_ids
    weights = torch.randn(mask.shape)
    ours, entropies = token_logprobs_and_entropy(tiny_model, input_ids, chunk_size=chunk_size, temperature=0.7,
                                                 only=mask)
    _, all_entropies = token_logprobs_and_entropy(tiny_model, input_ids, temperature=0.7)
    naive = naive_token_logprobs(tiny_model, input_ids, temperature=0.7)
    torch.testing.assert_close(ours, naive * mask, rtol=0, atol=1e-6)
    torch.testing.assert_close(entropies, all_entropies * mask, rtol=0, atol=1e-6)
    ours_grads = torch.autograd.grad((ours * weights * mask).sum(), list(tiny_model.parameters()))
    naive_grads = torch.autograd.grad((naive * weights * mask).sum(), list(tiny_model.parameters()))
    for mine, reference in zip(ours_grads, naive_grads):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-6)
    nothing = token_logprobs(tiny_model, input_ids, only=torch.zeros_like(mask))
    assert nothing.shape == mask.shape and not nothing.any()
    with pytest.raises(ValueError, match="only must be"):
        token_logprobs(tiny_model, input_ids, only=mask[:, :-1])


def test_token_logprobs_without_hidden_states_falls_back_to_the_logits(tiny_model):
    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids)

    input_ids = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(token_logprobs(LogitsOnly(tiny_model), input_ids, chunk_size=4),
                               naive_token_logprobs(tiny_model, input_ids), rtol=0, atol=1e-6)


def test_right_padding_does_not_change_a_rows_logprobs(tiny_model):
    prompts, completions = [[3, 4, 5], [6, 7, 8, 9, 10, 11]], [[12, 13], [14, 15, 16]]
    batch = pack_completions(prompts, completions, pad_id=0)
    alone = pack_completions(prompts[:1], completions[:1], pad_id=0)
    with torch.no_grad():
        batch_seq = sequence_logprob(token_logprobs(tiny_model, batch.input_ids), batch.completion_mask)
        alone_logps = token_logprobs(tiny_model, alone.input_ids)
    alone_seq = sequence_logprob(alone_logps, alone.completion_mask)
    torch.testing.assert_close(batch_seq[0], alone_seq[0], rtol=0, atol=1e-6)
    # and the sum is over exactly the completion tokens' log-probs
    torch.testing.assert_close(alone_seq[0], alone_logps[0, 2] + alone_logps[0, 3], rtol=0, atol=0)


def test_entropy_matches_the_full_distribution(tiny_model):
    input_ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    with torch.no_grad():
        log_probs = F.log_softmax(tiny_model(input_ids)[:, :-1], dim=-1)
        _, entropies = token_logprobs_and_entropy(tiny_model, input_ids, chunk_size=3)
    expected = -(log_probs.exp() * log_probs).sum(-1)
    torch.testing.assert_close(entropies, expected, rtol=0, atol=1e-6)
    assert token_entropy(tiny_model, input_ids, mask) == pytest.approx(float(expected[mask.bool()].mean()), abs=1e-6)


def test_sequence_logprob_ignores_masked_positions_even_if_infinite():
    token_logps = torch.tensor([[-1.0, -2.0, float("-inf")], [-0.5, -0.25, -4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert sequence_logprob(token_logps, mask).tolist() == [-3.0, -4.25]


# ---------------------------------------------------------------- dpo.py

def test_dpo_loss_and_metrics_by_hand():
    pc, pr, rc, rr, beta = -5.0, -7.0, -6.0, -6.0, 0.5
    loss, metrics = dpo_loss(torch.tensor([pc]), torch.tensor([pr]), torch.tensor([rc]), torch.tensor([rr]), beta)
    reward_chosen = 0.5 * (-5 - -6)        # 0.5
    reward_rejected = 0.5 * (-7 - -6)      # -0.5
    margin = reward_chosen - reward_rejected  # 1.0
    expected = -math.log(1 / (1 + math.exp(-margin)))  # -log sigmoid(1) = 0.31326
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics == pytest.approx({"reward_chosen": 0.5, "reward_rejected": -0.5, "reward_margin": 1.0,
                                     "reward_accuracy": 1.0})


def test_dpo_loss_batch_mean_and_accuracy():
    # pair 1 as above (margin 1); pair 2 ranked wrong: margin 0.5 * ((-8 + 6) - (-5 + 6)) = -1.5
    loss, metrics = dpo_loss(torch.tensor([-5.0, -8.0]), torch.tensor([-7.0, -5.0]),
                             torch.tensor([-6.0, -6.0]), torch.tensor([-6.0, -6.0]), beta=0.5)
    expected = (math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(1.5))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["reward_accuracy"] == 0.5
    assert metrics["reward_margin"] == pytest.approx((1.0 - 1.5) / 2)


def test_dpo_loss_is_log_2_when_policy_equals_reference_and_gradient_signs():
    chosen = torch.tensor([-3.0, -10.0], requires_grad=True)
    rejected = torch.tensor([-4.0, -2.0], requires_grad=True)
    loss, metrics = dpo_loss(chosen, rejected, chosen.detach().clone(), rejected.detach().clone(), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["reward_margin"] == 0.0 and metrics["reward_accuracy"] == 0.0
    loss.backward()
    # raising the chosen log-prob lowers the loss, raising the rejected one raises it;
    # at margin 0: d loss / d pc = -beta * sigmoid(0) / b = -0.1 * 0.5 / 2
    assert torch.allclose(chosen.grad, torch.full((2,), -0.025))
    assert torch.allclose(rejected.grad, torch.full((2,), 0.025))


def test_dpo_loss_rejects_bad_beta_and_shapes():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="reference_rejected_logps"):
        dpo_loss(x, x, x, torch.zeros(3), beta=0.1)


def test_preference_pairs_round_trip_jsonl_and_json(tmp_path):
    pairs = [PreferencePair("2+2?", "4", "5"), PreferencePair("Capital of France?", "Paris", "Lyon ✓")]
    save_preference_pairs(tmp_path / "pairs.jsonl", pairs)
    assert load_preference_pairs(tmp_path / "pairs.jsonl") == pairs
    assert not list(tmp_path.glob(".*.tmp"))             # the temporary file is gone
    (tmp_path / "pairs.json").write_text(json.dumps([{"prompt": "a", "chosen": "b", "rejected": "c", "id": 7}]))
    assert load_preference_pairs(tmp_path / "pairs.json") == [PreferencePair("a", "b", "c")]


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{not json\n', "line 2: not valid JSON"),
    ('{"prompt": "a", "chosen": "b"}\n', "line 1: missing key 'rejected'"),
    ('{"prompt": "a", "chosen": 3, "rejected": "c"}\n', "line 1: 'chosen' must be a string"),
    ('\n{"prompt": "a", "chosen": "b", "rejected": "b"}\n', "line 2: 'chosen' and 'rejected' are the same"),
    ('{"prompt": " ", "chosen": "b", "rejected": "c"}\n', "line 1: 'prompt' is empty"),
    ('["a"]\n', "line 1: expected a JSON object"),
    ("\n\n", "no preference pairs"),
])
def test_preference_loader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "prefs.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match="prefs.jsonl") as error:
        load_preference_pairs(path)
    assert message in str(error.value)


def test_preference_loader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preference_pairs(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- grpo.py

def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.3, 0.3, 0.3, 0.3])
    # group 1: mean 0.5, population std 0.5 -> +-0.5 / (0.5 + 1e-4); group 2: all equal -> 0 exactly
    a = 0.5 / (0.5 + 1e-4)
    advantages = group_advantages(rewards, group_size=4)
    torch.testing.assert_close(advantages, torch.tensor([a, -a, -a, a, 0, 0, 0, 0]), rtol=0, atol=1e-6)
    assert advantages[4:].eq(0).all()                  # exactly, although mean(0.3 x 4) != 0.3 in float32
    centered = group_advantages(torch.tensor([3.0, 1.0, 2.0, 2.0, 2.0, 5.0]), group_size=3, scale=False)
    torch.testing.assert_close(centered, torch.tensor([1.0, -1.0, 0.0, -1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(torch.zeros(6), group_size=4)


def one_token_loss(ratio, advantage, **kwargs):
    """The GRPO loss of a single token with the given ratio, and d loss / d logp."""
    logps = torch.tensor([[math.log(ratio)]], requires_grad=True)
    loss, metrics = grpo_loss(logps, torch.zeros(1, 1), torch.tensor([advantage]), torch.ones(1, 1), **kwargs)
    (grad,) = torch.autograd.grad(loss, logps)
    return loss.item(), float(grad), metrics


@pytest.mark.parametrize("ratio, advantage, expected_loss, expected_grad, clipped", [
    (1.5, 2.0, -1.2 * 2.0, 0.0, True),      # pushed up past 1 + eps: clipped, no gradient
    (1.5, -2.0, 1.5 * 2.0, 1.5 * 2.0, False),   # moved the wrong way: unclipped, d(-r A)/dlogp = -r A
    (0.5, -2.0, 0.8 * 2.0, 0.0, True),      # pushed down past 1 - eps: clipped, no gradient
    (0.5, 2.0, -0.5 * 2.0, -0.5 * 2.0, False),  # moved the wrong way: unclipped
])
def test_grpo_clipping(ratio, advantage, expected_loss, expected_grad, clipped):
    loss, grad, metrics = one_token_loss(ratio, advantage, clip_eps=0.2)
    assert loss == pytest.approx(expected_loss, abs=1e-6)
    assert grad == pytest.approx(expected_grad, abs=1e-6)
    assert metrics["clip_fraction"] == (1.0 if clipped else 0.0)
    assert metrics["ratio_mean"] == pytest.approx(ratio)


def test_grpo_at_ratio_one_is_the_policy_gradient():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -9.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    advantages = torch.tensor([0.5, -2.0])
    loss, metrics = grpo_loss(logps, logps.detach(), advantages, mask)
    loss.backward()
    # loss = -(0.5 * 3 - 2.0 * 2) / 5 = 0.5; gradient -A_i / 5 on completion tokens, 0 elsewhere
    assert loss.item() == pytest.approx(0.5)
    torch.testing.assert_close(logps.grad, torch.tensor([[-0.1, -0.1, -0.1], [0.4, 0.4, 0.0]]))
    assert metrics == {"clip_fraction": 0.0, "ratio_mean": 1.0, "kl": 0.0}


def test_grpo_masked_tokens_change_nothing():
    old = torch.tensor([[-1.0, -2.0, -3.0], [-1.5, -0.5, -2.5]])
    ref = torch.tensor([[-1.2, -1.0, -3.0], [-1.0, -0.4, -2.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    advantages = torch.tensor([1.0, -0.5])
    base = torch.tensor([[-0.9, -2.3, -3.1], [-1.4, -0.6, -2.4]])
    wild = base.clone()
    wild[0, 2], wild[1, 0] = 80.0, float("-inf")       # would overflow exp() if not masked
    losses = []
    for values in (base, wild):
        logps = values.clone().requires_grad_(True)
        loss, _ = grpo_loss(logps, old, advantages, mask, ref_logps=ref, kl_coef=0.1)
        loss.backward()
        losses.append(loss.item())
        assert logps.grad[0, 2] == 0 and logps.grad[1, 0] == 0
        assert torch.isfinite(logps.grad).all()
    assert losses[0] == losses[1]


def test_k3_kl_by_hand_and_in_the_loss():
    logps, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    d1, d2 = -0.5, 1.0                                   # ref - logp
    k1, k2 = math.exp(d1) - d1 - 1, math.exp(d2) - d2 - 1  # 0.10653, 0.71828
    torch.testing.assert_close(k3_kl(logps, ref), torch.tensor([[k1, k2]]))
    assert k3_kl(logps, logps).eq(0).all()
    mask = torch.ones(1, 2)
    loss, metrics = grpo_loss(logps, logps, torch.tensor([1.0]), mask, ref_logps=ref, kl_coef=0.05)
    # ratio 1: policy term -1 per token; plus 0.05 * k3, averaged over 2 tokens
    assert loss.item() == pytest.approx(-1 + 0.05 * (k1 + k2) / 2, abs=1e-6)
    assert metrics["kl"] == pytest.approx((k1 + k2) / 2, abs=1e-6)
    with pytest.raises(ValueError, match="needs ref_logps"):
        grpo_loss(logps, logps, torch.tensor([1.0]), mask, kl_coef=0.05)


def test_grpo_token_versus_sequence_aggregation():
    # completion 0: 1 token, A = 2; completion 1: 3 tokens, A = 1; ratio 1 everywhere
    logps = torch.zeros(3, 3)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # row 2: empty completion
    advantages = torch.tensor([2.0, 1.0, 5.0])
    token, _ = grpo_loss(logps, logps, advantages, mask, aggregation="token")
    sequence, _ = grpo_loss(logps, logps, advantages, mask, aggregation="sequence")
    assert token.item() == pytest.approx(-(2 * 1 + 1 * 3) / 4)       # -1.25: every token weighs the same
    assert sequence.item() == pytest.approx(-(2 / 1 + 3 / 3) / 2)    # -1.5: every completion weighs the same
    nothing, metrics = grpo_loss(logps, logps, advantages, torch.zeros(3, 3), aggregation="sequence")
    assert nothing.item() == 0.0 and not math.isnan(metrics["ratio_mean"])


def test_grpo_constant_aggregation_is_dr_grpos_sum_over_a_fixed_divisor():
    # the same batch as above; Dr. GRPO divides the summed token losses by completions x the
    # longest allowed answer (here 8), whatever the answers' own lengths
    logps = torch.zeros(3, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    advantages = torch.tensor([2.0, 1.0, 5.0])
    loss, _ = grpo_loss(logps, logps.detach(), advantages, mask, aggregation="constant", constant=8)
    assert loss.item() == pytest.approx(-(2 * 1 + 1 * 3) / (3 * 8))
    loss.backward()
    # a token's gradient is -A / (n * constant): the same for a token of a short and of a long answer
    assert torch.allclose(logps.grad, torch.tensor([[-2 / 24, 0, 0], [-1 / 24, -1 / 24, -1 / 24], [0, 0, 0]]))
    # with "token", adding a long answer to the batch changes every other token's weight; here it does not
    longer = torch.zeros(4, 3, requires_grad=True)
    mask4 = torch.cat([mask, torch.ones(1, 3)])
    loss4, _ = grpo_loss(longer, longer.detach(), torch.tensor([2.0, 1.0, 5.0, 0.0]), mask4, aggregation="constant",
                         constant=8)
    loss4.backward()
    assert longer.grad[0, 0].item() == pytest.approx(-2 / 32)        # only the number of answers changes it
    with pytest.raises(ValueError, match="needs constant"):
        grpo_loss(logps, logps, advantages, mask, aggregation="constant")
