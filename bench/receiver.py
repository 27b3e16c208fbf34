"""Figure 10's webhook receiver: a tiny HTTP/1.1 server on a free loopback port (asyncio
streams, keep-alive, no framework) that answers 200 at once and records each request's arrival
time, headers and body. Signatures are verified afterwards (`verify`), with the
`standardwebhooks` library, so verifying costs the receiver nothing while it is timed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.time(): compared with the events' `occurred_at`
    headers: dict[str, str]
    body: bytes

    @property
    def event_id(self) -> str:
        return self.headers.get("webhook-id", "")


@dataclass
class Receiver:
    arrivals: list[Arrival] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:  # keep-alive: requests until the client closes
                head = await reader.readuntil(b"\r\n\r\n")
                if len(head) > _MAX_HEAD:
                    return
                headers: dict[str, str] = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.arrivals.append(Arrival(time.time(), headers, body))
                writer.write(_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


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
