"""Prompt styles: how an instruction entry becomes the text a model is fine-tuned on (chapter 7).

An entry ``{"instruction", "input", "output"}`` is written out in a fixed *prompt format*; the
model learns the format along with the task, so the same format must be used at test time. A
:class:`PromptStyle` has four methods:

- ``prompt(entry)``: the instruction part (``prompt + response`` is the training text);
- ``response(entry)``: the response header and the output;
- ``generation_prompt(entry)``: what a fine-tuned model is given at test time (the prompt plus
  the opening of the response, so its next tokens are the answer);
- ``extract_response(text)``: the answer in what the model wrote (header and stop markers removed).

Styles: the book's Alpaca prompt (:data:`ALPACA`, :func:`format_input`), the exercise 7.1
Phi-3-like prompt (:data:`PHI3`), and :class:`ChatTemplateStyle` for any chat model's template.
`data/instructions.py` tokenizes entries in a style and batches them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

END_OF_TEXT = "<|endoftext|>"


def format_input(entry: Mapping[str, Any]) -> str:
    """The book's Alpaca-style prompt: preamble, ``### Instruction:`` and, if non-empty, ``### Input:``.

    The response part (``"\\n\\n### Response:\\n" + output``) is *not* included; see
    :func:`format_response`.
    """
    instruction_text = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_input_phi3(entry: Mapping[str, Any]) -> str:
    """The Phi-3-like prompt of the book's exercise 7.1: ``<|user|>\\n{instruction}`` [+ ``\\n{input}``]."""
    input_text = f"\n{entry['input']}" if entry.get("input") else ""
    return f"<|user|>\n{entry['instruction']}" + input_text


