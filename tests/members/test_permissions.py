"""The permission table of the contract (section 1), every endpoint by every role, and a token
of another organization: the exact status and code. One mechanism decides all of them
(`app.auth.roles`); each row runs against a fresh organization with an owner, an admin and a
member, and a pending invitation."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.apps import custom_app
from tests.support.clients import bearer, create_and_login
from tests.support.teams import add_member, invite

CALLERS = ("owner", "admin", "member", "other")


@dataclass
class World:
    http: httpx.AsyncClient
    tokens: dict[str, str]
    ids: dict[str, str]  # owner, admin, member: member ids; invitation: a pending one


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    async with custom_app() as (http, app):
        org, owner = await create_and_login(http, "Acme", "owner@acme.com")
        admin_member, admin = await add_member(http, app, owner, "admin@acme.com", "admin")
        member_member, member = await add_member(http, app, owner, "member@acme.com", "member")
        pending = await invite(http, owner, "pending@acme.com")
        assert pending.status_code == 201, pending.text
        _, other = await create_and_login(http, "Other", "owner@other.com")
        yield World(
            http,
            {"owner": owner, "admin": admin, "member": member, "other": other},
            {
                "owner": org["admin"]["admin_id"],
                "admin": admin_member["member_id"],
                "member": member_member["member_id"],
                "invitation": pending.json()["invitation_id"],
            },
        )


Call = Callable[[World, str], Any]
# (row, request, expected per caller: (status, code or None))
Row = tuple[str, Call, dict[str, tuple[int, str | None]]]


def req(method: str, path: str, **kwargs: Any) -> Call:
    def call(w: World, caller: str) -> Any:
        return w.http.request(
            method, path.format(**w.ids), headers=bearer(w.tokens[caller]), **kwargs
        )

    return call


OK200, OK201, OK204 = (200, None), (201, None), (204, None)
ROLE = (403, "insufficient_role")
NOT_FOUND = (404, "not_found")
LAST_OWNER = (409, "last_owner")

TABLE: list[Row] = [
    ("get own organization", req("GET", "/org/get", params={"organization_name": "Acme"}),
     {"owner": OK200, "admin": OK200, "member": OK200, "other": (403, "forbidden")}),
    ("list members", req("GET", "/org/members"),
     {"owner": OK200, "admin": OK200, "member": OK200, "other": OK200}),
    ("change own email", req("PUT", "/org/update", json={"email": "new@elsewhere.com"}),
     {"owner": OK200, "admin": OK200, "member": OK200, "other": OK200}),
    ("change own password", req("PUT", "/org/update", json={"password": "another long one"}),
     {"owner": OK200, "admin": OK200, "member": OK200, "other": OK200}),
    ("rename the organization", req("PUT", "/org/update", json={"organization_name": "Acme 2"}),
     {"owner": OK200, "admin": OK200, "member": ROLE, "other": OK200}),
    ("read the audit log", req("GET", "/org/audit"),
     {"owner": OK200, "admin": OK200, "member": ROLE, "other": OK200}),
    ("list invitations", req("GET", "/org/invitations"),
     {"owner": OK200, "admin": OK200, "member": ROLE, "other": OK200}),
    ("invite a member",
     req("POST", "/org/invitations", json={"email": "n@x.com", "role": "member"}),
     {"owner": OK201, "admin": OK201, "member": ROLE, "other": OK201}),
    ("invite an admin",
     req("POST", "/org/invitations", json={"email": "n@x.com", "role": "admin"}),
     {"owner": OK201, "admin": OK201, "member": ROLE, "other": OK201}),
    ("invite an owner",
     req("POST", "/org/invitations", json={"email": "n@x.com", "role": "owner"}),
     {"owner": OK201, "admin": ROLE, "member": ROLE, "other": OK201}),
    ("revoke an invitation", req("DELETE", "/org/invitations/{invitation}"),
     {"owner": OK204, "admin": OK204, "member": ROLE, "other": NOT_FOUND}),
    ("member -> admin", req("PATCH", "/org/members/{member}", json={"role": "admin"}),
     {"owner": OK200, "admin": OK200, "member": ROLE, "other": NOT_FOUND}),
    ("admin -> member", req("PATCH", "/org/members/{admin}", json={"role": "member"}),
     {"owner": OK200, "admin": OK200, "member": ROLE, "other": NOT_FOUND}),
    ("member -> owner", req("PATCH", "/org/members/{member}", json={"role": "owner"}),
     {"owner": OK200, "admin": ROLE, "member": ROLE, "other": NOT_FOUND}),
    ("the last owner -> admin", req("PATCH", "/org/members/{owner}", json={"role": "admin"}),
     {"owner": LAST_OWNER, "admin": ROLE, "member": ROLE, "other": NOT_FOUND}),
    ("remove the member", req("DELETE", "/org/members/{member}"),
     {"owner": OK204, "admin": OK204, "member": OK204, "other": NOT_FOUND}),  # member: leaves
    ("remove the admin", req("DELETE", "/org/members/{admin}"),
     {"owner": OK204, "admin": OK204, "member": ROLE, "other": NOT_FOUND}),  # admin: leaves
    ("remove the last owner", req("DELETE", "/org/members/{owner}"),
     {"owner": LAST_OWNER, "admin": ROLE, "member": ROLE, "other": NOT_FOUND}),
    ("delete the organization", req("DELETE", "/org/delete", params={"organization_name": "Acme"}),
     {"owner": OK204, "admin": ROLE, "member": ROLE, "other": (403, "forbidden")}),
]  # fmt: skip


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("row", "call", "expected"), TABLE, ids=[r[0] for r in TABLE])
async def test_permission_table(
    row: str, call: Call, expected: dict[str, tuple[int, str | None]], caller: str
) -> None:
    async with world() as w:
        res = await call(w, caller)
        status, code = expected[caller]
        assert res.status_code == status, (row, caller, res.text)
        if code is not None:
            assert res.json()["code"] == code, (row, caller, res.text)


async def test_a_role_change_takes_effect_at_the_next_request_with_the_same_token() -> None:
    """The `role` claim is a hint: the role is read from the database on every request."""
    async with world() as w:
        res = await w.http.get("/org/audit", headers=bearer(w.tokens["member"]))
        assert res.status_code == 403
        res = await w.http.patch(
            "/org/members/{member}".format(**w.ids),
            json={"role": "admin"},
            headers=bearer(w.tokens["owner"]),
        )
        assert res.status_code == 200, res.text
        assert res.json()["role"] == "admin"
        res = await w.http.get("/org/audit", headers=bearer(w.tokens["member"]))
        assert res.status_code == 200  # same token, new role
        res = await w.http.patch(
            "/org/members/{member}".format(**w.ids),
            json={"role": "member"},
            headers=bearer(w.tokens["owner"]),
        )
        assert (
            await w.http.get("/org/audit", headers=bearer(w.tokens["member"]))
        ).status_code == 403


async def test_a_removed_member_is_401_at_once_and_others_keep_their_tokens() -> None:
    async with world() as w:
        res = await w.http.delete(
            "/org/members/{member}".format(**w.ids), headers=bearer(w.tokens["admin"])
        )
        assert res.status_code == 204
        gone = await w.http.get("/org/members", headers=bearer(w.tokens["member"]))
        assert gone.status_code == 401 and gone.json()["code"] == "token_revoked"
        for caller in ("owner", "admin"):
            res = await w.http.get("/org/members", headers=bearer(w.tokens[caller]))
            assert res.status_code == 200
            assert {m["role"] for m in res.json()["items"]} == {"owner", "admin"}
        login = await w.http.post(
            "/admin/login", json={"email": "member@acme.com", "password": "correct horse battery"}
        )
        assert login.status_code == 401  # the account is gone with the membership


async def test_one_members_password_change_or_logout_all_leaves_the_others_tokens() -> None:
    async with world() as w:
        res = await w.http.put(
            "/org/update", json={"password": "a brand new one"}, headers=bearer(w.tokens["admin"])
        )
        assert res.status_code == 200
        assert (
            await w.http.get("/org/members", headers=bearer(w.tokens["admin"]))
        ).status_code == 401
        res = await w.http.post("/admin/logout-all", headers=bearer(w.tokens["member"]))
        assert res.status_code == 204
        assert (
            await w.http.get("/org/members", headers=bearer(w.tokens["member"]))
        ).status_code == 401
        res = await w.http.get("/org/members", headers=bearer(w.tokens["owner"]))
        assert res.status_code == 200  # the owner's token is untouched by both


async def test_the_organization_shows_its_primary_owner_and_member_count() -> None:
    async with world() as w:
        owner = bearer(w.tokens["owner"])
        org = (
            await w.http.get("/org/get", params={"organization_name": "Acme"}, headers=owner)
        ).json()
        assert org["admin"] == {"admin_id": w.ids["owner"], "email": "owner@acme.com"}
        assert org["member_count"] == 3
        # Ownership passes: the member becomes an owner, the creator leaves.
        res = await w.http.patch(
            "/org/members/{member}".format(**w.ids), json={"role": "owner"}, headers=owner
        )
        assert res.status_code == 200
        res = await w.http.delete("/org/members/{owner}".format(**w.ids), headers=owner)
        assert res.status_code == 204, res.text
        res = await w.http.get(
            "/org/get", params={"organization_name": "Acme"}, headers=bearer(w.tokens["member"])
        )
        assert res.json()["admin"] == {"admin_id": w.ids["member"], "email": "member@acme.com"}
        assert res.json()["member_count"] == 2


async def test_a_405_names_every_method_of_the_path() -> None:
    """Paths served by several routes (GET and POST /org/invitations) answer 405 with all of
    their methods in `Allow`, not only the first route's."""
    async with custom_app() as (http, _):
        for method, path, allow in [
            ("PUT", "/org/invitations", "GET, POST"),
            ("PUT", "/org/members/0123456789abcdef01234567", "DELETE, PATCH"),
            ("POST", "/org/members", "GET"),
            ("PUT", "/org/create", "POST"),
        ]:
            res = await http.request(method, path)
            assert res.status_code == 405, (method, path)
            assert res.headers["allow"] == allow, (method, path, res.headers["allow"])
            assert res.json()["code"] == "method_not_allowed"
