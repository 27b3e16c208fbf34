"""Recording an organization's events in the write that makes its change (the outbox).

Every write that makes an event is conditional on the organization record's `revision` (as it
was read) and sets it to the event's `n`, adding the event under `outbox.<event id>` in the same
update: the change and its event are one atomic write, so a crash can neither lose the event
nor leave one for a change that did not happen, and each organization's events are numbered in
the order their writes committed. The publisher (`app.events.publisher`) moves them to the feed.
"""

from __future__ import annotations

from typing import Any

from app.audit.service import Actor
from app.events.records import EventActor, PendingEvent, Requirement
from app.kit.store import Doc, epoch_ms
from app.organizations.records import Organization
from app.organizations.schemas import OrganizationRead

SYSTEM = EventActor(type="system")


def event_actor(actor: Actor | None) -> EventActor:
    return SYSTEM if actor is None else EventActor(type=actor.type, id=actor.id)


def org_data(org: Organization) -> dict[str, Any]:
    """The organization object of the API (the `data` of `organization.*` events)."""
    return OrganizationRead.of(org).model_dump(mode="json")


def org_event(
    type_: str,
    org: Organization,
    actor: EventActor,
    *,
    event_id: str | None = None,
    extra: dict[str, Any] | None = None,
) -> PendingEvent:
    """An `organization.*` event whose data is `org` (as it is after the change)."""
    data = {**org_data(org), **(extra or {})}
    return PendingEvent.of(type_, org.organization_id, data, actor=actor, event_id=event_id)


def other_event(
    type_: str,
    org_id: str,
    data: dict[str, Any],
    actor: EventActor,
    *,
    requires: Requirement | None = None,
) -> PendingEvent:
    return PendingEvent.of(type_, org_id, data, actor=actor, requires=requires)


def with_events(update: Doc, org: Organization, events: list[PendingEvent]) -> Doc:
    """`update` plus `events` in the record's outbox, numbered after `org.revision`, and the
    new revision. The update's filter must hold `revision: org.revision` (`revision_filter`)."""
    if not events:
        return update
    out: Doc = {key: dict(value) for key, value in update.items()}
    sets = out.setdefault("$set", {})
    for i, event in enumerate(events, start=1):
        numbered = event.model_copy(update={"n": org.revision + i})
        sets[f"outbox.{event.id}"] = numbered.to_doc()
    sets["revision"] = org.revision + len(events)
    out.setdefault("$min", {})["outbox_since_ms"] = epoch_ms()
    return out


def revision_filter(org: Organization) -> Doc:
    """The condition "the record is still at the revision `org` was read at" (a record that
    was never given one, written by an older release, reads as revision 0)."""
    if org.revision == 0:
        return {"revision": {"$in": [0, None]}}
    return {"revision": org.revision}
