"""The `admins` collection: login identities, with their bcrypt hash. Never returned to callers."""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, Field
from pymongo.errors import DuplicateKeyError

from app.kit.store import Collection, Database, Doc, Record, StoredTime, epoch_ms, insert_unique


class AdminCredentials(Record):
    """What a login needs of an admin: never leaves the auth service."""

    admin_id: str = Field(validation_alias=AliasChoices("_id", "admin_id"))
    organization_id: str
    password_hash: str
    password_version: int = 0  # incremented with every new password (not by a rehash)


class MemberAccount(Record):
    """A member's account as others may see it (never the hash). The role is not here: the
    team on the organization record holds it (`app.organizations.team`)."""

    member_id: str = Field(validation_alias=AliasChoices("_id", "member_id"))
    organization_id: str
    email: str
    created_at: StoredTime
    last_login_ms: int | None = None


# What others may see of an account, as an inclusion projection: never the hash, and no
# exclusion projection (nx-27017 0.8 sometimes answers one with `_id` alone).
_ACCOUNT_FIELDS: Doc = dict.fromkeys(set(MemberAccount.model_fields) - {"member_id"}, 1)


class AdminRepository:
    """Admins, unique by lower-cased email across all organizations."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["admins"]

    async def ensure_indexes(self) -> None:
        await self.col.create_index("email_lower", unique=True)
        await self.col.create_index("organization_id")

    async def insert(
        self,
        admin_id: str,
        *,
        email: str,
        organization_id: str,
        password_hash: str,
        created_at: datetime,
    ) -> bool:
        """False when the email is taken (unique index on the lower-cased email)."""
        doc: Doc = {
            "_id": admin_id,
            "email": email,
            "email_lower": email.lower(),
            "organization_id": organization_id,
            "password_hash": password_hash,
            "password_version": 0,
            "created_at": created_at,
        }
        return await insert_unique(self.col, doc)

    async def by_email(self, email: str) -> AdminCredentials | None:
        doc = await self.col.find_one(
            {"email_lower": email.lower()},
            {"password_hash": 1, "organization_id": 1, "password_version": 1},
        )
        return None if doc is None else AdminCredentials.model_validate(doc)

    async def password_version(self, admin_id: str) -> int | None:
        """How many times the password was changed (None: no such admin)."""
        doc = await self.col.find_one({"_id": admin_id}, {"password_version": 1})
        return None if doc is None else int(doc.get("password_version", 0))

    async def set_password(self, admin_id: str, password_hash: str) -> None:
        """A new password: the hash and its version change in one write."""
        await self.col.update_one(
            {"_id": admin_id},
            {"$set": {"password_hash": password_hash}, "$inc": {"password_version": 1}},
        )

    async def rehash(self, admin_id: str, *, old_hash: str, new_hash: str) -> bool:
        """Replace the hash of the same password (a new bcrypt cost), unless it changed meanwhile;
        the password version stays, so logins racing with it are unaffected."""
        res = await self.col.update_one(
            {"_id": admin_id, "password_hash": old_hash}, {"$set": {"password_hash": new_hash}}
        )
        return res.modified_count == 1

    async def email_in_use(self, email: str, *, other_than: str) -> bool:
        doc = await self.col.find_one({"email_lower": email.lower()}, {"_id": 1})
        return doc is not None and doc["_id"] != other_than

    async def set_email(self, admin_id: str, email: str) -> bool:
        """False when another admin has this email (unique index on the lower-cased email)."""
        try:
            await self.col.update_one(
                {"_id": admin_id}, {"$set": {"email": email, "email_lower": email.lower()}}
            )
        except DuplicateKeyError:
            return False
        return True

    async def logged_in(self, admin_id: str) -> None:
        """Record a successful login (the member's `last_login_at`)."""
        await self.col.update_one({"_id": admin_id}, {"$set": {"last_login_ms": epoch_ms()}})

    async def last_login_of_org(self, org_id: str) -> int | None:
        """The latest login (epoch ms) of any member of the organization, if any logged in."""
        doc = await self.col.find_one(
            {"organization_id": org_id, "last_login_ms": {"$gt": 0}},
            {"last_login_ms": 1},
            sort=[("last_login_ms", -1)],
        )
        return None if doc is None else int(doc["last_login_ms"])

    async def email_of(self, admin_id: str) -> str | None:
        doc = await self.col.find_one({"_id": admin_id}, {"email": 1})
        return None if doc is None else str(doc["email"])

    async def of_org(
        self, org_id: str, *, limit: int, after: str | None = None
    ) -> list[MemberAccount]:
        """The organization's member accounts by id, after `after` (a page)."""
        query: Doc = {"organization_id": org_id}
        if after is not None:
            query["_id"] = {"$gt": after}
        cursor = self.col.find(query, _ACCOUNT_FIELDS).sort("_id", 1).limit(limit)
        return [MemberAccount.model_validate(doc) for doc in await cursor.to_list(length=limit)]

    async def get_account(self, admin_id: str, *, org_id: str) -> MemberAccount | None:
        doc = await self.col.find_one({"_id": admin_id, "organization_id": org_id}, _ACCOUNT_FIELDS)
        return None if doc is None else MemberAccount.model_validate(doc)

    async def delete_of_org(self, org_id: str) -> None:
        await self.col.delete_many({"organization_id": org_id})

    async def delete_if_of(self, admin_id: str, *, org_id: str) -> None:
        """Delete the admin only if it belongs to `org_id` (an undo must not touch others)."""
        await self.col.delete_one({"_id": admin_id, "organization_id": org_id})
