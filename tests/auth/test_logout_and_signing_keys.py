"""Logout, logout-all, signing-key rotation (kid), EdDSA/RS256 and JWKS."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from mongomock_motor import AsyncMongoMockClient
from pydantic import ValidationError
from pymongo import AsyncMongoClient

from app.auth.tokens import InvalidToken, TokenManager
from app.kit.db import EmbeddedMongo
from app.kit.keys import KeyRing, hmac_kid, thumbprint
from app.kit.settings import Settings
from tests.support.apps import custom_app, make_settings
from tests.support.clients import PASSWORD, TEST_SECRET, bearer, create_and_login
from tests.support.processes import PROC_DB, once_seen, services

OLD_SECRET = "an-older-secret-that-was-current-last-month-0123456789"
PARAMS = {"organization_name": "Acme"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_for(org: dict[str, Any], **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    admin_id = org["admin"]["admin_id"]
    return {
        "sub": admin_id,
        "admin_id": admin_id,
        "organization_id": org["organization_id"],
        "iat": now,
        "exp": now + 600,
        "jti": "j" + str(now),
        "iss": "orgsvc",
        "aud": "orgsvc-api",
        "ver": 0,
        **extra,
    }


def pem_private(key: Any) -> bytes:
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data


def pem_public(key: Any) -> bytes:
    data: bytes = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


async def status_with(http: httpx.AsyncClient, token: str) -> int:
    return (await http.get("/org/get", params=PARAMS, headers=bearer(token))).status_code


async def refusal(http: httpx.AsyncClient, token: str, url: str = "/org/get") -> str:
    """The `code` of the 401 (with `WWW-Authenticate: Bearer`) that `GET url` answers."""
    res = await http.get(url, params=PARAMS, headers=bearer(token))
    assert res.status_code == 401, res.text
    assert res.headers["www-authenticate"] == "Bearer"
    code: str = res.json()["code"]
    return code


# ------------------------------------------------------------------ logout
async def test_logout_revokes_only_the_presented_token(api: httpx.AsyncClient) -> None:
    _, first = await create_and_login(api, "Acme", "a@acme.com")
    login = await api.post("/admin/login", json={"email": "a@acme.com", "password": PASSWORD})
    second = login.json()["access_token"]
    res = await api.post("/admin/logout", headers=bearer(first))
    assert res.status_code == 204 and res.content == b""
    res = await api.get("/org/get", params=PARAMS, headers=bearer(first))
    assert res.status_code == 401 and res.json()["code"] == "token_revoked"
    assert res.headers["www-authenticate"] == "Bearer"
    assert await status_with(api, second) == 200
    # A revoked token cannot log out again (or do anything else).
    res = await api.post("/admin/logout", headers=bearer(first))
    assert res.status_code == 401 and res.json()["code"] == "token_revoked"
    res = await api.post("/admin/logout")
    assert res.status_code == 401 and res.json()["code"] == "not_authenticated"


async def test_logout_all_revokes_every_token_of_the_admin(api: httpx.AsyncClient) -> None:
    _, first = await create_and_login(api, "Acme", "a@acme.com")
    _, other_org = await create_and_login(api, "Other", "o@other.com")
    login = await api.post("/admin/login", json={"email": "a@acme.com", "password": PASSWORD})
    second = login.json()["access_token"]
    assert (await api.post("/admin/logout-all", headers=bearer(second))).status_code == 204
    assert await refusal(api, first) == "token_revoked"
    assert await refusal(api, second) == "token_revoked"
    # Another organization's admin is untouched, and a new login works.
    res = await api.get(
        "/org/get", params={"organization_name": "Other"}, headers=bearer(other_org)
    )
    assert res.status_code == 200
    login = await api.post("/admin/login", json={"email": "a@acme.com", "password": PASSWORD})
    assert await status_with(api, login.json()["access_token"]) == 200


async def test_denylist_entry_expires_with_the_token(
    real_api: tuple[httpx.AsyncClient, Any], nx_client: AsyncMongoClient[Any], settings: Settings
) -> None:
    http, _ = real_api
    _, token = await create_and_login(http, "Acme", "a@acme.com")
    assert (await http.post("/admin/logout", headers=bearer(token))).status_code == 204
    col = nx_client[settings.mongodb_db]["revoked_tokens"]
    doc = await col.find_one({})
    assert doc is not None
    claims = jwt.decode(token, options={"verify_signature": False})
    assert doc["_id"] == claims["jti"]
    assert 0 < doc["expires_at"].timestamp() - claims["exp"] <= 61  # exp + a little leeway
    assert token not in str(doc)  # the jti, never the token
    indexes = await col.index_information()
    assert any(
        v.get("expireAfterSeconds") == 0 and v["key"][0][0] == "expires_at"
        for v in indexes.values()
    )


async def test_revoked_jti_is_rejected_by_the_other_process(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> None:
    async with services(nx_server, logs_dir) as (a, b), httpx.AsyncClient(timeout=30) as http:
        body = {"organization_name": "Acme", "email": "a@acme.com", "password": PASSWORD}
        assert (await http.post(a.url + "/org/create", json=body)).status_code == 201
        creds = {"email": "a@acme.com", "password": PASSWORD}
        token = (await http.post(a.url + "/admin/login", json=creds)).json()["access_token"]
        keep = (await http.post(b.url + "/admin/login", json=creds)).json()["access_token"]
        get = b.url + "/org/get"
        assert (await http.get(get, params=PARAMS, headers=bearer(token))).status_code == 200
        assert (await http.post(a.url + "/admin/logout", headers=bearer(token))).is_success
        res = await once_seen(
            lambda: http.get(get, params=PARAMS, headers=bearer(token)),
            lambda r: r.status_code == 401,
        )
        assert res.status_code == 401 and res.json()["code"] == "token_revoked"
        assert (await http.get(get, params=PARAMS, headers=bearer(keep))).status_code == 200
        # logout-all on B reaches A too.
        assert (await http.post(b.url + "/admin/logout-all", headers=bearer(keep))).is_success
        await once_seen(
            lambda: http.get(a.url + "/org/get", params=PARAMS, headers=bearer(keep)),
            lambda r: r.status_code == 401,
        )
        assert await refusal(http, keep, a.url + "/org/get") == "token_revoked"
    # The logged-out token's jti and its session (logout ends the session too); logout-all
    # writes none (a new token version).
    denied = [d["_id"] for d in await nx_client[PROC_DB]["revoked_tokens"].find().to_list(None)]
    assert len(denied) == 2 and sum(d.startswith("sid:") for d in denied) == 1, denied


# ------------------------------------------------------------------ HS256 rotation
async def test_tokens_carry_the_current_kid(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme", "a@acme.com")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256"
    assert header["kid"] == hmac_kid(TEST_SECRET)
    assert TEST_SECRET[:8] not in header["kid"]


async def test_a_token_signed_with_a_previous_secret_is_still_accepted() -> None:
    """Rotation: yesterday's process signed with OLD_SECRET; today's has a new current secret
    and lists the old one as previous: yesterday's tokens still work, new ones use the new kid."""
    store: Any = AsyncMongoMockClient(tz_aware=True)
    async with custom_app(store, jwt_secret=OLD_SECRET) as (http, _):
        _org, old_token = await create_and_login(http, "Acme", "a@acme.com")
    new_secret = "the-new-current-secret-after-rotation-0123456789abcdef"
    async with custom_app(store, jwt_secret=new_secret, jwt_previous_secrets=OLD_SECRET) as (
        http,
        _,
    ):
        assert await status_with(http, old_token) == 200
        login = await http.post("/admin/login", json={"email": "a@acme.com", "password": PASSWORD})
        new_token = login.json()["access_token"]
        assert jwt.get_unverified_header(new_token)["kid"] == hmac_kid(new_secret)
        assert await status_with(http, new_token) == 200
    # Once the old secret is dropped from the settings, its tokens are refused.
    async with custom_app(store, jwt_secret=new_secret) as (http, _):
        assert await refusal(http, old_token) == "invalid_token"


