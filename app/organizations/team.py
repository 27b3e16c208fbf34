"""The team on the organization record: who the members are, their roles and token state, and
the pending invitations' seats.

All of it lives in one document so that one read authenticates a request (the caller's entry,
by projection) and one conditional write changes it: every change that touches more than one
member's entry (roles, removal, invitations, seats) is a compare-and-set on `team.version`,
decided on a consistent snapshot, so "at least one owner" and "at most `max_members` seats" hold
whatever races. A member's own token state (`token_version`, `denylist_until_ms`) is changed by
one atomic write to that entry, which also moves `team.version`: a compare-and-set that read the
team before it fails and reads again, so it can never write an older token state back.
"""

from __future__ import annotations

import re
from typing import Any

from pymongo import ReturnDocument

from app.events.records import PendingEvent
from app.kit.store import Collection, Database, Doc, utcnow
from app.organizations.events import revision_filter, with_events
from app.organizations.records import (
    ACTIVE,
    SUSPENDED,
    Organization,
    Suspension,
    Team,
    TeamEntry,
)

_MEMBER_ID = re.compile(r"^[0-9a-f]{24}\Z")


def member_path(member_id: str) -> str:
    """`team.members.<id>`: a field path built from an id, so the id must be one we make (24
    hex digits: never a `.` or `$` from a token or a URL)."""
    if not _MEMBER_ID.match(member_id):
        raise ValueError("not a member id")
    return f"team.members.{member_id}"


def is_member_id(value: str) -> bool:
    return bool(_MEMBER_ID.match(value))


def _nest(doc: Doc) -> Doc:
    """nx-27017 answers a projection of `a.b` with a flat key `"a.b"`; MongoDB with `{a: {b}}`.
    Both read the same here."""
    out: Doc = {}
    for key, value in doc.items():
        if "." not in key:
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key].update(value)
            else:
                out[key] = value
            continue
        head, *rest = key.split(".")
        node: dict[str, Any] = out.setdefault(head, {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
    return out


# What authentication reads of the record: every field but the team, and of the team only its
# version, count and owners (plus the caller's own entry: `_auth_projection`). Built once.
_RECORD_FIELDS: Doc = {
    **dict.fromkeys(
        set(Organization.model_fields) - {"organization_id", "team", "outbox", "outbox_since_ms"},
        1,
    ),
    "team.version": 1,
    "team.count": 1,
    "team.owners": 1,
}


def _found(doc: Doc | None) -> Organization | None:
    return None if doc is None else Organization.model_validate(doc)


def _auth_projection(member_id: str) -> Doc:
    return {**_RECORD_FIELDS, member_path(member_id): 1}


class TeamRepository:
    """The `team` field of `organizations` records."""

    def __init__(self, db: Database) -> None:
        self.col: Collection = db["organizations"]

    async def for_member(self, org_id: str, member_id: str) -> Organization | None:
        """The active organization with only `member_id`'s team entry (one read, whatever the
        team's size): what authenticating a request needs."""
        if not is_member_id(member_id):
            return None
        doc = await self.col.find_one(
            {"_id": org_id, "status": ACTIVE}, _auth_projection(member_id)
        )
        return None if doc is None else Organization.model_validate(_nest(doc))

    async def get(self, org_id: str) -> Organization | None:
        """The active organization with its whole team."""
        doc = await self.col.find_one({"_id": org_id, "status": ACTIVE})
        return None if doc is None else Organization.model_validate(doc)

    async def replace(
        self,
        org: Organization,
        team: Team,
        *,
        admin: tuple[str, str] | None = None,
        events: list[PendingEvent] | None = None,
    ) -> bool:
        """Write `team` (and the primary owner's summary, when it changes) if the team is still
        the one `org` was read with; False when another change came first (read again)."""
        assert org.team is not None
        fields: Doc = {
            "team": team.model_copy(update={"version": org.team.version + 1}).model_dump()
        }
        if admin is not None:
            fields["admin.admin_id"], fields["admin.email"] = admin
        query: Doc = {
            "_id": org.organization_id,
            "status": ACTIVE,
            "team.version": org.team.version,
        }
        if events:
            query.update(revision_filter(org))
        res = await self.col.update_one(query, with_events({"$set": fields}, org, events or []))
        return res.modified_count == 1

    async def bump_token_version(self, org_id: str, member_id: str) -> bool:
        """End every token of this member issued so far (any status: a delete in progress too);
        False when no such member."""
        path = member_path(member_id)
        res = await self.col.update_one(
            {"_id": org_id, path: {"$exists": True}},
            {"$inc": {f"{path}.token_version": 1, "team.version": 1}},
        )
        return res.matched_count == 1

    async def suspend(
        self, org: Organization, suspension: Suspension, event: PendingEvent
    ) -> Organization | None:
        """Suspend the organization and end every token and session of every member issued so
        far, in one write: a new token version for each member of the team `org` was read
        with, conditional on that team still being current (so a member who joins meanwhile
        makes this fail and be read again, never keep a live token) and on no operation
        holding the record. The record after, or None: read again and decide again."""
        assert org.team is not None
        bumps: Doc = {f"{member_path(m)}.token_version": 1 for m in org.team.members}
        return _found(
            await self.col.find_one_and_update(
                {
                    "_id": org.organization_id,
                    "status": ACTIVE,
                    "pending_op": None,
                    "state": {"$ne": SUSPENDED},
                    "team.version": org.team.version,
                    **revision_filter(org),
                },
                with_events(
                    {
                        "$set": {
                            "state": SUSPENDED,
                            "suspension": suspension.model_dump(),
                            "updated_at": utcnow(),
                        },
                        "$inc": {**bumps, "team.version": 1},
                    },
                    org,
                    [event],
                ),
                return_document=ReturnDocument.AFTER,
            )
        )

    async def mark_denylist(self, org_id: str, member_id: str, *, until_ms: int) -> None:
        """Record that a revoked token of this member may be unexpired until `until_ms`."""
        path = member_path(member_id)
        await self.col.update_one(
            {"_id": org_id, path: {"$exists": True}},
            {"$max": {f"{path}.denylist_until_ms": until_ms}, "$inc": {"team.version": 1}},
        )

    async def upgrade_v1(self) -> int:
        """Give every record written by v1 (one embedded admin) its team: the admin becomes its
        owner, with the token state v1 kept on the record, so v1 tokens keep working. Each write
        is conditional on the record still having no team: replicas starting at once upgrade
        each record once, and running it again changes nothing."""
        upgraded = 0
        async for doc in self.col.find({"team": {"$exists": False}}, {"admin": 1}):
            admin = doc.get("admin") or {}
            admin_id = admin.get("admin_id")
            if not isinstance(admin_id, str):
                continue  # not an organization record this release can read
            entry = TeamEntry(
                role="owner",
                token_version=int(admin.get("token_version", 0)),
                denylist_until_ms=int(admin.get("denylist_until_ms", 0)),
            )
            team = Team(version=1, count=1, owners=[admin_id], members={admin_id: entry})
            res = await self.col.update_one(
                {"_id": doc["_id"], "team": {"$exists": False}},
                {"$set": {"team": team.model_dump()}},
            )
            upgraded += res.modified_count
        return upgraded
