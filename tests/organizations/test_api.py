"""Every endpoint's success and failure paths, over the in-memory double."""

from __future__ import annotations

from datetime import datetime

import httpx
import pytest
from mongomock_motor import AsyncMongoMockClient

from app.kit.settings import Settings
from tests.support.apps import app_client
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body


def assert_error(res: httpx.Response, status: int, code: str) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert body["code"] == code, body
    assert body["detail"]


# ------------------------------------------------------------------ create
async def test_create_returns_the_organization_object(api: httpx.AsyncClient) -> None:
    res = await api.post("/org/create", json=org_body("Acme Corp", "Admin@Acme.com"))
    assert res.status_code == 201
    org = res.json()
    assert org["organization_name"] == "Acme Corp"
    assert org["slug"] == "acme_corp"
    assert org["collection_name"] == "org_acme_corp"
    assert org["admin"]["email"] == "Admin@acme.com"  # the domain part is normalised
    assert org["organization_id"] and org["admin"]["admin_id"]
    for key in ("created_at", "updated_at"):
        assert org[key].endswith("Z")
        datetime.fromisoformat(org[key].replace("Z", "+00:00"))
    assert "password" not in res.text and "$2b$" not in res.text


@pytest.mark.parametrize("again", ["acme-corp", " ACME  corp ", "ACME_CORP"])
async def test_create_same_slug_is_409(api: httpx.AsyncClient, again: str) -> None:
    assert (await api.post("/org/create", json=org_body("Acme Corp"))).status_code == 201
    res = await api.post("/org/create", json=org_body(again, "other@x.com"))
    assert_error(res, 409, "organization_exists")


async def test_create_with_taken_email_is_409_case_insensitive(api: httpx.AsyncClient) -> None:
    assert (await api.post("/org/create", json=org_body("One", "boss@x.com"))).status_code == 201
    res = await api.post("/org/create", json=org_body("Two", "BOSS@X.COM"))
    assert_error(res, 409, "email_taken")
    # nothing of "Two" was left behind: the name is still free
    assert (await api.post("/org/create", json=org_body("Two", "two@x.com"))).status_code == 201


async def test_unicode_names_work(api: httpx.AsyncClient) -> None:
    org, token = await create_and_login(api, "Café Zürich 東京", "cafe@x.com")
    assert org["slug"] == "café_zürich_東京"
    res = await api.get(
        "/org/get", params={"organization_name": "CAFÉ-zürich 東京"}, headers=bearer(token)
    )
    assert res.status_code == 200 and res.json()["organization_id"] == org["organization_id"]


BAD_NAMES = [
    "",
    "   ",
    "!!!***",
    "x" * 400,
    "bad\x00name",
    {"$ne": None},
    123,
    None,
    ["a"],
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_create_bad_names_are_422(api: httpx.AsyncClient, name: object) -> None:
    body = {"organization_name": name, "email": "a@x.com", "password": PASSWORD}
    res = await api.post("/org/create", json=body)
    assert_error(res, 422, "validation_error")


@pytest.mark.parametrize(
    ("name", "slug"), [("system.users", "system_users"), ("a$b", "a_b"), ("a.b", "a_b")]
)
async def test_namespace_characters_never_reach_a_collection(
    api: httpx.AsyncClient, name: str, slug: str
) -> None:
    res = await api.post("/org/create", json=org_body(name, f"{slug}@x.com"))
    assert res.status_code == 201
    assert res.json()["collection_name"] == f"org_{slug}"


@pytest.mark.parametrize(
    "email",
    ["", "not-an-email", "a@", "@b.com", {"$ne": None}, 42, "a@b.com\x00", "x" * 300 + "@a.com"],
)
async def test_create_bad_emails_are_422(api: httpx.AsyncClient, email: object) -> None:
    body = {"organization_name": "Acme", "email": email, "password": PASSWORD}
    assert_error(await api.post("/org/create", json=body), 422, "validation_error")


@pytest.mark.parametrize(
    "password",
    [
        "a" * 7,  # 7 bytes
        "a" * 73,  # 73 bytes
        "é" * 37,  # 37 two-byte characters = 74 bytes
        {"$ne": None},
        12345678,
    ],
)
async def test_create_bad_passwords_are_422(api: httpx.AsyncClient, password: object) -> None:
    body = {"organization_name": "Acme", "email": "a@x.com", "password": password}
    res = await api.post("/org/create", json=body)
    assert_error(res, 422, "validation_error")
    if isinstance(password, str):
        assert password not in res.text  # never echoed


@pytest.mark.parametrize("password", ["a" * 8, "a" * 72, "é" * 36])
async def test_passwords_at_the_limits_are_accepted(api: httpx.AsyncClient, password: str) -> None:
    body = org_body("Edge", "edge@x.com", password)
    assert (await api.post("/org/create", json=body)).status_code == 201
    login = await api.post("/admin/login", json={"email": "edge@x.com", "password": password})
    assert login.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"organization_name": "Acme"},
        {"organization_name": "Acme", "email": "a@x.com"},
        {"email": "a@x.com", "password": PASSWORD},
        {"organization_name": "Acme", "email": "a@x.com", "password": PASSWORD, "extra": 1},
    ],
)
async def test_create_missing_fields_are_422(api: httpx.AsyncClient, body: dict) -> None:  # type: ignore[type-arg]
    assert_error(await api.post("/org/create", json=body), 422, "validation_error")


