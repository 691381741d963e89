"""The HTTP side of `llmfs serve`: OpenAI- and Ollama-compatible routes, a chat page, guard rails.

Routes (all JSON; the streaming ones send server-sent events or newline-delimited JSON):

    GET  /                      the chat page (static/index.html; plain HTML/JS/CSS, no CDN)
    GET  /health                {"status": "ok", ...} with the queue's state (no API key needed)
    GET  /v1/models             OpenAI: the served model
    POST /v1/completions        OpenAI: continue a prompt          (stream: server-sent events)
    POST /v1/chat/completions   OpenAI: answer a conversation      (stream: server-sent events)
    POST /api/generate          Ollama: continue / answer a prompt (stream: NDJSON, the default)
    POST /api/chat              Ollama: answer a conversation      (stream: NDJSON, the default)
    GET  /api/tags              Ollama: the served model
    GET  /docs, /openapi.json   the OpenAPI schema (FastAPI's page; its scripts come from a CDN)

Every error is a 4xx/5xx in the API's own format: ``{"error": {"message", "type", "param",
"code"}}`` under /v1 (what the `openai` client parses) and ``{"error": "message"}`` under /api
(Ollama's). Guard rails (`Guard`): an optional API key (``Authorization: Bearer KEY``), a limit
on the request body's size, and, through the engine, on max_tokens, the prompt's length (the
model's context) and the number of requests in the house (429 when full). Requests never name
files: the "model" field is only compared with the served model's names.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from typing import Any, AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_from_scratch.serving.engine import (
    Engine,
    EngineClosedError,
    EngineFullError,
    Finished,
    RequestHandle,
    SamplingParams,
    TextDelta,
)
from llm_from_scratch.serving.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaOptions,
    OllamaShowRequest,
)

log = logging.getLogger("llmfs.serve")

DEFAULT_MAX_BODY_BYTES = 1_000_000
#: Ollama's own sampling defaults (its /api routes behave like Ollama when a client sets nothing).
OLLAMA_DEFAULTS = {"temperature": 0.8, "top_p": 0.9, "top_k": 40}


class APIError(Exception):
    """An error to send to the client (rendered in the format of the API it called)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/")


