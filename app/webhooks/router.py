"""`/webhooks`: endpoints that receive events (scope `webhooks:manage`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import WithJsonSchema

from app.api_keys.service import KeyPrincipal
from app.deps import Meta, State, require_scope
from app.kit.responses import BODY_ERRORS, Responses, errors
from app.webhooks.schemas import (
    DeliveryPage,
    DeliveryRead,
    ReplayAccepted,
    ReplayRequest,
    SecretRotated,
    WebhookCreate,
    WebhookCreated,
    WebhookPage,
    WebhookPatch,
    WebhookRead,
)

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

SCOPE = "webhooks:manage"
Manager = Annotated[KeyPrincipal, Depends(require_scope(SCOPE))]
KEY_401 = "`not_authenticated` (no `X-API-Key`) or `invalid_api_key` (unknown or revoked)."
SCOPE_403 = f"`insufficient_scope`: the key lacks `{SCOPE}`."
NOT_FOUND = "`not_found`: no webhook with this id."
URL_422 = (
    "`validation_error`: invalid input, or a URL the SSRF guard refuses (not http(s), does "
    "not resolve, or resolves to a loopback, private, link-local or metadata address)."
)


def _errors(*statuses: int, body: bool = False, **extra: str) -> Responses:
    descriptions: dict[str, Any] = {"s401": KEY_401, "s403": SCOPE_403, **extra}
    found = errors(*statuses, **descriptions)
    return {**found, **BODY_ERRORS} if body else found


WebhookId = Annotated[
    str,
    Path(
        description="The webhook's id (anything else is a 404).",
        examples=["6650f2a9c1d4e8b7a3f01234"],
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size.")]
# The cursors' rules (what a base64url text must decode to) are not JSON Schema keywords: the
# schema names each with a format.
WEBHOOK_CURSOR_FORMAT = "webhook-cursor"
DELIVERY_CURSOR_FORMAT = "delivery-cursor"
WebhookCursor = Annotated[
    str | None,
    WithJsonSchema(
        {"type": "string", "minLength": 2, "maxLength": 64, "format": WEBHOOK_CURSOR_FORMAT}
    ),
    Query(
        min_length=2,
        max_length=64,
        description="`next_cursor` of the previous page, passed back unchanged (the base64url "
        "of the last endpoint's 24-hex-digit id). Anything else is a 422.",
    ),
]
DeliveryCursor = Annotated[
    str | None,
    WithJsonSchema(
        {"type": "string", "minLength": 2, "maxLength": 64, "format": DELIVERY_CURSOR_FORMAT}
    ),
    Query(
        min_length=2,
        max_length=64,
        description="`next_cursor` of the previous page, passed back unchanged (the base64url "
        "of `<position>.<generation>` of the last delivery). Anything else is a 422.",
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=_errors(401, 403, 422, 503, body=True, s422=URL_422),
)
async def create_webhook(
    body: WebhookCreate, state: State, key: Manager, meta: Meta
) -> WebhookCreated:
    """Register an endpoint for the given event types; its signing secret is shown this once."""
    hook, secret = await state.webhooks.create(
        url=body.url,
        types=list(body.types),
        description=body.description,
        actor=key.actor,
        meta=meta,
    )
    return WebhookCreated(**WebhookRead.of(hook).model_dump(), secret=secret)


@router.get("", response_model=WebhookPage, responses=_errors(401, 403, 422, 503))
async def list_webhooks(
    state: State, _key: Manager, limit: Limit = 20, cursor: WebhookCursor = None
) -> WebhookPage:
    """Every endpoint, oldest first, in pages (no secrets)."""
    found, next_cursor = await state.webhooks.page(limit=limit, cursor=cursor)
    return WebhookPage(items=[WebhookRead.of(h) for h in found], next_cursor=next_cursor)


@router.get(
    "/{webhook_id}",
    response_model=WebhookRead,
    responses=_errors(401, 403, 404, 422, 503, s404=NOT_FOUND),
)
async def get_webhook(webhook_id: WebhookId, state: State, _key: Manager) -> WebhookRead:
    """One endpoint (no secret)."""
    return WebhookRead.of(await state.webhooks.get(webhook_id))


@router.patch(
    "/{webhook_id}",
    response_model=WebhookRead,
    responses=_errors(401, 403, 404, 422, 503, body=True, s404=NOT_FOUND, s422=URL_422),
)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookPatch, state: State, key: Manager, meta: Meta
) -> WebhookRead:
    """Change any of `url`, `types`, `description`, `enabled`."""
    changes = body.model_dump(exclude_unset=True)
    hook = await state.webhooks.update(webhook_id, changes, actor=key.actor, meta=meta)
    return WebhookRead.of(hook)


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_errors(401, 403, 404, 422, 503, s404=NOT_FOUND),
)
async def delete_webhook(webhook_id: WebhookId, state: State, key: Manager, meta: Meta) -> Response:
    """Remove an endpoint and its delivery history."""
    await state.webhooks.delete(webhook_id, actor=key.actor, meta=meta)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/{webhook_id}/rotate-secret",
    response_model=SecretRotated,
    responses=_errors(401, 403, 404, 422, 503, s404=NOT_FOUND),
)
async def rotate_secret(
    webhook_id: WebhookId, state: State, key: Manager, meta: Meta
) -> SecretRotated:
    """A new signing secret (shown this once); the previous one keeps signing for 24 h, so
    deliveries carry both signatures meanwhile."""
    secret, until = await state.webhooks.rotate_secret(webhook_id, actor=key.actor, meta=meta)
    return SecretRotated(webhook_id=webhook_id, secret=secret, previous_expires_at=until)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=DeliveryPage,
    responses=_errors(401, 403, 404, 422, 503, s404=NOT_FOUND),
)
async def list_deliveries(
    webhook_id: WebhookId,
    state: State,
    _key: Manager,
    status_: Annotated[
        Literal["pending", "delivered", "failed"] | None,
        Query(alias="status", description="Only deliveries in this status (default: any)."),
    ] = None,
    limit: Limit = 20,
    cursor: DeliveryCursor = None,
) -> DeliveryPage:
    """The endpoint's delivery history, newest event first (kept 30 days after it ends)."""
    found, next_cursor = await state.webhooks.deliveries(
        webhook_id, status=status_, limit=limit, cursor=cursor
    )
    return DeliveryPage(items=[DeliveryRead.of(d) for d in found], next_cursor=next_cursor)


@router.post(
    "/{webhook_id}/replay",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ReplayAccepted,
    responses=_errors(
        401, 403, 404, 422, 503, body=True, s404=NOT_FOUND,
        s422="`validation_error`: invalid input, or `after` is not a published event's id.",
    ),
)  # fmt: skip
async def replay(
    webhook_id: WebhookId, body: ReplayRequest, state: State, key: Manager, meta: Meta
) -> ReplayAccepted:
    """Deliver again every event of the endpoint's types published after `after`."""
    generation = await state.webhooks.replay(
        webhook_id, after=body.after, actor=key.actor, meta=meta
    )
    return ReplayAccepted(webhook_id=webhook_id, after=body.after, generation=generation)
