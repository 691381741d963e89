"""load_gpt2: GPT-2 weights from Hugging Face files and OpenAI's TensorFlow files, checked
against `transformers`, and the download path against a local HTTP server (no internet).
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llm_from_scratch.assets import AssetUnavailableError, VerificationError
from llm_from_scratch.model import GPTModel
from llm_from_scratch.weights import gpt2
from llm_from_scratch.weights.gpt2 import (
    find_gpt2_files,
    gpt2_config,
    gpt2_model_name,
    hf_gpt2_shapes,
    hf_url,
    inspect_gpt2_path,
    load_gpt2,
    openai_gpt2_shapes,
    openai_to_hf_name,
    openai_url,
)
from llm_from_scratch.weights.tf_checkpoint import open_tf_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "tf_gpt2_tiny"

# Test models have small vocabularies; load_gpt2 warns that the GPT-2 tokenizer makes larger ids.
pytestmark = pytest.mark.filterwarnings("ignore:this model knows")


@pytest.fixture(scope="module", autouse=True)
def gpt2_tokenizer_loaded():
    """Load the GPT-2 vocabulary once from the normal cache, before tests switch caches."""
    from llm_from_scratch.tokenizers import get_tokenizer

    return get_tokenizer("gpt2")


def random_hf_model(seed: int = 0, **config) -> GPT2LMHeadModel:
    """A GPT-2 with random weights everywhere: norm gains and biases are perturbed too."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**config)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


def assert_same_logits(ours, hf, vocab_size: int, context: int, atol: float = 1e-4):
    ids = torch.randint(0, vocab_size, (2, context), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        actual = ours(ids)
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


CONFIGS = [
    dict(vocab_size=61, n_positions=16, n_embd=24, n_layer=2, n_head=3),
    dict(vocab_size=50, n_positions=9, n_embd=32, n_layer=3, n_head=4),
    dict(vocab_size=40, n_positions=8, n_embd=16, n_layer=1, n_head=1, tie_word_embeddings=False),
]


# --------------------------------------------------------------------------------------
# Local Hugging Face files against transformers
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=["3heads", "4heads", "untied"])
def test_safetensors_folder_gives_transformers_logits(config, tmp_path):
    hf = random_hf_model(**config)
    hf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model, tokenizer = load_gpt2(tmp_path)
    assert tokenizer.name == "gpt2" and not model.training
    assert_same_logits(model, hf, config["vocab_size"], config["n_positions"])
    tied = config.get("tie_word_embeddings", True)
    assert (model.out_head.weight is model.tok_emb.weight) == tied
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert all(p.is_contiguous() and p.dtype == torch.float32 for p in model.parameters())


def test_tied_head_stays_tied_after_an_update(tmp_path):
    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    model, _ = load_gpt2(tmp_path)
    with torch.no_grad():
        model.tok_emb.weight[3].fill_(1.5)
    assert torch.equal(model.out_head.weight[3], torch.full((24,), 1.5))
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})


def test_sharded_safetensors(tmp_path):
    hf = random_hf_model(**CONFIGS[1])
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    model, _ = load_gpt2(tmp_path)
    assert_same_logits(model, hf, 50, 9)


def test_old_pytorch_model_bin_folder(tmp_path):
    """The 2019 layout: GPT2Model names (no `transformer.`), causal-mask buffers, no lm_head."""
    hf = random_hf_model(**CONFIGS[0])
    state = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    for i in range(2):
        state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(16, 16)).view(1, 1, 16, 16)
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf.config.to_json_file(tmp_path / "config.json")
    model, _ = load_gpt2(tmp_path, source="hf")
    assert_same_logits(model, hf, 61, 16)


