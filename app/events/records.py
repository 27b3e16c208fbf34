"""The event as stored and as callers see it (section 5 of the contract v2).

An event is first **pending**: written into an outbox by the very write that makes its change
(the organization record's `outbox` array, in the same update; or, for a deleted organization,
the `event_outbox` collection). The publisher (`app.events.publisher`) then gives it its
position in the one global order and moves it to `events`, where `_id` is that position.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from bson import ObjectId
from pydantic import AliasChoices, Field, PlainSerializer

from app.kit.fields import utc_text
from app.kit.store import Doc, Record, StoredTime, utcnow

# Stored as a datetime, shown as `2026-11-24T10:00:00.000Z` (as every time of the API).
EventTime = Annotated[StoredTime, PlainSerializer(utc_text, return_type=str, when_used="json")]

# The contract's catalogue (section 5).
EventType = Literal[
    "organization.created",
    "organization.updated",
    "organization.renamed",
    "organization.suspended",
    "organization.restored",
    "organization.deleted",
    "organization.moving",
    "organization.moved",
    "member.invited",
    "member.joined",
    "member.role_changed",
    "member.removed",
    "invitation.revoked",
    "api_key.created",
    "api_key.revoked",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)


def new_event_id() -> str:
    """`evt_<24 hex>`: unique, and roughly in time order (an ObjectId)."""
    return f"evt_{ObjectId()}"


class EventActor(Record):
    """Who made the change: `admin` (a member), `api_key`, `cli`, `system` (the reconciler
    finishing someone's change keeps that someone), or `anonymous` (an invitee accepting)."""

    type: str
    id: str | None = None


class Requirement(Record):
    """A pending event whose change is written just after it, to another collection (an API
    key): publishable once `collection` has a document `_id` = `doc_id` with `field` =
    `value`; dropped if that has not happened within the grace period (the change never
    happened)."""

    collection: str
    doc_id: str
    field: str
    value: Any


class PendingEvent(Record):
    """An event in an outbox, not yet in the global order. `n`: its place among its
    organization's events (the record's `revision` that its write set)."""

    id: str
    n: int = 0
    type: str
    organization_id: str
    occurred_at: EventTime
    actor: EventActor
    data: dict[str, Any]
    requires: Requirement | None = None

    @classmethod
    def of(
        cls,
        type_: str,
        organization_id: str,
        data: dict[str, Any],
        *,
        actor: EventActor,
        event_id: str | None = None,
        requires: Requirement | None = None,
    ) -> PendingEvent:
        assert type_ in EVENT_TYPES, type_
        return cls(
            id=event_id or new_event_id(),
            type=type_,
            organization_id=organization_id,
            occurred_at=utcnow(),
            actor=actor,
            data=data,
            requires=requires,
        )

    def to_doc(self) -> Doc:
        return self.model_dump(mode="python")


class StoredEvent(Record):
    """A published event: `seq` is its position in the global order (the document's `_id`)."""

    seq: int = Field(validation_alias=AliasChoices("_id", "seq"))
    id: str = Field(validation_alias=AliasChoices("event_id", "id"))  # stored as `event_id`
    type: str
    organization_id: str
    occurred_at: EventTime
    actor: EventActor
    data: dict[str, Any]

    def to_doc(self) -> Doc:
        """As stored in `events`: `_id` and `seq` the position, `event_id` the id."""
        doc = self.model_dump(mode="python", exclude={"id"})
        return {"_id": self.seq, **doc, "event_id": self.id}

    def public(self) -> dict[str, Any]:
        """The contract's event JSON: `{id, type, occurred_at, organization_id, actor, data}`
        (the position is ours; callers page by `id`)."""
        return self.model_dump(mode="json", exclude={"seq"})
