"""The webhooks API's bodies and answers (contract v2, section 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema

from app.events.records import EVENT_TYPES, EventType
from app.kit.fields import StrictModel, UtcTime
from app.kit.pagination import Page
from app.webhooks.repository import DeliveryRecord, WebhookRecord


def _unique(types: list[str]) -> list[str]:
    return list(dict.fromkeys(types))


# A URL the SSRF guard (`app.webhooks.guard`) accepts: a rule JSON Schema keywords cannot state
# (it depends on what the host resolves to), so the schema names it with a format.
URL_FORMAT = "webhook-url"
Url = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2048,
        pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^\s\x00]+$",
        description=(
            "Where events are POSTed: http(s), no credentials. Every address its host resolves "
            "to must be public (not loopback, private, link-local, metadata, ...), now and at "
            "every delivery; otherwise 422."
        ),
        # A literal public address: a host name must resolve (to public addresses only), and
        # an example's name would not.
        examples=["https://93.184.215.14/orgsvc"],
        json_schema_extra={"format": URL_FORMAT},
    ),
]
Types = Annotated[
    list[EventType],
    Field(min_length=1, max_length=len(EVENT_TYPES), description="The event types to deliver."),
    AfterValidator(_unique),
]
Description = Annotated[str, Field(max_length=500, pattern=r"^[^\x00]*$")]


class WebhookCreate(StrictModel):
    """A new endpoint."""

    url: Url
    types: Types
    description: Description = ""


_PATCH_FIELDS = ("url", "types", "description", "enabled")


class WebhookPatch(StrictModel):
    """Any of the endpoint's fields, at least one, none null; `enabled: true` resumes it from
    the feed's current end (events published while it was disabled are not sent: replay them)."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": [name]} for name in _PATCH_FIELDS]}
    )

    # Never null (a 422 below): the schema does not offer null.
    url: Url | SkipJsonSchema[None] = None
    types: Types | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None
    enabled: StrictBool | SkipJsonSchema[None] = None  # `0` or `"false"` is a 422, not false

    @model_validator(mode="after")
    def _something(self) -> WebhookPatch:
        given = self.model_dump(exclude_unset=True)
        if not given:
            raise ValueError("give at least one of url, types, description, enabled")
        if any(value is None for value in given.values()):
            raise ValueError("url, types, description and enabled may not be null")
        return self


class WebhookRead(StrictModel):
    """An endpoint (never its secret)."""

    webhook_id: str
    url: str
    types: list[str]
    description: str
    enabled: bool
    created_at: UtcTime

    @classmethod
    def of(cls, hook: WebhookRecord) -> WebhookRead:
        return cls(
            webhook_id=hook.webhook_id,
            url=hook.url,
            types=hook.types,
            description=hook.description,
            enabled=hook.enabled,
            created_at=hook.created_at,
        )


class WebhookCreated(WebhookRead):
    """A new endpoint with its signing secret, shown this once."""

    secret: str = Field(description="`whsec_...`: verify deliveries with it; shown only now.")


class SecretRotated(StrictModel):
    """The endpoint's new signing secret (shown this once); the previous one also signs until
    `previous_expires_at`."""

    webhook_id: str
    secret: str
    previous_expires_at: UtcTime


class DeliveryRead(StrictModel):
    """One event's delivery to the endpoint (a replay is a delivery of its own)."""

    delivery_id: str
    event_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: UtcTime | None

    @classmethod
    def of(cls, record: DeliveryRecord) -> DeliveryRead:
        due = None
        if record.status == "pending" and record.next_attempt_ms:
            due = datetime.fromtimestamp(record.next_attempt_ms / 1000, UTC)
        return cls.model_validate(
            {
                "delivery_id": record.delivery_id,
                "event_id": record.event_id,
                "status": record.status,
                "attempts": record.attempts,
                "last_status_code": record.last_status_code,
                "last_error": record.last_error,
                "next_attempt_at": due,
            }
        )


class ReplayRequest(StrictModel):
    """Deliver again every matching event after this one (exclusive)."""

    after: str = Field(min_length=1, max_length=64, pattern=r"^evt_[0-9a-f]{24}$")


class ReplayAccepted(StrictModel):
    """The replay is queued; its deliveries appear in the history as they are made."""

    webhook_id: str
    after: str
    generation: int


WebhookPage = Page[WebhookRead]
DeliveryPage = Page[DeliveryRead]
