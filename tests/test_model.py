"""GPTModel: configuration, building blocks, and logits equal to Hugging Face transformers."""

import math

import pytest
import torch

from llm_from_scratch.model import GPT, GPT_CONFIG_124M, GELU, GPTConfig, GPTModel, LayerNorm, preset_config
from llm_from_scratch.model.config import PRESETS
from llm_from_scratch.model.layers import FeedForward, gelu_formula

transformers = pytest.importorskip("transformers")


def test_layernorm_matches_written_out_formula_and_torch():
    x = torch.randn(3, 5, 16) * 4 + 2
    ln = LayerNorm(16)
    with torch.no_grad():
        ln.scale.uniform_(0.5, 1.5)
        ln.shift.uniform_(-1, 1)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    expected = ln.scale * (x - mean) / torch.sqrt(var + 1e-5) + ln.shift
    torch.testing.assert_close(ln(x), expected, atol=1e-5, rtol=1e-5)
    ref = torch.nn.LayerNorm(16)
    ref.load_state_dict({"weight": ln.scale, "bias": ln.shift})
    torch.testing.assert_close(ln(x), ref(x))


def test_gelu_is_the_tanh_approximation():
    x = torch.linspace(-6, 6, 1001)
    torch.testing.assert_close(GELU()(x), gelu_formula(x), atol=1e-6, rtol=1e-5)
    # and differs measurably from the exact erf GELU, so the test would notice a swap
    assert (GELU()(x) - torch.nn.functional.gelu(x)).abs().max() > 1e-4


