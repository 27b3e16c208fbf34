"""Token attacks: each is a 401 with `WWW-Authenticate: Bearer` and the exact reason.

`invalid_token`: the token fails verification (signature, algorithm, expiry, audience, issuer,
claims, kid, garbage). `token_revoked`: a valid token that was revoked (password change, logout,
logout-all, deleted organization). `not_authenticated`: no token at all. Each test names the one
it expects, so it fails when the guard behind it in `app.auth.tokens` is removed (checked by
removing each guard in turn); a test that accepted any of the three passed with signature
verification switched off.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from mongomock_motor import AsyncMongoMockClient

from app.auth.tokens import InvalidToken, TokenManager
from app.kit.settings import Settings
from tests.support.apps import app_client
from tests.support.clients import TEST_SECRET, bearer, create_and_login


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


async def get_with(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token))


INVALID = "invalid_token"
REVOKED = "token_revoked"
MISSING = "not_authenticated"


def assert_401(res: httpx.Response, code: str) -> None:
    assert res.status_code == 401, res.text
    assert res.headers["www-authenticate"] == "Bearer"
    assert res.json()["code"] == code, res.text


def signed(claims: dict[str, Any], like: str) -> str:
    """`claims` signed with the service's real key, under the kid of the token `like`."""
    kid = jwt.get_unverified_header(like)["kid"]
    return jwt.encode(claims, TEST_SECRET, "HS256", headers={"kid": kid})


@pytest.fixture
async def token(api: httpx.AsyncClient) -> str:
    _, token = await create_and_login(api, "Acme", "a@acme.com")
    assert (await get_with(api, token)).status_code == 200
    return token


async def test_claims_are_the_contracts(token: str) -> None:
    claims = claims_of(token)
    for key in ["sub", "admin_id", "organization_id", "iat", "exp", "jti", "iss", "aud"]:
        assert key in claims
    assert claims["sub"] == claims["admin_id"]
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


async def test_tampered_payload(api: httpx.AsyncClient, token: str) -> None:
    """Acme's token, its payload rewritten to name another existing organization and its admin,
    its signature kept: only the signature check stands between it and Other's data."""
    other, _ = await create_and_login(api, "Other", "o@other.com")
    other_admin = other["admin"]["admin_id"]
    claims = claims_of(token) | {
        "organization_id": other["organization_id"],
        "admin_id": other_admin,
        "sub": other_admin,
    }
    header, _, sig = token.split(".")
    tampered = f"{header}.{b64(claims)}.{sig}"
    params = {"organization_name": "Other"}
    res = await api.get("/org/get", params=params, headers=bearer(tampered))
    assert_401(res, INVALID)
    # The same claims, properly signed, are Other's admin: the signature was all that was wrong.
    res = await api.get("/org/get", params=params, headers=bearer(signed(claims, token)))
    assert res.status_code == 200 and res.json()["organization_id"] == other["organization_id"]


async def test_wrong_signature(api: httpx.AsyncClient, token: str) -> None:
    forged = jwt.encode(claims_of(token), "another-secret-that-is-also-long-enough!!", "HS256")
    assert_401(await get_with(api, forged), INVALID)


async def test_alg_none(api: httpx.AsyncClient, token: str) -> None:
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_of(token))}."
    assert_401(await get_with(api, unsigned), INVALID)


async def test_other_algorithm_with_the_same_secret(api: httpx.AsyncClient, token: str) -> None:
    assert_401(await get_with(api, jwt.encode(claims_of(token), TEST_SECRET, "HS512")), INVALID)


