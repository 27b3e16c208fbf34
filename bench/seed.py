"""Seeding the store: organizations through the API (with their admins' tokens), and directly
with pymongo: organizations shaped like one the API made (figure 5), tenant documents (figure 4),
and organization records built with the app's own record type (figure 7).
"""

from __future__ import annotations

import copy
import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from bson import ObjectId
from pymongo.collection import Collection

from app.auth.roles import OWNER
from app.kit.store import as_utc
from app.organizations.profile import search_key
from app.organizations.records import (
    ACTIVE,
    SUSPENDED,
    AdminSummary,
    Organization,
    Suspension,
    Team,
    TeamEntry,
    order_key,
)
from app.tenancy.names import collection_for, slugify
from bench.common import PASSWORD, Doc
from bench.context import Context
from bench.stack import Stack


def create_org(stack: Stack, name: str, email: str) -> Doc:
    body = {"organization_name": name, "email": email, "password": PASSWORD}
    resp = stack.api("POST", "/org/create", json=body)
    if resp.status_code != 201:
        raise RuntimeError(f"create {name!r}: {resp.status_code} {resp.text}")
    org: Doc = resp.json()
    return org


def login(stack: Stack, email: str) -> str:
    resp = stack.api("POST", "/admin/login", json={"email": email, "password": PASSWORD})
    if resp.status_code != 200:
        raise RuntimeError(f"login {email}: {resp.status_code} {resp.text}")
    token: str = resp.json()["access_token"]
    return token


def account(ctx: Context, name: str, tag: str) -> Doc:
    """An organization made through the API, and its admin logged in."""
    email = f"bench-{tag}-{ctx.run_id}@bench.example.com"
    org = create_org(ctx.stack, name, email)
    return {"name": name, "email": email, "org": org, "token": login(ctx.stack, email)}


def service_key(ctx: Context, name: str, scopes: str) -> str:
    """A service API key of `scopes` (comma-separated) from `python -m app.cli api-key create`."""
    made = ctx.stack.cli(
        ctx.stack.mongo_url, "api-key", "create", "--name", name, "--scopes", scopes
    )
    key: str = json.loads(made.splitlines()[0])["key"]
    return key


def login_bodies(ctx: Context) -> tuple[str, ...]:
    """One login body per account, correct passwords (figures 2 and 3)."""
    return tuple(json.dumps({"email": acc["email"], "password": PASSWORD}) for acc in ctx.accounts)


def fill_tenant(col: Collection[Doc], n: int) -> None:
    """`n` documents of about 150 bytes, in batches of 5,000, and one secondary index."""
    for start in range(0, n, 5000):
        col.insert_many(
            [
                {"i": i, "k": f"key-{i:07d}", "payload": "x" * 100, "tags": ["a", "b"]}
                for i in range(start, min(n, start + 5000))
            ],
            ordered=False,
        )
    col.create_index("k")


def seed_organizations(ctx: Context, count: int, *, template_org: Doc) -> int:
    """Insert `count` organizations (+ admin, name claim) shaped like one made by the API."""
    db = ctx.stack.db
    org_t = db["organizations"].find_one({"_id": template_org["organization_id"]})
    admin_t = db["admins"].find_one({"organization_id": template_org["organization_id"]})
    claim_t = db["name_claims"].find_one({"organization_id": org_t and org_t["_id"]})
    if org_t is None or admin_t is None or claim_t is None:
        raise RuntimeError("cannot find the template organization's documents to copy")
    batch = 2000
    for start in range(0, count, batch):
        orgs, admins, claims = [], [], []
        for i in range(start, min(count, start + batch)):
            org, admin, claim = _copies(ctx.run_id, i, org_t, admin_t, claim_t)
            orgs.append(org)
            admins.append(admin)
            claims.append(claim)
        db["name_claims"].insert_many(claims, ordered=False)
        db["organizations"].insert_many(orgs, ordered=False)
        db["admins"].insert_many(admins, ordered=False)
    return count


