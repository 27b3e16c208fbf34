"""The idempotent steps of create, rename and delete, shared by requests and the reconciler.

Each function may run again after a crash at any point, on any replica, and still converge:
every write is conditional on the operation that owns the records.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.names import collection_for
from app.repositories.base import Doc
from app.services.context import Stores

log = logging.getLogger("orgsvc.steps")
Fault = Callable[[str], None]


def _no_fault(_: str) -> None:
    return None


async def undo_create(stores: Stores, op: Doc) -> None:
    """Remove everything a create may have made: collection, admin, record, claim, intent."""
    org_id, slug = op["organization_id"], op["slug"]
    claim = await stores.claims.owner(slug)
    if claim is not None and claim["organization_id"] == org_id:
        # The slug is ours, so nobody else can have made this collection.
        await stores.tenants.drop(collection_for(slug))
    await stores.admins.delete_if_of(op["admin_id"], org_id=org_id)
    await stores.orgs.delete(org_id, op_id=op["_id"])
    await stores.claims.release_for_op(slug, op_id=op["_id"])
    await stores.ops.finish(op["_id"])


async def complete_rename(stores: Stores, op: Doc, org: Doc, fault: Fault = _no_fault) -> None:
    """Roll a claimed rename forward: move the collection, switch the record, free the old slug."""
    old_slug, new_slug = org["slug"], op["to_slug"]
    await stores.tenants.rename(org["collection_name"], collection_for(new_slug))
    fault("rename.after_collection")
    await stores.orgs.finish_rename(
        org["_id"],
        op_id=op["_id"],
        name=op["to_name"],
        slug=new_slug,
        collection=collection_for(new_slug),
    )
    fault("rename.after_record")
    await stores.claims.release(old_slug, org_id=org["_id"])
    await stores.ops.finish(op["_id"])


async def complete_delete(stores: Stores, op: Doc, org: Doc, fault: Fault = _no_fault) -> None:
    """Roll a locked delete forward: drop the collection, the admins, the record, the claims."""
    await stores.tenants.drop(org["collection_name"])
    fault("delete.after_drop")
    await stores.admins.delete_of_org(org["_id"])
    fault("delete.after_admins")
    await stores.orgs.delete(org["_id"], op_id=op["_id"])
    fault("delete.after_record")
    await stores.claims.release_all(org["_id"])
    await stores.ops.finish(op["_id"])


async def reconcile(stores: Stores, op: Doc) -> str:
    """Finish or undo one abandoned operation; returns what was done, for logs and metrics."""
    kind = op.get("kind")
    org = await stores.orgs.get(op["organization_id"])
    owned = org is not None and org.get("pending_op") == op["_id"]
    if kind == "create":
        if org is not None and org.get("status") == "active":
            await stores.ops.finish(op["_id"])
            return "create_already_done"
        await undo_create(stores, op)
        return "create_undone"
    if kind == "rename":
        if org is not None and owned:
            claim = await stores.claims.owner(op["to_slug"])
            if claim is not None and claim.get("op_id") == op["_id"]:
                await complete_rename(stores, op, org)
                return "rename_completed"
            await stores.orgs.unlock(org["_id"], op_id=op["_id"])
            await stores.ops.finish(op["_id"])
            return "rename_undone"
        if org is not None and org.get("slug") == op["to_slug"]:
            # Record already switched; only the old slug's release was left.
            await stores.claims.release(op["from_slug"], org_id=org["_id"])
            await stores.ops.finish(op["_id"])
            return "rename_completed"
        await stores.claims.release_for_op(op["to_slug"], op_id=op["_id"])
        await stores.ops.finish(op["_id"])
        return "rename_undone"
    if kind == "delete":
        if org is not None and owned:
            await complete_delete(stores, op, org)
            return "delete_completed"
        if org is None:
            # Record gone: only the tail of the delete may be missing.
            await stores.admins.delete_of_org(op["organization_id"])
            await stores.claims.release_all(op["organization_id"])
            await stores.ops.finish(op["_id"])
            return "delete_completed"
        await stores.ops.finish(op["_id"])
        return "delete_not_started"
    log.error("unknown operation kind %r in %s; leaving it", kind, op["_id"])
    return "unknown"
