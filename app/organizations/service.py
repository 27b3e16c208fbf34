"""Organization rules: create, rename, update, delete. Raises domain errors, never HTTP ones."""

from __future__ import annotations

import logging
import uuid

from app.audit.service import Actor, AuditService, RequestMeta
from app.auth.passwords import PasswordHasher
from app.kit.errors import (
    EmailTaken,
    Forbidden,
    InvalidInput,
    NotFound,
    OperationInProgress,
    OrganizationExists,
)
from app.kit.events import DomainEvent
from app.kit.store import Doc, StoreUnavailable, new_id, utcnow
from app.organizations.repository import CREATING, DELETING
from app.organizations.schemas import OrganizationCreate, OrganizationUpdate
from app.tenancy.context import OperationContext, Stores
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.names import InvalidName, collection_for, validate_name
from app.tenancy.steps import (
    complete_delete,
    complete_password,
    complete_rename,
    finish_create,
    undo_create,
)

log = logging.getLogger("orgsvc.organizations")


def _name_error(exc: InvalidName) -> InvalidInput:
    return InvalidInput([{"type": "value_error", "loc": ["organization_name"], "msg": str(exc)}])


class OrganizationService:
    """Multi-step organization changes, each recorded as an intent before it acts."""

    def __init__(
        self, stores: Stores, ctx: OperationContext, hasher: PasswordHasher, audit: AuditService
    ) -> None:
        self.stores = stores
        self.ctx = ctx
        self.hasher = hasher
        self.audit = audit

    def slug_of(self, name: str) -> str:
        """The slug of `name`, or a 422."""
        try:
            slug = validate_name(name, db_name=self.ctx.settings.mongodb_db)
        except InvalidName as exc:
            raise _name_error(exc) from exc
        if self.stores.ascii_only_names and not slug.isascii():
            raise _name_error(InvalidName("this database only supports ASCII organization names"))
        return slug

    async def _start(self, op: Doc) -> Hold:
        lease = self.ctx.settings.operation_lease_seconds
        fence = await self.stores.ops.start(op, owner=self.ctx.owner, lease_seconds=lease)
        return Hold(self.stores.ops, op["_id"], fence=fence, lease_seconds=lease)

    # ---------------------------------------------------------------- create
    async def create(self, body: OrganizationCreate, *, actor: Actor, meta: RequestMeta) -> Doc:
        """Create the organization, its admin and its empty tenant collection, or nothing;
        audited as `org.create` either way."""
        details = {"organization_name": body.organization_name}
        async with self.audit.track("org.create", actor=actor, meta=meta, details=details) as entry:
            org = await self._create(body)
            entry.organization_id = org["_id"]
        return org

    async def _create(self, body: OrganizationCreate) -> Doc:
        s = self.stores
        slug = self.slug_of(body.organization_name)
        # Friendly early answers; the unique indexes below are the real guards.
        if await s.claims.owner(slug) is not None:
            raise OrganizationExists()
        if await s.admins.email_in_use(body.email, other_than=""):
            raise EmailTaken()
        password_hash = await self.hasher.hash(body.password)

        org_id, admin_id, op_id = new_id(), new_id(), uuid.uuid4().hex
        op = {
            "_id": op_id,
            "kind": "create",
            "organization_id": org_id,
            "admin_id": admin_id,
            "slug": slug,
        }
        async with await self._start(op) as hold:
            try:
                return await self._create_steps(op, hold, body, password_hash)
            except (OrganizationExists, EmailTaken):
                raise
            except OperationLost:
                if not hold.committed:
                    # Whatever this process wrote after the new holder's undo, it removes now.
                    await undo_create(s, op, None)
                raise
            except StoreUnavailable:
                raise  # database gone: the reconciler undoes it once the lease ends
            except Exception:
                if not hold.committed:
                    # Best effort now; if this fails too, the reconciler undoes it.
                    await undo_create(s, op, hold)
                raise

    async def _create_steps(
        self, op: Doc, hold: Hold, body: OrganizationCreate, password_hash: str
    ) -> Doc:
        """The steps of a create, each after a lease check; a collision undoes what was made."""
        s, fault = self.stores, self.ctx.fault
        org_id, admin_id, slug = op["organization_id"], op["admin_id"], op["slug"]
        collection, now = collection_for(slug), utcnow()
        fault("create.after_intent")
        await hold.check()
        if not await s.claims.claim(slug, org_id=org_id, op_id=op["_id"]):
            await hold.finish()
            raise OrganizationExists()
        fault("create.after_claim")
        await hold.check()
        org: Doc = {
            "_id": org_id,
            "organization_name": body.organization_name,
            "slug": slug,
            "collection_name": collection,
            "status": CREATING,
            "pending_op": op["_id"],
            "admin": {"admin_id": admin_id, "email": body.email, "token_version": 0},
            "created_at": now,
            "updated_at": now,
        }
        if not await s.orgs.insert(org):
            # Another record holds this slug or collection without a claim (a store left so by
            # an older release): the name is taken; touch nothing of theirs.
            await undo_create(s, op, hold)
            raise OrganizationExists()
        fault("create.after_org")
        await hold.check()
        admin: Doc = {
            "_id": admin_id,
            "email": body.email,
            "email_lower": body.email.lower(),
            "organization_id": org_id,
            "password_hash": password_hash,
            "password_version": 0,
            "created_at": now,
        }
        if not await s.admins.insert(admin):
            await undo_create(s, op, hold)
            raise EmailTaken()
        fault("create.after_admin")
        await hold.check()
        if not await s.tenants.create(collection) and not await s.tenants.is_empty(collection):
            # Documents under a name nobody holds: never hand them to a new tenant.
            log.error("create %s found a non-empty orphan %s; refusing", op["_id"], collection)
            await undo_create(s, op, hold)
            raise OrganizationExists()
        fault("create.after_collection")
        await hold.commit()
        fault("create.after_commit")
        return await finish_create(s, op, hold, self.ctx.events, fault)

    # ---------------------------------------------------------------- lookups
    async def get_for(self, caller_org: Doc, name: str) -> Doc:
        """The organization named `name`, which must be the caller's."""
        slug = self.slug_of(name)
        if slug == caller_org["slug"]:
            return caller_org  # what authentication just read: no second round trip
        if await self.stores.orgs.get_active_by_slug(slug) is None:
            raise NotFound()
        raise Forbidden()

    async def get_visible(self, caller_org: Doc | None, name: str) -> Doc:
        """`name` as a caller sees it: an admin its own organization (`caller_org`; 403 for
        another), a service key (no organization of its own) any active one."""
        if caller_org is None:
            return await self.get_any(name)
        return await self.get_for(caller_org, name)

    async def get_any(self, name: str) -> Doc:
        """Any active organization named `name` (for an API key with org:read), or 404."""
        org = await self.stores.orgs.get_active_by_slug(self.slug_of(name))
        if org is None:
            raise NotFound()
        return org

    async def document_count(self, org: Doc) -> int:
        """How many documents the organization's tenant collection holds (the store's count
        from its metadata, not a scan)."""
        return await self.stores.tenants.estimated_count(org["collection_name"])

    async def list_page(self, *, limit: int, after: str | None) -> tuple[list[Doc], str | None]:
        """Active organizations by slug, after the slug `after`; and the next page's `after`."""
        docs = await self.stores.orgs.list_active(limit=limit + 1, after=after)
        more = len(docs) > limit
        docs = docs[:limit]
        return docs, (docs[-1]["slug"] if more else None)

    async def update(
        self, caller_org: Doc, body: OrganizationUpdate, *, actor: Actor, meta: RequestMeta
    ) -> Doc:
        """Apply a new name, email and/or password to the caller's organization; audited as
        `org.rename` when the slug changes, else `org.update` (a bad name is a 422 first)."""
        new_slug = self.slug_of(body.organization_name) if body.organization_name else None
        renaming = new_slug is not None and new_slug != caller_org["slug"]
        # Field names only, never values: a new password must not reach the log.
        details: Doc = {"fields": sorted(body.model_dump(exclude_none=True))}
        if renaming:
            details.update({"from": caller_org["organization_name"], "to": body.organization_name})
        action = "org.rename" if renaming else "org.update"
        async with self.audit.track(
            action, actor=actor, meta=meta, organization_id=caller_org["_id"], details=details
        ):
            return await self._update(caller_org, body, new_slug)

    # ---------------------------------------------------------------- update / rename
    async def _update(self, caller_org: Doc, body: OrganizationUpdate, new_slug: str | None) -> Doc:
        s = self.stores
        org_id, admin_id = caller_org["_id"], caller_org["admin"]["admin_id"]
        renaming = new_slug is not None and new_slug != caller_org["slug"]
        if renaming and await s.claims.owner(new_slug or "") is not None:
            raise OrganizationExists()
        if body.email is not None and await s.admins.email_in_use(body.email, other_than=admin_id):
            raise EmailTaken()
        password_hash = await self.hasher.hash(body.password) if body.password else None

        org = caller_org
        if body.organization_name is not None:
            if renaming:
                org = await self.rename(caller_org, body.organization_name, new_slug or "")
            else:
                org = await self._set(org_id, {"organization_name": body.organization_name})
        if body.email is not None:
            if not await s.admins.set_email(admin_id, body.email):
                if renaming:  # lost an email race after renaming: put the name back
                    await self.rename(org, caller_org["organization_name"], caller_org["slug"])
                raise EmailTaken()
            shown = await s.orgs.set_admin_email(org_id, body.email)
            if shown is None:
                raise NotFound()
            org = shown
        if password_hash is not None:
            await self.change_password(org_id, admin_id, password_hash)
            org = await self._set(org_id, {})
        # A rename and a password change have events of their own.
        changed = (
            ["organization_name"] if body.organization_name is not None and not renaming else []
        )
        changed += ["email"] if body.email is not None else []
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
        s = self.stores
        op = {
            "_id": uuid.uuid4().hex,
            "kind": "password",
            "organization_id": org_id,
            "admin_id": admin_id,
        }
        async with await self._start(op) as hold:
            await hold.commit()
            await s.admins.set_password(admin_id, password_hash)
            self.ctx.fault("password.after_hash")
            await complete_password(s, op, hold, self.ctx.events)

    async def _set(self, org_id: str, fields: Doc) -> Doc:
        org = await self.stores.orgs.set_fields(org_id, fields)
        if org is None:
            raise NotFound()
        return org

    async def rename(self, org: Doc, new_name: str, new_slug: str) -> Doc:
        """Move the organization to `new_slug`: claim it, renameCollection, switch, free the old."""
        s, fault = self.stores, self.ctx.fault
        op_id = uuid.uuid4().hex
        op = {
            "_id": op_id,
            "kind": "rename",
            "organization_id": org["_id"],
            "from_slug": org["slug"],
            "to_slug": new_slug,
            "to_name": new_name,
        }
        async with await self._start(op) as hold:
            locked = await s.orgs.lock(org["_id"], op_id=op_id)
            if locked is None:
                await hold.finish()
                raise OperationInProgress()
            fault("rename.after_lock")
            try:
                await hold.check()
                if not await s.claims.claim(new_slug, org_id=org["_id"], op_id=op_id):
                    await s.orgs.unlock(org["_id"], op_id=op_id)
                    await hold.finish()
                    raise OrganizationExists()
                await hold.commit()
            except OperationLost:
                # Undone by the new holder; remove what this process wrote after that.
                await s.claims.release_for_op(new_slug, op_id=op_id)
                await s.orgs.unlock(org["_id"], op_id=op_id)
                raise
            fault("rename.after_claim")
            await complete_rename(s, op, locked, hold, self.ctx.events, fault)
        renamed = await s.orgs.get_active(org["_id"])
        if renamed is None:
            raise NotFound()
        return renamed

    # ---------------------------------------------------------------- delete
    async def delete(self, caller_org: Doc, name: str, *, actor: Actor, meta: RequestMeta) -> None:
        """Delete the caller's organization: tenant collection, admins, record, name; audited
        as `org.delete`. Its audit entries are kept for AUDIT_RETENTION_DAYS (the audit log
        starts that clock on the `organization.deleted` event)."""
        async with self.audit.track(
            "org.delete", actor=actor, meta=meta, organization_id=caller_org["_id"],
            details={"organization_name": caller_org["organization_name"]},
        ) as entry:  # fmt: skip
            await self._delete(caller_org, name)
            entry.closes_organization = True

    async def _delete(self, caller_org: Doc, name: str) -> None:
        s = self.stores
        target = await self.get_for(caller_org, name)
        op_id = uuid.uuid4().hex
        op = {
            "_id": op_id,
            "kind": "delete",
            "organization_id": target["_id"],
            "slug": target["slug"],
        }
        async with await self._start(op) as hold:
            locked = await s.orgs.lock(target["_id"], op_id=op_id, status=DELETING)
            if locked is None:
                await hold.finish()
                raise OperationInProgress()
            try:
                await hold.commit()
            except OperationLost:
                await s.orgs.unlock(target["_id"], op_id=op_id)
                raise
            self.ctx.fault("delete.after_lock")
            await complete_delete(s, op, locked, hold, self.ctx.events, self.ctx.fault)