def error_body(path: str, message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    if is_ollama_path(path):
        return {"error": message}
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(path: str, error: APIError) -> JSONResponse:
    return JSONResponse(error_body(path, error.message, error.type, error.param, error.code),
                        status_code=error.status, headers=error.headers)


# ---------------------------------------------------------------------------------------------
# The served model
# ---------------------------------------------------------------------------------------------

@dataclass
class ServedModel:
    """The engine plus what the routes need to know about its model."""

    engine: Engine
    names: list[str]                     # names[0] is the id; a request may use any of them
    chat_template: str | None = None
    max_tokens_limit: int = 512          # the most tokens one request may ask for
    family: str = "gpt"
    parameters: int = 0
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def from_loaded(cls, loaded, engine: Engine, names: Sequence[str] | None = None,
                    max_tokens_limit: int = 512) -> "ServedModel":
        model = loaded.model
        parameters = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        family = "llama" if type(model).__name__.lower().startswith("llama") else "gpt"
        return cls(engine, list(names or [loaded.name]), loaded.chat_template, max_tokens_limit, family, parameters)

    @property
    def id(self) -> str:
        return self.names[0]

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    def check_name(self, name: str) -> None:
        """Requests must name the served model (its id, an alias, or Ollama-style "name:latest")."""
        if name in self.names or (name.endswith(":latest") and name[:-len(":latest")] in self.names):
            return
        raise APIError(404, f"model {name!r} is not served here: this server serves {', '.join(map(repr, self.names))}. "
                            "Use that name (GET /v1/models or /api/tags lists it), or start the server with "
                            f"--served_model_name {name} to answer to this name.",
                       type="invalid_request_error", param="model", code="model_not_found")

    def plan_max_tokens(self, prompt_len: int, requested: int | None, *, clamp: bool = False) -> int:
        """How many tokens a request may generate: its own max_tokens, within the server's limit
        and the context the prompt leaves. `clamp` (Ollama) lowers instead of refusing."""
        context = self.engine.context_length
        room = context - prompt_len
        if room < 1:
            raise APIError(400, f"the prompt has {prompt_len} tokens, but the model's context is {context} tokens, "
                                "which leaves no room for an answer: shorten the prompt (or the conversation).",
                           param="messages", code="context_length_exceeded")
        if requested is None:
            return min(self.max_tokens_limit, room)
        if clamp:
            return max(1, min(requested, self.max_tokens_limit, room))
        if requested > self.max_tokens_limit:
            raise APIError(400, f"max_tokens is {requested}, above this server's limit of {self.max_tokens_limit} "
                                "(set by llmfs serve --max_tokens): ask for fewer tokens.", param="max_tokens")
        if requested > room:
            raise APIError(400, f"the model's context is {context} tokens; the prompt has {prompt_len} and max_tokens "
                                f"asks for {requested} more ({prompt_len + requested} in all). Lower max_tokens to at "
                                f"most {room}, or shorten the prompt.", param="max_tokens",
                           code="context_length_exceeded")
        return requested


# ---------------------------------------------------------------------------------------------
# Guard: API key and body size (plain ASGI, so that streaming and disconnects pass untouched)
# ---------------------------------------------------------------------------------------------

class Guard:
    """ASGI middleware: API key for /v1 and /api routes; a limit on the body size of every request."""

    def __init__(self, app, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key and (path.startswith("/v1/") or path.startswith("/api/")):
            given = headers.get("authorization", "")
            token = given[7:].strip() if given[:7].lower() == "bearer " else headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), self.api_key):
                what = "no API key was given" if not token else "the API key is wrong"
                error = APIError(401, f"{what}: send the server's key as 'Authorization: Bearer KEY' "
                                      "(openai client: api_key=KEY).", type="authentication_error",
                                 code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                return await error_response(path, error)(scope, receive, send)
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            declared = headers.get("content-length")
            too_big = APIError(413, f"the request body is larger than this server's limit of {self.max_body_bytes} "
                                    "bytes (llmfs serve --max_body_bytes)", code="request_too_large")
            if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
                return await error_response(path, too_big)(scope, receive, send)
            # Read the body here (at most the limit), then replay it to the app.
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body_bytes:
                    return await error_response(path, too_big)(scope, receive, send)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            replayed = False
            if path.startswith("/v1/") or path.startswith("/api/"):
                # The API only takes JSON: read the body as JSON whatever the client declared
                # (`curl -d '{...}'` sends application/x-www-form-urlencoded; Ollama accepts it).
                scope = dict(scope)
                scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
                scope["headers"].append((b"content-type", b"application/json"))

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()  # later calls: wait for the client to disconnect

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the routes
# ---------------------------------------------------------------------------------------------

def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _stop_list(stop: str | list[str] | None, api_max: int = 4) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > api_max:
        raise APIError(400, f"at most {api_max} stop strings are allowed, got {len(stops)}", param="stop")
    if any(s == "" for s in stops):
        raise APIError(400, "stop strings must not be empty", param="stop")
    return tuple(stops)


def _refuse(condition: Any, message: str, param: str) -> None:
    if condition:
        raise APIError(400, message, param=param)


def _submit(served: ServedModel, prompts: Sequence[list[int]], params: Sequence[SamplingParams]) -> list[RequestHandle]:
    """Submit requests (all or none): a full queue is a 429, a bad prompt a 400."""
    handles: list[RequestHandle] = []
    try:
        for prompt, p in zip(prompts, params):
            handles.append(served.engine.submit(prompt, p))
    except EngineFullError as exc:
        for handle in handles:
            handle.cancel()
        raise APIError(429, str(exc), type="rate_limit_error", code="server_busy", headers={"Retry-After": "1"}) from None
    except EngineClosedError as exc:
        for handle in handles:
            handle.cancel()
        raise APIError(503, str(exc), type="server_error") from None
    except ValueError as exc:
        for handle in handles:
            handle.cancel()
        raise APIError(400, str(exc), param="prompt") from None
    return handles


def _sampling(served: ServedModel, max_tokens: int, temperature: float, top_p: float | None, top_k: int | None,
              seed: int | None, stop: tuple[str, ...]) -> SamplingParams:
    try:  # stop_token_ids None: the tokenizer's end-of-text / end-of-turn tokens
        return SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                              top_k=top_k or None, seed=seed, stop=stop)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


