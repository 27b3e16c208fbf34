"""Organization rules: create, rename, update, delete. Raises domain errors, never HTTP ones."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from app.audit.service import Actor, AuditService, RequestMeta
from app.auth.admins import AdminRepository
from app.auth.passwords import PasswordHasher
from app.auth.roles import OWNER, Permission
from app.auth.service import Principal
from app.events.records import PendingEvent
from app.kit.errors import (
    EmailTaken,
    Forbidden,
    InvalidInput,
    NotFound,
    OperationInProgress,
    OrganizationExists,
    OrganizationSuspended,
)
from app.kit.events import DomainEvent
from app.kit.store import Doc, StoreUnavailable, is_id, new_id, utcnow
from app.organizations.events import event_actor, org_event
from app.organizations.profile import search_key
from app.organizations.records import (
    CREATING,
    DELETING,
    AdminSummary,
    Organization,
    Team,
    TeamEntry,
)
from app.organizations.repository import OrganizationRepository
from app.organizations.schemas import OrganizationCreate, OrganizationUpdate
from app.organizations.steps import (
    CreateOp,
    DeleteOp,
    OrganizationSteps,
    PasswordOp,
    RenameOp,
)
from app.tenancy.claims import ClaimRepository
from app.tenancy.collections import TenantCollections
from app.tenancy.context import OperationContext
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.names import InvalidName, NameRules, collection_for
from app.tenancy.operations import Operation, OperationRepository
from app.tenancy.placement import Placement, choose

log = logging.getLogger("orgsvc.organizations")


def _name_error(exc: InvalidName) -> InvalidInput:
    return InvalidInput([{"type": "value_error", "loc": ["organization_name"], "msg": str(exc)}])


class OrganizationService:
    """Multi-step organization changes, each recorded as an intent before it acts."""

    def __init__(
        self,
        *,
        orgs: OrganizationRepository,
        admins: AdminRepository,
        claims: ClaimRepository,
        ops: OperationRepository,
        tenants: TenantCollections,
        steps: OrganizationSteps,
        ctx: OperationContext,
        hasher: PasswordHasher,
        audit: AuditService,
    ) -> None:
        self.orgs = orgs
        self.admins = admins
        self.claims = claims
        self.ops = ops
        self.tenants = tenants
        self.steps = steps
        self.ctx = ctx
        self.hasher = hasher
        self.audit = audit
        self.names = NameRules(db_name=tenants.clusters.topology.longest_database())

    async def probe_store(self) -> None:
        """At start-up: does the store take non-ASCII collection names? (The name rules say.)"""
        ascii_only = not await self.tenants.accepts_unicode_names()
        self.names = NameRules(
            db_name=self.tenants.clusters.topology.longest_database(), ascii_only=ascii_only
        )

    def slug_of(self, name: str) -> str:
        """The slug of `name`, or a 422. (A name from a request model was already checked
        against the same rules: see `schemas.slug_rules`; this is for every other caller.)"""
        try:
            return self.names.slug(name)
        except InvalidName as exc:
            raise _name_error(exc) from exc

    async def _start(self, op: Operation) -> Hold:
        lease = self.ctx.settings.operation_lease_seconds
        fence = await self.ops.start(op, owner=self.ctx.owner, lease_seconds=lease)
        return Hold(self.ops, op.op_id, fence=fence, lease_seconds=lease)

    async def _place(self, plan: str, org_id: str) -> Placement:
        """Where a new organization's tenant collection goes (`app.tenancy.placement.choose`)."""
        clusters = self.tenants.clusters
        counts = await self.steps.counts.counts()
        return choose(
            clusters.topology, counts, plan=plan, organization_id=org_id,
            reachable=clusters.reachable(),
        )  # fmt: skip

    async def count_active(self) -> int:
        """How many organizations are active (the metrics gauge)."""
        return await self.orgs.count_active()

    # ---------------------------------------------------------------- create
    async def create(
        self, body: OrganizationCreate, *, actor: Actor, meta: RequestMeta
    ) -> Organization:
        """Create the organization, its admin and its empty tenant collection, or nothing;
        audited as `org.create` either way."""
        details = {"organization_name": body.organization_name}
        async with self.audit.track("org.create", actor=actor, meta=meta, details=details) as entry:
            org = await self._create(body, actor)
            entry.organization_id = org.organization_id
        return org

    async def _create(self, body: OrganizationCreate, actor: Actor) -> Organization:
        slug = self.slug_of(body.organization_name)
        # Friendly early answers; the unique indexes below are the real guards.
        if await self.claims.owner(slug) is not None:
            raise OrganizationExists()
        if await self.admins.email_in_use(body.email, other_than=""):
            raise EmailTaken()
        password_hash = await self.hasher.hash(body.password)

        org_id, plan = new_id(), body.plan
        op = CreateOp(
            actor=event_actor(actor),
            op_id=uuid.uuid4().hex,
            organization_id=org_id,
            admin_id=new_id(),
            slug=slug,
            placement=await self._place(plan, org_id),
        )
        async with await self._start(op) as hold:
            try:
                return await self._create_steps(op, hold, body, password_hash)
            except (OrganizationExists, EmailTaken):
                raise
            except OperationLost:
                if not hold.committed:
                    # Whatever this process wrote after the new holder's undo, it removes now.
                    await self.steps.undo_create(op, None)
                raise
            except StoreUnavailable:
                raise  # database gone: the reconciler undoes it once the lease ends
            except Exception:
                if not hold.committed:
                    # Best effort now; if this fails too, the reconciler undoes it.
                    await self.steps.undo_create(op, hold)
                raise

    async def _create_steps(
        self, op: CreateOp, hold: Hold, body: OrganizationCreate, password_hash: str
    ) -> Organization:
        """The steps of a create, each after a lease check; a collision undoes what was made."""
        fault = self.ctx.fault
        org_id, collection, now = op.organization_id, collection_for(op.slug), utcnow()
        fault("create.after_intent")
        await hold.check()
        if not await self.claims.claim(op.slug, org_id=org_id, op_id=op.op_id):
            await hold.finish()
            raise OrganizationExists()
        fault("create.after_claim")
        await hold.check()
        org = Organization(
            organization_id=org_id,
            organization_name=body.organization_name,
            slug=op.slug,
            collection_name=collection,
            placement=op.placement,
            plan=body.plan,
            status=CREATING,
            pending_op=op.op_id,
            admin=AdminSummary(admin_id=op.admin_id, email=body.email),
            created_at=now,
            updated_at=now,
            # The creator is the first owner.
            team=Team(
                version=1,
                count=1,
                owners=[op.admin_id],
                members={op.admin_id: TeamEntry(role=OWNER)},
            ),
        )
        if not await self.orgs.insert(org):
            # Another record holds this slug or collection without a claim (a store left so by
            # an older release): the name is taken; touch nothing of theirs.
            await self.steps.undo_create(op, hold)
            raise OrganizationExists()
        await self.steps.counts.add(self.tenants.home(op.placement), +1)
        fault("create.after_org")
        await hold.check()
        inserted = await self.admins.insert(
            op.admin_id,
            email=body.email,
            organization_id=org_id,
            password_hash=password_hash,
            created_at=now,
        )
        if not inserted:
            await self.steps.undo_create(op, hold)
            raise EmailTaken()
        fault("create.after_admin")
        await hold.check()
        where = self.tenants.home(op.placement)
        if not await self.tenants.create(where, collection) and not await self.tenants.is_empty(
            where, collection
        ):
            # Documents under a name nobody holds: never hand them to a new tenant.
            log.error("create %s found a non-empty orphan %s; refusing", op.op_id, collection)
            await self.steps.undo_create(op, hold)
            raise OrganizationExists()
        fault("create.after_collection")
        await hold.commit()
        fault("create.after_commit")
        return await self.steps.finish_create(op, hold, fault)

    # ---------------------------------------------------------------- lookups
    async def get_for(
        self, caller_org: Organization, name: str, *, hide_others: bool = False
    ) -> Organization:
        """The organization named `name`, which must be the caller's: another is 403 to a
        member, 404 when `hide_others` (an organization's API key sees no other)."""
        slug = self.slug_of(name)
        if slug == caller_org.slug:
            return caller_org  # what authentication just read: no second round trip
        if hide_others or await self.orgs.get_active_by_slug(slug) is None:
            raise NotFound()
        raise Forbidden()

    async def get_visible(
        self, caller_org: Organization | None, name: str, *, hide_others: bool = False
    ) -> Organization:
        """`name` as a caller sees it: a member or an organization's key its own organization
        (`caller_org`), a service key (no organization of its own) any one."""
        if caller_org is None:
            return await self.get_any(name)
        return await self.get_for(caller_org, name, hide_others=hide_others)

    async def get_any(self, name: str) -> Organization:
        """Any active organization named `name` (for an API key with org:read), or 404."""
        org = await self.orgs.get_active_by_slug(self.slug_of(name))
        if org is None:
            raise NotFound()
        return org

    async def document_count(self, org: Organization) -> int:
        """How many documents the organization's tenant collection holds (the store's count
        from its metadata, not a scan)."""
        return await self.tenants.estimated_count(
            self.tenants.home(org.placement), org.collection_name
        )

    async def list_page(
        self, *, limit: int, after: str | None
    ) -> tuple[list[Organization], str | None]:
        """Active organizations by slug, after the slug `after`; and the next page's `after`."""
        orgs = await self.orgs.list_active(limit=limit + 1, after=after)
        more = len(orgs) > limit
        orgs = orgs[:limit]
        return orgs, (orgs[-1].slug if more else None)

    async def update(
        self,
        caller: Principal,
        body: OrganizationUpdate,
        *,
        meta: RequestMeta,
    ) -> Organization:
        """Apply a new name to the caller's organization (admins and owners) and/or a new email
        or password to the caller's own account (everyone); audited as `org.rename` when the
        slug changes, else `org.update` (a bad name is a 422 first)."""
        caller.require(Permission.EDIT_OWN_ACCOUNT)
        if body.organization_name is not None or body.profile():
            caller.require(Permission.EDIT_ORG)
        caller_org, actor = caller.organization, caller.actor
        new_slug = self.slug_of(body.organization_name) if body.organization_name else None
        renaming = new_slug is not None and new_slug != caller_org.slug
        # Field names only, never values: a new password must not reach the log.
        details: Doc = {"fields": sorted({*body.model_dump(exclude_none=True), *body.profile()})}
        if renaming:
            details.update({"from": caller_org.organization_name, "to": body.organization_name})
        action = "org.rename" if renaming else "org.update"
        async with self.audit.track(
            action,
            actor=actor,
            meta=meta,
            organization_id=caller_org.organization_id,
            details=details,
        ):
            return await self._update(caller_org, caller.member_id, body, new_slug, actor)

    # ---------------------------------------------------------------- update / rename
    async def _update(
        self,
        caller_org: Organization,
        admin_id: str,
        body: OrganizationUpdate,
        new_slug: str | None,
        actor: Actor,
    ) -> Organization:
        """`admin_id`: the caller's own account, whose email or password changes."""
        org_id = caller_org.organization_id
        renaming = new_slug is not None and new_slug != caller_org.slug
        if renaming and await self.claims.owner(new_slug or "") is not None:
            raise OrganizationExists()
        if body.email is not None and await self.admins.email_in_use(
            body.email, other_than=admin_id
        ):
            raise EmailTaken()
        password_hash = await self.hasher.hash(body.password) if body.password else None

        org = caller_org
        if renaming:
            org = await self.rename(caller_org, body.organization_name or "", new_slug or "", actor)
        if body.email is not None and not await self.admins.set_email(admin_id, body.email):
            if renaming:  # lost an email race after renaming: put the name back
                await self.rename(org, caller_org.organization_name, caller_org.slug, actor)
            raise EmailTaken()
        if password_hash is not None:
            await self.change_password(org_id, admin_id, password_hash)
        fields = stored_profile(body.profile())
        if body.organization_name is not None and not renaming:
            fields["organization_name"] = body.organization_name

        def decide(current: Organization) -> tuple[Doc, list[PendingEvent]]:
            changes = dict(fields)
            if body.email is not None and current.admin.admin_id == admin_id:
                changes["admin.email"] = body.email  # the primary owner's, shown on the record
            if not changes:
                return {}, []  # only the caller's own password or email: a new updated_at
            after = applied(current, changes)
            return changes, [org_event("organization.updated", after, event_actor(actor))]

        org = _found(await self.orgs.change(org_id, decide))
        # A rename and a password change have events of their own.
        changed = (
            ["organization_name"] if body.organization_name is not None and not renaming else []
        )
        changed += ["email"] if body.email is not None else []
        changed += sorted(body.profile())
        if changed:
            await self.ctx.events.emit(
                DomainEvent("organization.updated", org_id, {"fields": changed})
            )
        return org

    async def change_password(self, org_id: str, admin_id: str, password_hash: str) -> None:
        """Store the new hash, then revoke every token issued before it.

        The hash goes first, with a new password version in the same write: a login that
        verified the old hash and reads the organization after the revocation finds the
        version changed and issues nothing (AuthService.login). The intent makes the revocation
        happen even if this process dies between the two writes (the reconciler completes it).
        """
        op = PasswordOp(op_id=uuid.uuid4().hex, organization_id=org_id, admin_id=admin_id)
        async with await self._start(op) as hold:
            await hold.commit()
            await self.admins.set_password(admin_id, password_hash)
            self.ctx.fault("password.after_hash")
            await self.steps.complete_password(op, hold)

    async def rename(
        self, org: Organization, new_name: str, new_slug: str, actor: Actor | None = None
    ) -> Organization:
        """Move the organization to `new_slug`: claim it, renameCollection, switch, free the old."""
        fault, org_id = self.ctx.fault, org.organization_id
        op = RenameOp(
            actor=event_actor(actor),
            op_id=uuid.uuid4().hex,
            organization_id=org_id,
            from_slug=org.slug,
            to_slug=new_slug,
            to_name=new_name,
        )
        async with await self._start(op) as hold:
            locked = await self.orgs.lock(org_id, op_id=op.op_id)
            if locked is None:
                await hold.finish()
                current = await self.orgs.get_active(org_id)
                raise (
                    OrganizationSuspended()
                    if current and current.suspended
                    else (OperationInProgress())
                )
            fault("rename.after_lock")
            try:
                await hold.check()
                if not await self.claims.claim(new_slug, org_id=org_id, op_id=op.op_id):
                    await self.orgs.unlock(org_id, op_id=op.op_id)
                    await hold.finish()
                    raise OrganizationExists()
                await hold.commit()
            except OperationLost:
                # Undone by the new holder; remove what this process wrote after that.
                await self.claims.release_for_op(new_slug, op_id=op.op_id)
                await self.orgs.unlock(org_id, op_id=op.op_id)
                raise
            fault("rename.after_claim")
            await self.steps.complete_rename(op, locked, hold, fault)
        return _found(await self.orgs.get_active(org_id))

    # ---------------------------------------------------------------- delete
    async def delete(self, caller: Principal, name: str, *, meta: RequestMeta) -> None:
        """Delete the caller's organization (owners only): tenant collection, members, record,
        name; audited as `org.delete`. Its audit entries are kept for AUDIT_RETENTION_DAYS (the
        audit log starts that clock on the `organization.deleted` event)."""
        caller.require(Permission.DELETE_ORG)
        caller_org, actor = caller.organization, caller.actor
        async with self.audit.track(
            "org.delete", actor=actor, meta=meta, organization_id=caller_org.organization_id,
            details={"organization_name": caller_org.organization_name},
        ) as entry:  # fmt: skip
            await self._delete(await self.get_for(caller_org, name), actor)
            entry.closes_organization = True

    async def delete_by_id(self, org_id: str, *, actor: Actor, meta: RequestMeta) -> None:
        """Delete any organization, a suspended one too (an operator's `DELETE /orgs/{id}`);
        audited as `org.delete`."""
        if not is_id(org_id):
            raise NotFound()
        async with self.audit.track(
            "org.delete", actor=actor, meta=meta, organization_id=org_id
        ) as entry:
            target = await self.orgs.get_active(org_id)
            if target is None:
                raise NotFound()
            entry.details["organization_name"] = target.organization_name
            await self._delete(target, actor, operator=True)
            entry.closes_organization = True

    async def _delete(self, target: Organization, actor: Actor, *, operator: bool = False) -> None:
        """`operator`: a suspended organization may be deleted too."""
        org_id = target.organization_id
        op = DeleteOp(
            actor=event_actor(actor), op_id=uuid.uuid4().hex, organization_id=org_id,
            slug=target.slug,
        )  # fmt: skip
        async with await self._start(op) as hold:
            locked = await self.orgs.lock(
                org_id, op_id=op.op_id, status=DELETING, if_suspended=operator
            )
            if locked is None:
                await hold.finish()
                raise OperationInProgress()
            try:
                await hold.commit()
            except OperationLost:
                await self.orgs.unlock(org_id, op_id=op.op_id)
                raise
            self.ctx.fault("delete.after_lock")
            await self.steps.complete_delete(op, locked, hold, self.ctx.fault)


def stored_profile(changes: dict[str, Any]) -> dict[str, Any]:
    """Profile changes as stored: a display name comes with its search key."""
    fields = dict(changes)
    if "display_name" in changes:
        name = changes["display_name"]
        fields["display_key"] = None if name is None else search_key(name)
    return fields


def applied(org: Organization, fields: dict[str, Any]) -> Organization:
    """`org` as it is after a write of `fields` (stored names; `admin.email` is nested)."""
    plain = {k: v for k, v in fields.items() if "." not in k}
    if "admin.email" in fields:
        plain["admin"] = org.admin.model_copy(update={"email": fields["admin.email"]})
    return org.model_copy(update=plain)


def _found(org: Organization | None) -> Organization:
    """The record a write just returned; 404 when the organization was deleted meanwhile."""
    if org is None:
        raise NotFound()
    return org