@pytest.mark.parametrize("raw", [b"{", b"not json", b"[]", b'"string"', b"null", b"\xff\xfe"])
async def test_malformed_json_is_422(api: httpx.AsyncClient, raw: bytes) -> None:
    res = await api.post("/org/create", content=raw, headers={"content-type": "application/json"})
    assert_error(res, 422, "validation_error")


# ------------------------------------------------------------------ login
async def test_login_returns_a_bearer_token(api: httpx.AsyncClient) -> None:
    org = (await api.post("/org/create", json=org_body("Acme", "a@x.com"))).json()
    res = await api.post("/admin/login", json={"email": "A@X.COM", "password": PASSWORD})
    assert res.status_code == 200
    body = res.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 30 * 60
    assert body["admin_id"] == org["admin"]["admin_id"]
    assert body["organization_id"] == org["organization_id"]
    assert res.headers["cache-control"] == "no-store"


async def test_login_failures_are_identical(api: httpx.AsyncClient) -> None:
    await api.post("/org/create", json=org_body("Acme", "a@x.com"))
    wrong = await api.post("/admin/login", json={"email": "a@x.com", "password": "wrong-pass"})
    unknown = await api.post("/admin/login", json={"email": "no@x.com", "password": "wrong-pass"})
    assert_error(wrong, 401, "invalid_credentials")
    assert wrong.json() == unknown.json()
    assert wrong.status_code == unknown.status_code


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"email": "a@x.com"},
        {"email": {"$ne": None}, "password": "x"},
        {"email": "a@x.com", "password": {"$gt": ""}},
    ],
)
async def test_login_bad_input_is_422(api: httpx.AsyncClient, body: dict) -> None:  # type: ignore[type-arg]
    assert_error(await api.post("/admin/login", json=body), 422, "validation_error")


# ------------------------------------------------------------------ get
async def test_get_own_organization_by_any_spelling(api: httpx.AsyncClient) -> None:
    org, token = await create_and_login(api, "Acme Corp")
    for spelling in ["Acme Corp", "acme-corp", " ACME  corp "]:
        res = await api.get(
            "/org/get", params={"organization_name": spelling}, headers=bearer(token)
        )
        assert res.status_code == 200
        assert res.json() == org