def test_single_safetensors_file(tmp_path, monkeypatch):
    hf = random_hf_model(**CONFIGS[0])
    hf.save_pretrained(tmp_path / "with_config")
    model, _ = load_gpt2(tmp_path / "with_config" / "model.safetensors")  # reads config.json beside it
    assert_same_logits(model, hf, 61, 16)

    lone = tmp_path / "lone" / "gpt2.safetensors"
    lone.parent.mkdir()
    shutil.copy(tmp_path / "with_config" / "model.safetensors", lone)
    with pytest.raises(ValueError, match="number of attention heads.*config.json"):
        load_gpt2(lone)
    monkeypatch.setitem(gpt2._HEADS_BY_WIDTH, 24, 3)  # as for OpenAI's widths 768, 1024, ...
    model, _ = load_gpt2(lone)
    assert_same_logits(model, hf, 61, 16)


def test_dtype_is_converted_while_loading(tmp_path):
    hf = random_hf_model(**CONFIGS[0])
    hf.save_pretrained(tmp_path)
    model, _ = load_gpt2(tmp_path, dtype="bfloat16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.out_head.weight is model.tok_emb.weight
    ids = torch.randint(0, 61, (1, 16))
    with torch.no_grad():
        reference = hf(ids).logits
        logits = model(ids).float()
    assert (logits - reference).abs().max() < 0.05 * reference.abs().max()
    with pytest.raises(ValueError, match="floating-point"):
        load_gpt2(tmp_path, dtype=torch.int8)


def test_load_via_public_package_name(tmp_path):
    import llm_from_scratch.weights as weights

    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    model, _ = weights.load_gpt2(str(tmp_path))  # a string that is not a model name is a path
    assert model.cfg.n_heads == 3


# --------------------------------------------------------------------------------------
# OpenAI's TensorFlow files against transformers with the same numbers
# --------------------------------------------------------------------------------------


def hf_model_from_npz() -> GPT2LMHeadModel:
    """transformers' GPT-2 holding the numbers TensorFlow saved in the fixture (mapping written
    out here, independently of the code under test)."""
    hparams = json.loads((FIXTURE / "hparams.json").read_text())
    config = GPT2Config(vocab_size=hparams["n_vocab"], n_positions=hparams["n_ctx"], n_embd=hparams["n_embd"],
                        n_layer=hparams["n_layer"], n_head=hparams["n_head"])
    model = GPT2LMHeadModel(config).eval()
    state = {}
    with np.load(FIXTURE / "weights.npz") as npz:
        tf = {name: torch.from_numpy(npz[name]) for name in npz.files}
    state["transformer.wte.weight"] = tf["model/wte"]
    state["transformer.wpe.weight"] = tf["model/wpe"]
    state["transformer.ln_f.weight"], state["transformer.ln_f.bias"] = tf["model/ln_f/g"], tf["model/ln_f/b"]
    for i in range(hparams["n_layer"]):
        for hf_part, tf_part in [("ln_1", "ln_1"), ("ln_2", "ln_2")]:
            state[f"transformer.h.{i}.{hf_part}.weight"] = tf[f"model/h{i}/{tf_part}/g"]
            state[f"transformer.h.{i}.{hf_part}.bias"] = tf[f"model/h{i}/{tf_part}/b"]
        for part in ["attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"]:
            hf_part = part.replace("/", ".")
            state[f"transformer.h.{i}.{hf_part}.weight"] = tf[f"model/h{i}/{part}/w"][0]  # [1, in, out] -> [in, out]
            state[f"transformer.h.{i}.{hf_part}.bias"] = tf[f"model/h{i}/{part}/b"]
    state["lm_head.weight"] = tf["model/wte"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(".attn.bias" in k or ".masked_bias" in k for k in missing), missing
    return model


@pytest.fixture(scope="module")
def hf_from_tf_numbers() -> GPT2LMHeadModel:
    return hf_model_from_npz()


@pytest.mark.parametrize("path", [FIXTURE, FIXTURE / "model.ckpt", FIXTURE / "model.ckpt.index"],
                         ids=["folder", "prefix", "index"])
def test_openai_tensorflow_checkpoint_gives_transformers_logits(path, hf_from_tf_numbers):
    model, _ = load_gpt2(path)
    assert model.cfg.vocab_size == 67 and model.cfg.n_heads == 3 and model.cfg.qkv_bias
    assert model.out_head.weight is model.tok_emb.weight
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)


def test_openai_names_and_shapes_match_tensorflows_files():
    cfg = inspect_gpt2_path(FIXTURE).config
    tf_shapes = {k: v for k, v in open_tf_checkpoint(FIXTURE).shapes.items() if k.startswith("model/")}
    assert openai_gpt2_shapes(cfg) == tf_shapes
    assert openai_to_hf_name("model/h1/attn/c_attn/w") == "h.1.attn.c_attn.weight"
    assert openai_to_hf_name("model/h0/ln_2/g") == "h.0.ln_2.weight"
    assert openai_to_hf_name("model/ln_f/b") == "ln_f.bias"
    assert openai_to_hf_name("model/wte") == "wte.weight"
    assert openai_to_hf_name("global_step") is None


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_expected_shapes_are_transformers_shapes_for_every_size(name):
    cfg = gpt2_config(name)
    hf_config = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=cfg.emb_dim, n_layer=cfg.n_layers,
                           n_head=cfg.n_heads)
    with torch.device("meta"):
        reference = GPT2LMHeadModel(hf_config)
    shapes = {k.removeprefix("transformer."): tuple(v.shape) for k, v in reference.state_dict().items()
              if k != "lm_head.weight" and not k.endswith(".attn.bias")}
    assert hf_gpt2_shapes(cfg) == shapes


