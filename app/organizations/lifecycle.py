"""The operator's side of organizations (section 4 of the contract v2): find and list any
organization, change its profile, suspend and restore it, delete it, and read its statistics.

Suspension is one conditional write on the organization record (`TeamRepository.suspend`): the
public state, and a new token version for every member, together, so that no token or refresh
token issued before it ever works again, also after a restore. Authentication reads the record
on every request, so every replica answers 403 `organization_suspended` from the next request
on. The write waits for no operation: while a rename or delete holds the record it is a 409
`operation_in_progress`, and a rename or a member's delete cannot lock a suspended record.
"""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import replace
from datetime import UTC, datetime

from app.audit.service import Actor, AuditService, RequestMeta
from app.auth.admins import AdminRepository
from app.events.records import PendingEvent
from app.kit.errors import NotFound, OperationInProgress
from app.kit.events import DomainEvent, EventHook
from app.kit.pagination import decode_cursor, encode_cursor, invalid_cursor
from app.kit.store import Doc, epoch_ms, is_id, utcnow
from app.organizations.events import event_actor, org_event
from app.organizations.profile import search_key
from app.organizations.records import (
    ACTIVE,
    DELETING,
    SUSPENDED,
    Organization,
    Suspension,
    keys_after,
    keys_before,
)
from app.organizations.repository import OrganizationRepository, OrgFilter
from app.organizations.schemas import OrganizationPatch, OrganizationStats
from app.organizations.service import OrganizationService, applied, stored_profile
from app.organizations.team import TeamRepository
from app.tenancy.collections import TenantCollections

MAX_TRIES = 20
_ORDER_KEY = re.compile(r"^[0-9]{13}\.[0-9a-f]{24}\Z")