class PromptStyle:
    """How an instruction entry becomes text. Subclasses define the four methods below.

    ``prompt(entry) + response(entry)`` is the training text. ``generation_prompt(entry)`` is
    what a fine-tuned model is given at test time (the prompt plus the opening of the response,
    so the model's next tokens are the answer), and ``extract_response`` cleans what it wrote.
    """

    name: str = "base"
    #: what ``tokenizer.encode`` may treat as special tokens in this style's text
    allowed_special: Any = frozenset({END_OF_TEXT})

    def prompt(self, entry: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def response(self, entry: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def generation_prompt(self, entry: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def extract_response(self, continuation: str) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class TemplateStyle(PromptStyle):
    """A style made of a prompt function and a fixed response header.

    ``response(entry) = response_header + entry["output"]``. ``stop_markers`` are strings at which
    a generated answer is cut by :meth:`extract_response` (the end-of-text marker, the start of a
    new turn), for models that keep writing past their answer.
    """

    def __init__(self, name: str, prompt_fn: Callable[[Mapping[str, Any]], str], response_header: str,
                 stop_markers: Sequence[str] = (END_OF_TEXT,)):
        self.name = name
        self.prompt_fn = prompt_fn
        self.response_header = response_header
        self.stop_markers = tuple(stop_markers)

    def prompt(self, entry: Mapping[str, Any]) -> str:
        return self.prompt_fn(entry)

    def response(self, entry: Mapping[str, Any]) -> str:
        return self.response_header + str(entry["output"])

    def generation_prompt(self, entry: Mapping[str, Any]) -> str:
        return self.prompt(entry) + self.response_header

    def extract_response(self, continuation: str) -> str:
        """The answer in ``continuation`` (the text generated after the prompt).

        Works for both ways of prompting: after :meth:`generation_prompt` (the continuation is the
        answer) and after :meth:`prompt` only, as in the book (the continuation starts with the
        response header, which is removed). Cut at the first stop marker, whitespace stripped.
        """
        text = continuation.lstrip()
        header = self.response_header.strip()
        if header and text.startswith(header):
            text = text[len(header):]
        for marker in self.stop_markers:
            text = text.split(marker, 1)[0]
        return text.strip()


#: The book's Alpaca style (chapter 7).
ALPACA = TemplateStyle("alpaca", format_input, "\n\n### Response:\n", stop_markers=(END_OF_TEXT, "\n\n### "))

#: The book's exercise 7.1 Phi-3-like style, exactly as its solution writes it (note the colon after
#: ``<|assistant|>``). Phi-3 models themselves use ``<|end|>`` turn endings: for those, use a
#: :class:`ChatTemplateStyle` with the model's own chat template.
PHI3 = TemplateStyle("phi3", format_input_phi3, "\n<|assistant|>:\n",
                     stop_markers=(END_OF_TEXT, "<|user|>", "<|end|>"))

PROMPT_STYLES: dict[str, PromptStyle] = {"alpaca": ALPACA, "phi3": PHI3}

#: Markers that end an assistant turn in common chat templates (ChatML, Llama 3, Phi-3, Gemma).
CHAT_END_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", END_OF_TEXT)

ChatRenderer = Callable[..., str]


class ChatTemplateStyle(PromptStyle):
    """Format entries with a chat model's template, given as a callable.

    ``render(messages, add_generation_prompt)`` must return the template's text for a list of
    ``{"role", "content"}`` messages, e.g. with this project's chat_template module::

        from functools import partial
        from llm_from_scratch.tokenizers.chat_template import apply_chat_template
        style = ChatTemplateStyle(lambda messages, add_generation_prompt:
                                  apply_chat_template(None, messages, add_generation_prompt=add_generation_prompt))

    The user message is the instruction, plus ``input_separator`` and the input when there is one.
    The split into prompt and response is read off the template itself:

    - prompt = the rendered conversation with only the user turn (and ``system``, if given);
    - response = the rest of the rendered conversation with the assistant turn added (it starts
      with the template's assistant header and ends with its end-of-turn marker);
    - generation prompt = the user turn rendered with ``add_generation_prompt=True``.

    The template's control tokens (``<|im_start|>`` ...) must become special token ids, so this
    style encodes with ``allowed_special="all"``.
    """

    allowed_special = "all"

    def __init__(self, render: ChatRenderer, *, system: str | None = None, input_separator: str = "\n\n",
                 name: str = "chat", stop_markers: Sequence[str] = CHAT_END_MARKERS):
        if not callable(render):
            raise TypeError("ChatTemplateStyle needs a callable render(messages, add_generation_prompt) -> str, "
                            f"got {type(render).__name__}")
        self.render = render
        self.system = system
        self.input_separator = input_separator
        self.name = name
        self.stop_markers = tuple(stop_markers)

    def messages(self, entry: Mapping[str, Any], with_answer: bool = False) -> list[dict[str, str]]:
        user = str(entry["instruction"])
        if entry.get("input"):
            user += self.input_separator + str(entry["input"])
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": user})
        if with_answer:
            messages.append({"role": "assistant", "content": str(entry["output"])})
        return messages

    def _render(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        text = self.render(messages, add_generation_prompt)
        if not isinstance(text, str):
            raise TypeError(f"the chat template callable returned {type(text).__name__}, not str")
        return text

    def prompt(self, entry: Mapping[str, Any]) -> str:
        return self._render(self.messages(entry), False)

    def response(self, entry: Mapping[str, Any]) -> str:
        prompt = self.prompt(entry)
        full = self._render(self.messages(entry, with_answer=True), False)
        if not full.startswith(prompt):
            raise ValueError(
                "this chat template renders the user turn differently once an assistant turn follows, so "
                "the prompt is not a prefix of the full conversation and the response cannot be split off. "
                f"Prompt: {prompt[:200]!r} ... full: {full[:200]!r}")
        return full[len(prompt):]

    def generation_prompt(self, entry: Mapping[str, Any]) -> str:
        return self._render(self.messages(entry), True)

    def extract_response(self, continuation: str) -> str:
        text = continuation
        for marker in self.stop_markers:
            text = text.split(marker, 1)[0]
        return text.strip()


StyleLike = str | PromptStyle | ChatRenderer


def get_prompt_style(style: StyleLike) -> PromptStyle:
    """A PromptStyle from a name in :data:`PROMPT_STYLES`, a PromptStyle, or a chat-template callable."""
    if isinstance(style, PromptStyle):
        return style
    if isinstance(style, str):
        try:
            return PROMPT_STYLES[style.lower()]
        except KeyError:
            raise ValueError(
                f"unknown prompt style {style!r}; known styles: {', '.join(PROMPT_STYLES)}, or pass a chat "
                "template callable render(messages, add_generation_prompt) -> str") from None
    if callable(style):
        return ChatTemplateStyle(style)
    raise TypeError(f"style must be a name ({', '.join(PROMPT_STYLES)}), a PromptStyle or a callable, "
                    f"not {type(style).__name__}")


def format_prompt(entry: Mapping[str, Any], style: StyleLike = "alpaca") -> str:
    """The prompt part of ``entry`` (instruction and input) in ``style``."""
    return get_prompt_style(style).prompt(entry)


def format_response(entry: Mapping[str, Any], style: StyleLike = "alpaca") -> str:
    """The response part (response header + output) of ``entry`` in ``style``."""
    return get_prompt_style(style).response(entry)


def format_generation_prompt(entry: Mapping[str, Any], style: StyleLike = "alpaca") -> str:
    """What to feed a fine-tuned model at test time: the prompt plus the opening of the response."""
    return get_prompt_style(style).generation_prompt(entry)


def extract_response(continuation: str, style: StyleLike = "alpaca") -> str:
    """The answer in text a model generated after a prompt of ``style`` (header and stop markers removed)."""
    return get_prompt_style(style).extract_response(continuation)
