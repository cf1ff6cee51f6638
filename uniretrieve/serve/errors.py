"""Every error the service answers is `{"error": {"code": N, "message": "one sentence"}}`: never a traceback, never
FastAPI's `{"detail": ...}` (its validation and HTTP handlers are replaced here)."""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger("uniretrieve.serve")


class ApiError(Exception):
    """An error answered to the client with `status` and a one-sentence `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message}}


def error_bytes(status: int, message: str) -> bytes:
    return json.dumps(ApiError(status, message).body(), ensure_ascii=False).encode()


def validation_message(errors: Any) -> str:
    """One sentence from pydantic's / FastAPI's error list: where, and what is wrong, for the first error."""
    if not errors:
        return "the request is not valid"
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
    where = ".".join(loc)
    msg = str(first.get("msg", "invalid value")).rstrip(".")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}" if where else f"{msg}{more}"


STATUS_MESSAGES = {
    404: "no such endpoint",
    405: "method not allowed on this endpoint",
}


def install_handlers(app: Any) -> None:
    """Replace FastAPI's error handlers with the one JSON shape."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def respond(status: int, message: str) -> JSONResponse:
        return JSONResponse(ApiError(status, message).body(), status_code=status)

    async def api_error(_request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return respond(exc.status, exc.message)

    async def validation(_request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return respond(422, validation_message(exc.errors()))

    async def http_error(request: Any, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        message = STATUS_MESSAGES.get(exc.status_code) or str(exc.detail)
        if exc.status_code in STATUS_MESSAGES:
            message = f"{message}: {request.method} {request.url.path}"
        return respond(exc.status_code, message)

    async def unexpected(request: Any, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        return respond(500, f"internal error ({type(exc).__name__}); the server log has the details")

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
