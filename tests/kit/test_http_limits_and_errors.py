"""HTTP hardening (security review, issue 8).

- 6: the request head is bounded in the server itself: an oversized one is refused with 431
  `request_header_fields_too_large`, quickly and without the memory it asked for.
- 7: an unexpected exception in a route is a 500 `internal_error` that passes back through the
  service's middleware (request id, security headers, access-log line), and keep-alive survives.
- 9: no redirect is built from the `Host` header (a trailing slash is a plain 404).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from mongomock_motor import AsyncMongoMockClient

from app.cli import server_options
from app.kit.db import EmbeddedMongo, free_port
from app.kit.settings import Settings
from app.main import create_app
from tests.support.apps import make_settings
from tests.support.processes import ServiceProcess, nx_service_env

SECURITY = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
DEFAULT_MAX_HEADER_BYTES = Settings.model_fields["max_header_bytes"].default
HOSTILE = "evil.example"


def mock_app(**overrides: Any) -> tuple[FastAPI, Settings]:
    """The service over the in-memory double, with settings overrides."""
    settings = make_settings(mongodb_db="hardening", **overrides)
    client: Any = AsyncMongoMockClient(tz_aware=True)
    return create_app(settings, client=client), settings


def assert_security_headers(headers: Any) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, (name, dict(headers))


def assert_431(status: int, body: bytes) -> None:
    assert status == 431, body[:300]
    parsed = json.loads(body)
    assert parsed["code"] == "request_header_fields_too_large"
    assert set(parsed) == {"detail", "code"} and isinstance(parsed["detail"], str)


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, lower-cased headers, body) of one raw HTTP/1.1 response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def vm_hwm_kib(pid: int) -> int:
    """Peak resident set size of a process (VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def raw_exchange(port: int, head: bytes, *, filler: int = 0, timeout: float = 30.0) -> bytes:
    """Send `head` (plus `filler` bytes of header value, then the end of the head) over one
    socket, tolerating the service closing early, and return everything it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head)
            block = b"a" * (1 << 20)
            sent = 0
            while sent < filler:
                piece = block[: filler - sent]
                sock.sendall(piece)
                sent += len(piece)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass  # refused before the end: the answer is already on its way
        data = b""
        with contextlib.suppress(OSError):
            while True:
                part = sock.recv(65536)
                if not part:
                    break
                data += part
        return data


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, options: dict[str, Any]) -> Iterator[int]:
    """A real uvicorn server for `app` on a free loopback port, in a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)


# --- 6: header size -----------------------------------------------------------------------


@pytest.fixture
async def service(
    nx_server: EmbeddedMongo, tmp_path: Path, db_name: str
) -> AsyncIterator[ServiceProcess]:
    """A real `orgsvc serve` process with the default MAX_HEADER_BYTES."""
    proc = ServiceProcess(nx_service_env(nx_server, db=db_name), log_path=tmp_path / "svc.log")
    try:
        await proc.start()
        yield proc
    finally:
        proc.stop()