class LifecycleService:
    """Operator actions on any organization, each audited and announced as an event."""

    def __init__(
        self,
        *,
        orgs: OrganizationService,
        repo: OrganizationRepository,
        team: TeamRepository,
        tenants: TenantCollections,
        admins: AdminRepository,
        audit: AuditService,
        events: EventHook,
    ) -> None:
        self.orgs = orgs
        self.repo = repo
        self.team = team
        self.tenants = tenants
        self.admins = admins
        self.audit = audit
        self.events = events

    # ---------------------------------------------------------------- reads
    async def get(self, org_id: str, *, within: Organization | None = None) -> Organization:
        """The organization (active or suspended) with this id; 404 when there is none, or when
        the caller acts for another organization (`within`: an organization's own API key)."""
        _known(org_id)
        if within is not None and within.organization_id != org_id:
            raise NotFound()
        org = await self.repo.get_active(org_id)
        if org is None:
            raise NotFound()
        return org

    async def page(
        self,
        *,
        status: str | None,
        plan: str | None,
        q: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Organization], str | None, int]:
        """One page in creation order, the next page's cursor, and how many match in all."""
        matching = OrgFilter(
            state=status,
            plan=plan,
            prefix=search_key(q) if q else None,
            above=keys_after(created_after) if created_after is not None else "",
            below=keys_before(created_before) if created_before is not None else None,
        )
        this_page = matching
        if cursor is not None:
            last = decode_cursor(cursor)
            if not _ORDER_KEY.match(last):
                raise invalid_cursor()
            this_page = replace(matching, above=max(matching.above, last))
        items = await self.repo.page(this_page, limit=limit + 1)
        more = len(items) > limit
        items = items[:limit]
        next_cursor = encode_cursor(items[-1].order_key or "") if more and items else None
        return items, next_cursor, await self.repo.count(matching)

    async def stats(self, org_id: str, *, within: Organization | None = None) -> OrganizationStats:
        """Members and pending invitations from the record; the tenant collection's figures
        from the database's statistics; the latest login of any member."""
        _known(org_id)
        if within is not None and within.organization_id != org_id:
            raise NotFound()
        org = await self.team.get(org_id)  # one read, with the whole team (its invitation seats)
        if org is None or org.team is None:
            raise NotFound()
        now = epoch_ms()
        tenant = await self.tenants.stats(self.tenants.home(org.placement), org.collection_name)
        last_login = await self.admins.last_login_of_org(org_id)
        return OrganizationStats(
            member_count=org.member_count,
            pending_invitations=sum(1 for s in org.team.invites.values() if s.expires_ms > now),
            tenant_documents=tenant.documents,
            tenant_storage_bytes=tenant.storage_bytes,
            tenant_indexes=tenant.indexes,
            last_login_at=(
                datetime.fromtimestamp(last_login / 1000, UTC) if last_login is not None else None
            ),
        )

    # ---------------------------------------------------------------- changes
    async def patch(
        self, org_id: str, body: OrganizationPatch, *, actor: Actor, meta: RequestMeta
    ) -> Organization:
        """Change profile fields of any organization (suspended ones too); `org.update`."""
        changes = body.changes()
        details = {"fields": sorted(changes)}
        _known(org_id)
        async with self.audit.track(
            "org.update", actor=actor, meta=meta, organization_id=org_id, details=details
        ):
            fields = stored_profile(changes)

            def decide(current: Organization) -> tuple[Doc, list[PendingEvent]]:
                after = applied(current, fields)
                return fields, [org_event("organization.updated", after, event_actor(actor))]

            org = await self.repo.change(org_id, decide, seats="max_members" in changes)
            if org is None:
                raise NotFound()
        await self.events.emit(DomainEvent("organization.updated", org_id, details))
        return org

    async def suspend(
        self, org_id: str, reason: str | None, *, actor: Actor, meta: RequestMeta
    ) -> Organization:
        """Suspend the organization (already suspended: unchanged); `org.suspend`."""
        details = {"reason": reason} if reason else {}
        _known(org_id)
        async with self.audit.track(
            "org.suspend", actor=actor, meta=meta, organization_id=org_id, details=details
        ):
            org, changed = await self._suspend(org_id, reason, actor)
        if changed:
            await self.events.emit(DomainEvent("organization.suspended", org_id, details))
        return org

    async def _suspend(
        self, org_id: str, reason: str | None, actor: Actor
    ) -> tuple[Organization, bool]:
        for attempt in range(MAX_TRIES):
            org = await self.team.get(org_id)
            if org is None or org.team is None:
                raise await self._gone(org_id)
            if org.suspended:
                return org, False
            if org.pending_op is not None:
                raise OperationInProgress()  # a rename or delete holds it
            by = f"{actor.type}:{actor.id}" if actor.id else actor.type
            suspension = Suspension(at=utcnow(), reason=reason, by=by)
            after = org.model_copy(update={"state": SUSPENDED, "suspension": suspension})
            event = org_event("organization.suspended", after, event_actor(actor))
            done = await self.team.suspend(org, suspension, event)
            if done is not None:
                return done, True
            # The team changed, or an operation took the record, since the read: read again.
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))  # noqa: S311 - backoff
        raise OperationInProgress()

    async def restore(self, org_id: str, *, actor: Actor, meta: RequestMeta) -> Organization:
        """Lift a suspension (not suspended: unchanged); `org.restore`. Tokens issued before
        the suspension stay revoked: members log in again."""
        _known(org_id)
        async with self.audit.track("org.restore", actor=actor, meta=meta, organization_id=org_id):
            restored = False

            def decide(current: Organization) -> tuple[Doc, list[PendingEvent]] | None:
                nonlocal restored
                if not current.suspended:
                    return None  # not suspended: nothing to do
                restored = True
                fields: Doc = {"state": ACTIVE, "suspension": None}
                after = current.model_copy(update=fields)
                return fields, [org_event("organization.restored", after, event_actor(actor))]

            # `seats`: the team's version moves too, as with every change of its standing.
            org = await self.repo.change(org_id, decide, seats=True)
            if org is None:
                raise await self._gone(org_id)
        if restored:
            await self.events.emit(DomainEvent("organization.restored", org_id, {}))
        return org

    async def delete(self, org_id: str, *, actor: Actor, meta: RequestMeta) -> None:
        """Delete any organization, suspended ones too, as `DELETE /org/delete` does."""
        await self.orgs.delete_by_id(org_id, actor=actor, meta=meta)

    async def _gone(self, org_id: str) -> NotFound | OperationInProgress:
        """Why an organization read a moment ago is not active now: deleted (404) or being
        deleted (409)."""
        record = await self.repo.get(org_id)
        return (
            OperationInProgress()
            if record is not None and record.status == DELETING
            else (NotFound())
        )


def _known(org_id: str) -> None:
    """404 at once for what cannot be an organization id (no read)."""
    if not is_id(org_id):
        raise NotFound()
