"""Domain events: what happened, as facts, through one in-process hook.

A service (or the step of an operation) emits an event when a change has been made:
`organization.created`, `organization.renamed`, `organization.updated`, `organization.deleted`,
`admin.password_changed`, `admin.logged_in`, `admin.logged_out`, `admin.logged_out_all`. Handlers
subscribe in the composition root (`app/wiring.py`); the audit log is the first (it starts a
deleted organization's retention clock on `organization.deleted`, whoever finished the delete).

Operation steps emit from inside the step that makes the change, with the operation's id, so
that the step run by a request and the same step re-run by the reconciler name one event: a
persisted outbox can store an event under (`op_id`, `type`) in the same conditional write as the
step, and a second run then adds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("orgsvc.events")


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """One fact about an organization: its type, whose, what (public fields only), and the
    operation whose step made it (None for single-write changes)."""

    type: str
    organization_id: str
    data: Mapping[str, Any] = field(default_factory=dict)
    op_id: str | None = None


EventHandler = Callable[[DomainEvent], Awaitable[None]]


class EventHook:
    """Delivers each event to every subscribed handler, in order. The change has already
    happened when an event is emitted, so a failing handler is logged, never raised."""

    def __init__(self) -> None:
        self._handlers: list[EventHandler] = []

    def subscribe(self, handler: EventHandler) -> None:
        self._handlers.append(handler)

    async def emit(self, event: DomainEvent) -> None:
        for handler in self._handlers:
            try:
                await handler(event)
            except Exception:
                log.exception(
                    "event handler failed",
                    extra={"event": event.type, "organization_id": event.organization_id},
                )