def _copies(run_id: str, i: int, org_t: Doc, admin_t: Doc, claim_t: Doc) -> tuple[Doc, Doc, Doc]:
    """Organization number `i`: its organization, admin and name-claim documents."""
    org_id, admin_id = str(ObjectId()), str(ObjectId())
    slug = f"bench_seed_{run_id}_{i:06d}"
    email = f"seed-{run_id}-{i:06d}@bench.example.com"
    org = copy.deepcopy(org_t)
    org.update(
        _id=org_id,
        organization_name=f"Bench Seed {run_id} {i:06d}",
        slug=slug,
        collection_name="org_" + slug,
        # Its own listing key: `order_key` has a unique index, and the template holds its own.
        order_key=order_key(as_utc(org_t["created_at"]), org_id),
    )
    org["admin"].update(admin_id=admin_id, email=email)
    admin = {**admin_t, "_id": admin_id, "email": email, "email_lower": email}
    admin["organization_id"] = org_id
    claim = {**claim_t, "_id": slug, "organization_id": org_id}
    claim["op_id"] = uuid.uuid4().hex
    return org, admin, claim


# ------------------------------------------------------------------------ figure 7's records
LISTING_PREFIX = "Zeph"  # what figure 7's `GET /orgs?q=` sends (mixed case on purpose)
_FILLER_WORDS = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka", "Tyrell",
    "Cyberdyne", "Soylent", "Vandelay", "Northwind", "Contoso", "Fabrikam", "Aperture",
)  # fmt: skip
_KINDS = ("Labs", "Freight", "Media", "Analytics", "Health", "Foods", "Energy", "Studio")
_PLANS = ("free", "free", "free", "free", "pro", "pro", "team", "enterprise")
_FULL_WIDTH_ZEPHYR = "".join(chr(ord(c) + 0xFEE0) for c in "Zephyr")  # NFKC: "Zephyr"
LISTING_SPAN = timedelta(days=730)  # every record's creation time falls in the last two years


@dataclass(frozen=True)
class ListingMatch:
    """How figure 7's organizations match its prefix: by slug only, by display name only (one
    of them in full-width letters, which NFKC folds), or by both (counted once)."""

    by_slug: int = 16
    by_display: int = 14
    by_both: int = 6

    @property
    def total(self) -> int:
        return self.by_slug + self.by_display + self.by_both


def listing_records(
    start: int, count: int, *, now: datetime, rng: random.Random, match: ListingMatch | None
) -> list[Organization]:
    """Organizations number `start` to `start + count - 1`, built with the app's own record type
    (`to_doc()` fills `order_key`); the first `match.total` of them, when `match` is given,
    match `LISTING_PREFIX`, the rest never do. Creation times are spread at random over
    `LISTING_SPAN`, so the matching ones sit among the rest in listing order at any size."""
    orgs = []
    for i in range(start, start + count):
        word, kind = rng.choice(_FILLER_WORDS), rng.choice(_KINDS)
        name = f"{word} {kind} {i:05d}"
        display: str | None = None
        if rng.random() < 0.4:
            display = f"{rng.choice(_FILLER_WORDS)} {kind}"
        if match is not None and i - start < match.total:
            j = i - start
            if j < match.by_slug:  # by slug only: a display name that does not match, or none
                name = f"Zephyr {kind} {i:05d}"
            elif j < match.by_slug + match.by_display:  # by display name only
                zephyr = _FULL_WIDTH_ZEPHYR if j == match.by_slug else "Zephyr"
                display = f"{zephyr} {kind}"
            else:  # by both
                name, display = f"Zephyr {kind} {i:05d}", f"Zephyr {word}"
        orgs.append(_listing_record(i, name, display, now=now, rng=rng))
    return orgs


def _listing_record(
    i: int, name: str, display: str | None, *, now: datetime, rng: random.Random
) -> Organization:
    org_id, admin_id = str(ObjectId()), str(ObjectId())
    slug = slugify(name)
    created = now - LISTING_SPAN * rng.random()
    updated = created + (now - created) * rng.random()
    suspended = rng.random() < 0.1
    return Organization(
        organization_id=org_id,
        organization_name=name,
        slug=slug,
        collection_name=collection_for(slug),
        admin=AdminSummary(
            admin_id=admin_id, email=f"owner-{i:05d}@{slug.replace('_', '-')}.example.com"
        ),
        created_at=created,
        updated_at=updated,
        team=Team(version=1, count=1, owners=[admin_id], members={admin_id: TeamEntry(role=OWNER)}),
        display_name=display,
        display_key=search_key(display) if display is not None else None,
        metadata={"region": rng.choice(("eu", "us", "apac"))} if rng.random() < 0.5 else {},
        plan=rng.choice(_PLANS),
        external_id=f"crm-{i:06d}" if rng.random() < 0.3 else None,
        state=SUSPENDED if suspended else ACTIVE,
        suspension=(
            Suspension(at=updated, reason="unpaid invoice", by="cli") if suspended else None
        ),
    )
