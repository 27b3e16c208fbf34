"""The HTTP edge, as pure ASGI middleware: client IP, body size limit, security headers, CORS.

- `ClientIPMiddleware` puts the caller's IP in `scope["state"]["client_ip"]`: the socket peer, or,
  only when that peer is a trusted proxy (TRUSTED_PROXIES), the right-most address in
  X-Forwarded-For that is not itself a trusted proxy. A client cannot choose its own IP by
  sending the header straight to the service.
- `BodyLimitMiddleware` answers 413 `payload_too_large` for a body over MAX_BODY_BYTES, by its
  Content-Length before reading anything, and while streaming when there is none (chunked).
- `SecurityHeadersMiddleware` adds nosniff, frame denial, no referrer, and `Cache-Control:
  no-store` unless the route chose its own caching (JWKS does).
- CORS is off (no headers at all) unless CORS_ORIGINS lists origins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import IPNetwork, Settings
from app.errors import ErrorBody

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)


# OpenAPI entries for every route that reads a body (the fuzzer holds us to our word).
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not UTF-8 JSON (`bad_request`)."},
    413: {
        "model": ErrorBody,
        "description": "The body is larger than MAX_BODY_BYTES (`payload_too_large`).",
    },
}


def install_edges(app: FastAPI, settings: Settings) -> None:
    """Add the edge middleware (call before the request-context middleware, so it stays inner
    and every 413 still gets a request id and an access-log line)."""
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            allow_credentials=False,  # bearer tokens, never cookies
            max_age=600,
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(ClientIPMiddleware, trusted=settings.trusted_proxy_networks)


def client_ip(
    peer: str | None, forwarded_for: Iterable[str], trusted: tuple[IPNetwork, ...]
) -> str | None:
    """The client's IP: the peer, unless the peer is a trusted proxy (then walk X-Forwarded-For
    from the right, skipping trusted proxies; a malformed entry stops the walk)."""
    if peer is None or not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = [h.strip() for value in forwarded_for for h in value.split(",") if h.strip()]
    current = peer
    for hop in reversed(hops):
        try:
            address = str(ip_address(hop))
        except ValueError:
            break
        current = address
        if not _is_trusted(address, trusted):
            break
    return current


def _is_trusted(address: str, trusted: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class ClientIPMiddleware:
    """Resolves the client IP once per request, for rate limits, audit and logs."""

    def __init__(self, app: ASGIApp, trusted: tuple[IPNetwork, ...] = ()) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = (scope.get("client") or (None, 0))[0]
            forwarded = [
                v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-forwarded-for"
            ]
            scope.setdefault("state", {})["client_ip"] = client_ip(peer, forwarded, self.trusted)
        await self.app(scope, receive, send)


class PayloadTooLarge(HTTPException):
    """Raised from `receive` when a streamed body passes the limit (rendered as the contract's
    `{detail, code}` by the HTTP error handler)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """413 for a request body over `max_bytes`."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            # Read outside a route (the route itself renders it through the error handlers).
            if not started:
                await _reject(send, self.max_bytes)


def _content_length(scope: Scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": f"Request body is larger than {limit} bytes.", "code": "payload_too_large"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
