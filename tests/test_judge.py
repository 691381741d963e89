"""LLM-as-a-judge: the prompt, reading scores, retries, unscored entries, unreachable judges; against
stub servers (Python's http.server, independent of ours) and end to end against `llmfs serve`."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from llm_from_scratch.evaluation.judge import (
    JudgeUnavailableError,
    LocalJudge,
    OllamaJudge,
    OpenAIJudge,
    alpaca_format_input,
    judge_prompt,
    make_judge,
    parse_score,
    score_responses,
)


ENTRIES = [
    {"instruction": "Rewrite the sentence using a simile.", "input": "The car is very fast.",
     "output": "The car is as fast as lightning.", "model_response": "The car is as fast as a cheetah."},
    {"instruction": "Name the author of 'Pride and Prejudice'.", "input": "",
     "output": "Jane Austen.", "model_response": "Jane Austen wrote it."},
    {"instruction": "What is the capital of Italy?", "input": "",
     "output": "Rome.", "model_response": "Paris."},
]


@pytest.mark.parametrize("reply,score", [
    ("85", 85), (" 85.", 85), ("**85**", 85), ("Score: 85/100", 85), ("I'd give it 85 out of 100.", 85),
    ("On a scale from 0 to 100: 90", 90), ("100", 100), ("0", 0), ("84.5", 85),
    ("2 + 2 = 4, so 100", None), ("no idea", None), ("", None), ("150", None), ("-5", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_the_prompt_is_the_materials():
    entry = ENTRIES[0]
    expected = ("Given the input `Below is an instruction that describes a task. Write a response that "
                "appropriately completes the request.\n\n### Instruction:\nRewrite the sentence using a simile."
                "\n\n### Input:\nThe car is very fast.` and correct output `The car is as fast as lightning.`, "
                "score the model response `The car is as fast as a cheetah.` on a scale from 0 to 100, where 100 "
                "is the best score. Respond with the integer number only.")
    assert judge_prompt(entry, format_input=alpaca_format_input) == expected
    assert "### Input" not in alpaca_format_input(ENTRIES[1])
    assert judge_prompt(entry, format_input=lambda e: "<custom>").startswith("Given the input `<custom>`")


class Stub:
    """A fake judge server: answers each request with the next scripted reply and records the requests."""

    def __init__(self, replies, *, style="ollama", status=None):
        self.replies, self.style, self.status = list(replies), style, list(status or [])
        self.requests = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                status = stub.status.pop(0) if stub.status else 200
                reply = stub.replies.pop(0) if status == 200 else None
                if status != 200:
                    payload = {"error": "model 'llama3' not found"} if stub.style == "ollama" else \
                        {"error": {"message": "boom"}}
                elif stub.style == "ollama":
                    payload = {"model": body["model"], "message": {"role": "assistant", "content": reply}, "done": True}
                else:
                    payload = {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_ollama_judge_scores_retries_and_records_unscored():
    replies = ["85", "I cannot tell", "hmm", "70 out of 100", "x", "y", "z"]
    with Stub(replies) as stub:
        report = score_responses(ENTRIES, judge=OllamaJudge(host=stub.url), format_input=alpaca_format_input)
    assert report.scores == [85, 70, None]
    assert report.attempts == [1, 3, 3] and report.unscored == 1 and report.scored == 2
    assert report.average == pytest.approx(77.5)
    assert report.replies[2] == "z" and "1 unscored" in report.summary() and "77.50" in report.summary()
    first, retry = stub.requests[0], stub.requests[2]
    assert first["path"] == "/api/chat" and first["body"]["model"] == "llama3"
    assert first["body"]["messages"] == [{"role": "user", "content": judge_prompt(ENTRIES[0],
                                                                                   format_input=alpaca_format_input)}]
    assert first["body"]["options"] == {"seed": 123, "temperature": 0.0, "num_ctx": 2048}
    assert retry["body"]["options"]["temperature"] > 0 and retry["body"]["options"]["seed"] != 123


def test_no_retries_and_errors_are_retried():
    with Stub(["nothing", "90"], status=[500]) as stub:
        report = score_responses(ENTRIES[:2], judge=OllamaJudge(host=stub.url), retries=0,
                                 format_input=alpaca_format_input)
    assert report.scores == [None, None] and report.replies[0].startswith("(error")
    with Stub(["90"], status=[500]) as stub:
        report = score_responses(ENTRIES[:1], judge=OllamaJudge(host=stub.url), format_input=alpaca_format_input)
    assert report.scores == [90] and report.attempts == [2]


def test_openai_judge_uses_the_environment(monkeypatch):
    with Stub(["Score: 40/100", "55"], style="openai") as stub:
        monkeypatch.setenv("OPENAI_BASE_URL", stub.url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("LLMFS_JUDGE_MODEL", "judge-model")
        report = score_responses(ENTRIES[:2], judge="openai", format_input=alpaca_format_input)
    assert report.scores == [40, 55]
    request = stub.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
    assert request["body"]["model"] == "judge-model" and request["body"]["temperature"] == 0.0
    monkeypatch.delenv("LLMFS_JUDGE_MODEL")
    with pytest.raises(ValueError, match="LLMFS_JUDGE_MODEL"):
        OpenAIJudge()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_judge_that_is_not_running_says_how_to_start_it(monkeypatch):
    port = free_port()  # nothing listens there
    with pytest.raises(JudgeUnavailableError) as info:
        score_responses(ENTRIES, judge=OllamaJudge(host=f"127.0.0.1:{port}"))
    message = str(info.value)
    assert "ollama serve" in message and "ollama pull llama3" in message and "llmfs serve" in message
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    with pytest.raises(JudgeUnavailableError, match="OPENAI_BASE_URL"):
        score_responses(ENTRIES, judge=OpenAIJudge("m"))
    with Stub([], status=[404]) as stub, pytest.raises(JudgeUnavailableError, match="ollama pull llama3"):
        score_responses(ENTRIES, judge=OllamaJudge(host=stub.url))


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="entry 0 has no 'model_response'"):
        score_responses([{"instruction": "x", "output": "y"}], judge=OllamaJudge())
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("gpt:4")
    assert isinstance(make_judge(None), OllamaJudge) and make_judge("ollama:mistral@h:1").host == "http://h:1"
    assert make_judge("ollama", answer_prefix="Score:", max_tokens=4).answer_prefix == "Score:"


# ---------------------------------------------------------------------------------------------
# End to end: our own server (and our model in-process) as the judge
# ---------------------------------------------------------------------------------------------

def always_says(text: str):
    """A tiny GPT (GPT-2 tokenizer) whose greedy output is always the one token `text`: the final norm
    is switched off (scale 0), so every position ends in its shift, a unit vector, and that token's
    output row is 100 times it (any other row gives a logit of about 0.1 at most)."""
    from llm_from_scratch.model import GPTConfig, GPTModel
    from llm_from_scratch.tokenizers import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    (token,) = tokenizer.encode(text)
    torch.manual_seed(0)
    model = GPTModel(GPTConfig(vocab_size=50257, context_length=512, emb_dim=32, n_heads=2, n_layers=2,
                               drop_rate=0.0)).eval()
    with torch.no_grad():
        direction = torch.randn(32)
        direction /= direction.norm()
        model.final_norm.scale.zero_()
        model.final_norm.shift.copy_(direction)
        model.out_head.weight[token] = 100 * direction
    return model, tokenizer


def serve(model, tokenizer, names=("llama3",)):
    from llm_from_scratch.serving.app import BackgroundServer, ServedModel, create_app
    from llm_from_scratch.serving.engine import Engine

    engine = Engine(model, tokenizer, max_batch_size=4)
    return BackgroundServer(create_app(ServedModel(engine, list(names), None, max_tokens_limit=8))), engine


def test_judge_end_to_end_against_our_server():
    pytest.importorskip("fastapi")
    model, tokenizer = always_says("42")
    background, engine = serve(model, tokenizer)
    with background as server:
        ollama = score_responses(ENTRIES, judge=OllamaJudge(host=server.url, max_tokens=1))
        openai_style = score_responses(ENTRIES, judge=OpenAIJudge("llama3", base_url=server.url + "/v1",
                                                                  api_key="", max_tokens=1))
        prefixed = score_responses(ENTRIES, judge=OllamaJudge(host=server.url, max_tokens=1, answer_prefix="Score:"))
    assert ollama.scores == openai_style.scores == prefixed.scores == [42, 42, 42] and ollama.average == 42
    assert engine.stats["finished"] == 9


def test_unscored_replies_through_our_server_are_retried_then_counted():
    pytest.importorskip("fastapi")
    model, tokenizer = always_says(" hello")
    background, engine = serve(model, tokenizer)
    with background as server:
        report = score_responses(ENTRIES, judge=OllamaJudge(host=server.url, max_tokens=3), retries=2)
    assert report.scores == [None] * 3 and report.unscored == 3 and report.average is None
    assert report.replies == [" hello hello hello"] * 3 and engine.stats["finished"] == 9  # 3 asks each
    assert "n/a" in report.summary()


def test_local_judge_in_process():
    from llm_from_scratch.loading import LoadedModel

    model, tokenizer = always_says("42")
    judge = LocalJudge(loaded=LoadedModel(model, tokenizer, "says-42"), max_tokens=1)
    report = score_responses(ENTRIES, judge=judge)
    assert report.scores == [42, 42, 42] and judge.weak and "weak judge" in report.summary()