async def _merged(handles: Sequence[RequestHandle]) -> AsyncIterator[tuple[int, TextDelta | Finished]]:
    """(index, event) from several requests as they come; closing it cancels what is unfinished."""
    if len(handles) == 1:
        try:
            async for event in handles[0].events():
                yield 0, event
        finally:
            if handles[0].finished is None:
                handles[0].cancel()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, handle: RequestHandle):
        try:
            async for event in handle.events():
                await queue.put((index, event))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, h)) for i, h in enumerate(handles)]
    try:
        remaining = len(handles)
        while remaining:
            index, event = await queue.get()
            if isinstance(event, BaseException):
                raise event
            yield index, event
            if isinstance(event, Finished):
                remaining -= 1
    finally:
        for task in tasks:
            task.cancel()
        for handle in handles:
            if handle.finished is None:
                handle.cancel()


async def _collect(handles: Sequence[RequestHandle], request: Request) -> list[Finished]:
    """Wait for every request; if the HTTP client goes away meanwhile, cancel them (free the slots)."""
    task = asyncio.ensure_future(asyncio.gather(*(h.result() for h in handles)))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise APIError(499, "the client disconnected")
    except APIError:
        raise
    except EngineClosedError as exc:
        raise APIError(503, str(exc), type="server_error") from None
    except RuntimeError as exc:
        raise APIError(500, str(exc), type="server_error") from None
    finally:
        task.cancel()  # no-op when done
        for handle in handles:  # no-op for finished ones; frees the others (client gone, or one failed)
            handle.cancel()