async def test_get_unknown_is_404(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme")
    res = await api.get("/org/get", params={"organization_name": "nobody"}, headers=bearer(token))
    assert_error(res, 404, "not_found")


@pytest.mark.parametrize("name", ["", "!!!", "x" * 400])
async def test_get_bad_name_is_422(api: httpx.AsyncClient, name: str) -> None:
    _, token = await create_and_login(api, "Acme")
    res = await api.get("/org/get", params={"organization_name": name}, headers=bearer(token))
    assert_error(res, 422, "validation_error")


async def test_get_requires_a_token(api: httpx.AsyncClient) -> None:
    await create_and_login(api, "Acme")
    res = await api.get("/org/get", params={"organization_name": "Acme"})
    assert_error(res, 401, "not_authenticated")
    assert res.headers["www-authenticate"] == "Bearer"
    res = await api.get(
        "/org/get", params={"organization_name": "Acme"}, headers={"Authorization": "Basic abc"}
    )
    assert res.status_code == 401


# ------------------------------------------------------------------ cross-tenant
async def test_admin_of_a_cannot_touch_b(api: httpx.AsyncClient) -> None:
    a, token_a = await create_and_login(api, "Alpha", "a@alpha.com")
    b, token_b = await create_and_login(api, "Beta", "b@beta.com")
    res = await api.get("/org/get", params={"organization_name": "Beta"}, headers=bearer(token_a))
    assert_error(res, 403, "forbidden")
    res = await api.delete(
        "/org/delete", params={"organization_name": "Beta"}, headers=bearer(token_a)
    )
    assert_error(res, 403, "forbidden")
    # PUT only ever addresses the caller's own organization: taking B's name is a 409.
    res = await api.put("/org/update", json={"organization_name": "Beta"}, headers=bearer(token_a))
    assert_error(res, 409, "organization_exists")
    res = await api.put("/org/update", json={"email": "b@beta.com"}, headers=bearer(token_a))
    assert_error(res, 409, "email_taken")
    # B is untouched and still usable by its own admin.
    res = await api.get("/org/get", params={"organization_name": "Beta"}, headers=bearer(token_b))
    assert res.status_code == 200 and res.json() == b
    login = await api.post("/admin/login", json={"email": "b@beta.com", "password": PASSWORD})
    assert login.status_code == 200
    res = await api.get("/org/get", params={"organization_name": "Alpha"}, headers=bearer(token_a))
    assert res.json() == a


# ------------------------------------------------------------------ update
async def test_update_needs_at_least_one_field(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme")
    assert_error(
        await api.put("/org/update", json={}, headers=bearer(token)), 422, "validation_error"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"organization_name": "!!!"},
        {"organization_name": {"$ne": None}},
        {"email": "nope"},
        {"password": "short"},
        {"password": "é" * 37},
        {"unknown": "x"},
    ],
)
async def test_update_bad_input_is_422(api: httpx.AsyncClient, body: dict) -> None:  # type: ignore[type-arg]
    _, token = await create_and_login(api, "Acme")
    assert_error(
        await api.put("/org/update", json=body, headers=bearer(token)), 422, "validation_error"
    )


async def test_rename_moves_the_organization(api: httpx.AsyncClient) -> None:
    org, token = await create_and_login(api, "Acme")
    res = await api.put(
        "/org/update", json={"organization_name": "Acme Two"}, headers=bearer(token)
    )
    assert res.status_code == 200
    renamed = res.json()
    assert renamed["organization_id"] == org["organization_id"]
    assert (renamed["slug"], renamed["collection_name"]) == ("acme_two", "org_acme_two")
    # token still valid; the old name is 404 and free again
    res = await api.get("/org/get", params={"organization_name": "Acme Two"}, headers=bearer(token))
    assert res.status_code == 200
    res = await api.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token))
    assert_error(res, 404, "not_found")
    assert (await api.post("/org/create", json=org_body("Acme", "new@x.com"))).status_code == 201


async def test_same_slug_new_spelling_updates_display_name(api: httpx.AsyncClient) -> None:
    org, token = await create_and_login(api, "acme corp")
    res = await api.put(
        "/org/update", json={"organization_name": "ACME Corp"}, headers=bearer(token)
    )
    assert res.status_code == 200
    assert res.json()["organization_name"] == "ACME Corp"
    assert res.json()["collection_name"] == org["collection_name"]


async def test_email_change(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme", "old@x.com")
    res = await api.put("/org/update", json={"email": "New@X.com"}, headers=bearer(token))
    assert res.status_code == 200 and res.json()["admin"]["email"] == "New@x.com"
    ok = await api.post("/admin/login", json={"email": "new@x.com", "password": PASSWORD})
    assert ok.status_code == 200
    old = await api.post("/admin/login", json={"email": "old@x.com", "password": PASSWORD})
    assert old.status_code == 401


async def test_password_change_revokes_old_tokens(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme", "a@x.com")
    res = await api.put("/org/update", json={"password": "brand-new-pass"}, headers=bearer(token))
    assert res.status_code == 200
    res = await api.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token))
    assert_error(res, 401, "token_revoked")
    assert (
        await api.post("/admin/login", json={"email": "a@x.com", "password": PASSWORD})
    ).status_code == 401
    new = await api.post("/admin/login", json={"email": "a@x.com", "password": "brand-new-pass"})
    assert new.status_code == 200
    res = await api.get(
        "/org/get", params={"organization_name": "Acme"}, headers=bearer(new.json()["access_token"])
    )
    assert res.status_code == 200


