"""The organization as stored: the typed record the repository returns (and builds documents
from). Add a stored field here, and to `schemas.OrganizationRead` if callers may see it."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import AliasChoices, Field

from app.events.records import PendingEvent
from app.kit.store import Doc, Record, StoredTime
from app.tenancy.placement import Placement

# Where an operation has the record (`status`): only an `active` record is an organization.
ACTIVE = "active"
CREATING = "creating"
DELETING = "deleting"
# What callers see as the organization's `status` (`state` here): `active` or `suspended`.
SUSPENDED = "suspended"
DEFAULT_PLAN = "free"
_MAX_MS = 10**13 - 1  # order keys hold 13 digits of epoch milliseconds (until the year 2286)


def order_key(created_at: datetime, org_id: str) -> str:
    """The listing order of `GET /orgs`: creation time, then id. Unique and never changed, so a
    cursor (the last key seen) stays exact while organizations come and go: `"<13-digit epoch
    ms>.<id>"`, which sorts as text exactly as (time, id) sort."""
    return f"{_ms(created_at.timestamp() * 1000):013d}.{org_id}"


def keys_after(moment: datetime) -> str:
    """Every order key greater than this is of an organization created strictly after
    `moment` (ids are hex digits, all below `~`)."""
    return f"{_ms(math.floor(moment.timestamp() * 1000)):013d}.~"


def keys_before(moment: datetime) -> str:
    """Every order key less than this is of an organization created strictly before `moment`."""
    return f"{_ms(math.ceil(moment.timestamp() * 1000)):013d}."


def _ms(value: float) -> int:
    return min(max(int(value), 0), _MAX_MS)


class Suspension(Record):
    """Why and since when an organization is suspended (an operator's action)."""

    at: StoredTime
    reason: str | None = None
    by: str | None = None  # the operator's actor, `api_key:<key_id>` or `cli`


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
    # Where `collection_name` lives (`app.tenancy.placement`); None only on a record written
    # before placement, until the start-up upgrade records it (`upgrade_placement`).
    placement: Placement | None = None
    status: str = ACTIVE  # creating | active | deleting
    pending_op: str | None = None  # the operation that holds the record, if any
    admin: AdminSummary  # the primary owner
    created_at: StoredTime
    updated_at: StoredTime
    max_members: int | None = None  # None: MAX_MEMBERS_PER_ORG
    team: Team | None = None  # None: a record of v1, before the start-up upgrade
    # The profile (section 3 of the contract v2); records of v1 read with these defaults until
    # the start-up upgrade writes them (`OrganizationRepository.upgrade_v2`).
    display_name: str | None = None
    display_key: str | None = None  # display_name, NFKC + casefolded: `GET /orgs?q=`
    metadata: dict[str, Any] = {}
    plan: str = DEFAULT_PLAN
    external_id: str | None = None  # unique when set (a sparse unique index)
    state: str = ACTIVE  # active | suspended: the contract's `status`
    suspension: Suspension | None = None
    order_key: str | None = None  # `GET /orgs` order; None only before the upgrade
    # Events (`app.events`): every write that makes an event sets `revision` to the event's
    # `n`, conditional on the revision it read, and adds the event to `outbox` in that same
    # write; the publisher moves them to the feed (`outbox_since_ms`: its index to find them).
    revision: int = 0
    outbox: dict[str, PendingEvent] = {}
    outbox_since_ms: int | None = None

    @property
    def suspended(self) -> bool:
        return self.state == SUSPENDED

    @property
    def suspended_at(self) -> datetime | None:
        return self.suspension.at if self.suspension is not None else None

    @property
    def suspension_reason(self) -> str | None:
        return self.suspension.reason if self.suspension is not None else None

    @property
    def member_count(self) -> int:
        return self.team.count if self.team is not None else 1

    def to_doc(self) -> Doc:
        # The admin's token state lives in the team now; only a v1 record holds it here.
        doc = self.model_dump(exclude={"organization_id"})
        doc["admin"] = {"admin_id": self.admin.admin_id, "email": self.admin.email}
        for sparse in (
            "external_id",
            "display_key",
            "outbox_since_ms",
            "placement",
        ):  # absent, not null
            if doc[sparse] is None:
                del doc[sparse]
        if doc["order_key"] is None:
            doc["order_key"] = order_key(self.created_at, self.organization_id)
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
