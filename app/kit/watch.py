"""Change streams that prove they are caught up, and this process's own writes.

`ChangeFeed` follows one collection's change stream (`watch()`) in a background task and hands
each change to a callback. It also keeps `fresh_at`: the monotonic time at which the last empty
`getMore` *started*. Every change committed before that moment has been handed over, so whoever
serves from a cache invalidated by the feed can tell how far behind it may be (now minus
`fresh_at`), and stop serving when the answer is "unknown" (a stream that is down,
reconnecting, or silent for too long). That is what "fail closed" means here: the feed never
claims more than it saw.

- An error, a gap or an `invalidate`/`drop`/`rename` event calls `on_reset` (the cache empties)
  and the feed reopens with backoff, resuming from its last token where the store allows it
  (the cache was emptied anyway: a resume cannot prove nothing was lost, and nx-27017 prunes its
  change history silently).
- A store without change streams (a standalone mongod) is `unsupported`: the feed tells its
  owner (`on_unsupported`) and stops; `fresh_at` stays unset.
- On MongoDB, an empty `getMore` waits up to `max_await_ms` for a change; nx-27017 answers at
  once, so the feed waits `poll_floor` between empty polls instead of spinning (25 ms: 40
  small queries a second per stream; at 10 ms the two streams' polls cost an idle service 17% of
  a core and the store 13%, and logins lost 10% of their throughput on a 2-core machine).

`LocalWrites` is a PyMongo command listener that notes when this process's own writes to chosen
collections finish. A change made by this process must be seen by its next request at once (a
member who changes a password and retries the old token on the same replica gets 401), not
after the stream delivers it: a cache serves only once its feed is fresh past the last local
write (`ChangeFeed.fresh_since`). The listener sees every write through the client, whichever
code made it, so no write path can forget to tell the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from pymongo.errors import OperationFailure, PyMongoError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from app.kit.store import Collection
from app.kit.tasks import cancel_and_wait

log = logging.getLogger("orgsvc.watch")

# MongoDB: "The $changeStream stage is only supported on replica sets" (a standalone mongod),
# and the codes a store uses for "no such stage / command here".
UNSUPPORTED_CODES = frozenset({40573, 40324, 115, 59})
# A change stream ends (the cursor is closed) after these: the cache must start over.
ENDING_EVENTS = frozenset({"invalidate", "drop", "rename", "dropDatabase"})
STOP_TIMEOUT_SECONDS = 2.0
POLL_FLOOR_SECONDS = 0.025  # between empty polls of a store that does not wait (nx-27017)
WRITE_COMMANDS = frozenset({"insert", "update", "delete", "findAndModify", "bulkWrite"})

Change = Mapping[str, Any]


class LocalWrites(CommandListener):
    """Notes, per collection name, when this process's last write to it finished (monotonic;
    a dict update per write command, nothing per read).

    Registered on the client at construction (`app.kit.db.make_client`); `of(client)` finds it.
    A failed write counts too: it may have been applied before the error reached us.
    """

    def __init__(self) -> None:
        self._pending: dict[int, str] = {}
        self.finished_at: dict[str, float] = {}

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in WRITE_COMMANDS:
            target = event.command.get(event.command_name)
            if isinstance(target, str):
                self._pending[event.request_id] = target

    def succeeded(self, event: CommandSucceededEvent) -> None:
        self._finish(event.request_id)

    def failed(self, event: CommandFailedEvent) -> None:
        self._finish(event.request_id)

    def _finish(self, request_id: int) -> None:
        target = self._pending.pop(request_id, None)
        if target is not None:
            self.finished_at[target] = time.monotonic()

    def last(self, collection: str) -> float:
        return self.finished_at.get(collection, -math.inf)

    @staticmethod
    def of(client: Any) -> LocalWrites | None:
        """The listener registered on `client`, if any (a test double has none)."""
        listeners = getattr(getattr(client, "options", None), "event_listeners", None)
        if not isinstance(listeners, (list, tuple)):
            return None  # the in-memory double answers any attribute
        return next((x for x in listeners if isinstance(x, LocalWrites)), None)


class ChangeFeed:
    """One collection's change stream, followed in the background (see the module docstring)."""

    def __init__(
        self,
        col: Collection,
        *,
        on_change: Callable[[Change], None],
        on_reset: Callable[[str], None],
        on_unsupported: Callable[[str], None],
        max_await_ms: int = 250,
        poll_floor: float = POLL_FLOOR_SECONDS,
        retry_max: float = 2.0,
    ) -> None:
        self.col = col
        self.name = col.name
        self.on_change = on_change
        self.on_reset = on_reset
        self.on_unsupported = on_unsupported
        self.max_await_ms = max_await_ms
        self.poll_floor = poll_floor
        self.retry_max = retry_max
        self.fresh_at = -math.inf
        self.unsupported = False
        self.resets = 0
        self.opened = asyncio.Event()  # set once the store answered (a stream, or "unsupported")
        self._token: Mapping[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"change-feed-{self.name}")

    async def stop(self) -> None:
        """Cancel the follower and wait for it, a bounded time (a shutdown never hangs on a
        store that does not answer: its cursor dies with the connection anyway)."""
        self.fresh_at = -math.inf
        self._stopping = True
        if self._task is not None:
            await cancel_and_wait(self._task, within=STOP_TIMEOUT_SECONDS)
            self._task = None

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except _Unsupported as exc:
                self.unsupported = True
                self.opened.set()
                self.on_unsupported(_reason(exc.__cause__ or exc))
                return
            except Exception as exc:
                self._gap(f"error: {_reason(exc)}")
                log.warning(
                    "change stream on %s lost (%s); reading per request until it is back",
                    self.name,
                    _reason(exc),
                )
                await asyncio.sleep(delay)
                delay = min(self.retry_max, delay * 2)
            else:
                delay = 0.05

    async def _follow(self) -> None:
        """Open the stream and poll it until something goes wrong (raised) or it ends.

        Raw `aggregate`/`getMore` commands in one explicit session rather than PyMongo's
        `ChangeStream` helper: the helper resumes by itself after a network error, and a store
        that came back without the change history (nx-27017 loses what was written while it
        had no triggers) would then look like a stream that missed nothing. Here every error
        reaches `_run`, which empties the cache first."""
        db = self.col.database
        async with db.client.start_session() as session:
            cursor = await self._open(db, session)
            self.opened.set()
            try:
                await self._poll(db, session, cursor)
            finally:
                # Close the cursor after an error or an end; not when stopping (no new I/O in a
                # cancelled task: the server drops the cursor with the connection or times it
                # out), and never for longer than a moment.
                if cursor.get("id") and not self._stopping:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(
                            db.command(
                                {"killCursors": self.name, "cursors": [cursor["id"]]},
                                session=session,
                            ),
                            STOP_TIMEOUT_SECONDS,
                        )

    async def _poll(self, db: Any, session: Any, cursor: dict[str, Any]) -> None:
        batch: list[Change] = cursor.get("firstBatch", [])
        started = time.monotonic()
        while True:
            for change in batch:
                kind = change.get("operationType")
                if kind in ENDING_EVENTS:
                    self._token = None  # an invalidated stream cannot be resumed after
                    self._gap(f"{kind} event")
                    return
                self.on_change(change)
                self._token = change.get("_id", self._token)
            self._token = cursor.get("postBatchResumeToken", self._token)
            if not batch:
                # Empty: every change committed before this getMore began has been handed
                # over (and those of earlier batches were, before it was sent).
                self.fresh_at = started
                rest = self.poll_floor - (time.monotonic() - started)
                if rest > 0:
                    await asyncio.sleep(rest)
            if not cursor.get("id"):
                raise StreamEnded("the store closed the change stream")
            started = time.monotonic()
            answer = await db.command(
                {"getMore": cursor["id"], "collection": self.name, "maxTimeMS": self.max_await_ms},
                session=session,
            )
            cursor = answer["cursor"]
            batch = cursor.get("nextBatch", [])

    async def _open(self, db: Any, session: Any) -> dict[str, Any]:
        try:
            return await self._aggregate(db, session)
        except Exception as exc:
            if _unsupported(exc):
                raise _Unsupported() from exc
            raise

    async def _aggregate(self, db: Any, session: Any) -> dict[str, Any]:
        if self._token is not None:
            try:
                return await self._start(db, session, {"resumeAfter": self._token})
            except OperationFailure as exc:  # history lost: start from now (cache is empty)
                log.info("change stream on %s not resumable (%s)", self.name, _reason(exc))
                self._token = None
        return await self._start(db, session, {})

    async def _start(self, db: Any, session: Any, options: dict[str, Any]) -> dict[str, Any]:
        answer = await db.command(
            {"aggregate": self.name, "pipeline": [{"$changeStream": options}], "cursor": {}},
            session=session,
        )
        cursor: dict[str, Any] = answer["cursor"]
        return cursor

    def _gap(self, why: str) -> None:
        self.fresh_at = -math.inf
        self.resets += 1
        self.on_reset(why)


class StreamEnded(Exception):
    """The store closed the stream's cursor (a gap: start over)."""


class _Unsupported(Exception):
    """The store cannot watch (raised by `_open`, from the store's own error)."""


def _unsupported(exc: Exception) -> bool:
    if isinstance(exc, OperationFailure):
        return exc.code in UNSUPPORTED_CODES
    # Not a driver error at all: a client without `watch` (the in-memory test double).
    return not isinstance(exc, PyMongoError)


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    return type(exc).__name__ if code is None else f"{type(exc).__name__} {code}"
