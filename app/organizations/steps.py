"""The idempotent steps of create, rename, delete and password change, shared by requests and
the reconciler, and the reconciler's decision for each kind of organization operation.

Each step may run again after a crash at any point, on any replica, and still converge: every
write is conditional on the operation that owns the records, and every step first proves,
through its `Hold`, that this process still holds the operation (the fencing token). An operation
is undone until its commit point and rolled forward after it (`app.tenancy.operations`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from app.api_keys.repository import ApiKeyRepository
from app.auth.admins import AdminRepository
from app.events.records import EventActor
from app.kit.events import DomainEvent, EventHook
from app.kit.store import utcnow
from app.members.invitations import InvitationRepository
from app.organizations.events import SYSTEM, org_event
from app.organizations.records import ACTIVE, Organization
from app.organizations.repository import OrganizationRepository
from app.organizations.team import TeamRepository
from app.tenancy.claims import ClaimRepository
from app.tenancy.collections import TenantCollections
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.names import collection_for
from app.tenancy.operations import Operation
from app.tenancy.placement import Placement, PlacementCounts

Fault = Callable[[str], None]
MAX_TRIES = 20  # compare-and-set rounds on the record's revision


def no_fault(_: str) -> None:
    return None


# ------------------------------------------------------------------ the kinds of operation
class OrgOperation(Operation):
    """An organization operation that makes an event: who asked for it (the reconciler that
    finishes it announces it in their name)."""

    actor: EventActor | None = None

    @property
    def event_actor(self) -> EventActor:
        return self.actor or SYSTEM


class CreateOp(OrgOperation):
    kind: Literal["create"] = "create"
    admin_id: str
    slug: str
    placement: Placement | None = None  # None: an intent of before placement (the default)


class RenameOp(OrgOperation):
    kind: Literal["rename"] = "rename"
    from_slug: str
    to_slug: str
    to_name: str


class DeleteOp(OrgOperation):
    kind: Literal["delete"] = "delete"
    slug: str | None = None  # absent in intents of older releases


class PasswordOp(Operation):
    kind: Literal["password"] = "password"
    admin_id: str


KINDS: dict[str, type[Operation]] = {
    "create": CreateOp,
    "rename": RenameOp,
    "delete": DeleteOp,
    "password": PasswordOp,
}


def _renamed(op: RenameOp) -> DomainEvent:
    data = {"organization_name": op.to_name, "slug": op.to_slug, "from_slug": op.from_slug}
    return DomainEvent("organization.renamed", op.organization_id, data, op_id=op.op_id)


def _deleted(op: DeleteOp) -> DomainEvent:
    data = {"slug": op.slug}
    return DomainEvent("organization.deleted", op.organization_id, data, op_id=op.op_id)


class OrganizationSteps:
    """The steps over the stores they write: records, admins, name claims, tenant collections."""

    def __init__(
        self,
        orgs: OrganizationRepository,
        admins: AdminRepository,
        claims: ClaimRepository,
        tenants: TenantCollections,
        events: EventHook,
        *,
        team: TeamRepository,
        invitations: InvitationRepository,
        api_keys: ApiKeyRepository,
        counts: PlacementCounts,
    ) -> None:
        self.orgs = orgs
        self.counts = counts
        self.api_keys = api_keys
        self.team = team
        self.invitations = invitations
        self.admins = admins
        self.claims = claims
        self.tenants = tenants
        self.events = events

    async def undo_create(self, op: CreateOp, hold: Hold | None) -> None:
        """Remove what this create made, and only that: collection, admin, record, claim, intent.

        `hold` is None when a request cleans up after losing its hold: every write below is then
        still conditional on this operation's own records, and the intent is left to the new
        holder.
        """
        org_id, slug = op.organization_id, op.slug
        collection, where = collection_for(slug), self.tenants.home(op.placement)
        claim = await self.claims.owner(slug)
        if (
            claim is not None
            and claim.organization_id == org_id
            # A record of another organization naming this collection means it is theirs (a
            # store left inconsistent by an older release, or by hand): never drop it.
            and not await self.orgs.other_uses_collection(collection, org_id=org_id)
        ):
            # The slug is ours, so nobody else can have made this collection.
            if hold is not None:
                await hold.check()
            await self.tenants.drop(where, collection)
        await self.admins.delete_if_of(op.admin_id, org_id=org_id)
        if await self.orgs.delete(org_id, op_id=op.op_id):
            await self.counts.add(where, -1)  # only the run that removed the record counts it
        await self.claims.release_for_op(slug, op_id=op.op_id)
        if hold is not None:
            await hold.finish()

    async def finish_create(
        self, op: CreateOp, hold: Hold, fault: Fault = no_fault
    ) -> Organization:
        """Roll a committed create forward: activate the record, with its
        `organization.created` event (in that write: a second run finds it active and writes
        nothing); returns it."""
        for _ in range(MAX_TRIES):
            made = await self.orgs.get(op.organization_id)
            if made is None or made.pending_op != op.op_id:
                break  # activated already (by whoever held this operation before), or gone
            active = made.model_copy(update={"status": ACTIVE, "pending_op": None})
            event = org_event("organization.created", active, op.event_actor)
            if await self.orgs.activate(made, op_id=op.op_id, event=event):
                break
        org = await self.orgs.get_active(op.organization_id)
        if org is None:
            raise OperationLost()  # after the commit point only if the store was edited by hand
        fault("create.after_activate")
        await hold.finish()
        await self.events.emit(
            DomainEvent(
                "organization.created",
                org.organization_id,
                {"organization_name": org.organization_name, "slug": org.slug},
                op_id=op.op_id,
            )
        )
        return org

    async def complete_rename(
        self, op: RenameOp, org: Organization, hold: Hold, fault: Fault = no_fault
    ) -> None:
        """Roll a committed rename forward: move the collection, switch the record, free the old
        slug."""
        new_collection = collection_for(op.to_slug)
        await hold.check()
        await self.tenants.rename(
            self.tenants.home(org.placement), org.collection_name, new_collection
        )
        fault("rename.after_collection")
        await hold.check()
        fields = {
            "organization_name": op.to_name,
            "slug": op.to_slug,
            "collection_name": new_collection,
            "updated_at": utcnow(),
        }
        for _ in range(MAX_TRIES):
            # Read again: a team change since the lock moved the revision (and member_count).
            current = await self.orgs.get(org.organization_id)
            if current is None or current.pending_op != op.op_id:
                raise OperationLost()  # the new holder switched it (or is about to)
            after = current.model_copy(update={**fields, "pending_op": None})
            event = org_event(
                "organization.renamed", after, op.event_actor,
                extra={"previous_slug": op.from_slug,
                       "previous_collection_name": org.collection_name},
            )  # fmt: skip
            if await self.orgs.release(current, op_id=op.op_id, fields=fields, event=event):
                break
        else:
            raise OperationLost()
        fault("rename.after_record")
        await self.claims.release(op.from_slug, org_id=org.organization_id)
        await hold.finish()
        await self.events.emit(_renamed(op))

    async def complete_delete(
        self, op: DeleteOp, org: Organization, hold: Hold, fault: Fault = no_fault
    ) -> None:
        """Roll a committed delete forward: drop the collection, the admins, the record, the
        claims."""
        await hold.check()
        await self.tenants.drop(self.tenants.home(org.placement), org.collection_name)
        fault("delete.after_drop")
        await hold.check()
        await self.admins.delete_of_org(org.organization_id)
        await self.invitations.delete_of_org(org.organization_id)
        await self.api_keys.revoke_of_org(org.organization_id)
        fault("delete.after_admins")
        await hold.check()
        await self._stage_deleted(op)
        if await self.orgs.delete(org.organization_id, op_id=op.op_id):
            await self.counts.add(self.tenants.home(org.placement), -1)
        fault("delete.after_record")
        await self.claims.release_all(org.organization_id)
        await hold.finish()
        await self.events.emit(_deleted(op))

    async def _stage_deleted(self, op: DeleteOp) -> None:
        """The `organization.deleted` event (the object as it was) and the organization's
        events not yet published, out of the record before it goes (`event_outbox`). Its id
        comes from the operation's, so a second run stages the same event, never a second."""
        current = await self.orgs.get(op.organization_id)
        if current is None:
            return  # the record went after a first run staged them
        event = org_event(
            "organization.deleted",
            current.model_copy(update={"status": ACTIVE}),
            op.event_actor,
            event_id=f"evt_{op.op_id[:24]}",
        )
        await self.orgs.stage_deleted(current, event)

    async def complete_password(self, op: PasswordOp, hold: Hold) -> None:
        """Roll a committed password change forward: revoke every token issued before it.

        The new hash may or may not have been written: either way no token older than the
        change survives it, and a second revocation is harmless.
        """
        await hold.check()
        await self.team.bump_token_version(op.organization_id, op.admin_id)
        await hold.finish()
        await self.events.emit(
            DomainEvent(
                "admin.password_changed",
                op.organization_id,
                {"admin_id": op.admin_id},
                op_id=op.op_id,
            )
        )

    # -------------------------------------------------------------- the reconciler's part
    async def reconcile(self, stored: Operation, hold: Hold) -> str:
        """Finish or undo one abandoned organization operation; returns what was done."""
        op = stored.as_one_of(KINDS)
        if op is None:
            return "unknown"
        org = await self.orgs.get(op.organization_id)
        owned = org is not None and org.pending_op == op.op_id
        match op:
            case CreateOp():
                return await self._reconcile_create(op, org, owned, hold)
            case RenameOp():
                return await self._reconcile_rename(op, org, owned, hold)
            case DeleteOp():
                return await self._reconcile_delete(op, org, owned, hold)
            case PasswordOp():
                if op.committed:
                    await self.complete_password(op, hold)
                    return "password_revoked"
                await hold.finish()
                return "password_not_started"
        return "unknown"  # pragma: no cover - KINDS and the cases above list the same kinds

    async def _reconcile_create(
        self, op: CreateOp, org: Organization | None, owned: bool, hold: Hold
    ) -> str:
        if op.committed:
            if org is not None and (owned or org.status == ACTIVE):
                await self.finish_create(op, hold)
                return "create_completed"
        elif org is not None and org.status == ACTIVE and not owned:
            await hold.finish()  # an intent recorded before this release's commit points
            return "create_already_done"
        await self.undo_create(op, hold)
        return "create_undone"

    async def _reconcile_rename(
        self, op: RenameOp, org: Organization | None, owned: bool, hold: Hold
    ) -> str:
        committed = op.committed
        if op.state is None:
            # An intent written by a release before commit points: its commit point was the
            # claim of the new slug, after which it may already have acted.
            claim = await self.claims.owner(op.to_slug)
            committed = claim is not None and claim.op_id == op.op_id
        if org is not None and owned and committed:
            await self.complete_rename(op, org, hold)
            return "rename_completed"
        if org is not None and org.slug == op.to_slug:
            # Record already switched; only the old slug's release was left.
            await self.claims.release(op.from_slug, org_id=org.organization_id)
            await hold.finish()
            await self.events.emit(_renamed(op))
            return "rename_completed"
        await hold.check()
        await self.claims.release_for_op(op.to_slug, op_id=op.op_id)
        await self.orgs.unlock(op.organization_id, op_id=op.op_id)
        await hold.finish()
        return "rename_undone"

    async def _reconcile_delete(
        self, op: DeleteOp, org: Organization | None, owned: bool, hold: Hold
    ) -> str:
        # Before commit points (no state), a delete's commit point was its lock.
        committed = op.committed or (op.state is None and owned)
        if org is not None and owned and committed:
            await self.complete_delete(op, org, hold)
            return "delete_completed"
        if org is None and committed:
            # Record gone: only the tail of the delete may be missing.
            await hold.check()
            await self.admins.delete_of_org(op.organization_id)
            await self.invitations.delete_of_org(op.organization_id)
            await self.api_keys.revoke_of_org(op.organization_id)
            await self.claims.release_all(op.organization_id)
            await hold.finish()
            await self.events.emit(_deleted(op))
            return "delete_completed"
        await self.orgs.unlock(op.organization_id, op_id=op.op_id)
        await hold.finish()
        return "delete_not_started"
