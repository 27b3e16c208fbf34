"""What authentication reads, kept in process memory and invalidated by change streams.

Authenticating a bearer token needs the organization's status with the member's entry (role,
token version, denylist mark) and, only while that mark is set, whether the token or its
session is on the denylist. Without the cache each is a database read on every request; with
it, a request whose answers are cached makes no round trip at all.

**Guarantees.** An entry is served only while both change feeds (`organizations`,
`revoked_tokens`; `app.kit.watch.ChangeFeed`) are caught up to within `AUTH_CACHE_MAX_LAG_MS` and
past the last write this process made to either collection. Otherwise the request reads the
database, as without the cache (it fails closed, never open):
- a change to an organization record drops that organization's entries when its change event
  arrives (milliseconds: bench figure 8); a change to the denylist drops every denylist answer;
- a read that raced with a change to its organization is not stored (`_stale`), so an answer
  read before a revocation can never be cached after it;
- a feed error, gap or `invalidate` empties the cache; it fills again once the feed is back;
- a store without change streams (a standalone mongod) never serves from the cache;
- this process's own writes are seen by its very next request (`LocalWrites`);
- it never refuses on its own: an answer from memory that would refuse a token is checked
  against the store first (`AuthService.authenticate`), so a token issued on another replica a
  moment ago (after a password change there) is never refused here because of an entry that
  is a few milliseconds behind. The cache can delay a revocation (bounded), never invent one.

**Memory and cold start.** At most `AUTH_CACHE_MAX_ENTRIES` member entries (and as many denylist
answers), least recently used evicted first. Concurrent misses for one key share one read
(single flight), so a cold cache under load costs one read per member, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from bson import ObjectId

from app.kit.metrics import Metrics
from app.kit.store import Collection
from app.kit.watch import Change, ChangeFeed, LocalWrites
from app.organizations.records import Organization

RECENT_CHANGES = 4096  # organization changes remembered for the race check of reads in flight

CacheMode = Literal["serving", "reading", "off", "unsupported"]
MemberKey = tuple[str, str]
DenyKey = tuple[str, ...]
Loader = Callable[[], Awaitable[Any]]
_MISSING: Any = object()
log = logging.getLogger("orgsvc.auth")


class AuthCache:
    """The cache (see the module docstring). `enabled=False` makes every call a plain read."""

    def __init__(
        self,
        organizations: Collection,
        revocations: Collection,
        *,
        enabled: bool,
        max_entries: int,
        max_lag_ms: int,
        local: LocalWrites | None,
        metrics: Metrics | None = None,
    ) -> None:
        self.enabled = enabled and local is not None
        self.max_entries = max_entries
        self.max_lag = max_lag_ms / 1000
        self.local = local
        self.members: OrderedDict[MemberKey, Organization | None] = OrderedDict()
        self.denied: OrderedDict[DenyKey, bool] = OrderedDict()
        self._by_org: dict[str, set[str]] = {}
        self._inflight: dict[Any, asyncio.Future[Any]] = {}
        # Counters of what was invalidated, for the race check of reads in flight.
        self._org_seq = 0
        self._recent: deque[tuple[int, str]] = deque(maxlen=RECENT_CHANGES)
        self._deny_seq = 0
        self._epoch = 0  # moves on every reset: nothing read before it may be stored after
        self.hits = self.misses = self.bypassed = 0
        self._said_unsupported = False
        self.feeds = [
            ChangeFeed(
                col, on_change=on_change, on_reset=self._reset, on_unsupported=self._unsupported
            )
            for col, on_change in (
                (organizations, self._org_changed),
                (revocations, self._deny_changed),
            )
        ]
        if metrics is not None:
            metrics.auth_cache_entries.set_function(lambda: len(self.members) + len(self.denied))
            metrics.auth_cache_serving.set_function(lambda: 1.0 if self.serving() else 0.0)
            metrics.auth_cache_lookups.source = lambda: {
                "hit": self.hits, "miss": self.misses, "bypass": self.bypassed
            }  # fmt: skip
            metrics.auth_cache_resets.source = lambda: {"": sum(f.resets for f in self.feeds)}

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self.enabled:
            for feed in self.feeds:
                feed.start()

    async def stop(self) -> None:
        for feed in self.feeds:
            await feed.stop()
        self._reset("stopped")

    async def ready(self) -> None:
        """Wait until each feed has opened (or found the store cannot watch): tests and the
        benchmark start measuring from a known state. Never needed for correctness."""
        if self.enabled:
            await asyncio.gather(*(feed.opened.wait() for feed in self.feeds))

    @property
    def mode(self) -> CacheMode:
        """`off` (setting), `unsupported` (no change streams), `serving` or `reading`."""
        if not self.enabled:
            return "off"
        if any(feed.unsupported for feed in self.feeds):
            return "unsupported"
        return "serving" if self.serving() else "reading"

    def serving(self) -> bool:
        """Whether an entry may be served now: each feed caught up within the allowed lag and
        past this process's last write to its collection."""
        if not self.enabled:
            return False
        now = time.monotonic()
        local = self.local
        assert local is not None
        for feed in self.feeds:
            if now - feed.fresh_at > self.max_lag or feed.fresh_at <= local.last(feed.name):
                return False
        return True

    # --- reads ---------------------------------------------------------------------------------

    async def member(
        self, org_id: str, member_id: str, load: Callable[[], Awaitable[Organization | None]]
    ) -> tuple[Organization | None, bool]:
        """The organization with `member_id`'s entry (None: no such active organization or
        member), from memory when the cache may serve, else from `load()`; and whether it came
        from memory (then it may be a few milliseconds behind the store: see `forget`)."""
        if not self.serving():
            self.bypassed += 1
            return await load(), False
        key = (org_id, member_id)
        hit = self.members.get(key, _MISSING)
        if hit is not _MISSING:
            self.members.move_to_end(key)
            self.hits += 1
            return hit, True
        self.misses += 1
        seq, epoch = self._org_seq, self._epoch

        def store(value: Organization | None) -> None:
            if self._epoch == epoch and not self._org_stale(seq, org_id) and self.serving():
                self._put_member(key, value)

        result: Organization | None = await self._single_flight(("m", key), load, store)
        return result, False

    async def revoked(self, keys: list[str], load: Callable[[], Awaitable[bool]]) -> bool:
        """Whether any of these denylist keys is denied (cached like `member`)."""
        if not self.serving():
            self.bypassed += 1
            return await load()
        key = tuple(keys)
        hit = self.denied.get(key, _MISSING)
        if hit is not _MISSING:
            self.denied.move_to_end(key)
            self.hits += 1
            return hit  # type: ignore[no-any-return]
        self.misses += 1
        seq, epoch = self._deny_seq, self._epoch

        def store(value: bool) -> None:
            if self._epoch == epoch and self._deny_seq == seq and self.serving():
                self.denied[key] = value
                while len(self.denied) > self.max_entries:
                    self.denied.popitem(last=False)

        result: bool = await self._single_flight(("d", key), load, store)
        return result

    async def _single_flight(self, key: Any, load: Loader, store: Callable[[Any], None]) -> Any:
        """One read per key at a time: concurrent misses wait for the first one's answer. The
        read runs in its own task, so a caller that goes away does not cancel it for others."""
        shared = self._inflight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(load())

            def landed(fut: asyncio.Future[Any], key: Any = key) -> None:
                if self._inflight.get(key) is fut:
                    del self._inflight[key]
                if not fut.cancelled() and fut.exception() is None:
                    store(fut.result())

            shared.add_done_callback(landed)
            self._inflight[key] = shared
        return await asyncio.shield(shared)

    # --- invalidation --------------------------------------------------------------------------

    def forget(self, org_id: str) -> None:
        """Drop what is kept of this organization, as if it had changed (its next request
        reads): for a caller that found an entry behind the store."""
        self._org_changed({"documentKey": {"_id": org_id}})

    def _org_changed(self, change: Change) -> None:
        org_id = (change.get("documentKey") or {}).get("_id")
        if isinstance(org_id, ObjectId):
            # nx-27017 reports a 24-hex string id (ours) as an ObjectId; MongoDB as the string.
            org_id = str(org_id)
        if not isinstance(org_id, str):
            self._reset("organization change without a string id")
            return
        self._org_seq += 1
        self._recent.append((self._org_seq, org_id))
        for member_id in self._by_org.pop(org_id, ()):
            self.members.pop((org_id, member_id), None)
        # A read already under way may predate the change: later callers read again.
        for key in [k for k in self._inflight if k[0] == "m" and k[1][0] == org_id]:
            del self._inflight[key]

    def _deny_changed(self, change: Change) -> None:
        self._deny_seq += 1
        self.denied.clear()
        for key in [k for k in self._inflight if k[0] == "d"]:
            del self._inflight[key]

    def _org_stale(self, seq: int, org_id: str) -> bool:
        """Whether `org_id` changed since `seq` (or whether that can no longer be told)."""
        if self._org_seq == seq:
            return False
        if not self._recent or self._recent[0][0] > seq + 1:
            return True  # more changes than remembered: assume the worst
        return any(s > seq and o == org_id for s, o in reversed(self._recent))

    def _unsupported(self, reason: str) -> None:
        if not self._said_unsupported:
            self._said_unsupported = True
            log.warning(
                "authentication cache off: the store has no change streams (%s); every "
                "request reads the database",
                reason,
            )

    def _reset(self, why: str) -> None:
        self._epoch += 1
        self.members.clear()
        self.denied.clear()
        self._by_org.clear()
        self._inflight.clear()

    def _put_member(self, key: MemberKey, value: Organization | None) -> None:
        self.members[key] = value
        self.members.move_to_end(key)
        self._by_org.setdefault(key[0], set()).add(key[1])
        while len(self.members) > self.max_entries:
            (org_id, member_id), _ = self.members.popitem(last=False)
            ids = self._by_org.get(org_id)
            if ids is not None:
                ids.discard(member_id)
                if not ids:
                    del self._by_org[org_id]
