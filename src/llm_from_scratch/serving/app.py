"""The HTTP side of `llmfs serve`: the FastAPI app, assembled from its parts.

Routes (all JSON; the streaming ones send server-sent events or newline-delimited JSON):

    GET  /                      the chat page (static/index.html; plain HTML/JS/CSS, no CDN)
    GET  /health                {"status": "ok", ...} with the queue's state (no API key needed)
    GET  /v1/models             OpenAI: the served model                      (openai_routes.py)
    POST /v1/completions        OpenAI: continue a prompt          (stream: server-sent events)
    POST /v1/chat/completions   OpenAI: answer a conversation      (stream: server-sent events)
    POST /api/generate          Ollama: continue / answer a prompt (stream: NDJSON, the default)
    POST /api/chat              Ollama: answer a conversation      (stream: NDJSON, the default)
    GET  /api/tags              Ollama: the served model                      (ollama_routes.py)
    GET  /docs, /openapi.json   the OpenAPI schema (FastAPI's page; its scripts come from a CDN)

Every error is a 4xx/5xx in the API's own format (`errors.py`): ``{"error": {"message", "type",
"param", "code"}}`` under /v1 (what the `openai` client parses) and ``{"error": "message"}`` under
/api (Ollama's). Guard rails (`errors.Guard`): an optional API key (``Authorization: Bearer
KEY``), a limit on the request body's size, and, through `served.ServedModel` and the engine, on
max_tokens, the prompt's length (the model's context) and the number of requests in the house
(429 when full). Requests never name files: the "model" field is only compared with the served
model's names.

`BackgroundServer` runs an app with uvicorn in a background thread (tests, notebooks, docs).
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from llm_from_scratch.serving import ollama_routes, openai_routes
from llm_from_scratch.serving.errors import DEFAULT_MAX_BODY_BYTES, APIError, Guard, install_error_handlers
from llm_from_scratch.serving.served import ServedModel, served_model

__all__ = ["create_app", "BackgroundServer", "ServedModel", "APIError", "Guard", "DEFAULT_MAX_BODY_BYTES"]


def create_app(served: ServedModel, *, api_key: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """The FastAPI app serving `served`. Run it with uvicorn (`llmfs serve` does)."""
    from llm_from_scratch import __version__

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        served.engine.start()
        yield
        served.engine.shutdown()

    app = FastAPI(title="llmfs serve", version=__version__, lifespan=lifespan, redoc_url=None,
                  description="OpenAI- and Ollama-compatible API for a model of llm-from-scratch.")
    app.state.served = served  # what the routes get through Depends(served_model)
    install_error_handlers(app)

    static_dir = resources.files("llm_from_scratch.serving") / "static"

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static_dir / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static_dir)), name="static")

    @app.get("/health", tags=["server"])
    async def health(served: ServedModel = Depends(served_model)):
        return {"status": "ok", "model": served.id, "max_batch_size": served.engine.max_batch_size,
                "context_length": served.engine.context_length, "max_tokens_limit": served.max_tokens_limit,
                **served.engine.load, "stats": dict(served.engine.stats)}

    app.include_router(openai_routes.router)
    app.include_router(ollama_routes.router)
    app.add_middleware(Guard, api_key=api_key, max_body_bytes=max_body_bytes)
    return app


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
