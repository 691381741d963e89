"""The request bodies the server accepts, as pydantic models (they also make the OpenAPI schema at /docs).

Types are *strict*: ``"temperature": "0.5"`` or ``"max_tokens": true`` are errors (a client that
sends them has a bug worth hearing about), while an int where a float is expected is fine.
Fields the server does not know are ignored, as OpenAI's and Ollama's servers do; fields it knows
but does not implement (logprobs, tools, images, ...) are refused with a clear message by the
routes rather than silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, StrictBool, StrictInt, StrictStr

Number = Annotated[float, Strict()]  # accepts 1 and 1.5, refuses "1.5" and true
Role = Literal["system", "user", "assistant", "developer"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# ---------------------------------------------------------------------------------------------
# OpenAI
# ---------------------------------------------------------------------------------------------

class StreamOptions(_Body):
    include_usage: StrictBool = False


class ContentPart(_Body):
    """A part of a message's content; only {"type": "text", "text": ...} is supported."""

    type: StrictStr
    text: Optional[StrictStr] = None


class ChatMessage(_Body):
    role: Role
    content: Union[StrictStr, list[ContentPart], None] = None
    name: Optional[StrictStr] = None


class _Sampling(_Body):
    model: StrictStr = Field(description="the served model's id (GET /v1/models)")
    max_tokens: Optional[StrictInt] = Field(None, ge=1, description="most new tokens (default: the server's limit, "
                                                                    "or what the context leaves)")
    temperature: Optional[Number] = Field(None, ge=0, le=2, description="0 = greedy; default 1")
    top_p: Optional[Number] = Field(None, gt=0, le=1)
    top_k: Optional[StrictInt] = Field(None, ge=0, description="extension: sample among the k most likely (0 = off)")
    stop: Union[StrictStr, list[StrictStr], None] = Field(None, description="up to 4 stop strings")
    seed: Optional[StrictInt] = None
    n: StrictInt = Field(1, ge=1, le=16, description="how many choices")
    stream: StrictBool = False
    stream_options: Optional[StreamOptions] = None
    presence_penalty: Optional[Number] = None
    frequency_penalty: Optional[Number] = None
    logit_bias: Optional[dict[str, Any]] = None
    user: Optional[StrictStr] = None


class CompletionRequest(_Sampling):
    """POST /v1/completions: continue a text."""

    prompt: Union[StrictStr, list[StrictStr], list[StrictInt], list[list[StrictInt]]]
    echo: StrictBool = False
    logprobs: Optional[StrictInt] = None
    suffix: Optional[StrictStr] = None
    best_of: Optional[StrictInt] = None


class ChatCompletionRequest(_Sampling):
    """POST /v1/chat/completions: the next assistant message of a conversation."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[StrictInt] = Field(None, ge=1)
    logprobs: Optional[StrictBool] = None
    top_logprobs: Optional[StrictInt] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    response_format: Optional[dict[str, Any]] = None
    continue_final_message: StrictBool = Field(False, description="extension (as vLLM's): the last message is the "
                                                                  "beginning of the assistant's answer; continue it")


# ---------------------------------------------------------------------------------------------
# Ollama
# ---------------------------------------------------------------------------------------------

class OllamaOptions(_Body):
    """Ollama's "options" (others, like num_ctx or repeat_penalty, are accepted and ignored)."""

    temperature: Optional[Number] = Field(None, ge=0, description="default 0.8; 0 = greedy")
    top_p: Optional[Number] = Field(None, gt=0, le=1, description="default 0.9")
    top_k: Optional[StrictInt] = Field(None, ge=0, description="default 40; 0 = off")
    seed: Optional[StrictInt] = None
    num_predict: Optional[StrictInt] = Field(None, ge=-2, description="most new tokens; -1/-2 = as many as allowed")
    stop: Union[list[StrictStr], StrictStr, None] = None
    num_ctx: Optional[StrictInt] = Field(None, ge=1, description="ignored: the model's own context is used")


class OllamaGenerateRequest(_Body):
    """POST /api/generate."""

    model: StrictStr
    prompt: StrictStr = ""
    system: Optional[StrictStr] = None
    template: Optional[StrictStr] = None
    context: Optional[list[StrictInt]] = Field(None, description="token ids of an earlier /api/generate turn")
    stream: StrictBool = True
    raw: StrictBool = False
    format: Optional[Any] = None
    options: Optional[OllamaOptions] = None
    images: Optional[list[Any]] = None
    suffix: Optional[StrictStr] = None
    keep_alive: Optional[Any] = None


class OllamaMessage(_Body):
    role: Role
    content: StrictStr = ""
    images: Optional[list[Any]] = None


class OllamaChatRequest(_Body):
    """POST /api/chat."""

    model: StrictStr
    messages: list[OllamaMessage] = Field(default_factory=list)
    stream: StrictBool = True
    format: Optional[Any] = None
    options: Optional[OllamaOptions] = None
    tools: Optional[list[Any]] = None
    keep_alive: Optional[Any] = None


class OllamaShowRequest(_Body):
    model: Optional[StrictStr] = None
    name: Optional[StrictStr] = None
