"""Errors in each API's own format, and the guard rails in front of every route.

A client of the OpenAI API expects ``{"error": {"message", "type", "param", "code"}}`` (what the
`openai` library parses); a client of Ollama's expects ``{"error": "message"}``. A route raises
`APIError`; the handlers installed by `install_error_handlers` render it (and FastAPI's own
errors: invalid JSON, wrong types, unknown routes, bugs) in the format of the API that was called,
decided by the path (/api/... is Ollama's).

`Guard` is plain ASGI middleware, so that streaming and disconnects pass through untouched: an
optional API key (``Authorization: Bearer KEY``) for the /v1 and /api routes, and a limit on the
size of every request body (checked while reading, so a body without Content-Length cannot grow
past it either).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("llmfs.serve")

DEFAULT_MAX_BODY_BYTES = 1_000_000


class APIError(Exception):
    """An error to send to the client (rendered in the format of the API it called)."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers


def refuse(condition: Any, message: str, param: str) -> None:
    """A 400 with `message` if `condition` holds (for fields we know but do not implement)."""
    if condition:
        raise APIError(400, message, param=param)


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


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """(message, param) for pydantic's list of problems with a request body."""
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
    return "; ".join(problems) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    """Every error, ours or FastAPI's, as a 4xx/5xx in the called API's format."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(request.url.path, APIError(400, message, param=param))

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
