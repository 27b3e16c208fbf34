"""`orgsvc webhooks list|deliveries`: the webhook endpoints and their delivery history, read
through the webhooks feature's own service (`state.webhooks`, as `GET /webhooks` and
`GET /webhooks/{id}/deliveries`). Never a signing secret.

Exit codes: 0 done, 1 no such endpoint or an unreachable database (one line on stderr), 2 usage.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from app.cli.base import run
from app.webhooks.repository import WebhookRecord
from app.webhooks.schemas import DeliveryRead, WebhookRead
from app.wiring import AppState

webhooks_cli = typer.Typer(
    help="Webhook endpoints and their deliveries: list, deliveries.", no_args_is_help=True
)

PAGE = 100  # rows per service read


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    failed = "failed"


def _endpoint(hook: WebhookRecord) -> dict[str, Any]:
    """The API's endpoint object (no secret), and why a disabled one is disabled."""
    return {
        **WebhookRead.of(hook).model_dump(mode="json"),
        "disabled_reason": hook.disabled_reason,
    }


@webhooks_cli.command("list")
def list_webhooks(
    all_: bool = typer.Option(False, "--all", help="Include disabled endpoints."),
) -> None:
    """List endpoints (enabled ones unless --all), oldest first, one JSON object per line."""

    async def go(state: AppState) -> list[WebhookRecord]:
        found: list[WebhookRecord] = []
        cursor: str | None = None
        while True:
            items, cursor = await state.webhooks.page(limit=PAGE, cursor=cursor)
            found += [hook for hook in items if all_ or hook.enabled]
            if cursor is None:
                return found

    for hook in run(go):
        typer.echo(json.dumps(_endpoint(hook), ensure_ascii=False))


@webhooks_cli.command("deliveries")
def deliveries(
    webhook_id: str = typer.Argument(..., help="The endpoint's id (webhook_id)."),
    status: DeliveryStatus | None = typer.Option(None, help="Only deliveries in this status."),
    limit: int = typer.Option(100, min=1, max=100_000, help="At most this many."),
) -> None:
    """An endpoint's delivery history, newest event first, one JSON object per line:
    delivery_id, event_id, status, attempts, last_status_code, last_error, next_attempt_at."""

    async def go(state: AppState) -> list[DeliveryRead]:
        found: list[DeliveryRead] = []
        cursor: str | None = None
        while len(found) < limit:
            items, cursor = await state.webhooks.deliveries(
                webhook_id,
                status=None if status is None else status.value,
                limit=min(PAGE, limit - len(found)),
                cursor=cursor,
            )
            found += [DeliveryRead.of(item) for item in items]
            if cursor is None:
                break
        return found

    for row in run(go):
        typer.echo(json.dumps(row.model_dump(mode="json"), ensure_ascii=False))