def test_model_names():
    assert gpt2_model_name("124M") == "gpt2" and gpt2_model_name("1558M") == "gpt2-xl"
    assert gpt2_model_name("openai-community/gpt2-large") == "gpt2-large"
    assert gpt2_model_name("gpt-micro") is None
    # Parameter counts of OpenAI's models as published (tied head counted once).
    counts = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    for name, count in counts.items():
        with torch.device("meta"):
            assert GPTModel(gpt2_config(name)).num_parameters() == count, name


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_unknown_name_or_missing_path():
    with pytest.raises(FileNotFoundError, match="neither a GPT-2 name .*124M.* nor an existing path"):
        load_gpt2("gpt3")


def test_folder_without_weights_says_what_it_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(FileNotFoundError, match="config.json \\+ model.safetensors.*hparams.json.*notes.txt"):
        load_gpt2(tmp_path)
    with pytest.raises(FileNotFoundError, match="hf|config.json"):
        load_gpt2(FIXTURE, source="hf")  # TensorFlow files, but Hugging Face's were asked for
    with pytest.raises(ValueError, match="source must be one of"):
        load_gpt2(FIXTURE, source="web")


def test_other_model_type_is_refused(tmp_path):
    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'llama' model; load_gpt2 loads GPT-2 models only"):
        load_gpt2(tmp_path)


def test_config_that_does_not_fit_the_tensors(tmp_path):
    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["n_embd"] = 48
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VerificationError, match="wrong shape .*wte.weight is \\(61, 24\\), expected \\(61, 48\\)"):
        load_gpt2(tmp_path)


def test_truncated_safetensors_file(tmp_path):
    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(VerificationError, match="truncated"):
        load_gpt2(tmp_path)


def test_small_vocabulary_warns(tmp_path):
    random_hf_model(**CONFIGS[0]).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="61 token ids"):
        load_gpt2(tmp_path)


# --------------------------------------------------------------------------------------
# Downloads, against a local HTTP server
# --------------------------------------------------------------------------------------


