"""`SamplingParams` (every bad value gets a message that names it), the surfaces' defaults table,
and `pick_tokens` (shared settings sample as one batch; per-row settings do not depend on the batch)."""

import pytest
import torch

from llm_from_scratch.generation import SURFACE_DEFAULTS, SamplingParams, pick_tokens, sample_next_token, \
    surface_default


@pytest.mark.parametrize("kwargs, words", [
    (dict(max_tokens=0), "max_tokens (max_new_tokens) must be a whole number of at least 1"),
    (dict(max_tokens=-3), "at least 1"),
    (dict(max_tokens=2.5), "whole number"),
    (dict(max_tokens=True), "whole number"),
    (dict(max_tokens=4, temperature=-0.5), "temperature must be a number >= 0, got -0.5: use 0 for greedy"),
    (dict(max_tokens=4, temperature=float("nan")), "temperature"),
    (dict(max_tokens=4, temperature="hot"), "temperature"),
    (dict(max_tokens=4, top_k=0), "top_k must be a positive whole number, got 0: leave it out (None)"),
    (dict(max_tokens=4, top_k=2.0), "top_k"),
    (dict(max_tokens=4, top_p=0.0), "top_p must be in (0, 1], got 0.0"),
    (dict(max_tokens=4, top_p=1.5), "top_p must be in (0, 1], got 1.5"),
    (dict(max_tokens=4, seed=2**70), "seed must be a whole number that fits in 64 bits"),
    (dict(max_tokens=4, seed=-2**70), "seed"),
    (dict(max_tokens=4, stop=("ok", "")), "stop strings must be non-empty strings"),
])
def test_each_bad_value_is_a_value_error_that_names_it(kwargs, words):
    with pytest.raises(ValueError) as info:
        SamplingParams(**kwargs)
    assert words in str(info.value)


def test_good_values_and_normalisation():
    p = SamplingParams(max_tokens=5, temperature=0.7, top_k=40, top_p=0.9, stop=["a", "b"], stop_token_ids=[3],
                       seed=2**64 - 1)
    assert p.stop == ("a", "b") and p.stop_token_ids == (3,) and not p.greedy
    assert SamplingParams(max_tokens=1, stop="END").stop == ("END",)
    assert SamplingParams(max_tokens=1).greedy  # the Python API's default: greedy
    assert SamplingParams(max_tokens=1).make_generator() is None
    g1 = SamplingParams(max_tokens=1, temperature=1.0, seed=5).make_generator()
    g2 = SamplingParams(max_tokens=1, temperature=1.0, seed=5).make_generator()
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))


def test_the_defaults_table_is_the_one_place_and_the_commands_use_it():
    assert surface_default("python", "temperature") == 0.0
    assert surface_default("openai", "temperature") == 1.0
    assert (surface_default("ollama", "temperature"), surface_default("ollama", "top_p"),
            surface_default("ollama", "top_k")) == (0.8, 0.9, 40)
    with pytest.raises(ValueError, match="unknown surface 'grpc'"):
        surface_default("grpc", "temperature")
    from llm_from_scratch.cli.main import build_parser

    parser = build_parser()
    for command, surface in (("generate", "generate"), ("chat", "chat")):
        args = parser.parse_args([command, "--model", "x"])
        defaults = SURFACE_DEFAULTS[surface]
        assert args.temperature == defaults["temperature"], command
        assert args.top_p == defaults["top_p"], command
        assert (args.top_k or None) == defaults["top_k"], command
        assert args.max_new_tokens == defaults["max_tokens"], command


def test_pick_tokens_with_shared_settings_is_one_batched_sample():
    logits = torch.randn(6, 30, generator=torch.Generator().manual_seed(0))
    p = SamplingParams(max_tokens=1, temperature=1.0, top_k=10)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = sample_next_token(logits, 1.0, 10, None, g1)[:, 0].tolist()
    assert pick_tokens(logits, [p] * 6, [g2] * 6) == expected


def test_pick_tokens_per_row_settings_do_not_depend_on_the_batch():
    logits = torch.randn(3, 30, generator=torch.Generator().manual_seed(1))
    sampled = SamplingParams(max_tokens=1, temperature=1.0, seed=9)
    greedy = SamplingParams(max_tokens=1)
    alone = pick_tokens(logits[1:2], [sampled], [sampled.make_generator()])
    together = pick_tokens(logits, [greedy, sampled, greedy], [None, sampled.make_generator(), None])
    assert together[1] == alone[0]
    assert together[0] == int(logits[0].argmax()) and together[2] == int(logits[2].argmax())
