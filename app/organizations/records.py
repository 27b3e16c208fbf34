"""The organization as stored: the typed record the repository returns (and builds documents
from). Add a stored field here, and to `schemas.OrganizationRead` if callers may see it."""

from __future__ import annotations

from pydantic import AliasChoices, Field

from app.kit.store import Doc, Record, StoredTime

ACTIVE = "active"
CREATING = "creating"
DELETING = "deleting"


class AdminSummary(Record):
    """The primary owner's public facts (the contract's `admin` field). A record of v1 also
    holds the admin's token state here (`token_version`, `denylist_until_ms`); the start-up
    upgrade copies it into the team (`Team.members`), which is what authentication reads."""

    admin_id: str
    email: str
    token_version: int = 0
    denylist_until_ms: int = 0


class Organization(Record):
    """One organization: its name, slug, tenant collection and admin."""

    organization_id: str = Field(validation_alias=AliasChoices("_id", "organization_id"))
    organization_name: str
    slug: str
    collection_name: str
    status: str = ACTIVE  # creating | active | deleting
    pending_op: str | None = None  # the operation that holds the record, if any
    admin: AdminSummary  # the primary owner
    created_at: StoredTime
    updated_at: StoredTime
    max_members: int | None = None  # None: MAX_MEMBERS_PER_ORG
    team: Team | None = None  # None: a record of v1, before the start-up upgrade

    @property
    def member_count(self) -> int:
        return self.team.count if self.team is not None else 1

    def to_doc(self) -> Doc:
        # The admin's token state lives in the team now; only a v1 record holds it here.
        doc = self.model_dump(exclude={"organization_id"})
        doc["admin"] = {"admin_id": self.admin.admin_id, "email": self.admin.email}
        return {"_id": self.organization_id, **doc}


class TeamEntry(Record):
    """What authentication needs of one member, kept on the organization record so that a
    request costs one read: the role (read on every request, never trusted from the token),
    the token version (password change, logout-all and removal end that member's tokens) and
    until when a logged-out token of that member may be unexpired (the jti denylist)."""

    role: str
    token_version: int = 0
    denylist_until_ms: int = 0


class InviteSlot(Record):
    """A pending invitation's seat: its (lower-cased) email and when it expires."""

    email: str
    expires_ms: int


class Team(Record):
    """The organization's members and pending invitations, written only as a whole through a
    compare-and-set on `version` (`app.organizations.team`), so the invariants that span members
    (one owner at least, seats) hold under any race. Authentication reads the caller's entry
    only (a projection), with `count` and `owners`."""

    version: int = 0
    count: int = 0  # members
    owners: list[str] = []  # member ids, the primary owner first
    members: dict[str, TeamEntry] = {}
    invites: dict[str, InviteSlot] = {}


Organization.model_rebuild()