def test_canonical_urls(monkeypatch):
    for variable in ("LLMFS_HF_ENDPOINT", "HF_ENDPOINT", "LLMFS_OPENAI_ENDPOINT"):
        monkeypatch.delenv(variable, raising=False)
    assert hf_url("124M", "model.safetensors") == \
        "https://huggingface.co/openai-community/gpt2/resolve/main/model.safetensors"
    assert hf_url("gpt2-xl", "config.json") == \
        "https://huggingface.co/openai-community/gpt2-xl/resolve/main/config.json"
    assert openai_url("gpt2", "model.ckpt.index") == \
        "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/model.ckpt.index"
    assert openai_url("gpt2-medium", "hparams.json").endswith("/gpt-2/models/355M/hparams.json")
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert hf_url("gpt2", "config.json") == "https://hf-mirror.example/openai-community/gpt2/resolve/main/config.json"


@dataclass
class Server:
    files: dict[str, bytes]
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    url: str = ""

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def _handler(server: Server):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # noqa: N802
            range_header = self.headers.get("Range")
            server.requests.append((self.path, range_header))
            body = server.files.get(self.path)
            if body is None:
                self.send_error(404, "Not Found")
                return
            if range_header:
                start = int(re.fullmatch(r"bytes=(\d+)-", range_header).group(1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                body = body[start:]
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory, hf_from_tf_numbers) -> dict[str, bytes]:
    """The fixture's weights as a fake 'gpt2' on both hosts: Hugging Face files and OpenAI's."""
    hf_dir = tmp_path_factory.mktemp("hf")
    hf_from_tf_numbers.save_pretrained(hf_dir)
    hf_prefix = "/openai-community/gpt2/resolve/main/"
    files = {hf_prefix + name: (hf_dir / name).read_bytes() for name in gpt2.HF_FILES}
    for name in gpt2.OPENAI_FILES:
        files["/gpt-2/models/124M/" + name] = (FIXTURE / name).read_bytes()
    return files


@pytest.fixture
def server(tiny_files, tmp_path, monkeypatch):
    state = Server(files=dict(tiny_files))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    monkeypatch.setenv("LLMFS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LLMFS_HF_ENDPOINT", state.url)
    monkeypatch.setenv("LLMFS_OPENAI_ENDPOINT", state.url)
    monkeypatch.delenv("LLMFS_OFFLINE", raising=False)
    # The server's "gpt2" is the tiny fixture model, so that is the architecture to expect.
    tiny = inspect_gpt2_path(FIXTURE).config
    monkeypatch.setattr(gpt2, "gpt2_config", lambda name: tiny)
    yield state
    httpd.shutdown()
    httpd.server_close()


HF_CONFIG = "/openai-community/gpt2/resolve/main/config.json"
HF_WEIGHTS = "/openai-community/gpt2/resolve/main/model.safetensors"
OPENAI = [f"/gpt-2/models/124M/{name}" for name in gpt2.OPENAI_FILES]


def test_download_from_hugging_face_then_cache(server, tmp_path, hf_from_tf_numbers):
    model, _ = load_gpt2("gpt2")
    assert server.paths() == [HF_CONFIG, HF_WEIGHTS]
    folder = tmp_path / "cache" / "weights" / "gpt2" / "gpt2"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no .part left
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)

    again, _ = load_gpt2("124M")  # the book's name for the same model: served from the cache
    assert server.paths() == [HF_CONFIG, HF_WEIGHTS]
    assert_same_logits(again, hf_from_tf_numbers, 67, 12)


def test_falls_back_to_openai_files_when_the_hub_fails(server, tmp_path, hf_from_tf_numbers):
    del server.files[HF_WEIGHTS]
    model, _ = load_gpt2("gpt2")
    assert server.paths() == [HF_CONFIG, HF_WEIGHTS, *OPENAI]
    folder = tmp_path / "cache" / "weights" / "gpt2" / "gpt2" / "openai"
    assert sorted(p.name for p in folder.iterdir()) == sorted(gpt2.OPENAI_FILES)
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)

    requests_before = len(server.requests)
    load_gpt2("gpt2")  # OpenAI's files in the cache are enough: nothing is downloaded
    assert len(server.requests) == requests_before