# ------------------------------------------------------------------ delete
async def test_delete_removes_everything(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme", "a@x.com")
    res = await api.delete(
        "/org/delete", params={"organization_name": "acme"}, headers=bearer(token)
    )
    assert res.status_code == 204 and res.content == b""
    res = await api.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token))
    assert_error(res, 401, "token_revoked")
    assert (
        await api.post("/admin/login", json={"email": "a@x.com", "password": PASSWORD})
    ).status_code == 401
    again = await api.post("/org/create", json=org_body("Acme", "a@x.com"))
    assert again.status_code == 201


async def test_delete_unknown_is_404_and_needs_auth(api: httpx.AsyncClient) -> None:
    _, token = await create_and_login(api, "Acme")
    res = await api.delete(
        "/org/delete", params={"organization_name": "ghost"}, headers=bearer(token)
    )
    assert_error(res, 404, "not_found")
    res = await api.delete("/org/delete", params={"organization_name": "Acme"})
    assert_error(res, 401, "not_authenticated")
    res = await api.delete("/org/delete", headers=bearer(token))
    assert_error(res, 422, "validation_error")


# ------------------------------------------------------------------ health, docs
async def test_health_and_ready(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json() == {"status": "ok"}
    assert (await api.get("/ready")).status_code == 200


async def test_openapi_documents_models_and_errors(api: httpx.AsyncClient) -> None:
    spec = (await api.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in [
        "/org/create",
        "/org/get",
        "/org/update",
        "/org/delete",
        "/admin/login",
        "/health",
        "/ready",
    ]:
        assert path in paths
    create = paths["/org/create"]["post"]
    assert create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "OrganizationRead"
    )
    assert create["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorBody"
    )
    assert "403" in paths["/org/get"]["get"]["responses"]
    assert (await api.get("/docs")).status_code == 200


async def test_unknown_route_and_method_use_the_error_shape(api: httpx.AsyncClient) -> None:
    assert_error(await api.get("/nope"), 404, "not_found")
    assert_error(await api.get("/org/create"), 405, "method_not_allowed")


async def test_unknown_email_costs_one_full_bcrypt_verify(settings: Settings) -> None:
    """Same work for unknown email and wrong password: one verify at the configured cost."""
    async with app_client(settings, AsyncMongoMockClient(tz_aware=True)) as (http, app):
        state = app.state.svc
        await http.post("/org/create", json=org_body("Acme", "a@x.com"))
        calls: list[float] = []
        state.hasher.observers.append(calls.append)
        await http.post("/admin/login", json={"email": "a@x.com", "password": "wrong-pass"})
        wrong = len(calls)
        await http.post("/admin/login", json={"email": "ghost@x.com", "password": "wrong-pass"})
        assert wrong == 1 and len(calls) == 2
        dummy = await state.hasher.dummy_hash()
        assert dummy.startswith(f"$2b${settings.bcrypt_rounds:02d}$".encode())


async def test_lost_email_race_puts_the_rename_back(settings: Settings) -> None:
    """A PUT renaming and changing email is all-or-nothing when the email race is lost."""
    async with app_client(settings, AsyncMongoMockClient(tz_aware=True)) as (http, app):
        org, token = await create_and_login(http, "First", "first@x.com")
        await create_and_login(http, "Second", "second@x.com")

        async def never_in_use(email: str, *, other_than: str) -> bool:
            return False  # as if the other admin took the email after our early check

        app.state.svc.repos.admins.email_in_use = never_in_use
        res = await http.put(
            "/org/update",
            json={"organization_name": "Renamed", "email": "second@x.com"},
            headers=bearer(token),
        )
        assert_error(res, 409, "email_taken")
        res = await http.get(
            "/org/get", params={"organization_name": "First"}, headers=bearer(token)
        )
        assert res.status_code == 200
        assert res.json()["collection_name"] == org["collection_name"]
        assert res.json()["admin"]["email"] == "first@x.com"
        free = await http.post("/org/create", json=org_body("Renamed", "r@x.com"))
        assert free.status_code == 201