def test_feedforward_accepts_book_config_dict():
    ff = FeedForward({"emb_dim": 8})
    assert ff(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    assert ff.layers[0].out_features == 32


def test_config_accepts_book_dict_and_nanogpt_names():
    book = GPTConfig.from_dict(GPT_CONFIG_124M)
    assert (book.emb_dim, book.n_layers, book.context_length) == (768, 12, 1024)
    nano = GPTConfig(vocab_size=1000, n_embd=128, n_layer=4, n_head=4, block_size=64)
    assert (nano.emb_dim, nano.n_layers, nano.n_heads, nano.context_length) == (128, 4, 4, 64)
    assert (nano.n_embd, nano.n_layer, nano.n_head, nano.block_size) == (128, 4, 4, 64)
    assert GPTModel(GPT_CONFIG_124M | {"n_layers": 1}).cfg.n_layers == 1


@pytest.mark.parametrize("bad, message", [
    (dict(n_embd=30, n_head=4), "divisible"),
    (dict(vocab_size=0), "positive"),
    (dict(drop_rate=1.5), "drop_rate"),
])
def test_config_rejects_bad_values(bad, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**bad)


def test_config_rejects_unknown_setting():
    with pytest.raises(TypeError, match="unknown setting 'n_embed'"):
        GPTConfig(n_embed=128)


def test_unknown_preset_lists_choices():
    with pytest.raises(ValueError, match="gpt-micro"):
        preset_config("gpt-nano")


def test_gpt2_preset_has_the_real_parameter_count():
    # 124,439,808 is GPT-2 small's parameter count with tied embeddings
    cfg = preset_config("124M")
    with torch.device("meta"):
        model = GPTModel(cfg)
    assert model.num_parameters() == 124_439_808
    hf = transformers.GPT2Config()
    with torch.device("meta"):
        hf_model = transformers.GPT2LMHeadModel(hf)
    assert model.num_parameters() == sum(p.numel() for p in hf_model.parameters())


def test_untied_book_model_counts_head_separately():
    with torch.device("meta"):
        model = GPTModel(GPT_CONFIG_124M)
    assert model.num_parameters() == 163_009_536  # the book's figure for the untied model


def test_all_presets_build(tiny_cfg):
    for name in PRESETS:
        cfg = preset_config(name, vocab_size=97)
        assert cfg.emb_dim % cfg.n_heads == 0


def test_seed_gpt_constructor_is_gptmodel():
    model = GPT(vocab_size=50, n_embd=16, n_layer=2, n_head=2, block_size=8)
    assert isinstance(model, GPTModel)
    assert model.cfg.drop_rate == 0.0
    assert model(torch.randint(0, 50, (3, 8))).shape == (3, 8, 50)


def test_weight_tying_shares_the_matrix(tiny_cfg):
    model = GPTModel(tiny_cfg.replace(tie_weights=True))
    assert model.out_head.weight is model.tok_emb.weight
    untied = GPTModel(tiny_cfg)
    assert model.num_parameters() == untied.num_parameters() - tiny_cfg.vocab_size * tiny_cfg.emb_dim


def test_input_longer_than_context_is_a_clear_error(tiny_cfg):
    model = GPTModel(tiny_cfg)
    with pytest.raises(ValueError, match="longer than the model's context_length"):
        model(torch.zeros(1, tiny_cfg.context_length + 1, dtype=torch.long))


def test_model_is_causal(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    x = torch.randint(0, tiny_cfg.vocab_size, (1, 10))
    y = x.clone()
    y[0, 7:] = (y[0, 7:] + 1) % tiny_cfg.vocab_size
    torch.testing.assert_close(model(x)[:, :7], model(y)[:, :7])
    assert not torch.allclose(model(x)[:, 7:], model(y)[:, 7:])


def test_only_last_equals_last_position_of_full_logits(tiny_cfg):
    model = GPTModel(tiny_cfg).eval()
    x = torch.randint(0, tiny_cfg.vocab_size, (2, 9))
    torch.testing.assert_close(model(x, only_last=True)[:, 0], model(x)[:, -1])


def test_initial_loss_is_near_uniform(tiny_cfg):
    model = GPTModel(tiny_cfg)
    x = torch.randint(0, tiny_cfg.vocab_size, (4, 16))
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x.flatten())
    assert abs(loss.item() - math.log(tiny_cfg.vocab_size)) < 0.3


# ---------------------------------------------------------------------------- transformers parity
HF_CONFIGS = [
    dict(vocab_size=101, n_positions=32, n_embd=48, n_layer=3, n_head=4),
    dict(vocab_size=50, n_positions=16, n_embd=24, n_layer=1, n_head=3),
    dict(vocab_size=257, n_positions=64, n_embd=64, n_layer=4, n_head=8, tie_word_embeddings=False),
]


def _random_hf_gpt2(**kwargs):
    torch.manual_seed(sum(kwargs.values()) if all(isinstance(v, int) for v in kwargs.values()) else 7)
    config = transformers.GPT2Config(**kwargs, bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    # random biases and norm parameters too, so that a dropped bias or a swapped scale/shift shows
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.normal_(0, 0.2)
    return model


@pytest.mark.parametrize("hf_kwargs", HF_CONFIGS)
def test_logits_equal_transformers(hf_kwargs):
    from llm_from_scratch.model.hf_gpt2 import gpt_from_hf_model

    hf = _random_hf_gpt2(**hf_kwargs)
    ours = gpt_from_hf_model(hf).eval()
    assert ours.cfg.tie_weights == hf_kwargs.get("tie_word_embeddings", True)
    x = torch.randint(0, hf_kwargs["vocab_size"], (3, hf_kwargs["n_positions"]))
    with torch.no_grad():
        expected = hf(x).logits
        got = ours(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_hf_round_trip_of_state_dict():
    from llm_from_scratch.model.hf_gpt2 import gpt_from_hf_model, state_dict_to_hf

    hf = _random_hf_gpt2(**HF_CONFIGS[0])
    ours = gpt_from_hf_model(hf)
    back = state_dict_to_hf(ours.state_dict())
    for name, tensor in hf.state_dict().items():
        if name in back:
            torch.testing.assert_close(back[name], tensor)
    assert set(back) >= {k for k in hf.state_dict() if not k.endswith(".attn.bias")}


def test_hf_config_with_unsupported_option_is_refused():
    from llm_from_scratch.model.hf_gpt2 import config_from_hf

    with pytest.raises(ValueError, match="activation_function"):
        config_from_hf(transformers.GPT2Config(activation_function="relu"))
