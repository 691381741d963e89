"""Serving a model over HTTP (`llmfs serve`): OpenAI- and Ollama-compatible APIs, batched generation.

* :mod:`.engine` - the request queue and the batching scheduler (a worker thread decodes the
  running requests together, new ones join the running batch; the decoding itself is the
  generation package's loop);
* :mod:`.schemas` - the request bodies (pydantic);
* :mod:`.errors` - errors in each API's format, and the guard rails (API key, body size);
* :mod:`.served` - the served model and what the routes share (limits, submitting, following);
* :mod:`.openai_routes`, :mod:`.ollama_routes` - the two APIs;
* :mod:`.app` - the FastAPI app assembled from them, and `BackgroundServer`;
* ``static/`` - the chat page served at ``/``.

FastAPI and uvicorn are only needed for the app: ``import llm_from_scratch.serving`` does not
import them.
"""

from __future__ import annotations

from llm_from_scratch.generation import SamplingParams
from llm_from_scratch.serving.engine import (
    Engine,
    EngineClosedError,
    EngineFullError,
    Finished,
    RequestHandle,
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
