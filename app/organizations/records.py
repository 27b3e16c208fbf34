"""The organization as stored: the typed record the repository returns (and builds documents
from). Add a stored field here, and to `schemas.OrganizationRead` if callers may see it."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from app.kit.store import Doc, Record, StoredTime

ACTIVE = "active"
CREATING = "creating"
DELETING = "deleting"


class AdminSummary(Record):
    """The admin's public facts, kept on the organization record with what authentication
    checks on every request (so a request costs one read)."""

    admin_id: str
    email: str
    token_version: int = 0  # password change and logout-all increment it
    # Until when (epoch ms) a logged-out token of this organization may be unexpired: only
    # then is the jti denylist read.
    denylist_until_ms: int = 0


class Organization(Record):
    """One organization: its name, slug, tenant collection and admin."""

    organization_id: str = Field(validation_alias=AliasChoices("_id", "organization_id"))
    organization_name: str
    slug: str
    collection_name: str
    status: str = ACTIVE  # creating | active | deleting
    pending_op: str | None = None  # the operation that holds the record, if any
    admin: AdminSummary
    created_at: StoredTime
    updated_at: StoredTime

    def to_doc(self) -> Doc:
        return {"_id": self.organization_id, **self.model_dump(exclude={"organization_id"})}
