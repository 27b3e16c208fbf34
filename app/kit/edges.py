"""The HTTP edge, as pure ASGI middleware: client IP, body size limit, security headers, CORS.

- `ClientIPMiddleware` puts the caller's IP in `scope["state"]["client_ip"]`: the socket peer, or,
  only when that peer is a trusted proxy (TRUSTED_PROXIES), the right-most address in
  X-Forwarded-For that is not itself a trusted proxy. A client cannot choose its own IP by
  sending the header straight to the service.
- `RequestLimitsMiddleware` answers 413 `payload_too_large` for a body over MAX_BODY_BYTES, by its
  Content-Length before reading anything, and while streaming when there is none (chunked); and
  431 for a request head over MAX_HEADER_BYTES (one pass over the headers for both).
- `SecurityHeadersMiddleware` adds nosniff, frame denial, no referrer, and `Cache-Control:
  no-store` unless the route chose its own caching (JWKS does).
- CORS is off (no headers at all) unless CORS_ORIGINS lists origins.
- The request head (request line + headers) is bounded by MAX_HEADER_BYTES twice: in the server,
  by `head_limited_protocol` (uvicorn's own protocols buffer a whole head before the app sees
  anything; httptools even copies the partial header on every read, so a 64 MB header took
  seconds and hundreds of MB), and in the app by `RequestLimitsMiddleware` (same 431, whatever
  server runs it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from ipaddress import ip_address
from typing import Any, ClassVar, Literal

import h11
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.kit.errors import StartWatch
from app.kit.settings import IPNetwork, Settings

SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
HEADER_TOO_LARGE = "request_header_fields_too_large"
# After a 431 the server stops reading the head but keeps discarding what the client still sends
# for at most this long, so the client reads the answer instead of a connection reset.
LINGER_SECONDS = 2.0

log = logging.getLogger("orgsvc.edges")


def install_edges(app: FastAPI, settings: Settings) -> None:
    """Add the edge middleware (call before the request-context middleware, so it stays inner
    and every 413 and 431 still gets a request id and an access-log line)."""
    app.add_middleware(
        RequestLimitsMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
    )
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


class RequestLimitsMiddleware:
    """413 for a request body over `max_body_bytes`, 431 for a head over `max_header_bytes`."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        chunked = False
        head = _request_line_size(scope)
        for key, value in scope["headers"]:
            head += len(key) + len(value) + 4
            if key == b"content-length":
                declared = _int_or_none(value)
            elif key == b"transfer-encoding":
                chunked = True
        if head > self.max_header_bytes:
            await _send_closing_json(send, 431, _header_too_large_body(self.max_header_bytes))
            return
        if declared is not None and declared > self.max_bytes:
            await _reject(send, self.max_bytes)
            return
        if not chunked:
            # No body, or one framed by its Content-Length (checked above): the server delivers
            # no more than that, so there is nothing to count while it streams.
            await self.app(scope, receive, send)
            return
        received = 0
        watch = StartWatch(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, watch.send)
        except PayloadTooLarge:
            # Read outside a route (the route itself renders it through the error handlers).
            if not watch.started:
                await _reject(send, self.max_bytes)


def _int_or_none(value: bytes) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


async def _reject(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": f"Request body is larger than {limit} bytes.", "code": "payload_too_large"}
    ).encode()
    await _send_closing_json(send, 413, body)


async def _send_closing_json(send: Send, status: int, body: bytes) -> None:
    """A whole JSON response from middleware, closing the connection after it."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
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


# --- the request head ---------------------------------------------------------------------------


def _header_too_large_body(limit: int) -> bytes:
    detail = f"Request header fields are larger than {limit} bytes."
    return json.dumps({"detail": detail, "code": HEADER_TOO_LARGE}).encode()


def _request_line_size(scope: Scope) -> int:
    """Bytes of the request line as HTTP/1.1 would write it, plus the head's final CRLF."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"])
    return len(scope["method"]) + 1 + target + (1 if scope["query_string"] else 0) + 11 + 2


