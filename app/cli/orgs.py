"""`orgsvc orgs list|show|suspend|restore|stats`: look at organizations, and the operator's
lifecycle actions on them (the same `LifecycleService` as `/orgs/*`, audited with a CLI actor).

ORG is an organization's id (24 hex) or its name (matched by slug). Exit codes: 0 done, 1 no
such organization or a refusal of the service (one line on stderr), 2 usage.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

import typer
from pydantic import ValidationError
from tqdm import tqdm

from app.audit.service import CLI_META, Actor
from app.cli.base import (
    echo_line,
    no_such_organization,
    organization_given,
    organization_named,
    progress,
    run,
)
from app.kit.errors import AppError, InvalidInput
from app.organizations.records import Organization
from app.organizations.schemas import SuspendRequest
from app.wiring import AppState

orgs_cli = typer.Typer(
    help="Organizations: list, show, suspend, restore, stats.", no_args_is_help=True
)

PAGE = 100  # organizations per `lifecycle.page` read
_PLAN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # as `GET /orgs?plan=`

ProgressOption = typer.Option(
    None,
    "--progress/--no-progress",
    envvar="ORGSVC_PROGRESS",
    help="Progress bar on stderr (default: only when stderr is a terminal).",
)


class Status(StrEnum):
    active = "active"
    suspended = "suspended"


def _public(org: Organization) -> dict[str, Any]:
    return {
        **org.model_dump(
            mode="json", include={"organization_id", "organization_name", "slug", "collection_name"}
        ),
        "status": org.state,  # the contract's status: active | suspended
        "plan": org.plan,
        "admin": {"admin_id": org.admin.admin_id, "email": org.admin.email},
        "created_at": str(org.created_at),
    }


def _with_suspension(org: Organization) -> dict[str, Any]:
    at = org.suspended_at
    return {
        **_public(org),
        "suspended_at": None if at is None else str(at),
        "suspension_reason": org.suspension_reason,
    }


def _actor() -> Actor:
    return Actor("cli", os.environ.get("USER") or None)


def _line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


class _Walk:
    """The organizations matching the filters in creation order, page by page
    (`lifecycle.page`), at most `limit`, with a bar of the known total on stderr. After the
    walk: how many were shown, how many match in all, and the cursor of the rest (None: no
    more)."""

    def __init__(
        self,
        state: AppState,
        *,
        status: Status | None,
        plan: str | None,
        q: str | None,
        cursor: str | None,
        limit: int | None,
    ) -> None:
        self.state = state
        self.status = None if status is None else status.value
        self.plan, self.q = plan, q
        self.limit = sys.maxsize if limit is None else limit
        self.next_cursor = cursor
        self.shown = 0
        self.total = 0

    async def _page(self) -> list[Organization]:
        items, self.next_cursor, self.total = await self.state.lifecycle.page(
            status=self.status,
            plan=self.plan,
            q=self.q,
            created_after=None,
            created_before=None,
            limit=min(PAGE, self.limit - self.shown),
            cursor=self.next_cursor,
        )
        self.shown += len(items)
        return items

    async def each(
        self, *, desc: str, force: bool | None
    ) -> AsyncIterator[tuple[Organization, tqdm[Any]]]:
        items = await self._page()  # first: the bar starts with its total
        with progress(min(self.total, self.limit), desc=desc, force=force) as bar:
            while True:
                for org in items:
                    yield org, bar
                    bar.update()
                if self.next_cursor is None or self.shown >= self.limit:
                    return
                items = await self._page()
                # Organizations created meanwhile are counted in `total`: the bar grows.
                bar.total = max(min(self.total, self.limit), bar.n + len(items))
                bar.refresh()


@orgs_cli.command("list")
def orgs_list(
    limit: int = typer.Option(100, min=1, max=10_000, help="At most this many."),
    after: str | None = typer.Option(
        None, help="Start after this slug (pagination of the unfiltered list)."
    ),
    status: Status | None = typer.Option(None, help="Only organizations in this status."),
    plan: str | None = typer.Option(None, help="Only organizations on this plan."),
    q: str | None = typer.Option(
        None, help="A case-insensitive prefix of the slug or the display name."
    ),
    cursor: str | None = typer.Option(
        None, help="Continue a filtered list where the last one stopped (printed on stderr)."
    ),
    show_progress: bool | None = ProgressOption,
) -> None:
    """List organizations, one JSON object per line: by slug; with --status, --plan, --q or
    --cursor, in creation order (as `GET /orgs`), with how many match on stderr."""
    if plan is not None and not _PLAN.match(plan):
        raise typer.BadParameter("not a plan name", param_hint="--plan")
    if q is not None and (not q or len(q) > 200 or "\x00" in q):
        raise typer.BadParameter("1 to 200 characters", param_hint="--q")
    filtered = status is not None or plan is not None or q is not None or cursor is not None
    if not filtered:

        async def by_slug(state: AppState) -> list[Organization]:
            orgs, _ = await state.orgs.list_page(limit=limit, after=after)
            return orgs

        for org in run(by_slug):
            typer.echo(_line(_public(org)))
        return
    if after is not None:
        raise typer.BadParameter(
            "--after pages the list by slug; a filtered list pages with --cursor",
            param_hint="--after",
        )

    async def by_creation(state: AppState) -> tuple[int, int, str | None]:
        walk = _Walk(state, status=status, plan=plan, q=q, cursor=cursor, limit=limit)
        try:
            async for org, bar in walk.each(desc="organizations", force=show_progress):
                echo_line(_line(_public(org)), bar)
        except InvalidInput:  # only the cursor can be refused here
            raise typer.BadParameter("invalid cursor", param_hint="--cursor") from None
        return walk.shown, walk.total, walk.next_cursor

    shown, total, next_cursor = run(by_creation)
    more = f"; more with --cursor {next_cursor}" if next_cursor is not None else ""
    typer.echo(f"{shown} shown, {total} matching{more}", err=True)


@orgs_cli.command("show")
def orgs_show(name: str = typer.Argument(..., help="Organization name (matched by slug).")) -> None:
    """Show one organization and how many documents its tenant collection holds."""

    async def go(state: AppState) -> dict[str, Any] | None:
        org = await organization_named(state, name)
        if org is None:
            return None
        return {**_public(org), "documents": await state.orgs.document_count(org)}

    found = run(go)
    if found is None:
        raise no_such_organization(name)
    typer.echo(json.dumps(found, ensure_ascii=False, indent=2))


@orgs_cli.command("suspend")
def orgs_suspend(
    org_ref: str = typer.Argument(..., metavar="ORG", help="Organization id or name."),
    reason: str | None = typer.Option(None, help="Why (kept on the record; 1-500 characters)."),
) -> None:
    """Suspend an organization: its members cannot log in and every token of it is refused
    from the next request on (audited as `org.suspend`; already suspended: unchanged)."""
    try:
        SuspendRequest(reason=reason)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc.errors()[0]["msg"]), param_hint="--reason") from None

    async def go(state: AppState) -> Organization | None:
        org = await organization_given(state, org_ref)
        if org is None:
            return None
        return await state.lifecycle.suspend(
            org.organization_id, reason, actor=_actor(), meta=CLI_META
        )

    done = run(go)
    if done is None:
        raise no_such_organization(org_ref)
    typer.echo(_line(_with_suspension(done)))


@orgs_cli.command("restore")
def orgs_restore(
    org_ref: str = typer.Argument(..., metavar="ORG", help="Organization id or name."),
) -> None:
    """Lift a suspension; members log in again (audited as `org.restore`; active: unchanged)."""

    async def go(state: AppState) -> Organization | None:
        org = await organization_given(state, org_ref)
        if org is None:
            return None
        return await state.lifecycle.restore(org.organization_id, actor=_actor(), meta=CLI_META)

    done = run(go)
    if done is None:
        raise no_such_organization(org_ref)
    typer.echo(_line(_with_suspension(done)))


async def _stats_row(state: AppState, org: Organization) -> dict[str, Any]:
    stats = await state.lifecycle.stats(org.organization_id)
    return {
        "organization_id": org.organization_id,
        "slug": org.slug,
        "status": org.state,
        **stats.model_dump(mode="json"),
    }


@orgs_cli.command("stats")
def orgs_stats(
    org_refs: list[str] | None = typer.Argument(
        None, metavar="ORG", help="Organization ids or names."
    ),
    all_: bool = typer.Option(False, "--all", help="Every organization, page by page."),
    show_progress: bool | None = ProgressOption,
) -> None:
    """Members, pending invitations, tenant documents, storage bytes, indexes and the latest
    login of each organization named (or of --all), one JSON object per line."""
    refs = org_refs or []
    if all_ == bool(refs):
        raise typer.BadParameter("give organizations, or --all (not both)")

    async def named(state: AppState) -> list[str]:
        missing: list[str] = []
        with progress(len(refs), desc="stats", force=show_progress) as bar:
            for ref in refs:
                org = await organization_given(state, ref)
                if org is None:
                    missing.append(ref)
                else:
                    echo_line(_line(await _stats_row(state, org)), bar)
                bar.update()
        return missing

    async def every(state: AppState) -> list[str]:
        walk = _Walk(state, status=None, plan=None, q=None, cursor=None, limit=None)
        async for org, bar in walk.each(desc="stats", force=show_progress):
            try:
                row = await _stats_row(state, org)
            except AppError as exc:  # deleted since its page was read: gone, not an error
                bar.write(f"skipped {org.organization_id}: {exc.code}", file=sys.stderr)
            else:
                echo_line(_line(row), bar)
        return []

    missing = run(every if all_ else named)
    for ref in missing:
        typer.echo(f"no organization {ref!r}", err=True)
    if missing:
        raise typer.Exit(1)
