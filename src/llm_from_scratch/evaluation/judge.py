"""LLM-as-a-judge: another model scores each answer of ours from 0 to 100 against the reference answer.

After instruction fine-tuning (chapter 7) the answers are free text, so "accuracy" does not apply.
The material's way out: show a stronger model the instruction, the correct output and our model's
response, ask for a score from 0 to 100, and average the scores over the test set:

    Given the input `<instruction and input>` and correct output `<reference>`, score the model
    response `<our answer>` on a scale from 0 to 100, where 100 is the best score. Respond with
    the integer number only.

Three kinds of judge:

* `OllamaJudge`: a model served by Ollama (``POST /api/chat``), ``llama3`` on
  http://localhost:11434 by default, as in the material. Our own server answers the same API:
  ``llmfs serve --model ... --port 11434 --served_model_name llama3`` stands in for Ollama.
* `OpenAIJudge`: any OpenAI-compatible ``/chat/completions`` endpoint (``OPENAI_BASE_URL``,
  ``OPENAI_API_KEY``, ``LLMFS_JUDGE_MODEL``), our ``llmfs serve`` included.
* `LocalJudge`: one of our own models, in this process (``load_model``). With the model available
  here, SmolLM2-135M-Instruct, this is a **weak judge**: a 135M model barely follows the
  instruction and its numbers say little about quality. Use it to check the plumbing, not to
  compare models; the report says so.

A reply without a readable score is asked again (``retries``, default 2; the first try is greedy,
retries sample with ``retry_temperature`` so they can differ), then recorded as unscored (None),
never silently dropped: the report counts them. A judge that is not running is a
`JudgeUnavailableError` saying how to start it.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

DEFAULT_OLLAMA_HOST = "http://localhost:11434"
DEFAULT_OLLAMA_MODEL = "llama3"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
JUDGE_MODEL_ENV = "LLMFS_JUDGE_MODEL"
SEED = 123  # the material's judge seed

PROMPT_TEMPLATE = ("Given the input `{input}` and correct output `{output}`, score the model response "
                   "`{response}` on a scale from 0 to 100, where 100 is the best score. "
                   "Respond with the integer number only.")


class JudgeUnavailableError(RuntimeError):
    """The judge cannot be reached or refuses (not running, no such model, wrong key)."""


class JudgeError(RuntimeError):
    """The judge answered with an error for one request (the entry is retried, then unscored)."""


# ---------------------------------------------------------------------------------------------
# The prompt and the reply
# ---------------------------------------------------------------------------------------------

def alpaca_format_input(entry: Mapping[str, Any]) -> str:
    """The Alpaca-style instruction text (the material's `format_input`): the fallback formatter."""
    text = ("Below is an instruction that describes a task. Write a response that appropriately completes "
            f"the request.\n\n### Instruction:\n{entry['instruction']}")
    if entry.get("input"):
        text += f"\n\n### Input:\n{entry['input']}"
    return text


def default_format_input() -> Callable[[Mapping[str, Any]], str]:
    """The project's instruction formatter (`llm_from_scratch.data.instructions.format_input`), or
    the Alpaca fallback above if that module is not there."""
    try:
        from llm_from_scratch.data.instructions import format_input
    except ImportError:
        return alpaca_format_input
    return format_input


def judge_prompt(entry: Mapping[str, Any], response_key: str = "model_response", *,
                 format_input: Callable[[Mapping[str, Any]], str] | None = None, output_key: str = "output") -> str:
    """The material's judge prompt for one entry."""
    formatter = format_input or default_format_input()
    return PROMPT_TEMPLATE.format(input=formatter(entry), output=entry[output_key], response=entry[response_key])


_SCALE = re.compile(r"\b0\s*(?:-|–|to|and)\s*100\b|(?:/|\bout of\b|\bof\b)\s*100\b", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])-?\d+(?:\.\d+)?(?![\d.]*\d)")


def parse_score(reply: str) -> int | None:
    """The score in a judge's reply (0..100), or None if there is none or it is ambiguous.

    "85", "85.", "**85**", "Score: 85/100", "I'd give it 85 out of 100" -> 85. Mentions of the
    scale itself ("0 to 100", "/100") are ignored; a reply with several different numbers
    ("2 + 2 = 4, so 100") is ambiguous: None. Decimals are rounded half up.
    """
    if not isinstance(reply, str):
        return None
    text = _SCALE.sub(" ", reply)
    values = {float(m) for m in _NUMBER.findall(text)}
    if len(values) != 1:
        return None
    value = values.pop()
    if not 0 <= value <= 100:
        return None
    return int(math.floor(value + 0.5))


# ---------------------------------------------------------------------------------------------
# Judges
# ---------------------------------------------------------------------------------------------