async def test_a_64_mb_header_is_refused_fast_and_small(service: ServiceProcess) -> None:
    assert service.proc is not None
    pid = service.proc.pid
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        # Large but allowed: about half the limit in one header.
        padding = "p" * (DEFAULT_MAX_HEADER_BYTES // 2)
        res = await http.get("/health", headers={"X-Padding": padding})
        assert res.status_code == 200, res.text
        # Just over the limit: 431 in the service's shape, with the security headers.
        res = await http.get("/health", headers={"X-Padding": "p" * DEFAULT_MAX_HEADER_BYTES})
        assert_431(res.status_code, res.content)
        assert res.headers["content-type"] == "application/json"
        assert_security_headers(res.headers)
        assert "server" not in res.headers

    before = vm_hwm_kib(pid)
    head = b"GET /org/get HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
    started = time.monotonic()
    raw = await asyncio.to_thread(raw_exchange, service.port, head, filler=64 << 20)
    elapsed = time.monotonic() - started
    grew_mib = (vm_hwm_kib(pid) - before) / 1024
    print(f"64 MiB header: answered in {elapsed:.2f} s, service VmHWM grew {grew_mib:.1f} MiB")
    assert raw, "no answer at all"
    status, headers, body = split_response(raw)
    assert_431(status, body)
    assert headers["connection"] == "close"
    assert elapsed < 2.0
    assert grew_mib < 30

    # The service is fine afterwards.
    async with httpx.AsyncClient(base_url=service.url, timeout=10) as http:
        assert (await http.get("/health")).status_code == 200


async def test_the_app_itself_refuses_an_oversized_head() -> None:
    """The in-process app enforces the same limit (any server, or none)."""
    app, _ = mock_app()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            ok = await http.get("/health", headers={"X-Padding": "p" * 8000})
            assert ok.status_code == 200
            res = await http.get("/health", headers={"X-Padding": "p" * DEFAULT_MAX_HEADER_BYTES})
            assert_431(res.status_code, res.content)
            assert res.headers["x-request-id"]
            assert_security_headers(res.headers)


def test_h11_fallback_refuses_with_431_too() -> None:
    """Without httptools uvicorn would use h11: the same 431, not h11's 400 text."""
    from app.kit.edges import head_limited_protocol

    app, settings = mock_app(max_header_bytes=4096)
    options = {**server_options(settings), "http": head_limited_protocol(4096, prefer="h11")}
    with serve_in_thread(app, options) as port:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Padding: "
        ok = raw_exchange(port, head + b"p" * 3000)
        assert split_response(ok)[0] == 200
        raw = raw_exchange(port, head, filler=8 << 20)
        status, _, body = split_response(raw)
        assert_431(status, body)


def test_a_pipelined_oversized_head_is_answered_after_the_earlier_response() -> None:
    """A 431 never lands inside a response still being written on the same connection."""
    app, settings = mock_app()

    async def slow() -> dict[str, str]:
        await asyncio.sleep(0.3)
        return {"slow": "done"}

    app.add_api_route("/slow", slow, methods=["GET"])
    with serve_in_thread(app, {**server_options(settings), "timeout_graceful_shutdown": 2}) as port:
        first = b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
        raw = raw_exchange(
            port, first + b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: ", filler=1 << 20
        )
    status, _, rest = split_response(raw)
    assert status == 200
    assert rest.startswith(b'{"slow":"done"}HTTP/1.1 431 '), rest[:100]
    status, _, body = split_response(rest.removeprefix(b'{"slow":"done"}'))
    assert_431(status, body)


# --- 7: unexpected errors ----------------------------------------------------------------


def raising_app() -> tuple[FastAPI, Settings]:
    """The service with one extra route that fails unexpectedly."""
    app, settings = mock_app()

    async def boom() -> None:
        raise RuntimeError("boom with a detail that must not reach the client")

    app.add_api_route("/boom", boom, methods=["GET"])
    return app, settings


def assert_clean_500(status: int, headers: Any, body: bytes, request_id: str) -> None:
    assert status == 500, body
    assert json.loads(body) == {"detail": "Internal server error.", "code": "internal_error"}
    assert headers.get("x-request-id") == request_id
    assert_security_headers(headers)


async def test_unexpected_error_in_process(caplog: pytest.LogCaptureFixture) -> None:
    app, _ = raising_app()
    caplog.set_level(logging.INFO)
    async with app.router.lifespan_context(app):
        # What a client sees (even when the transport would swallow a raised exception).
        lenient = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=lenient, base_url="http://test") as http:
            res = await http.get("/boom", headers={"X-Request-ID": "boom-1"})
        assert_clean_500(res.status_code, res.headers, res.content, "boom-1")
        # Nothing escapes the app: a server would otherwise drop the connection.
        strict = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=strict, base_url="http://test") as http:
            res = await http.get("/boom", headers={"X-Request-ID": "boom-2"})
        assert_clean_500(res.status_code, res.headers, res.content, "boom-2")

    access = [r for r in caplog.records if r.name == "orgsvc.access"]
    assert [(r.__dict__["route"], r.__dict__["status"]) for r in access] == [("/boom", 500)] * 2
    errors = [r for r in caplog.records if r.name == "orgsvc.errors" and r.exc_info]
    assert errors, "the traceback is logged"
    assert "must not reach" not in res.text


def test_unexpected_error_keeps_the_connection() -> None:
    app, settings = raising_app()
    options = {**server_options(settings), "timeout_graceful_shutdown": 2}
    with serve_in_thread(app, options) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/boom", headers={"X-Request-ID": "boom-3"})
            first = conn.getresponse()
            body = first.read()
            assert_clean_500(first.status, first.headers, body, "boom-3")
            assert first.headers.get("connection") != "close"
            assert conn.sock is not None
            local = conn.sock.getsockname()
            conn.request("GET", "/health")  # same connection (keep-alive)
            second = conn.getresponse()
            assert second.status == 200, second.read()
            second.read()
            assert conn.sock is not None and conn.sock.getsockname() == local
        finally:
            conn.close()


# --- 9: no redirect built from Host ----------------------------------------------------------

PROBES = [
    "/org/get/",
    "/org/get/?organization_name=Acme",
    "/org/create/",
    "/admin/login/",
    "/health/",
    "/ready/",
    "/metrics/",
    "/docs/",
    "/openapi.json/",
    "/.well-known/jwks.json/",
    "/org/audit/",
    "//evil.example/",
    "/org//get",
    "/nowhere/",
    "/",
]


async def test_no_redirect_is_built_from_the_host_header() -> None:
    app, _ = mock_app()
    hostile = {"Host": HOSTILE, "X-Forwarded-Host": HOSTILE}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            for path in PROBES:
                for method in ("GET", "POST", "PUT", "DELETE"):
                    res = await http.request(method, path, headers=hostile)
                    location = res.headers.get("location", "")
                    assert HOSTILE not in location, (method, path, res.status_code, location)
                    assert not 300 <= res.status_code < 400, (method, path, res.status_code)
            res = await http.get("/org/get/", headers=hostile)
            assert res.status_code == 404
            assert res.json() == {"detail": res.json()["detail"], "code": "not_found"}


async def test_no_redirect_from_host_in_a_real_process(service: ServiceProcess) -> None:
    for path in ("/org/get/", "/health/", "/admin/login/", "/docs/"):
        head = f"GET {path} HTTP/1.1\r\nHost: {HOSTILE}\r\nConnection: close".encode()
        raw = await asyncio.to_thread(raw_exchange, service.port, head)
        status, headers, _ = split_response(raw)
        assert HOSTILE not in headers.get("location", ""), (path, status, headers)
        assert status == 404, (path, status)
