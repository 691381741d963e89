"""The Ollama-compatible routes (/api): what Ollama's clients and the material's `query_model` speak.

    POST /api/generate          continue / answer a prompt (stream: NDJSON, the default)
    POST /api/chat              answer a conversation      (stream: NDJSON, the default)
    GET  /api/tags              the served model
    POST /api/show              the served model's details
    GET  /api/version           the server's version

Options a request leaves out take Ollama's own defaults (``SURFACE_DEFAULTS["ollama"]``:
temperature 0.8, top_p 0.9, top_k 40), so code written for Ollama behaves as it expects. As in
Ollama, ``num_predict`` beyond what fits is lowered rather than refused, a request without a
prompt (or messages) is the "load the model" request, and a last assistant message is continued.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from llm_from_scratch.generation import SamplingParams
from llm_from_scratch.serving.engine import Finished, TextDelta
from llm_from_scratch.serving.errors import APIError, refuse
from llm_from_scratch.serving.schemas import OllamaChatRequest, OllamaGenerateRequest, OllamaOptions, OllamaShowRequest
from llm_from_scratch.serving.served import (ServedModel, collect, merged, now_iso, sampling_params, served_model,
                                             stop_list, submit)

router = APIRouter(tags=["Ollama"])


def _params(served: ServedModel, options: OllamaOptions | None, prompt_len: int) -> SamplingParams:
    o = options or OllamaOptions()
    requested = None if o.num_predict is None or o.num_predict < 0 else o.num_predict
    if requested == 0:
        raise APIError(400, "num_predict 0 generates nothing: leave it out or give a positive number")
    max_tokens = served.plan_max_tokens(prompt_len, requested, clamp=True)
    return sampling_params("ollama", max_tokens, o.temperature, o.top_p, o.top_k, o.seed,
                           stop_list(o.stop, api_max=16))


def _stats(result: Finished) -> dict[str, Any]:
    """Ollama's timing fields, in nanoseconds."""
    ns = lambda seconds: int(seconds * 1e9)  # noqa: E731
    return {"total_duration": ns(result.total_s), "load_duration": ns(result.queued_s),
            "prompt_eval_count": result.prompt_tokens, "prompt_eval_duration": ns(result.prefill_s),
            "eval_count": result.completion_tokens, "eval_duration": ns(result.decode_s)}


def _ndjson(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def encoded():
        async for line in lines:
            yield json.dumps(line, ensure_ascii=False) + "\n"
    return StreamingResponse(encoded(), media_type="application/x-ndjson")


@router.post("/api/generate")
async def ollama_generate(body: OllamaGenerateRequest, request: Request, served: ServedModel = Depends(served_model)):
    served.check_name(body.model)
    refuse(body.images, "images are not supported: this is a text model", "images")
    refuse(body.template, "custom templates are not supported (the model's own chat template is used); "
                          "use raw: true with a prompt you formatted yourself", "template")
    refuse(body.suffix, "suffix (fill-in-the-middle) is not supported", "suffix")
    refuse(body.format, "format (JSON mode) is not supported", "format")
    if not body.prompt and not body.context:  # Ollama's "load the model" request
        return {"model": body.model, "created_at": now_iso(), "response": "", "done": True, "done_reason": "load"}
    tokenizer = served.tokenizer

    def encode() -> list[int]:
        if not body.raw and served.chat_template is not None:
            messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
                       [{"role": "user", "content": body.prompt}]
            return served.chat_prompt(messages)
        text = f"{body.system}\n\n{body.prompt}" if body.system and not body.raw else body.prompt
        return tokenizer.encode(text, allowed_special="all") if text else []
    try:
        prompt = list(body.context or []) + await run_in_threadpool(encode)
    except ValueError as exc:
        raise APIError(400, f"the prompt cannot be encoded: {exc}", param="prompt") from None
    refuse(not prompt, "the prompt is empty", "prompt")
    params = _params(served, body.options, len(prompt))
    (handle,) = submit(served, [prompt], [params])

    def final(result: Finished, response: str) -> dict[str, Any]:
        return {"model": body.model, "created_at": now_iso(), "response": response, "done": True,
                "done_reason": result.reason, "context": prompt + result.token_ids, **_stats(result)}

    if body.stream:
        async def lines():
            try:
                async for _, event in merged([handle]):
                    if isinstance(event, TextDelta):
                        yield {"model": body.model, "created_at": now_iso(), "response": event.text, "done": False}
                    else:
                        yield final(event, "")
            except Exception as exc:  # noqa: BLE001 - reported in the stream
                yield {"error": f"generation failed: {exc}"}
        return _ndjson(lines())
    (result,) = await collect([handle], request)
    return final(result, result.text)


@router.post("/api/chat")
async def ollama_chat(body: OllamaChatRequest, request: Request, served: ServedModel = Depends(served_model)):
    served.check_name(body.model)
    refuse(body.tools, "tools (function calling) are not supported", "tools")
    refuse(body.format, "format (JSON mode) is not supported", "format")
    refuse(any(m.images for m in body.messages), "images are not supported: this is a text model", "messages")
    if not body.messages:  # Ollama's "load the model" request
        return {"model": body.model, "created_at": now_iso(), "message": {"role": "assistant", "content": ""},
                "done": True, "done_reason": "load"}
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.content} for m in body.messages]
    # As Ollama does: a last assistant message is the beginning of the answer, to be continued.
    prompt = await run_in_threadpool(served.chat_prompt, messages, messages[-1]["role"] == "assistant")
    params = _params(served, body.options, len(prompt))
    (handle,) = submit(served, [prompt], [params])

    def message(text: str) -> dict[str, str]:
        return {"role": "assistant", "content": text}

    if body.stream:
        async def lines():
            try:
                async for _, event in merged([handle]):
                    if isinstance(event, TextDelta):
                        yield {"model": body.model, "created_at": now_iso(), "message": message(event.text),
                               "done": False}
                    else:
                        yield {"model": body.model, "created_at": now_iso(), "message": message(""),
                               "done": True, "done_reason": event.reason, **_stats(event)}
            except Exception as exc:  # noqa: BLE001 - reported in the stream
                yield {"error": f"generation failed: {exc}"}
        return _ndjson(lines())
    (result,) = await collect([handle], request)
    return {"model": body.model, "created_at": now_iso(), "message": message(result.text), "done": True,
            "done_reason": result.reason, **_stats(result)}


def _card(served: ServedModel) -> dict[str, Any]:
    size = served.parameters * 4
    return {"name": served.id, "model": served.id,
            "modified_at": datetime.fromtimestamp(served.created, timezone.utc).isoformat().replace("+00:00", "Z"),
            "size": size, "digest": uuid.uuid5(uuid.NAMESPACE_URL, served.id).hex,
            "details": {"format": "pytorch", "family": served.family, "families": [served.family],
                        "parameter_size": f"{served.parameters / 1e6:.0f}M", "quantization_level": "F32"}}


@router.get("/api/tags")
async def ollama_tags(served: ServedModel = Depends(served_model)):
    return {"models": [_card(served)]}


@router.post("/api/show")
async def ollama_show(body: OllamaShowRequest, served: ServedModel = Depends(served_model)):
    served.check_name(body.model or body.name or "")
    card = _card(served)
    return {"details": card["details"], "template": served.chat_template or "",
            "model_info": {"context_length": served.engine.context_length}, "modified_at": card["modified_at"]}


@router.get("/api/version")
async def ollama_version():
    from llm_from_scratch import __version__

    return {"version": __version__}