class Judge:
    """Something that answers a prompt. `attempt` 0 is the first try (greedy), then retries.

    `answer_prefix` (e.g. "Score:") begins the judge's answer for it, and the model continues from
    there ("prefill"). Small models that ignore "respond with the integer number only" and repeat
    the response instead then write a number. Ollama and `llmfs serve` continue a last assistant
    message; for other OpenAI-compatible servers it needs vLLM's `continue_final_message` extension.
    """

    name = "judge"
    weak = False
    retry_temperature = 0.7
    answer_prefix: str | None = None

    def messages(self, prompt: str) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": prompt}]
        if self.answer_prefix:
            messages.append({"role": "assistant", "content": self.answer_prefix})
        return messages

    def ask(self, prompt: str, attempt: int = 0) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def sampling(self, attempt: int) -> tuple[float, int]:
        """(temperature, seed) for an attempt: greedy first, then sampling with a new seed."""
        return (0.0 if attempt == 0 else self.retry_temperature), SEED + attempt

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


def _normalize_host(host: str) -> str:
    host = host.strip().rstrip("/")
    if not re.match(r"^https?://", host):
        host = "http://" + host
    if re.match(r"^https?://[^/:]+$", host):  # OLLAMA_HOST may omit the port
        host += ":11434"
    return host


@dataclass
class _Reply:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def _http_post(url: str, payload: dict[str, Any], headers: dict[str, str], timeout: float,
               how_to_start: str) -> _Reply:
    """POST JSON (urllib: no extra dependency); connection problems become JudgeUnavailableError
    (with how to start the judge), HTTP errors a reply with their status."""
    import socket
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return _Reply(response.status, response.read().decode("utf-8", errors="replace"))
    except urllib.error.HTTPError as error:
        return _Reply(error.code, error.read().decode("utf-8", errors="replace"))
    except (TimeoutError, socket.timeout):
        raise JudgeUnavailableError(f"the judge at {url} did not answer within {timeout:.0f} s. {how_to_start}") from None
    except (urllib.error.URLError, ConnectionError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise JudgeUnavailableError(f"no judge answers at {url} ({reason}). {how_to_start}") from None


def _error_message(response: _Reply) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    error = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)[:300]


class OllamaJudge(Judge):
    """A model served by Ollama's HTTP API (``POST {host}/api/chat``), as in the material.

    `host`: default ``$OLLAMA_HOST`` or http://localhost:11434. `max_tokens` becomes Ollama's
    ``num_predict`` when given. Our ``llmfs serve`` answers this API too.
    """

    def __init__(self, model: str = DEFAULT_OLLAMA_MODEL, host: str | None = None, *, timeout: float = 300.0,
                 max_tokens: int | None = None, num_ctx: int = 2048, api_key: str | None = None,
                 answer_prefix: str | None = None):
        self.model, self.answer_prefix = model, answer_prefix
        self.host = _normalize_host(host or os.environ.get("OLLAMA_HOST") or DEFAULT_OLLAMA_HOST)
        self.timeout, self.max_tokens, self.num_ctx, self.api_key = timeout, max_tokens, num_ctx, api_key
        self.name = f"ollama {model} at {self.host}"

    def how_to_start(self) -> str:
        return (f"Start Ollama with `ollama serve` and get the model with `ollama pull {self.model}`, or serve one "
                f"of ours in its place: `llmfs serve --model smollm2-135m-instruct --port "
                f"{self.host.rsplit(':', 1)[-1]} --served_model_name {self.model}`.")

    def ask(self, prompt: str, attempt: int = 0) -> str:
        temperature, seed = self.sampling(attempt)
        options: dict[str, Any] = {"seed": seed, "temperature": temperature, "num_ctx": self.num_ctx}
        if self.max_tokens:
            options["num_predict"] = self.max_tokens
        payload = {"model": self.model, "messages": self.messages(prompt), "options": options, "stream": False}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = _http_post(f"{self.host}/api/chat", payload, headers, self.timeout, self.how_to_start())
        if response.status_code == 404:
            raise JudgeUnavailableError(f"the server at {self.host} has no model {self.model!r} "
                                        f"({_error_message(response)}). {self.how_to_start()}")
        if response.status_code == 401:
            raise JudgeUnavailableError(f"the server at {self.host} wants an API key: pass api_key=...")
        if response.status_code != 200:
            raise JudgeError(f"HTTP {response.status_code}: {_error_message(response)}")
        # stream: false gives one JSON object; a server that streams anyway sends one per line
        content = []
        for line in response.text.splitlines():
            if line.strip():
                message = json.loads(line)
                if "error" in message:
                    raise JudgeError(str(message["error"]))
                content.append(message.get("message", {}).get("content", ""))
        return "".join(content)


