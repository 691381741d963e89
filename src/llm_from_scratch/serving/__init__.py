"""Serving a model over HTTP (`llmfs serve`): OpenAI- and Ollama-compatible APIs, batched generation.

* :mod:`.engine` - the request queue and the batching scheduler (a worker thread decodes the
  running requests together, new ones join the running batch);
* :mod:`.schemas` - the request bodies (pydantic);
* :mod:`.app` - the FastAPI app: routes, errors in each API's format, API key and size limits;
* ``static/`` - the chat page served at ``/``.

FastAPI and uvicorn are only needed here: ``import llm_from_scratch.serving`` does not import them.
"""

from __future__ import annotations

from llm_from_scratch.serving.engine import (
    Engine,
    EngineClosedError,
    EngineFullError,
    Finished,
    RequestHandle,
    SamplingParams,
    TextDelta,
)

__all__ = ["Engine", "EngineClosedError", "EngineFullError", "Finished", "RequestHandle", "SamplingParams",
           "TextDelta", "create_app", "ServedModel"]


def __getattr__(name: str):
    # The web framework is imported only when the app is asked for.
    if name in ("create_app", "ServedModel"):
        from llm_from_scratch.serving import app

        return getattr(app, name)
    raise AttributeError(name)
