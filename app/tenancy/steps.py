"""The idempotent steps of create, rename, delete and password change, shared by requests and
the reconciler.

Each function may run again after a crash at any point, on any replica, and still converge:
every write is conditional on the operation that owns the records, and every step first proves,
through its `Hold`, that this process still holds the operation (the fencing token). An operation
is undone until its commit point and rolled forward after it (`app.tenancy.operations`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.kit.events import DomainEvent, EventHook
from app.kit.store import Doc
from app.tenancy.context import Stores
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.names import collection_for
from app.tenancy.operations import COMMITTED

log = logging.getLogger("orgsvc.steps")
Fault = Callable[[str], None]


def _no_fault(_: str) -> None:
    return None


async def undo_create(stores: Stores, op: Doc, hold: Hold | None) -> None:
    """Remove what this create made, and only that: collection, admin, record, claim, intent.

    `hold` is None when a request cleans up after losing its hold: every write below is then
    still conditional on this operation's own records, and the intent is left to the new holder.
    """
    org_id, slug = op["organization_id"], op["slug"]
    collection = collection_for(slug)
    claim = await stores.claims.owner(slug)
    if (
        claim is not None
        and claim["organization_id"] == org_id
        # A record of another organization naming this collection means it is theirs (a store
        # left inconsistent by an older release, or by hand): never drop it.
        and not await stores.orgs.other_uses_collection(collection, org_id=org_id)
    ):
        # The slug is ours, so nobody else can have made this collection.
        if hold is not None:
            await hold.check()
        await stores.tenants.drop(collection)
    await stores.admins.delete_if_of(op["admin_id"], org_id=org_id)
    await stores.orgs.delete(org_id, op_id=op["_id"])
    await stores.claims.release_for_op(slug, op_id=op["_id"])
    if hold is not None:
        await hold.finish()


async def finish_create(
    stores: Stores, op: Doc, hold: Hold, events: EventHook, fault: Fault = _no_fault
) -> Doc:
    """Roll a committed create forward: activate the record; returns it."""
    await stores.orgs.activate(op["organization_id"], op_id=op["_id"])
    org = await stores.orgs.get_active(op["organization_id"])
    if org is None:
        raise OperationLost()  # cannot happen after the commit point unless the store was edited
    fault("create.after_activate")
    await hold.finish()
    await events.emit(
        DomainEvent(
            "organization.created",
            org["_id"],
            {"organization_name": org["organization_name"], "slug": org["slug"]},
            op_id=op["_id"],
        )
    )
    return org


async def complete_rename(
    stores: Stores, op: Doc, org: Doc, hold: Hold, events: EventHook, fault: Fault = _no_fault
) -> None:
    """Roll a committed rename forward: move the collection, switch the record, free the old
    slug."""
    new_slug = op["to_slug"]
    await hold.check()
    await stores.tenants.rename(org["collection_name"], collection_for(new_slug))
    fault("rename.after_collection")
    await hold.check()
    switched = await stores.orgs.finish_rename(
        org["_id"],
        op_id=op["_id"],
        name=op["to_name"],
        slug=new_slug,
        collection=collection_for(new_slug),
    )
    if not switched:
        raise OperationLost()  # the new holder switched it (or is about to)
    fault("rename.after_record")
    await stores.claims.release(op["from_slug"], org_id=org["_id"])
    await hold.finish()
    await events.emit(_renamed(op))


def _renamed(op: Doc) -> DomainEvent:
    data = {"organization_name": op["to_name"], "slug": op["to_slug"], "from_slug": op["from_slug"]}
    return DomainEvent("organization.renamed", op["organization_id"], data, op_id=op["_id"])


def _deleted(op: Doc) -> DomainEvent:
    data = {"slug": op.get("slug")}
    return DomainEvent("organization.deleted", op["organization_id"], data, op_id=op["_id"])


async def complete_delete(
    stores: Stores, op: Doc, org: Doc, hold: Hold, events: EventHook, fault: Fault = _no_fault
) -> None:
    """Roll a committed delete forward: drop the collection, the admins, the record, the claims."""
    await hold.check()
    await stores.tenants.drop(org["collection_name"])
    fault("delete.after_drop")
    await hold.check()
    await stores.admins.delete_of_org(org["_id"])
    fault("delete.after_admins")
    await hold.check()
    await stores.orgs.delete(org["_id"], op_id=op["_id"])
    fault("delete.after_record")
    await stores.claims.release_all(org["_id"])
    await hold.finish()
    await events.emit(_deleted(op))


async def complete_password(stores: Stores, op: Doc, hold: Hold, events: EventHook) -> None:
    """Roll a committed password change forward: revoke every token issued before it.

    The new hash may or may not have been written: either way no token older than the change
    survives it, and a second revocation is harmless.
    """
    await hold.check()
    await stores.orgs.bump_token_version(op["organization_id"], admin_id=op["admin_id"])
    await hold.finish()
    await events.emit(
        DomainEvent(
            "admin.password_changed",
            op["organization_id"],
            {"admin_id": op["admin_id"]},
            op_id=op["_id"],
        )
    )


async def reconcile(stores: Stores, op: Doc, hold: Hold, events: EventHook) -> str:
    """Finish or undo one abandoned operation; returns what was done, for logs and metrics."""
    kind = op.get("kind")
    org = await stores.orgs.get(op["organization_id"])
    owned = org is not None and org.get("pending_op") == op["_id"]
    committed = op.get("state") == COMMITTED
    if "state" not in op:
        # An intent written by a release before commit points: its commit point was the claim
        # of the new slug (rename) or the lock (delete), after which it may already have acted.
        if kind == "rename":
            claim = await stores.claims.owner(op["to_slug"])
            committed = claim is not None and claim.get("op_id") == op["_id"]
        elif kind == "delete":
            committed = owned
    if kind == "create":
        if committed:
            if org is not None and (owned or org.get("status") == "active"):
                await finish_create(stores, op, hold, events)
                return "create_completed"
        elif org is not None and org.get("status") == "active" and not owned:
            await hold.finish()  # an intent recorded before this release's commit points
            return "create_already_done"
        await undo_create(stores, op, hold)
        return "create_undone"
    if kind == "rename":
        if org is not None and owned and committed:
            await complete_rename(stores, op, org, hold, events)
            return "rename_completed"
        if org is not None and org.get("slug") == op["to_slug"]:
            # Record already switched; only the old slug's release was left.
            await stores.claims.release(op["from_slug"], org_id=org["_id"])
            await hold.finish()
            await events.emit(_renamed(op))
            return "rename_completed"
        await hold.check()
        await stores.claims.release_for_op(op["to_slug"], op_id=op["_id"])
        await stores.orgs.unlock(op["organization_id"], op_id=op["_id"])
        await hold.finish()
        return "rename_undone"
    if kind == "delete":
        if org is not None and owned and committed:
            await complete_delete(stores, op, org, hold, events)
            return "delete_completed"
        if org is None and committed:
            # Record gone: only the tail of the delete may be missing.
            await hold.check()
            await stores.admins.delete_of_org(op["organization_id"])
            await stores.claims.release_all(op["organization_id"])
            await hold.finish()
            await events.emit(_deleted(op))
            return "delete_completed"
        await stores.orgs.unlock(op["organization_id"], op_id=op["_id"])
        await hold.finish()
        return "delete_not_started"
    if kind == "password":
        if committed:
            await complete_password(stores, op, hold, events)
            return "password_revoked"
        await hold.finish()
        return "password_not_started"
    log.error("unknown operation kind %r in %s; leaving it", kind, op["_id"])
    return "unknown"
