"""Seeding the store: organizations through the API (with their admins' tokens), and directly
with pymongo: organizations shaped like one the API made (figure 5), tenant documents (figure 4).
"""

from __future__ import annotations

import copy
import json
import uuid

from bson import ObjectId
from pymongo.collection import Collection

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
    )
    org["admin"].update(admin_id=admin_id, email=email)
    admin = {**admin_t, "_id": admin_id, "email": email, "email_lower": email}
    admin["organization_id"] = org_id
    claim = {**claim_t, "_id": slug, "organization_id": org_id}
    claim["op_id"] = uuid.uuid4().hex
    return org, admin, claim
