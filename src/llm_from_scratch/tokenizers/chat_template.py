"""Chat templates: how a list of chat messages becomes the one string an instruction-tuned model reads.

A chat model was fine-tuned on conversations written in one exact format, for SmolLM2 "ChatML":

    <|im_start|>system
    You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
    <|im_start|>user
    What is the capital of France?<|im_end|>
    <|im_start|>assistant

The model then writes the assistant's answer and ends it with ``<|im_end|>``, which is where
generation must stop. Prompting a chat model in any other format works noticeably worse, so model
files ship their format as a Jinja2 template (``tokenizer.chat_template`` in GGUF metadata,
``chat_template`` in Hugging Face's tokenizer_config.json). We render it with Jinja2's *sandboxed*
environment, because a template comes from a downloaded file and must not reach into Python.
The environment is set up like Hugging Face's (``trim_blocks``, ``lstrip_blocks``, loop controls,
``raise_exception``, ``tojson``), so templates render to the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

#: The built-in fallback: plain ChatML (no default system prompt), for tokenizers without a template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Special tokens that end an assistant turn in common templates, most specific first.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


class ChatTemplateError(ValueError):
    """The messages or the template are not usable (the message says which and why)."""


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the chat template refused the messages: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # Jinja's own tojson escapes HTML characters (<, >, &), which chat templates do not want.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    try:
        return environment.from_string(template)
    except jinja2.TemplateSyntaxError as error:
        raise ChatTemplateError(
            f"the chat template is not valid Jinja2 (line {error.lineno}: {error.message})") from None


def check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages must be a list of {"role": str, "content": str} dicts; returns plain dict copies."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Iterable):
        raise ChatTemplateError('messages must be a list like [{"role": "user", "content": "Hello"}]')
    checked = []
    for number, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise ChatTemplateError(f"message {number} is a {type(message).__name__}, not a dict with role and content")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise ChatTemplateError(f"message {number} needs a 'role' string (system, user or assistant), got {role!r}")
        if not isinstance(content, str):
            raise ChatTemplateError(f"message {number} needs a 'content' string, got {type(content).__name__}")
        checked.append(dict(message))
    return checked


def apply_chat_template(template: str | None, messages: Sequence[Mapping[str, Any]], *,
                        add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
                        **extra: Any) -> str:
    """Render `messages` with a Jinja2 chat template (None: the built-in ChatML template).

    ``add_generation_prompt=True`` appends the start of an assistant turn, so the model answers next.
    ``bos_token``/``eos_token`` are the strings templates may refer to (Llama 3's begins with the
    BOS token; SmolLM2's uses neither). Extra keyword arguments are passed to the template.
    """
    compiled = _compile(template if template is not None else CHATML_TEMPLATE)
    try:
        return compiled.render(messages=check_messages(messages), add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except jinja2.exceptions.SecurityError as error:
        raise ChatTemplateError(f"the chat template tried something unsafe and was stopped: {error}") from None
    except jinja2.TemplateError as error:
        raise ChatTemplateError(f"the chat template failed: {error}") from None


def chat_template_of(tokenizer: Any) -> str | None:
    """The template a tokenizer carries (``HFBPETokenizer.chat_template``), if any."""
    return getattr(tokenizer, "chat_template", None)


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                template: str | None = None) -> str:
    """`apply_chat_template` with the tokenizer's template (or `template`, or ChatML) and its BOS/EOS."""
    return apply_chat_template(template if template is not None else chat_template_of(tokenizer), messages,
                               add_generation_prompt=add_generation_prompt,
                               bos_token=getattr(tokenizer, "bos_token", None) or "",
                               eos_token=getattr(tokenizer, "eos_token", None) or "")


def encode_chat(tokenizer: Any, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                template: str | None = None) -> list[int]:
    """Rendered chat -> token ids, with the template's special tokens encoded as such.

    Note: special tokens typed by a user inside a message are encoded as special tokens too (as
    Hugging Face does); strip them from untrusted input if that matters to you.
    """
    text = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt, template=template)
    return tokenizer.encode(text, allowed_special="all")


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Ids that end an assistant turn: the tokenizer's eot_id plus the usual end-of-turn tokens it has."""
    ids: list[int] = []
    if getattr(tokenizer, "eot_id", None) is not None:
        ids.append(tokenizer.eot_id)
    specials = getattr(tokenizer, "special_tokens", {}) or {}
    for token in END_OF_TURN_TOKENS:
        if token in specials and specials[token] not in ids:
            ids.append(specials[token])
    return ids
