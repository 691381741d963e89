"""The OpenAI-compatible routes (/v1): what the official `openai` client and most tools speak.

    GET  /v1/models             the served model
    POST /v1/completions        continue a prompt          (stream: server-sent events)
    POST /v1/chat/completions   answer a conversation      (stream: server-sent events)

Sampling settings a request leaves out take OpenAI's defaults (``SURFACE_DEFAULTS["openai"]``:
temperature 1). Fields we know but do not implement (logprobs, tools, penalties, ...) are a 400
saying so, never silently ignored. Streams are OpenAI's chunk format, ending with
``data: [DONE]``; an error after the stream started is reported inside the stream.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Sequence

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from llm_from_scratch.serving.engine import RequestHandle, TextDelta
from llm_from_scratch.serving.errors import APIError, error_body, refuse
from llm_from_scratch.serving.schemas import ChatCompletionRequest, CompletionRequest
from llm_from_scratch.serving.served import (ServedModel, collect, merged, sampling_params, served_model, stop_list,
                                             submit)

router = APIRouter(tags=["OpenAI"])


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _stream(handles: Sequence[RequestHandle], prelude: Sequence[dict[str, Any]], delta_chunk, finish_chunk,
            usage_chunk=None) -> StreamingResponse:
    """OpenAI's server-sent events for running requests (completions and chat alike): the prelude
    chunks, one chunk per text delta and per finished choice, a usage chunk if asked for (it gets
    the completion tokens), then ``[DONE]``. A failure is reported in the stream itself."""
    async def events():
        completion_tokens = 0
        try:
            for first in prelude:
                yield _sse(first)
            async for index, event in merged(handles):
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


def _refuse_unsupported(body) -> None:
    refuse(body.presence_penalty not in (None, 0, 0.0), "presence_penalty is not supported (leave it out or 0)",
           "presence_penalty")
    refuse(body.frequency_penalty not in (None, 0, 0.0), "frequency_penalty is not supported (leave it out or 0)",
           "frequency_penalty")
    refuse(body.logit_bias, "logit_bias is not supported", "logit_bias")


def _params(body, max_tokens: int, choice: int, stop: tuple[str, ...]):
    """Choice j of a request with a seed gets seed + j: n choices differ, and each is repeatable."""
    seed = None if body.seed is None else body.seed + choice
    return sampling_params("openai", max_tokens, body.temperature, body.top_p, body.top_k, seed, stop)


def _model_card(served: ServedModel) -> dict[str, Any]:
    return {"id": served.id, "object": "model", "created": served.created, "owned_by": "llmfs",
            "context_length": served.engine.context_length}


@router.get("/v1/models")
async def list_models(served: ServedModel = Depends(served_model)):
    return {"object": "list", "data": [_model_card(served)]}


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, served: ServedModel = Depends(served_model)):
    served.check_name(model_id)
    return _model_card(served)


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, served: ServedModel = Depends(served_model)):
    served.check_name(body.model)
    _refuse_unsupported(body)
    refuse(body.logprobs is not None, "logprobs is not supported", "logprobs")
    refuse(body.suffix, "suffix (fill-in-the-middle) is not supported", "suffix")
    refuse(body.best_of not in (None, 1, body.n), "best_of is not supported", "best_of")
    if isinstance(body.prompt, str):
        texts: list[str | list[int]] = [body.prompt]
    elif body.prompt and all(isinstance(t, int) for t in body.prompt):
        texts = [list(body.prompt)]
    else:
        texts = list(body.prompt)
    refuse(not texts, "prompt is an empty list: give a text (or a list of texts or token ids)", "prompt")
    tokenizer = served.tokenizer

    to_model = getattr(tokenizer, "to_compact", None)   # a compact vocabulary: users hold the tokenizer's ids

    def encode(item):
        if not isinstance(item, list):
            return tokenizer.encode(item, allowed_special="all")
        if to_model is None:
            return list(item)
        refuse(any(not 0 <= t < len(to_model) for t in item),
               f"token ids out of the tokenizer's vocabulary (0..{len(to_model) - 1})", "prompt")
        return [int(to_model[t]) for t in item]
    try:
        prompts = await run_in_threadpool(lambda: [encode(t) for t in texts])
    except ValueError as exc:
        raise APIError(400, f"the prompt cannot be encoded: {exc}", param="prompt") from None
    vocab = served.engine.model.cfg.vocab_size
    for prompt in prompts:
        refuse(not prompt, "the prompt is empty: give at least one token of text", "prompt")
        bad = [t for t in prompt if not 0 <= t < vocab]
        refuse(bad, f"token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", "prompt")
    stop = stop_list(body.stop)
    jobs, params = [], []
    for prompt in prompts:
        max_tokens = served.plan_max_tokens(len(prompt), body.max_tokens)
        for j in range(body.n):
            jobs.append(prompt)
            params.append(_params(body, max_tokens, j, stop))
    prompt_texts = [t if isinstance(t, str) else tokenizer.decode(t) for t in texts] if body.echo else []
    handles = submit(served, jobs, params)
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
        return _stream(handles, echoed, lambda i, text: chunk(i, text, None),
                       lambda i, reason: chunk(i, "", reason), usage)

    results = await collect(handles, request)
    choices = [{"text": (prompt_texts[i // body.n] if body.echo else "") + r.text, "index": i, "logprobs": None,
                "finish_reason": r.reason} for i, r in enumerate(results)]
    return {"id": rid, "object": "text_completion", "created": created, "model": served.id, "choices": choices,
            "usage": _usage(prompt_tokens, sum(r.completion_tokens for r in results))}


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           served: ServedModel = Depends(served_model)):
    served.check_name(body.model)
    _refuse_unsupported(body)
    refuse(body.logprobs, "logprobs is not supported", "logprobs")
    refuse(body.tools, "tools (function calling) are not supported", "tools")
    refuse(body.response_format and body.response_format.get("type") not in (None, "text"),
           "response_format other than text (JSON mode) is not supported", "response_format")
    messages = []
    for i, m in enumerate(body.messages):
        content = m.content
        if isinstance(content, list):
            refuse(any(part.type != "text" or part.text is None for part in content),
                   f"messages[{i}]: only text content parts are supported", "messages")
            content = "".join(part.text for part in content)
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": content or ""})
    refuse(body.continue_final_message and messages[-1]["role"] != "assistant",
           "continue_final_message needs an assistant message last (the start of the answer)", "messages")
    prompt = await run_in_threadpool(served.chat_prompt, messages, body.continue_final_message)
    max_tokens = served.plan_max_tokens(len(prompt), body.max_completion_tokens or body.max_tokens)
    stop = stop_list(body.stop)
    params = [_params(body, max_tokens, j, stop) for j in range(body.n)]
    handles = submit(served, [prompt] * body.n, params)
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
        return _stream(handles, roles, lambda i, text: chunk(i, {"content": text}, None),
                       lambda i, reason: chunk(i, {}, reason), usage)

    results = await collect(handles, request)
    choices = [{"index": i, "message": {"role": "assistant", "content": r.text}, "logprobs": None,
                "finish_reason": r.reason} for i, r in enumerate(results)]
    return {"id": rid, "object": "chat.completion", "created": created, "model": served.id,
            "system_fingerprint": None, "choices": choices,
            "usage": _usage(len(prompt), sum(r.completion_tokens for r in results))}