class OpenAIJudge(Judge):
    """Any OpenAI-compatible chat endpoint (``POST {base_url}/chat/completions``).

    Defaults from the environment: ``OPENAI_BASE_URL`` (else OpenAI's), ``OPENAI_API_KEY``,
    ``LLMFS_JUDGE_MODEL`` for the model.
    """

    def __init__(self, model: str | None = None, base_url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 300.0, max_tokens: int | None = 16, answer_prefix: str | None = None):
        self.answer_prefix = answer_prefix
        self.model = model or os.environ.get(JUDGE_MODEL_ENV)
        if not self.model:
            raise ValueError(f"name the judge model: OpenAIJudge(model=...), judge='openai:MODEL', or set "
                             f"${JUDGE_MODEL_ENV} (e.g. gpt-4o-mini, or the name `llmfs serve` prints)")
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL).rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_tokens = timeout, max_tokens
        self.name = f"{self.model} at {self.base_url}"

    def how_to_start(self) -> str:
        return ("Check OPENAI_BASE_URL, or start an OpenAI-compatible server, for instance ours: "
                "`llmfs serve --model smollm2-135m-instruct --port 8000` with "
                "OPENAI_BASE_URL=http://127.0.0.1:8000/v1.")

    def ask(self, prompt: str, attempt: int = 0) -> str:
        temperature, seed = self.sampling(attempt)
        payload: dict[str, Any] = {"model": self.model, "messages": self.messages(prompt),
                                   "temperature": temperature, "seed": seed}
        if self.answer_prefix:
            payload["continue_final_message"] = True
        if self.max_tokens:
            payload["max_tokens"] = self.max_tokens
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        response = _http_post(f"{self.base_url}/chat/completions", payload, headers, self.timeout,
                              self.how_to_start())
        if response.status_code in (401, 403):
            raise JudgeUnavailableError(f"{self.base_url} refused the API key ({_error_message(response)}): "
                                        "set OPENAI_API_KEY")
        if response.status_code == 404:
            raise JudgeUnavailableError(f"{self.base_url} has no model {self.model!r} or no /chat/completions "
                                        f"({_error_message(response)}). {self.how_to_start()}")
        if response.status_code != 200:
            raise JudgeError(f"HTTP {response.status_code}: {_error_message(response)}")
        try:
            return response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise JudgeError(f"not an OpenAI chat completion: {response.text[:200]}") from None


class LocalJudge(Judge):
    """One of our models, in this process: ``LocalJudge("smollm2-135m-instruct")``, ``LocalJudge(
    checkpoint="...")`` or ``LocalJudge(loaded=load_model(...))``. Small models are weak judges.

    Its answer begins with "Score:" by default (`answer_prefix`): SmolLM2-135M-Instruct, asked for
    "the integer number only", repeats the response it should score; after "Score:" it writes a
    number. (That number still says little: it is a weak judge.)
    """

    def __init__(self, model: str | None = None, checkpoint: str | None = None, *, loaded=None,
                 max_tokens: int = 16, device: str | None = None, answer_prefix: str | None = "Score:",
                 dtype: str = "fp32", quantize: str = "none"):
        self.answer_prefix = answer_prefix
        if loaded is None:
            from llm_from_scratch.loading import load_model

            loaded = load_model(model=model, checkpoint=checkpoint, device=device, dtype=dtype, quantize=quantize)
        self.loaded = loaded
        self.max_tokens = max_tokens
        self.name = f"{loaded.name} (in this process)"
        parameters = sum(p.numel() for p in {id(p): p for p in loaded.model.parameters()}.values())
        self.weak = parameters < 3e9  # judges below a few billion parameters follow the rubric poorly

    def ask(self, prompt: str, attempt: int = 0) -> str:
        import torch

        from llm_from_scratch.tokenizers.chat_template import render_chat, stop_token_ids
        from llm_from_scratch.generation import stream_text

        tokenizer = self.loaded.tokenizer
        # the chat up to the start of the answer, then the answer's beginning (if any), left open
        text = render_chat(tokenizer, [{"role": "user", "content": prompt}]) + (self.answer_prefix or "")
        ids = tokenizer.encode(text, allowed_special="all")
        room = self.loaded.context_length - self.max_tokens
        if len(ids) > room:
            raise JudgeError(f"the judge prompt has {len(ids)} tokens, more than the judge's context leaves "
                             f"({room}): the entry is too long for this judge")
        temperature, seed = self.sampling(attempt)
        generator = torch.Generator(device=self.loaded.device).manual_seed(seed)
        return "".join(stream_text(self.loaded.model, tokenizer, ids, self.max_tokens,
                                   stop_ids=stop_token_ids(tokenizer), temperature=temperature, generator=generator))


