"""A webhook receiver for the tests and the bench: a tiny HTTP/1.1 server on a free loopback port
(asyncio streams, no framework) that records each request: its arrival on both clocks, path,
headers and body.

- The tests tell it what to answer (`policy`: a status code per request, or hang), where a 3xx
  points (`location`), and the secrets to verify each signature against as it arrives, with the
  `standardwebhooks` library (`Arrival.verified`); `wait_for` waits for a condition on the
  arrivals. One request a connection (`Connection: close`).
- The bench (figure 10) keeps connections alive (`keep_alive=True`), answers 200 at once and
  gives it no secrets, so verifying costs the receiver nothing while it is timed; `verify` checks
  the signatures afterwards. `connections` counts the connections accepted.

No pytest in here: the bench imports this module too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

# What to answer to the n-th request (0-based) carrying this webhook-id: a status code, or
# None to never answer (a hanging receiver).
Policy = Callable[[int, str], int | None]

_MAX_HEAD = 64 * 1024
_REASONS = {status.value: status.phrase for status in HTTPStatus}


def always(code: int) -> Policy:
    return lambda _n, _id: code


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.monotonic(): for intervals between arrivals
    wall: float  # time.time(): compared with the events' `occurred_at`
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
    keep_alive: bool = False  # serve requests on a connection until the client closes it
    arrivals: list[Arrival] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    _seen: dict[str, int] = field(default_factory=dict)

    async def start(self) -> str:
        """Listen on a free 127.0.0.1 port; returns the URL to register."""
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
        self.connections += 1
        try:
            while True:  # one request, or (keep-alive) requests until the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > _MAX_HEAD:
                    return
                lines = head.decode("latin-1").split("\r\n")
                _method, path, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                at, wall = time.monotonic(), time.time()
                verified = {}
                for secret in self.secrets:
                    try:
                        Webhook(secret).verify(body, headers)
                        verified[secret] = True
                    except WebhookVerificationError:
                        verified[secret] = False
                arrival = Arrival(at, wall, path, headers, body, verified)
                self.arrivals.append(arrival)
                n = self._seen.get(arrival.event_id, 0)
                self._seen[arrival.event_id] = n + 1
                code = self.policy(n, arrival.event_id)
                if code is None:
                    await asyncio.sleep(3600)
                    return
                writer.write(self._answer(code))
                await writer.drain()
                if not self.keep_alive:
                    return
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    def _answer(self, code: int) -> bytes:
        head = f"HTTP/1.1 {code} {_REASONS.get(code, 'X')}\r\nContent-Length: 0\r\n"
        if not self.keep_alive:
            head += "Connection: close\r\n"
        if 300 <= code < 400:
            head += f"Location: {self.location}\r\n"
        return f"{head}\r\n".encode()


def verify(arrivals: list[Arrival], secret: str) -> int:
    """How many of `arrivals` carry a valid Standard Webhooks signature made with `secret`."""
    hook = Webhook(secret)
    good = 0
    for arrival in arrivals:
        try:
            hook.verify(arrival.body, arrival.headers)
            good += 1
        except WebhookVerificationError:
            pass
    return good
