"""What the OpenAI and Ollama routes share: the served model, and running requests on its engine.

* `ServedModel`: the engine plus what the routes need to know (names, chat template, limits), and
  the checks every route makes (the model's name, how many tokens a request may have).
* `sampling_params`: a request's settings as the generation package's `SamplingParams`, with the
  route's defaults from `generation.SURFACE_DEFAULTS` ("openai" or "ollama").
* `submit`, `merged`, `collect`: hand requests to the engine, then follow their events (several
  choices of one request interleaved), and cancel what a departed client no longer wants.

The routes get the served model with ``Depends(served_model)`` (it lives in ``app.state``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import AsyncIterator, Sequence

from fastapi import Request

from llm_from_scratch.generation import SamplingParams, surface_default
from llm_from_scratch.serving.engine import Engine, EngineClosedError, EngineFullError, Finished, RequestHandle, \
    TextDelta
from llm_from_scratch.serving.errors import APIError


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

    def chat_prompt(self, messages: list[dict[str, str]], continue_final: bool = False) -> list[int]:
        """Token ids of a conversation rendered with the chat template (ending with the start of
        the assistant's turn), or, with `continue_final`, continuing its last assistant message."""
        from llm_from_scratch.tokenizers.chat_template import ChatTemplateError, encode_chat

        try:
            if continue_final:
                return continuation_prompt(self.tokenizer, messages)
            return encode_chat(self.tokenizer, messages)
        except ChatTemplateError as exc:
            raise APIError(400, str(exc), param="messages") from None
        except ValueError as exc:
            raise APIError(400, f"the messages cannot be encoded: {exc}", param="messages") from None


def served_model(request: Request) -> ServedModel:
    """FastAPI dependency: the app's served model."""
    return request.app.state.served


def continuation_prompt(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids that make the model *continue* the last message, an assistant message already begun
    ("prefill": e.g. "Score:" so that a small model answers with a number).

    The conversation before it is rendered with the chat template, up to the start of the
    assistant's turn, and the message's text is appended without closing the turn.
    """
    from llm_from_scratch.tokenizers.chat_template import render_chat

    text = render_chat(tokenizer, messages[:-1], add_generation_prompt=True) + messages[-1]["content"]
    return tokenizer.encode(text, allowed_special="all")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def stop_list(stop: str | list[str] | None, api_max: int = 4) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > api_max:
        raise APIError(400, f"at most {api_max} stop strings are allowed, got {len(stops)}", param="stop")
    if any(s == "" for s in stops):
        raise APIError(400, "stop strings must not be empty", param="stop")
    return tuple(stops)


def sampling_params(surface: str, max_tokens: int, temperature: float | None, top_p: float | None,
                    top_k: int | None, seed: int | None, stop: tuple[str, ...]) -> SamplingParams:
    """A request's settings; what it leaves out (None) takes the surface's default. top_k 0 is
    "off", as both APIs have it. The end-of-text/end-of-turn tokens stop it (the engine's default)."""
    def pick(name: str, given):
        return given if given is not None else surface_default(surface, name)
    try:
        return SamplingParams(max_tokens=max_tokens, temperature=pick("temperature", temperature),
                              top_p=pick("top_p", top_p), top_k=pick("top_k", top_k) or None, seed=seed, stop=stop)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def submit(served: ServedModel, prompts: Sequence[list[int]], params: Sequence[SamplingParams]) -> list[RequestHandle]:
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


async def merged(handles: Sequence[RequestHandle]) -> AsyncIterator[tuple[int, TextDelta | Finished]]:
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


async def collect(handles: Sequence[RequestHandle], request: Request) -> list[Finished]:
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