async def test_explicit_kids_for_previous_secrets() -> None:
    store: Any = AsyncMongoMockClient(tz_aware=True)
    async with custom_app(store, jwt_secret=OLD_SECRET, jwt_kid="2026-10") as (http, _):
        _org, old_token = await create_and_login(http, "Acme", "a@acme.com")
    assert jwt.get_unverified_header(old_token)["kid"] == "2026-10"
    new_secret = "the-new-current-secret-after-rotation-0123456789abcdef"
    async with custom_app(
        store,
        jwt_secret=new_secret,
        jwt_kid="2026-11",
        jwt_previous_secrets=f"2026-10:{OLD_SECRET}",
    ) as (http, _):
        assert await status_with(http, old_token) == 200


async def test_unknown_kid_is_rejected(api: httpx.AsyncClient) -> None:
    org, _token = await create_and_login(api, "Acme", "a@acme.com")
    # Signed with the right secret, but under a kid the service does not know.
    forged = jwt.encode(claims_for(org), TEST_SECRET, "HS256", headers={"kid": "nope"})
    assert await refusal(api, forged) == "invalid_token"
    # The same claims under the right kid are accepted: the kid was all that was wrong.
    right = jwt.encode(
        claims_for(org), TEST_SECRET, "HS256", headers={"kid": hmac_kid(TEST_SECRET)}
    )
    assert await status_with(api, right) == 200
    for bad in (7, "", "x" * 500, None, ["a"]):
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": bad}).encode())
        body = b64url(json.dumps(claims_for(org)).encode())
        sig = hmac.new(TEST_SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert await refusal(api, f"{head}.{body}.{b64url(sig)}") == "invalid_token", bad


async def test_kidless_token_only_verifies_with_the_current_secret(api: httpx.AsyncClient) -> None:
    """Tokens minted before kids existed keep working until they expire (same secret, HS256)."""
    org, _ = await create_and_login(api, "Acme", "a@acme.com")
    legacy = jwt.encode(claims_for(org), TEST_SECRET, "HS256")
    assert "kid" not in jwt.get_unverified_header(legacy)
    assert await status_with(api, legacy) == 200
    other = jwt.encode(claims_for(org), OLD_SECRET, "HS256")
    assert await refusal(api, other) == "invalid_token"


def test_token_manager_pins_the_algorithm_per_kid() -> None:
    tm = TokenManager(secret=TEST_SECRET, issuer="orgsvc", audience="a", expires_minutes=5)
    token, _ = tm.issue(admin_id="adm", organization_id="org", version=0)
    kid = jwt.get_unverified_header(token)["kid"]
    payload = jwt.decode(token, TEST_SECRET, algorithms=["HS256"], audience="a")
    hs512 = jwt.encode(payload, TEST_SECRET + "x" * 20, "HS512", headers={"kid": kid})
    with pytest.raises(InvalidToken):
        tm.verify(hs512)
    unsigned = jwt.encode(payload, None, "none", headers={"kid": kid})  # type: ignore[arg-type]
    with pytest.raises(InvalidToken):
        tm.verify(unsigned)


# ------------------------------------------------------------------ asymmetric keys
@pytest.fixture
def ed_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "ed25519.pem"
    path.write_bytes(pem_private(ed25519.Ed25519PrivateKey.generate()))
    return path


async def test_hs256_only_publishes_no_keys(api: httpx.AsyncClient) -> None:
    res = await api.get("/.well-known/jwks.json")
    assert res.status_code == 200 and res.json() == {"keys": []}
    assert TEST_SECRET not in res.text


@pytest.mark.parametrize("algorithm", ["EdDSA", "RS256"])
async def test_asymmetric_signing_and_jwks(tmp_path: Path, algorithm: str) -> None:
    if algorithm == "EdDSA":
        private: Any = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(pem_private(private))
    async with custom_app(jwt_algorithm=algorithm, jwt_private_key_file=str(path)) as (http, _):
        org, token = await create_and_login(http, "Acme", "a@acme.com")
        header = jwt.get_unverified_header(token)
        assert header["alg"] == algorithm
        assert header["kid"] == thumbprint(private.public_key())
        assert await status_with(http, token) == 200
        jwks = (await http.get("/.well-known/jwks.json")).json()
        assert [k["kid"] for k in jwks["keys"]] == [header["kid"]]
        jwk = jwks["keys"][0]
        assert jwk["alg"] == algorithm and jwk["use"] == "sig"
        assert "d" not in jwk and "p" not in jwk  # public half only
        # Anyone can verify with the published key alone.
        public = jwt.PyJWK(jwk).key
        claims = jwt.decode(token, public, algorithms=[algorithm], audience="orgsvc-api")
        assert claims["organization_id"] == org["organization_id"]
        # The HMAC-with-the-public-key trick (algorithm confusion) is refused.
        head = b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": header["kid"]}).encode())
        body = b64url(json.dumps(claims_for(org)).encode())
        sig = hmac.new(pem_public(private), f"{head}.{body}".encode(), hashlib.sha256).digest()
        assert await refusal(http, f"{head}.{body}.{b64url(sig)}") == "invalid_token"


async def test_previous_public_key_still_verifies(tmp_path: Path) -> None:
    store: Any = AsyncMongoMockClient(tz_aware=True)
    old, new = tmp_path / "old.pem", tmp_path / "new.pem"
    old_key = ed25519.Ed25519PrivateKey.generate()
    old.write_bytes(pem_private(old_key))
    new.write_bytes(pem_private(ed25519.Ed25519PrivateKey.generate()))
    public_only = tmp_path / "old.pub.pem"
    public_only.write_bytes(pem_public(old_key))
    async with custom_app(store, jwt_algorithm="EdDSA", jwt_private_key_file=str(old)) as (
        http,
        _,
    ):
        _, old_token = await create_and_login(http, "Acme", "a@acme.com")
    async with custom_app(
        store,
        jwt_algorithm="EdDSA",
        jwt_private_key_file=str(new),
        jwt_previous_public_key_files=str(public_only),
    ) as (http, _):
        assert await status_with(http, old_token) == 200
        kids = [k["kid"] for k in (await http.get("/.well-known/jwks.json")).json()["keys"]]
        assert len(kids) == 2 and kids[1] == jwt.get_unverified_header(old_token)["kid"]


async def test_switching_to_eddsa_keeps_hs256_tokens_until_they_expire(
    ed_key_file: Path,
) -> None:
    store: Any = AsyncMongoMockClient(tz_aware=True)
    async with custom_app(store) as (http, _):
        _, hs_token = await create_and_login(http, "Acme", "a@acme.com")
    async with custom_app(store, jwt_algorithm="EdDSA", jwt_private_key_file=str(ed_key_file)) as (
        http,
        _,
    ):
        assert await status_with(http, hs_token) == 200
        assert (await http.get("/.well-known/jwks.json")).json()["keys"][0]["alg"] == "EdDSA"


def test_private_key_from_the_environment_value(ed_key_file: Path) -> None:
    pem = ed_key_file.read_text().replace("\n", "\\n")  # one line, as in a .env file
    ring = KeyRing.from_settings(make_settings(jwt_algorithm="EdDSA", jwt_private_key=pem))
    assert ring.signing.algorithm == "EdDSA"


def test_bad_key_settings_are_refused_at_settings_time(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="JWT_PRIVATE_KEY"):
        make_settings(jwt_algorithm="EdDSA")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ValidationError, match="not an unencrypted PEM private key") as caught:
        make_settings(jwt_algorithm="EdDSA", jwt_private_key_file=str(garbage))
    assert "not a key" not in str(caught.value)  # key material is never echoed
    rsa_file = tmp_path / "rsa.pem"
    rsa_file.write_bytes(
        pem_private(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    )
    with pytest.raises(ValidationError, match="not a key for EdDSA"):
        make_settings(jwt_algorithm="EdDSA", jwt_private_key_file=str(rsa_file))
    small = tmp_path / "small.pem"
    small.write_bytes(pem_private(rsa.generate_private_key(public_exponent=65537, key_size=1024)))
    with pytest.raises(ValidationError, match="at least 2048 bits"):
        make_settings(jwt_algorithm="RS256", jwt_private_key_file=str(small))
    with pytest.raises(ValidationError, match="cannot be read"):
        make_settings(jwt_previous_public_key_files=str(tmp_path / "none"))
    with pytest.raises(ValidationError, match="share the kid"):
        make_settings(jwt_kid="same", jwt_previous_secrets=f"same:{OLD_SECRET}")


@pytest.mark.realstore  # runs `orgsvc serve` as a process
def test_serve_refuses_a_bad_key_with_a_clear_message(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.support.processes import ROOT

    env = {**os.environ, "JWT_ALGORITHM": "EdDSA", "JWT_PRIVATE_KEY_FILE": str(tmp_path / "x")}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "JWT_PRIVATE_KEY_FILE cannot be read" in done.stderr
    assert "Traceback" not in done.stderr


def test_production_refuses_weak_previous_secrets() -> None:
    base = {
        "environment": "production",
        "jwt_secret": TEST_SECRET,
        "mongodb_url": "mongodb://db:27017",
    }
    make_settings(**base, jwt_previous_secrets=f"old:{OLD_SECRET}")
    for weak in ("short", "old:short", f"{OLD_SECRET},changeme"):
        with pytest.raises(ValidationError, match="JWT_PREVIOUS_SECRETS"):
            make_settings(**base, jwt_previous_secrets=weak)


async def test_jwks_verification_by_a_separate_pyjwt_client(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path, ed_key_file: Path
) -> None:
    """Another service verifies our tokens with PyJWT's PyJWKClient and no shared secret."""
    env = {"JWT_ALGORITHM": "EdDSA", "JWT_PRIVATE_KEY_FILE": str(ed_key_file)}
    async with services(nx_server, logs_dir, count=1, **env) as (svc,):
        async with httpx.AsyncClient(timeout=30) as http:
            body = {"organization_name": "Acme", "email": "a@acme.com", "password": PASSWORD}
            org = (await http.post(svc.url + "/org/create", json=body)).json()
            creds = {"email": "a@acme.com", "password": PASSWORD}
            token = (await http.post(svc.url + "/admin/login", json=creds)).json()["access_token"]

        def verify_elsewhere() -> dict[str, Any]:
            client = jwt.PyJWKClient(svc.url + "/.well-known/jwks.json")
            signing_key = client.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=["EdDSA"],
                audience="orgsvc-api",
                issuer="orgsvc",
            )
            return claims

        claims = await asyncio.to_thread(verify_elsewhere)
        assert claims["organization_id"] == org["organization_id"]
        assert claims["sub"] == org["admin"]["admin_id"]

        def tampered() -> None:
            head, payload, sig = token.split(".")
            forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
            forged["organization_id"] = "someone-else"
            bad = f"{head}.{b64url(json.dumps(forged).encode())}.{sig}"
            client = jwt.PyJWKClient(svc.url + "/.well-known/jwks.json")
            key = client.get_signing_key_from_jwt(bad)
            jwt.decode(bad, key.key, algorithms=["EdDSA"], audience="orgsvc-api")

        with pytest.raises(jwt.InvalidSignatureError):
            await asyncio.to_thread(tampered)