def test_source_openai_downloads_only_openai_files(server, hf_from_tf_numbers):
    model, _ = load_gpt2("gpt2", source="openai")
    assert server.paths() == OPENAI
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)
    assert find_gpt2_files("gpt2", source="openai").format == "openai"


def test_partial_download_is_resumed(server, tmp_path, tiny_files, hf_from_tf_numbers):
    folder = tmp_path / "cache" / "weights" / "gpt2" / "gpt2"
    folder.mkdir(parents=True)
    half = len(tiny_files[HF_WEIGHTS]) // 2
    (folder / "model.safetensors.part").write_bytes(tiny_files[HF_WEIGHTS][:half])
    model, _ = load_gpt2("gpt2")
    assert server.requests == [(HF_CONFIG, None), (HF_WEIGHTS, f"bytes={half}-")]
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)


def test_damaged_file_in_the_cache_is_downloaded_again(server, tmp_path, tiny_files, hf_from_tf_numbers):
    folder = tmp_path / "cache" / "weights" / "gpt2" / "gpt2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_bytes(tiny_files[HF_CONFIG])
    (folder / "model.safetensors").write_bytes(tiny_files[HF_WEIGHTS][:-100])  # truncated
    model, _ = load_gpt2("gpt2")
    assert server.paths() == [HF_CONFIG, HF_WEIGHTS]
    assert (folder / "model.safetensors").read_bytes() == tiny_files[HF_WEIGHTS]
    assert_same_logits(model, hf_from_tf_numbers, 67, 12)


def test_wrong_model_on_the_server_is_deleted_and_reported(server, tmp_path):
    config = json.loads(server.files[HF_CONFIG])
    server.files[HF_CONFIG] = json.dumps({**config, "n_layer": 3}).encode()
    del server.files[OPENAI[1]]  # no hparams.json at OpenAI either
    with pytest.raises(AssetUnavailableError) as error:
        load_gpt2("gpt2")
    message = str(error.value)
    assert "n_layers=3 (expected 2)" in message and "HTTP 404" in message
    assert not (tmp_path / "cache" / "weights" / "gpt2" / "gpt2" / "config.json").exists()


def test_corrupted_openai_data_fails_its_checksum_and_is_deleted(server, tmp_path):
    del server.files[HF_WEIGHTS]
    data = bytearray(server.files[OPENAI[3]])
    data[1000] ^= 1
    server.files[OPENAI[3]] = bytes(data)
    with pytest.raises(AssetUnavailableError, match="checksum mismatch"):
        load_gpt2("gpt2")
    assert not (tmp_path / "cache" / "weights" / "gpt2" / "gpt2" / "openai" / OPENAI[3].split("/")[-1]).exists()


def test_unreachable_network_explains_the_fixes(server, monkeypatch, tmp_path):
    monkeypatch.setenv("LLMFS_HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("LLMFS_OPENAI_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(AssetUnavailableError) as error:
        load_gpt2("gpt2-medium")
    message = str(error.value)
    folder = tmp_path / "cache" / "weights" / "gpt2" / "gpt2-medium"
    assert "Could not get the pretrained gpt2-medium weights" in message
    assert message.count("cannot reach") == 2
    assert "http://127.0.0.1:9/openai-community/gpt2-medium/resolve/main/config.json" in message
    assert "http://127.0.0.1:9/gpt-2/models/355M/" in message
    assert "load_gpt2('/path/to/folder')" in message and str(folder) in message
    assert "LLMFS_CACHE_DIR" in message and "LLMFS_HF_ENDPOINT" in message
    assert server.requests == []


def test_offline_mode_skips_downloads_and_says_so(server, monkeypatch):
    monkeypatch.setenv("LLMFS_OFFLINE", "1")
    with pytest.raises(AssetUnavailableError) as error:
        load_gpt2("gpt2")
    message = str(error.value)
    assert message.count("skipped because LLMFS_OFFLINE=1") == 2
    assert "unset LLMFS_OFFLINE" in message and "not there yet" in message
    assert server.requests == []