def _refusal(limit: int, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The raw 431 the server writes itself: the service's body shape and security headers."""
    body = _header_too_large_body(limit)
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
        (b"cache-control", b"no-store"),
    ]
    lines = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join([*lines, b"\r\n", body])


def _refuse(
    transport: asyncio.Transport,
    loop: asyncio.AbstractEventLoop,
    *,
    limit: int,
    default_headers: list[tuple[bytes, bytes]],
    client: tuple[str, int] | None,
) -> asyncio.TimerHandle | None:
    """Answer 431 and close; returns the timer that ends the lingering close, if any."""
    log.warning(
        "request head over MAX_HEADER_BYTES refused",
        extra={"status": 431, "limit": limit, "client": client[0] if client else None},
    )
    transport.write(_refusal(limit, default_headers))
    if not transport.can_write_eof():  # TLS: no half-close
        transport.close()
        return None
    transport.write_eof()  # after the 431 is flushed; reading goes on (and is discarded)
    return loop.call_later(LINGER_SECONDS, transport.close)


class _HttpToolsHeadLimited(HttpToolsProtocol):
    """uvicorn's httptools protocol, feeding the parser at most `max_head_bytes` (+1) of a head.

    httptools keeps a partial header value in a bytes object it re-concatenates on every read
    (quadratic), and uvicorn only sees it once complete; so the head is counted here, on the way
    in, and refused as soon as it passes the limit. Bodies are passed through untouched.
    """

    max_head_bytes: ClassVar[int] = 16_384

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._in_head = True
        self._head_bytes = 0
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes = True, 0

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering close: discard
        while self._in_head and data:
            room = self.max_head_bytes - self._head_bytes + 1
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)
            if self.parser is None or self.transport.is_closing() or self.parser.should_upgrade():
                return  # a 400, a closed connection, or an upgrade: uvicorn has taken over
            if self._in_head and self._head_bytes > self.max_head_bytes:
                self._refused = True
                if self.cycle is not None and not self.cycle.response_complete:
                    # Pipelined behind a response still being written (or queued ones):
                    # answer once they are done, not in the middle of one.
                    self.flow.pause_reading()
                else:
                    self._refuse_now()
                return
        if data:
            super().data_received(data)

    def on_response_complete(self) -> None:
        if not self._refused or self.pipeline:
            super().on_response_complete()
            return
        self.server_state.total_requests += 1
        if not self.transport.is_closing():
            self._refuse_now()

    def _refuse_now(self) -> None:
        self.flow.resume_reading()  # to discard what the client still sends
        self._linger = _refuse(
            self.transport,
            self.loop,
            limit=self.max_head_bytes,
            default_headers=self.server_state.default_headers,
            client=self.client,
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)


class _HeadLimitedConnection(h11.Connection):
    """h11's connection, remembering that it gave up on a head for being too large."""

    head_too_large = False

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                self.head_too_large = True
            raise


class _H11HeadLimited(H11Protocol):
    """uvicorn's h11 protocol: h11 bounds its buffer itself; this turns its 400 into our 431."""

    max_head_bytes: ClassVar[int] = 16_384

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _HeadLimitedConnection(h11.SERVER, self.max_head_bytes)
        self._refused = False
        self._linger: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        conn = self.conn
        if not (isinstance(conn, _HeadLimitedConnection) and conn.head_too_large):
            super().send_400_response(msg)
            return
        self._refused = True
        self._linger = _refuse(
            self.transport,
            self.loop,
            limit=self.max_head_bytes,
            default_headers=self.server_state.default_headers,
            client=self.client,  # h11 reads no pipelined head before the response is done
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
        super().connection_lost(exc)


def head_limited_protocol(
    max_head_bytes: int, *, prefer: Literal["httptools", "h11"] = "httptools"
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol class (httptools, as uvicorn[standard] picks by default, or
    h11) with the request head bounded by `max_head_bytes`; pass it to uvicorn as `http=`."""
    base: type[_HttpToolsHeadLimited | _H11HeadLimited]
    base = _HttpToolsHeadLimited if prefer == "httptools" else _H11HeadLimited
    return type(base.__name__, (base,), {"max_head_bytes": max_head_bytes})
