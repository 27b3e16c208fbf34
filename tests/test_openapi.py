"""The OpenAPI schema says exactly what the service accepts and answers (the fuzz run holds the
live service to it; these pin the facts a reader relies on)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from app.audit.service import AUDIT_CURSOR_FORMAT, Actor, RequestMeta
from app.auth.schemas import PASSWORD_FORMAT
from app.kit.fields import EMAIL_FORMAT
from app.main import create_app
from app.organizations.router import document_required_create_key
from app.organizations.schemas import NAME_FORMAT, SLUG_CURSOR_FORMAT
from app.tenancy.names import MAX_NAME_CHARS
from tests.support.apps import app_client, make_settings
from tests.support.clients import bearer, create_and_login

BEARER: dict[str, list[str]] = {"HTTPBearer": []}
KEY: dict[str, list[str]] = {"APIKeyHeader": []}
# Every operation: its security requirements (None: public) and every status it answers.
OPERATIONS: dict[tuple[str, str], tuple[list[dict[str, list[str]]] | None, set[str]]] = {
    ("post", "/org/create"): (
        [KEY, {}],
        {"201", "400", "401", "403", "409", "413", "422", "503"},
    ),
    ("get", "/org/get"): ([KEY, BEARER], {"200", "401", "403", "404", "422", "503"}),
    ("get", "/org/list"): ([KEY], {"200", "401", "403", "422", "503"}),
    ("put", "/org/update"): (
        [BEARER],
        {"200", "400", "401", "403", "404", "409", "413", "422", "503"},
    ),
    ("delete", "/org/delete"): ([BEARER], {"204", "401", "403", "404", "409", "422", "503"}),
    ("get", "/org/audit"): ([BEARER], {"200", "401", "403", "422", "503"}),
    ("get", "/org/members"): ([BEARER], {"200", "401", "403", "422", "503"}),
    ("patch", "/org/members/{member_id}"): (
        [BEARER],
        {"200", "400", "401", "403", "404", "409", "413", "422", "503"},
    ),
    ("delete", "/org/members/{member_id}"): (
        [BEARER],
        {"204", "401", "403", "404", "409", "422", "503"},
    ),
    ("post", "/org/invitations"): (
        [BEARER],
        {"201", "400", "401", "403", "409", "413", "422", "503"},
    ),
    ("get", "/org/invitations"): ([BEARER], {"200", "401", "403", "422", "503"}),
    ("delete", "/org/invitations/{invitation_id}"): (
        [BEARER],
        {"204", "401", "403", "404", "409", "422", "503"},
    ),
    ("post", "/invitations/accept"): (
        None,
        {"201", "400", "403", "409", "410", "413", "422", "503"},
    ),
    ("get", "/invitations/accept"): (None, {"200", "410", "422", "503"}),
    ("post", "/admin/login"): (
        None,
        {"200", "400", "401", "403", "413", "422", "429", "503"},
    ),
    ("post", "/admin/logout"): ([BEARER], {"204", "401", "403", "503"}),
    ("post", "/admin/refresh"): (None, {"200", "400", "401", "403", "413", "422", "503"}),
    ("get", "/admin/sessions"): ([BEARER], {"200", "401", "403", "422", "503"}),
    ("delete", "/admin/sessions/{session_id}"): (
        [BEARER],
        {"204", "401", "403", "404", "422", "503"},
    ),
    ("post", "/admin/logout-all"): ([BEARER], {"204", "401", "403", "503"}),
    ("post", "/admin/password/forgot"): (None, {"202", "400", "413", "422", "429", "503"}),
    ("post", "/admin/password/reset"): (None, {"204", "400", "410", "413", "422", "503"}),
    ("get", "/password/reset"): (None, {"200", "410", "422", "503"}),
    ("get", "/orgs"): ([KEY], {"200", "401", "403", "422", "503"}),
    ("get", "/orgs/{organization_id}"): ([KEY], {"200", "401", "403", "404", "422", "503"}),
    ("patch", "/orgs/{organization_id}"): (
        [KEY],
        {"200", "400", "401", "403", "404", "409", "413", "422", "503"},
    ),
    ("delete", "/orgs/{organization_id}"): (
        [KEY],
        {"204", "401", "403", "404", "409", "422", "503"},
    ),
    ("post", "/orgs/{organization_id}/suspend"): (
        [KEY],
        {"200", "400", "401", "403", "404", "409", "413", "422", "503"},
    ),
    ("post", "/orgs/{organization_id}/move"): (
        [KEY],
        {"202", "400", "401", "403", "404", "409", "413", "422", "503"},
    ),
    ("get", "/operations/{operation_id}"): ([KEY], {"200", "401", "403", "404", "422", "503"}),
    ("post", "/orgs/{organization_id}/restore"): (
        [KEY],
        {"200", "401", "403", "404", "409", "422", "503"},
    ),
    ("get", "/orgs/{organization_id}/stats"): (
        [KEY],
        {"200", "401", "403", "404", "422", "503"},
    ),
    ("post", "/org/api-keys"): ([BEARER], {"201", "400", "401", "403", "413", "422", "503"}),
    ("get", "/org/api-keys"): ([BEARER], {"200", "401", "403", "422", "503"}),
    ("delete", "/org/api-keys/{key_id}"): ([BEARER], {"204", "401", "403", "404", "422", "503"}),
    ("get", "/events"): ([KEY], {"200", "401", "403", "404", "422", "503"}),
    ("post", "/webhooks"): ([KEY], {"201", "400", "401", "403", "413", "422", "503"}),
    ("get", "/webhooks"): ([KEY], {"200", "401", "403", "422", "503"}),
    ("get", "/webhooks/{webhook_id}"): ([KEY], {"200", "401", "403", "404", "422", "503"}),
    ("patch", "/webhooks/{webhook_id}"): (
        [KEY],
        {"200", "400", "401", "403", "404", "413", "422", "503"},
    ),
    ("delete", "/webhooks/{webhook_id}"): ([KEY], {"204", "401", "403", "404", "422", "503"}),
    ("post", "/webhooks/{webhook_id}/rotate-secret"): (
        [KEY],
        {"200", "401", "403", "404", "422", "503"},
    ),
    ("get", "/webhooks/{webhook_id}/deliveries"): (
        [KEY],
        {"200", "401", "403", "404", "422", "503"},
    ),
    ("post", "/webhooks/{webhook_id}/replay"): (
        [KEY],
        {"202", "400", "401", "403", "404", "413", "422", "503"},
    ),
    ("get", "/health"): (None, {"200"}),
    ("get", "/ready"): (None, {"200", "503"}),
    ("get", "/.well-known/jwks.json"): (None, {"200"}),
}


# The multi-step changes (intents with leases): their 503 may be `operation_interrupted`.
INTERRUPTIBLE = {
    "post": ("/org/create", "/org/invitations", "/invitations/accept", "/admin/password/reset"),
    "put": ("/org/update",),
    "delete": ("/org/delete", "/org/members/{member_id}", "/orgs/{organization_id}"),
}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    schema: dict[str, Any] = create_app(make_settings()).openapi()
    return schema


def operation(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    op: dict[str, Any] = spec["paths"][path][method]
    return op


def parameter(spec: dict[str, Any], method: str, path: str, name: str) -> dict[str, Any]:
    params = operation(spec, method, path)["parameters"]
    found: dict[str, Any] = next(p for p in params if p["name"] == name)
    return found


def component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][name]
    return schema


def test_every_operation_is_listed(spec: dict[str, Any]) -> None:
    listed = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), list(OPERATIONS))
def test_security_and_statuses(spec: dict[str, Any], method: str, path: str) -> None:
    security, statuses = OPERATIONS[(method, path)]
    op = operation(spec, method, path)
    assert op.get("security") == security
    assert set(op["responses"]) == statuses
    for status, response in op["responses"].items():
        headers = response.get("headers", {})
        # login's and refresh's 401s are no auth challenge (no bearer token was sent)
        if status == "401" and path not in ("/admin/login", "/admin/refresh"):
            assert headers["WWW-Authenticate"]["required"] is True
            assert headers["WWW-Authenticate"]["schema"]["enum"] == ["Bearer"]
        else:
            assert "WWW-Authenticate" not in headers
        if status == "429":
            assert headers["Retry-After"]["required"] is True
            assert headers["Retry-After"]["schema"] == {"type": "integer", "minimum": 1}
        elif status == "503" and path in INTERRUPTIBLE.get(method, ()):
            assert "operation_interrupted" in response["description"]  # with Retry-After
            assert headers["Retry-After"]["required"] is False
        else:
            assert "Retry-After" not in headers
        html_410 = {("get", "/invitations/accept", "410"), ("get", "/password/reset", "410")}
        if status[0] in "45" and (method, path, status) not in html_410:
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }


def test_create_documents_the_api_key_as_optional(spec: dict[str, Any]) -> None:
    assert {} in operation(spec, "post", "/org/create")["security"]


def test_create_documents_a_required_key_when_the_setting_says_so() -> None:
    app = create_app(make_settings(org_create_requires_key=True))
    document_required_create_key(app)
    assert app.openapi()["paths"]["/org/create"]["post"]["security"] == [KEY]
    assert app.openapi()["paths"]["/org/create"]["post"]["security"] == [KEY]  # idempotent


@pytest.mark.parametrize(("method", "path"), [("get", "/org/get"), ("delete", "/org/delete")])
def test_query_organization_name_is_the_body_rule(
    spec: dict[str, Any], method: str, path: str
) -> None:
    param = parameter(spec, method, path, "organization_name")
    assert param["required"] is True
    schema = param["schema"]
    assert schema["type"] == "string"
    assert (schema["minLength"], schema["maxLength"]) == (1, MAX_NAME_CHARS) == (1, 200)
    assert schema["format"] == NAME_FORMAT
    body = component(spec, "OrganizationCreate")["properties"]["organization_name"]
    assert (body["minLength"], body["maxLength"], body["format"]) == (1, 200, NAME_FORMAT)


def test_passwords_and_emails(spec: dict[str, Any]) -> None:
    create = component(spec, "OrganizationCreate")
    assert create["additionalProperties"] is False
    assert set(create["required"]) == {"organization_name", "email", "password"}
    password = create["properties"]["password"]
    # 8..72 bytes of UTF-8 is 2..72 characters; the format names the byte rule.
    assert (password["minLength"], password["maxLength"]) == (2, 72)
    assert password["format"] == PASSWORD_FORMAT
    email = create["properties"]["email"]
    assert (email["maxLength"], email["format"]) == (254, EMAIL_FORMAT)
    login = component(spec, "LoginRequest")["properties"]
    assert login["email"]["format"] == EMAIL_FORMAT
    # Login takes any password length, so that a wrong length is a plain 401.
    assert (login["password"]["minLength"], login["password"]["maxLength"]) == (1, 1024)


def test_update_needs_one_non_null_field(spec: dict[str, Any]) -> None:
    update = component(spec, "OrganizationUpdate")
    assert update["additionalProperties"] is False
    assert update["anyOf"] == [
        *(
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("organization_name", "email", "password")
        ),
        {"required": ["display_name"]},
        {"required": ["metadata"], "properties": {"metadata": {"type": "object"}}},
    ]


def test_page_parameters(spec: dict[str, Any]) -> None:
    for path in ("/org/list", "/org/audit"):
        limit = parameter(spec, "get", path, "limit")["schema"]
        assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 200, 50)
    cursor = parameter(spec, "get", "/org/list", "cursor")
    assert cursor["required"] is False
    assert cursor["schema"] == {
        "type": "string",  # a query value is a string or absent, never null
        "minLength": 2,
        "maxLength": 400,
        "format": SLUG_CURSOR_FORMAT,
        "title": "Cursor",
    }
    assert "base64url" in cursor["description"]
    cursor = parameter(spec, "get", "/org/audit", "cursor")
    assert cursor["schema"] == {
        "type": "string",
        "maxLength": 200,
        "format": AUDIT_CURSOR_FORMAT,
        "title": "Cursor",
    }
    assert "<at_ms>.<id>" in cursor["description"]


async def test_cursors_the_service_makes_are_what_the_schema_says() -> None:
    async with app_client(make_settings(), AsyncMongoMockClient(tz_aware=True)) as (http, app):
        keys = app.state.svc.api_keys
        _, key = await keys.create(
            name="t", scopes=["org:list"], actor=Actor("cli"), meta=RequestMeta()
        )
        _, token = await create_and_login(http, "Acme Corp", "a@acme.com")
        await create_and_login(http, "Zeta", "z@zeta.com")
        page = await http.get("/org/list", params={"limit": 1}, headers={"X-API-Key": key})
        cursor = page.json()["next_cursor"]
        assert 2 <= len(cursor) <= 400
        assert base64.urlsafe_b64decode(cursor + "==").decode() == "acme_corp"
        after = await http.get("/org/list", params={"cursor": cursor}, headers={"X-API-Key": key})
        assert [o["slug"] for o in after.json()["items"]] == ["zeta"]
        audit = await http.get("/org/audit", params={"limit": 1}, headers=bearer(token))
        cursor = audit.json()["next_cursor"]
        assert len(cursor) <= 200 and "=" not in cursor
        at_ms, entry_id = base64.urlsafe_b64decode(cursor + "==").decode().split(".")
        assert at_ms.isdigit() and len(entry_id) == 24
        res = await http.get("/org/audit", params={"cursor": cursor}, headers=bearer(token))
        assert res.status_code == 200


async def test_a_refused_key_gets_the_documented_challenge() -> None:
    async with app_client(make_settings(), AsyncMongoMockClient(tz_aware=True)) as (http, _):
        res = await http.post(
            "/org/create",
            json={"organization_name": "Acme", "email": "a@acme.com", "password": "s3cret-pass"},
            headers={"X-API-Key": "not-a-key"},
        )
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
        assert res.json()["code"] == "invalid_api_key"
        res = await http.get("/org/list")
        assert res.status_code == 401 and res.headers["www-authenticate"] == "Bearer"