def make_judge(spec: "str | Judge | None" = None, **options: Any) -> Judge:
    """A judge from a short description; `options` go to its constructor (e.g. answer_prefix="Score:",
    max_tokens=8).

    None or "ollama" (llama3 on localhost:11434), "ollama:MODEL", "ollama:MODEL@http://host:port";
    "openai" (model from $LLMFS_JUDGE_MODEL), "openai:MODEL"; "local:NAME" (a pretrained name
    such as smollm2-135m-instruct) or "local:PATH" (a checkpoint of ours). A `Judge` is returned as is.
    """
    if isinstance(spec, Judge):
        return spec
    if spec is None or spec == "ollama":
        return OllamaJudge(**options)
    kind, _, rest = spec.partition(":")
    if kind == "ollama":
        model, _, host = rest.partition("@")
        return OllamaJudge(model or DEFAULT_OLLAMA_MODEL, host or None, **options)
    if kind == "openai":
        return OpenAIJudge(rest or None, **options)
    if kind == "local" and rest:
        if rest.endswith((".pt", ".safetensors")) or os.path.isfile(rest):
            return LocalJudge(checkpoint=rest, **options)
        return LocalJudge(rest, **options)
    raise ValueError(f"unknown judge {spec!r}: use 'ollama[:MODEL[@HOST]]', 'openai[:MODEL]' or 'local:NAME_OR_CHECKPOINT'")


# ---------------------------------------------------------------------------------------------
# Scoring a set of responses
# ---------------------------------------------------------------------------------------------

WEAK_JUDGE_NOTE = ("note: {name} is a weak judge (a small model): its scores are a plumbing check, not a "
                   "measure of quality. Use a large judge (Ollama's llama3, or an OpenAI-compatible API) for "
                   "numbers you compare.")


@dataclass
class JudgeReport:
    """Scores per entry (None = unscored after the retries) and what they add up to."""

    scores: list[int | None]
    replies: list[str]                 # the judge's last reply per entry
    judge: str
    attempts: list[int] = field(default_factory=list)   # how many asks each entry took
    notes: list[str] = field(default_factory=list)

    @property
    def scored(self) -> int:
        return sum(s is not None for s in self.scores)

    @property
    def unscored(self) -> int:
        return sum(s is None for s in self.scores)

    @property
    def average(self) -> float | None:
        """Mean over the scored entries (None if no entry was scored)."""
        values = [s for s in self.scores if s is not None]
        return sum(values) / len(values) if values else None

    def summary(self) -> str:
        lines = [f"Judge: {self.judge}",
                 f"Number of scores: {self.scored} of {len(self.scores)}"
                 + (f" ({self.unscored} unscored: no number in the judge's replies)" if self.unscored else ""),
                 "Average score: " + (f"{self.average:.2f}" if self.average is not None else "n/a (nothing scored)")]
        for i, (score, reply) in enumerate(zip(self.scores, self.replies)):
            if score is None:
                lines.append(f"  entry {i}: unscored, last reply {reply[:80]!r}")
        return "\n".join(lines + self.notes)


def score_responses(entries: Iterable[Mapping[str, Any]], response_key: str = "model_response",
                    judge: "str | Judge | None" = None, *, retries: int = 2,
                    format_input: Callable[[Mapping[str, Any]], str] | None = None, output_key: str = "output",
                    progress: bool = False) -> JudgeReport:
    """Score every entry's ``entry[response_key]`` against ``entry[output_key]`` with `judge`.

    Each entry needs "instruction" (and optionally "input"; or whatever `format_input` reads), the
    reference output and the response. Returns a `JudgeReport` (``.scores``, ``.average``,
    ``.unscored``). Raises JudgeUnavailableError at once if the judge is not reachable.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    judge = make_judge(judge)
    entries = list(entries)
    formatter = format_input or default_format_input()
    for i, entry in enumerate(entries):
        for key in (output_key, response_key):
            if key not in entry:
                raise ValueError(f"entry {i} has no {key!r} field (it has {sorted(entry)}): "
                                 f"{'generate the responses first' if key == response_key else 'is it the test set?'}")
    report = JudgeReport([], [], judge.name)
    iterator: Sequence[Mapping[str, Any]] | Any = entries
    if progress:
        from tqdm import tqdm

        iterator = tqdm(entries, desc="Scoring entries")
    for entry in iterator:
        prompt = judge_prompt(entry, response_key, format_input=formatter, output_key=output_key)
        score, reply, attempt = None, "", 0
        for attempt in range(retries + 1):
            try:
                reply = judge.ask(prompt, attempt)
            except JudgeError as exc:
                reply = f"(error: {exc})"
                continue
            score = parse_score(reply)
            if score is not None:
                break
        report.scores.append(score)
        report.replies.append(reply)
        report.attempts.append(attempt + 1)
    if judge.weak:
        report.notes.append(WEAK_JUDGE_NOTE.format(name=judge.name))
    return report
