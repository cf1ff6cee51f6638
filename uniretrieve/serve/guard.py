"""The service's front door, as plain ASGI (no per-request Python beyond a few comparisons): the API key on every
endpoint but /health and the static page, and the request-size limit (413, before the body is read whole)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from uniretrieve.serve.errors import ApiError, error_bytes

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset(
    {"/health", "/", "/index.html", "/favicon.ico", "/docs", "/docs/oauth2-redirect", "/openapi.json"}
)
"""Served without the key: the health probe, the page (it asks the user for the key) and the API's documentation.
Neither the page nor the documentation holds any data of the index."""
OPEN_PREFIXES = ("/static/", "/docs-assets/")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over this server's limit of {limit} bytes")


def key_matches(headers: list[tuple[bytes, bytes]], key: bytes) -> bool:
    """Whether `X-API-Key: KEY` or `Authorization: Bearer KEY` carries `key` (constant-time comparison)."""
    given = b""
    for name, value in headers:
        if name == b"x-api-key":
            given = value.strip()
            break
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            given = value[7:].strip()
    return hmac.compare_digest(given, key)


class Guard:
    def __init__(self, app: Any, *, api_key: str | None, max_body: int) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        path = scope["path"]
        if (
            self.key is not None
            and path not in OPEN_PATHS
            and not path.startswith(OPEN_PREFIXES)
            and not key_matches(headers, self.key)
        ):
            await _answer(
                send,
                401,
                "a valid API key is required: send it as X-API-Key or Authorization: Bearer",
                [(b"www-authenticate", b"Bearer")],
            )
            return
        for name, value in headers:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _answer(send, 400, "the Content-Length header is not a number")
                    return
                if declared > self.max_body:
                    await _answer(send, 413, BodyTooLarge(self.max_body).message)
                    return
                break
        limit = self.max_body
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if (
                    seen > limit
                ):  # a chunked body past the limit: the route's body read raises, answered as 413
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, counted, send)


async def _answer(send: Send, status: int, message: str, extra: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    body = error_bytes(status, message)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
