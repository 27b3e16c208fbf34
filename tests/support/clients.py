"""Talking to the service as a client: the test password and secret, bodies, tokens."""

from __future__ import annotations

from typing import Any

import httpx

TEST_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
PASSWORD = "correct horse battery"


def org_body(name: str, email: str | None = None, password: str = PASSWORD) -> dict[str, str]:
    email = email or f"admin@{''.join(c for c in name.lower() if c.isalnum()) or 'x'}.example.com"
    return {"organization_name": name, "email": email, "password": password}


async def create_and_login(
    http: httpx.AsyncClient, name: str, email: str | None = None
) -> tuple[dict[str, Any], str]:
    """Create an organization and log its admin in; returns (organization, token)."""
    body = org_body(name, email)
    res = await http.post("/org/create", json=body)
    assert res.status_code == 201, res.text
    login = await http.post(
        "/admin/login", json={"email": body["email"], "password": body["password"]}
    )
    assert login.status_code == 200, login.text
    return res.json(), login.json()["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