async def test_expired(api: httpx.AsyncClient, token: str) -> None:
    claims = claims_of(token) | {"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}
    assert_401(await get_with(api, signed(claims, token)), INVALID)


async def test_wrong_audience(api: httpx.AsyncClient, token: str) -> None:
    claims = claims_of(token) | {"aud": "some-other-service"}
    assert_401(await get_with(api, signed(claims, token)), INVALID)


async def test_wrong_issuer(api: httpx.AsyncClient, token: str) -> None:
    claims = claims_of(token) | {"iss": "evil"}
    assert_401(await get_with(api, signed(claims, token)), INVALID)


async def test_a_correctly_signed_copy_is_accepted(api: httpx.AsyncClient, token: str) -> None:
    """The tests around this one re-sign modified claims; unmodified, that token works."""
    assert (await get_with(api, signed(claims_of(token), token))).status_code == 200


@pytest.mark.parametrize(
    "missing", ["sub", "admin_id", "organization_id", "iat", "exp", "jti", "iss", "aud", "ver"]
)
async def test_missing_claim(api: httpx.AsyncClient, token: str, missing: str) -> None:
    claims = claims_of(token)
    del claims[missing]
    assert_401(await get_with(api, signed(claims, token)), INVALID)


@pytest.mark.parametrize(
    "claim, value",
    [
        ("organization_id", {"$ne": ""}),  # would match any organization in a query
        ("organization_id", ""),
        ("organization_id", "x" * 65),
        ("admin_id", 7),  # PyJWT refuses a non-string `sub` already
        ("admin_id", ""),
        ("jti", ["a"]),  # and a non-string `jti`
        ("jti", "j" * 65),
        ("ver", "0"),
        ("ver", True),
        ("ver", 0.0),
    ],
)
async def test_malformed_claim(
    api: httpx.AsyncClient, token: str, claim: str, value: object
) -> None:
    claims = claims_of(token) | {claim: value}
    if claim == "admin_id":
        claims["sub"] = value
    assert_401(await get_with(api, signed(claims, token)), INVALID)


@pytest.mark.parametrize("garbage", ["abc", "a.b.c", "Bearer", "e30.e30.e30", "x" * 4000])
async def test_garbage(api: httpx.AsyncClient, garbage: str) -> None:
    assert_401(await get_with(api, garbage), INVALID)


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic YTpi"}]
)
async def test_no_token(api: httpx.AsyncClient, token: str, headers: dict[str, str]) -> None:
    res = await api.get("/org/get", params={"organization_name": "Acme"}, headers=headers)
    assert_401(res, MISSING)


async def test_token_of_a_deleted_organization(api: httpx.AsyncClient, token: str) -> None:
    res = await api.delete(
        "/org/delete", params={"organization_name": "Acme"}, headers=bearer(token)
    )
    assert res.status_code == 204
    assert_401(await get_with(api, token), REVOKED)
    # Re-creating the same name makes a new organization: the old token stays dead.
    _, fresh = await create_and_login(api, "Acme", "a@acme.com")
    assert_401(await get_with(api, token), REVOKED)
    assert (await get_with(api, fresh)).status_code == 200


async def test_token_issued_before_password_change(api: httpx.AsyncClient, token: str) -> None:
    res = await api.put("/org/update", json={"password": "a-new-password"}, headers=bearer(token))
    assert res.status_code == 200
    assert_401(await get_with(api, token), REVOKED)
    login = await api.post(
        "/admin/login", json={"email": "a@acme.com", "password": "a-new-password"}
    )
    assert (await get_with(api, login.json()["access_token"])).status_code == 200


async def test_token_survives_a_rename(api: httpx.AsyncClient, token: str) -> None:
    res = await api.put("/org/update", json={"organization_name": "Renamed"}, headers=bearer(token))
    assert res.status_code == 200
    res = await api.get("/org/get", params={"organization_name": "Renamed"}, headers=bearer(token))
    assert res.status_code == 200


def test_manager_rejects_sub_mismatch() -> None:
    tm = TokenManager(secret=TEST_SECRET, issuer="i", audience="a", expires_minutes=5)
    token, _ = tm.issue(admin_id="x", organization_id="o", version=0)
    claims = claims_of(token) | {"sub": "someone-else"}
    with pytest.raises(InvalidToken):
        tm.verify(jwt.encode(claims, TEST_SECRET, "HS256"))


async def test_denylist_is_read_only_after_a_logout_in_that_organization(
    settings: Settings,
) -> None:
    """One read per request normally; the jti denylist is consulted only while it may matter."""
    async with app_client(settings, AsyncMongoMockClient(tz_aware=True)) as (http, app):
        stores = app.state.svc.repos
        _, token = await create_and_login(http, "Acme", "a@acme.com")
        _, other = await create_and_login(http, "Other", "o@other.com")
        reads: list[list[str]] = []
        real_any_revoked = stores.revocations.any_revoked

        async def counting(keys: list[str]) -> bool:
            reads.append(keys)
            revoked: bool = await real_any_revoked(keys)
            return revoked

        stores.revocations.any_revoked = counting
        assert (await get_with(http, token)).status_code == 200
        assert reads == []  # nobody logged out: no denylist read
        assert (await http.post("/admin/logout", headers=bearer(token))).status_code == 204
        assert_401(await get_with(http, token), REVOKED)
        assert len(reads) == 1  # Acme now looks at the denylist...
        res = await http.get(
            "/org/get", params={"organization_name": "Other"}, headers=bearer(other)
        )
        assert res.status_code == 200 and len(reads) == 1  # ...other organizations do not
