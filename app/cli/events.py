"""`orgsvc events tail`: the events feed (contract v2, section 5) as JSON lines, following it.

It reads the same published feed as `GET /events` (`state.repos.events`), in the one global
order, so what it prints is what a consumer paging with `after` sees: nothing missed, nothing
twice. Events are published by a running service (its publisher); the CLI only reads.

Exit codes: 0 done (`--once`) or interrupted (Ctrl-C / SIGTERM), 1 an unknown `--after` id, no
such organization or an unreachable database (one line on stderr), 2 usage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys

import typer

from app.cli.base import organization_named, run
from app.events.records import EVENT_TYPES, StoredEvent
from app.events.store import EventStore
from app.kit.store import is_id
from app.wiring import AppState

events_cli = typer.Typer(help="The events feed: tail.", no_args_is_help=True)

PAGE = 100  # events per read
_EVENT_ID = re.compile(r"^evt_[0-9a-f]{24}\Z")  # as `GET /events?after=`


def _types(value: str | None) -> list[str] | None:
    if value is None:
        return None
    wanted = list(dict.fromkeys(t.strip() for t in value.split(",") if t.strip()))
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown or not wanted:
        raise typer.BadParameter(
            f"unknown event types: {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(EVENT_TYPES)}",
            param_hint="--types",
        )
    return wanted


def _line(event: StoredEvent) -> str:
    return json.dumps(event.public(), ensure_ascii=False)


async def _organization_id(state: AppState, given: str) -> str:
    """An organization's id as given (24 hex: a deleted organization's events too), else the
    id of the active organization of that name."""
    if is_id(given):
        return given
    org = await organization_named(state, given)
    if org is None:
        typer.echo(f"orgsvc: no organization named {given!r}", err=True)
        raise typer.Exit(1)
    return org.organization_id


class _Feed:
    """A reader of the published feed from position `after`, filtered, never past what was
    visible when it read (the high-water mark), so it cannot pass over an event that becomes
    visible later: every position at or below the mark is final."""

    def __init__(
        self, store: EventStore, *, after: int, types: list[str] | None, org: str | None
    ) -> None:
        self.store = store
        self.after = after
        self.types = types
        self.org = org

    async def drain(self) -> int:
        """Print every matching event after `after` up to the current mark; how many."""
        top = await self.store.published()
        printed = 0
        while self.after < top:
            items = await self.store.page(
                after_seq=self.after,
                limit=PAGE,
                types=self.types,
                organization_id=self.org,
                upto=top,
            )
            if not items:  # nothing (more) matches up to the mark
                self.after = top
                break
            typer.echo("\n".join(_line(e) for e in items))  # click flushes each echo
            printed += len(items)
            self.after = items[-1].seq
        return printed


@events_cli.command("tail")
def tail(
    after: str | None = typer.Option(
        None, "--after", metavar="EVENT_ID", help="Start after this event (exclusive)."
    ),
    types: str | None = typer.Option(
        None, help="Only these comma-separated types, e.g. organization.created,member.joined."
    ),
    org: str | None = typer.Option(
        None, "--org", metavar="ORG", help="Only this organization's events (its id or name)."
    ),
    from_start: bool = typer.Option(False, "--from-start", help="Start at the feed's first event."),
    once: bool = typer.Option(
        False, "--once", help="Print what is in the feed now and exit (do not follow)."
    ),
    interval: float = typer.Option(
        0.5, min=0.05, max=60.0, help="Seconds between polls while following."
    ),
) -> None:
    """Print events as JSON lines (the `GET /events` shape) in the global order, then follow
    the feed until interrupted. Without --after or --from-start it starts at the feed's end
    (only new events)."""
    if after is not None and from_start:
        raise typer.BadParameter("give --after or --from-start, not both")
    if after is not None and not _EVENT_ID.match(after):
        raise typer.BadParameter("an event id is evt_ and 24 hex digits", param_hint="--after")
    wanted = _types(types)

    async def go(state: AppState) -> None:
        store = state.repos.events
        if after is not None:
            seq = await store.seq_of(after)
            if seq is None:
                typer.echo(f"orgsvc: unknown event id {after!r} (not in the feed)", err=True)
                raise typer.Exit(1)
            start = seq
        elif from_start:
            start = 0
        else:
            start = await store.published()
        org_id = None if org is None else await _organization_id(state, org)
        feed = _Feed(store, after=start, types=wanted, org=org_id)
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        # Ctrl-C and SIGTERM (a supervisor's stop) end the tail at once, even in the middle of a
        # read. Both handled here: a process started in the background by a shell inherits
        # SIGINT ignored, and Python then never raises KeyboardInterrupt for it.
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(stop_signal, main.cancel)
        try:
            await feed.drain()
            while not once:
                await asyncio.sleep(interval)
                await feed.drain()
        except asyncio.CancelledError:
            if main.cancelling():  # ours (Ctrl-C, SIGTERM): a normal way to stop
                main.uncancel()
                return
            raise
        finally:
            for stop_signal in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(stop_signal)

    try:
        run(go)
    except KeyboardInterrupt:  # Ctrl-C while following: a normal way to stop
        raise typer.Exit(0) from None
    except BrokenPipeError:  # `orgsvc events tail | head`: the reader has had enough
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(0) from None
