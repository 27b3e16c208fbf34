"""A webhook receiver for tests: a tiny HTTP/1.1 server on a free loopback port (asyncio
streams, no framework), recording each request and verifying its signature with the
`standardwebhooks` library against the secrets it is told."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

# What to answer to the n-th request (0-based) carrying this webhook-id: a status code, or
# None to never answer (a hanging receiver).
Policy = Callable[[int, str], int | None]


def always(code: int) -> Policy:
    return lambda _n, _id: code


@dataclass
class Arrival:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes
    verified: dict[str, bool]  # secret -> whether the signature verified with it

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    policy: Policy = field(default_factory=lambda: always(200))
    secrets: list[str] = field(default_factory=list)
    location: str = "http://127.0.0.1:9/elsewhere"  # for 3xx answers
    arrivals: list[Arrival] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _seen: dict[str, int] = field(default_factory=dict)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def ids(self) -> list[str]:
        return [a.event_id for a in self.arrivals]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver: condition not met; {len(self.arrivals)} arrivals")
            await asyncio.sleep(0.02)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, path, _version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            verified = {}
            for secret in self.secrets:
                try:
                    Webhook(secret).verify(body, headers)
                    verified[secret] = True
                except WebhookVerificationError:
                    verified[secret] = False
            arrival = Arrival(time.monotonic(), path, headers, body, verified)
            self.arrivals.append(arrival)
            n = self._seen.get(arrival.event_id, 0)
            self._seen[arrival.event_id] = n + 1
            code = self.policy(n, arrival.event_id)
            if code is None:
                await asyncio.sleep(3600)
                return
            extra = f"Location: {self.location}\r\n" if 300 <= code < 400 else ""
            head_out = f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n"
            writer.write(f"{head_out}{extra}\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)
