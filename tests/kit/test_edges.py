"""The HTTP edge: body size limit (413), security headers, CORS only when configured, no banner."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from tests.support.apps import custom_app
from tests.support.clients import bearer, create_and_login, org_body
from tests.support.processes import services


def assert_413(res: httpx.Response) -> None:
    assert res.status_code == 413, res.text
    assert res.json() == {"detail": res.json()["detail"], "code": "payload_too_large"}


async def test_body_over_the_limit_by_content_length(api: httpx.AsyncClient) -> None:
    big = b'{"organization_name": "' + b"a" * 70_000 + b'"}'
    res = await api.post("/org/create", content=big, headers={"content-type": "application/json"})
    assert_413(res)
    assert res.headers["x-request-id"]  # still inside the request context
    assert res.headers["x-content-type-options"] == "nosniff"


async def test_body_over_the_limit_while_streaming(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):  # 80 KB: past the default 64 KiB
            yield b" " * 4000

    res = await api.post(
        "/admin/login", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_413(res)


async def test_body_under_the_limit_is_fine() -> None:
    async with custom_app(max_body_bytes=2048) as (http, _):
        body = org_body("Acme")
        assert (await http.post("/org/create", json=body)).status_code == 201
        body["organization_name"] = "a" * 3000
        assert_413(await http.post("/org/create", json=body))


async def test_security_headers_everywhere(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme", "a@acme.com")
    responses = [
        await api.get("/health"),
        await api.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token)),
        await api.get("/org/get", params={"organization_name": "Acme"}),  # 401
        await api.get("/nowhere"),  # 404
        await api.post("/admin/login", json={"email": "a@acme.com", "password": "wrong-one"}),
    ]
    for res in responses:
        assert res.headers["x-content-type-options"] == "nosniff", res.url
        assert res.headers["x-frame-options"] == "DENY"
        assert res.headers["referrer-policy"] == "no-referrer"
        assert res.headers["cache-control"] == "no-store"
        assert "server" not in res.headers
    login = await api.post(
        "/admin/login", json={"email": "a@acme.com", "password": "correct horse battery"}
    )
    assert login.status_code == 200 and login.headers["cache-control"] == "no-store"
    jwks = await api.get("/.well-known/jwks.json")
    assert jwks.headers["cache-control"] == "public, max-age=300"


async def test_cors_is_off_by_default(api: httpx.AsyncClient) -> None:
    origin = {"Origin": "https://evil.example"}
    res = await api.get("/health", headers=origin)
    assert "access-control-allow-origin" not in res.headers
    preflight = await api.options(
        "/org/create", headers={**origin, "Access-Control-Request-Method": "POST"}
    )
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_only_for_configured_origins() -> None:
    async with custom_app(cors_origins="https://admin.example.com") as (http, _):
        ok = {"Origin": "https://admin.example.com"}
        res = await http.get("/health", headers=ok)
        assert res.headers["access-control-allow-origin"] == "https://admin.example.com"
        assert "access-control-allow-credentials" not in res.headers
        preflight = await http.options(
            "/org/get",
            headers={
                **ok,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        res = await http.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in res.headers


@pytest.fixture
async def one_service(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> Any:
    async with services(nx_server, logs_dir, count=1) as (svc,):
        yield svc


async def test_real_process_has_no_server_banner_and_limits_bodies(one_service: Any) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        res = await http.get(one_service.url + "/health")
        assert res.status_code == 200
        assert "server" not in res.headers
        assert res.headers["x-content-type-options"] == "nosniff"
        res = await http.get(one_service.url + "/openapi.json")
        assert "server" not in res.headers

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b" " * 1000

        # httpx sends a generator with Transfer-Encoding: chunked (no Content-Length).
        res = await http.post(
            one_service.url + "/org/create",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert_413(res)
        res = await http.post(
            one_service.url + "/org/create",
            content=b"x" * 100_000,
            headers={"content-type": "application/json"},
        )
        assert_413(res)
        assert "server" not in res.headers
        # And the service still answers afterwards.
        assert (await http.get(one_service.url + "/health")).status_code == 200


async def test_real_process_raw_chunked_upload(one_service: Any) -> None:
    """A raw chunked upload over a socket is answered 413 once it passes the limit."""
    host, port = "127.0.0.1", one_service.port

    def raw() -> bytes:
        with socket.create_connection((host, port), timeout=10) as sock:
            sock.sendall(
                b"POST /org/create HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(80):
                chunk = b" " * 1000
                try:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    break
            with contextlib.suppress(OSError):
                sock.sendall(b"0\r\n\r\n")
            data = b""
            while b"\r\n\r\n" not in data:
                part = sock.recv(4096)
                if not part:
                    break
                data += part
            return data

    head = await asyncio.to_thread(raw)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert b"\r\nserver:" not in head.lower()