def continuation_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids that make the model *continue* the last message, an assistant message already begun
    ("prefill": e.g. "Score:" so that a small model answers with a number).

    The conversation before it is rendered with the chat template, up to the start of the
    assistant's turn, and the message's text is appended without closing the turn.
    """
    from llm_from_scratch.chat_template import render_chat

    text = render_chat(tokenizer, messages[:-1], add_generation_prompt=True) + messages[-1]["content"]
    return tokenizer.encode(text, allowed_special="all")


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _openai_stream(handles: Sequence[RequestHandle], prelude: Sequence[dict[str, Any]], delta_chunk, finish_chunk,
                   usage_chunk=None) -> StreamingResponse:
    """OpenAI's server-sent events for running requests (completions and chat alike): the prelude
    chunks, one chunk per text delta and per finished choice, a usage chunk if asked for (it gets
    the completion tokens), then ``[DONE]``. A failure is reported in the stream itself."""
    async def events():
        completion_tokens = 0
        try:
            for first in prelude:
                yield _sse(first)
            async for index, event in _merged(handles):
                if isinstance(event, TextDelta):
                    yield _sse(delta_chunk(index, event.text))
                else:
                    completion_tokens += event.completion_tokens
                    yield _sse(finish_chunk(index, event.reason))
            if usage_chunk is not None:
                yield _sse(usage_chunk(completion_tokens))
        except Exception as exc:  # noqa: BLE001 - reported in the stream
            yield _sse(error_body("/v1", f"generation failed: {exc}", "server_error"))
        yield "data: [DONE]\n\n"
    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _openai_unsupported(body) -> None:
    _refuse(body.presence_penalty not in (None, 0, 0.0), "presence_penalty is not supported (leave it out or 0)",
            "presence_penalty")
    _refuse(body.frequency_penalty not in (None, 0, 0.0), "frequency_penalty is not supported (leave it out or 0)",
            "frequency_penalty")
    _refuse(body.logit_bias, "logit_bias is not supported", "logit_bias")


# ---------------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------------

def create_app(served: ServedModel, *, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `served`. Run it with uvicorn (`llmfs serve` does)."""
    from llm_from_scratch import __version__
    from llm_from_scratch.chat_template import ChatTemplateError, encode_chat

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.engine.start()
        yield
        served.engine.shutdown()

    app = FastAPI(title="llmfs serve", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="OpenAI- and Ollama-compatible API for a model of llm-from-scratch.")
    app.state.served = served
    static_dir = resources.files("llm_from_scratch.serving") / "static"

    # ---- errors, each in the caller's API format ----

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            if error.get("type") == "json_invalid":
                detail = (error.get("ctx") or {}).get("error", "")
                problems.append(f"the request body is not valid JSON ({detail})" if detail
                                else "the request body is not valid JSON")
                continue
            given = error.get("input")
            shown = "" if error.get("type") == "missing" else f" (got {json.dumps(given)[:60]})" \
                if isinstance(given, (str, int, float, bool, type(None))) else ""
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}{shown}")
        first = exc.errors()[0] if exc.errors() else {}
        param = None if first.get("type") == "json_invalid" else \
            ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        return error_response(request.url.path, APIError(400, "; ".join(problems) or "invalid request", param=param))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        message = {404: f"there is no {request.url.path} here (see /docs for the routes)",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(request.url.path, APIError(exc.status_code, message, headers=exc.headers))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug: say so, in the API's format
        log.exception("unexpected error")
        return error_response(request.url.path, APIError(500, f"internal error: {type(exc).__name__}: {exc}",
                                                         type="server_error"))

    # ---- page and health ----

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static_dir / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    @app.get("/health", tags=["server"])
    async def health():
        return {"status": "ok", "model": served.id, "max_batch_size": served.engine.max_batch_size,
                "context_length": served.engine.context_length, "max_tokens_limit": served.max_tokens_limit,
                **served.engine.load, "stats": dict(served.engine.stats)}

    # ---- OpenAI ----

    def model_card() -> dict[str, Any]:
        return {"id": served.id, "object": "model", "created": served.created, "owned_by": "llmfs",
                "context_length": served.engine.context_length}

    @app.get("/v1/models", tags=["OpenAI"])
    async def list_models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}", tags=["OpenAI"])
    async def get_model(model_id: str):
        served.check_name(model_id)
        return model_card()

    @app.post("/v1/completions", tags=["OpenAI"])
    async def completions(body: CompletionRequest, request: Request):
        served.check_name(body.model)
        _openai_unsupported(body)
        _refuse(body.logprobs is not None, "logprobs is not supported", "logprobs")
        _refuse(body.suffix, "suffix (fill-in-the-middle) is not supported", "suffix")
        _refuse(body.best_of not in (None, 1, body.n), "best_of is not supported", "best_of")
        if isinstance(body.prompt, str):
            texts: list[str | list[int]] = [body.prompt]
        elif body.prompt and all(isinstance(t, int) for t in body.prompt):
            texts = [list(body.prompt)]
        else:
            texts = list(body.prompt)
        _refuse(not texts, "prompt is an empty list: give a text (or a list of texts or token ids)", "prompt")
        tokenizer = served.tokenizer

        def encode(item):
            return list(item) if isinstance(item, list) else tokenizer.encode(item, allowed_special="all")
        try:
            prompts = await run_in_threadpool(lambda: [encode(t) for t in texts])
        except ValueError as exc:
            raise APIError(400, f"the prompt cannot be encoded: {exc}", param="prompt") from None
        vocab = served.engine.model.cfg.vocab_size
        for prompt in prompts:
            _refuse(not prompt, "the prompt is empty: give at least one token of text", "prompt")
            bad = [t for t in prompt if not 0 <= t < vocab]
            _refuse(bad, f"token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", "prompt")
        stop = _stop_list(body.stop)
        jobs, params = [], []
        for prompt in prompts:
            max_tokens = served.plan_max_tokens(len(prompt), body.max_tokens)
            for j in range(body.n):
                seed = None if body.seed is None else body.seed + j
                jobs.append(prompt)
                params.append(_sampling(served, max_tokens, 1.0 if body.temperature is None else body.temperature,
                                        body.top_p, body.top_k, seed, stop))
        prompt_texts = [t if isinstance(t, str) else tokenizer.decode(t) for t in texts] if body.echo else []
        handles = _submit(served, jobs, params)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        prompt_tokens = sum(len(p) for p in prompts)

        def chunk(index: int, text: str, finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "text_completion", "created": created, "model": served.id,
                    "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            usage = None
            if body.stream_options and body.stream_options.include_usage:
                usage = lambda completion_tokens: {"id": rid, "object": "text_completion", "created": created,  # noqa: E731
                                                   "model": served.id, "choices": [],
                                                   "usage": _usage(prompt_tokens, completion_tokens)}
            echoed = [chunk(i, prompt_texts[i // body.n], None) for i in range(len(handles))] if body.echo else []
            return _openai_stream(handles, echoed, lambda i, text: chunk(i, text, None),
                                  lambda i, reason: chunk(i, "", reason), usage)

        results = await _collect(handles, request)
        choices = [{"text": (prompt_texts[i // body.n] if body.echo else "") + r.text, "index": i, "logprobs": None,
                    "finish_reason": r.reason} for i, r in enumerate(results)]
        return {"id": rid, "object": "text_completion", "created": created, "model": served.id, "choices": choices,
                "usage": _usage(prompt_tokens, sum(r.completion_tokens for r in results))}

    def chat_prompt(messages: list[dict[str, str]], continue_final: bool = False) -> list[int]:
        try:
            if continue_final:
                return continuation_prompt(served.tokenizer, messages)
            return encode_chat(served.tokenizer, messages)
        except ChatTemplateError as exc:
            raise APIError(400, str(exc), param="messages") from None
        except ValueError as exc:
            raise APIError(400, f"the messages cannot be encoded: {exc}", param="messages") from None

    @app.post("/v1/chat/completions", tags=["OpenAI"])
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        served.check_name(body.model)
        _openai_unsupported(body)
        _refuse(body.logprobs, "logprobs is not supported", "logprobs")
        _refuse(body.tools, "tools (function calling) are not supported", "tools")
        _refuse(body.response_format and body.response_format.get("type") not in (None, "text"),
                "response_format other than text (JSON mode) is not supported", "response_format")
        messages = []
        for i, m in enumerate(body.messages):
            content = m.content
            if isinstance(content, list):
                _refuse(any(part.type != "text" or part.text is None for part in content),
                        f"messages[{i}]: only text content parts are supported", "messages")
                content = "".join(part.text for part in content)
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
        _refuse(body.continue_final_message and messages[-1]["role"] != "assistant",
                "continue_final_message needs an assistant message last (the start of the answer)", "messages")
        prompt = await run_in_threadpool(chat_prompt, messages, body.continue_final_message)
        max_tokens = served.plan_max_tokens(len(prompt), body.max_completion_tokens or body.max_tokens)
        stop = _stop_list(body.stop)
        temperature = 1.0 if body.temperature is None else body.temperature
        params = [_sampling(served, max_tokens, temperature, body.top_p, body.top_k,
                            None if body.seed is None else body.seed + j, stop) for j in range(body.n)]
        handles = _submit(served, [prompt] * body.n, params)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(index: int, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
            return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": served.id,
                    "system_fingerprint": None,
                    "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        if body.stream:
            usage = None
            if body.stream_options and body.stream_options.include_usage:
                usage = lambda completion_tokens: {"id": rid, "object": "chat.completion.chunk",  # noqa: E731
                                                   "created": created, "model": served.id, "choices": [],
                                                   "usage": _usage(len(prompt), completion_tokens)}
            roles = [chunk(i, {"role": "assistant", "content": ""}, None) for i in range(len(handles))]
            return _openai_stream(handles, roles, lambda i, text: chunk(i, {"content": text}, None),
                                  lambda i, reason: chunk(i, {}, reason), usage)

        results = await _collect(handles, request)
        choices = [{"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": None,
                    "finish_reason": r.reason} for i, r in enumerate(results)]
        return {"id": rid, "object": "chat.completion", "created": created, "model": served.id,
                "system_fingerprint": None, "choices": choices,
                "usage": _usage(len(prompt), sum(r.completion_tokens for r in results))}

    # ---- Ollama ----

    def ollama_params(options: OllamaOptions | None, prompt_len: int) -> SamplingParams:
        o = options or OllamaOptions()
        requested = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
        if requested == 0:
            raise APIError(400, "num_predict 0 generates nothing: leave it out or give a positive number")
        max_tokens = served.plan_max_tokens(prompt_len, requested, clamp=True)
        pick = lambda name: getattr(o, name) if getattr(o, name) is not None else OLLAMA_DEFAULTS[name]  # noqa: E731
        return _sampling(served, max_tokens, pick("temperature"), pick("top_p"), pick("top_k"), o.seed,
                         _stop_list(o.stop, api_max=16))

    def ollama_stats(result: Finished) -> dict[str, Any]:
        ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
        return {"total_duration": ns(result.total_s), "load_duration": ns(result.queued_s),
                "prompt_eval_count": result.prompt_tokens, "prompt_eval_duration": ns(result.prefill_s),
                "eval_count": result.completion_tokens, "eval_duration": ns(result.decode_s)}

    def ndjson(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
        async def encoded():
            async for line in lines:
                yield json.dumps(line, ensure_ascii=False) + "\n"
        return StreamingResponse(encoded(), media_type="application/x-ndjson")

    @app.post("/api/generate", tags=["Ollama"])
    async def ollama_generate(body: OllamaGenerateRequest, request: Request):
        served.check_name(body.model)
        _refuse(body.images, "images are not supported: this is a text model", "images")
        _refuse(body.template, "custom templates are not supported (the model's own chat template is used); "
                               "use raw: true with a prompt you formatted yourself", "template")
        _refuse(body.suffix, "suffix (fill-in-the-middle) is not supported", "suffix")
        _refuse(body.format, "format (JSON mode) is not supported", "format")
        if not body.prompt and not body.context:  # Ollama's "load the model" request
            return {"model": body.model, "created_at": _now_iso(), "response": "", "done": True, "done_reason": "load"}
        tokenizer = served.tokenizer

        def encode() -> list[int]:
            if not body.raw and served.chat_template is not None:
                messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
                           [{"role": "user", "content": body.prompt}]
                return chat_prompt(messages)
            text = f"{body.system}\n\n{body.prompt}" if body.system and not body.raw else body.prompt
            return tokenizer.encode(text, allowed_special="all") if text else []
        try:
            prompt = list(body.context or []) + await run_in_threadpool(encode)
        except ValueError as exc:
            raise APIError(400, f"the prompt cannot be encoded: {exc}", param="prompt") from None
        _refuse(not prompt, "the prompt is empty", "prompt")
        params = ollama_params(body.options, len(prompt))
        (handle,) = _submit(served, [prompt], [params])

        def final(result: Finished, response: str) -> dict[str, Any]:
            return {"model": body.model, "created_at": _now_iso(), "response": response, "done": True,
                    "done_reason": result.reason, "context": prompt + result.token_ids, **ollama_stats(result)}

        if body.stream:
            async def lines():
                try:
                    async for _, event in _merged([handle]):
                        if isinstance(event, TextDelta):
                            yield {"model": body.model, "created_at": _now_iso(), "response": event.text, "done": False}
                        else:
                            yield final(event, "")
                except Exception as exc:  # noqa: BLE001 - reported in the stream
                    yield {"error": f"generation failed: {exc}"}
            return ndjson(lines())
        (result,) = await _collect([handle], request)
        return final(result, result.text)

    @app.post("/api/chat", tags=["Ollama"])
    async def ollama_chat(body: OllamaChatRequest, request: Request):
        served.check_name(body.model)
        _refuse(body.tools, "tools (function calling) are not supported", "tools")
        _refuse(body.format, "format (JSON mode) is not supported", "format")
        _refuse(any(m.images for m in body.messages), "images are not supported: this is a text model", "messages")
        if not body.messages:  # Ollama's "load the model" request
            return {"model": body.model, "created_at": _now_iso(), "message": {"role": "assistant", "content": ""},
                    "done": True, "done_reason": "load"}
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
        # As Ollama does: a last assistant message is the beginning of the answer, to be continued.
        prompt = await run_in_threadpool(chat_prompt, messages, messages[-1]["role"] == "assistant")
        params = ollama_params(body.options, len(prompt))
        (handle,) = _submit(served, [prompt], [params])

        def message(text: str) -> dict[str, str]:
            return {"role": "assistant", "content": text}

        if body.stream:
            async def lines():
                try:
                    async for _, event in _merged([handle]):
                        if isinstance(event, TextDelta):
                            yield {"model": body.model, "created_at": _now_iso(), "message": message(event.text),
                                   "done": False}
                        else:
                            yield {"model": body.model, "created_at": _now_iso(), "message": message(""),
                                   "done": True, "done_reason": event.reason, **ollama_stats(event)}
                except Exception as exc:  # noqa: BLE001 - reported in the stream
                    yield {"error": f"generation failed: {exc}"}
            return ndjson(lines())
        (result,) = await _collect([handle], request)
        return {"model": body.model, "created_at": _now_iso(), "message": message(result.text), "done": True,
                "done_reason": result.reason, **ollama_stats(result)}

    def ollama_card() -> dict[str, Any]:
        size = served.parameters * 4
        return {"name": served.id, "model": served.id,
                "modified_at": datetime.fromtimestamp(served.created, timezone.utc).isoformat().replace("+00:00", "Z"),
                "size": size, "digest": uuid.uuid5(uuid.NAMESPACE_URL, served.id).hex,
                "details": {"format": "pytorch", "family": served.family, "families": [served.family],
                            "parameter_size": f"{served.parameters / 1e6:.0f}M", "quantization_level": "F32"}}

    @app.get("/api/tags", tags=["Ollama"])
    async def ollama_tags():
        return {"models": [ollama_card()]}

    @app.post("/api/show", tags=["Ollama"])
    async def ollama_show(body: OllamaShowRequest):
        served.check_name(body.model or body.name or "")
        card = ollama_card()
        return {"details": card["details"], "template": served.chat_template or "",
                "model_info": {"context_length": served.engine.context_length}, "modified_at": card["modified_at"]}

    @app.get("/api/version", tags=["Ollama"])
    async def ollama_version():
        return {"version": __version__}

    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    return app


# ---------------------------------------------------------------------------------------------
# Running the app
# ---------------------------------------------------------------------------------------------

class BackgroundServer:
    """Serve an app with uvicorn in a background thread (tests, notebooks, the docs' examples).

        with BackgroundServer(app) as server:   # port 0: a free port, see server.url
            httpx.get(server.url + "/v1/models")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.app, self.host, self.port, self.log_level = app, host, port, log_level
        self.server = None
        self.thread = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        import socket
        import threading

        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level=self.log_level, lifespan="on", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="llmfs-uvicorn")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start (see the log above)")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
