"""Schemathesis hooks (loaded through SCHEMATHESIS_HOOKS by `tests/fuzz/run.py`).

Authenticated endpoints are fuzzed with real credentials: a bearer token for a fresh
organization (made again whenever a fuzzed logout, password change or delete revokes the
current one: schemathesis refetches on a 401), and the service API key for `/org/list`.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import httpx
import schemathesis

BASE_URL = os.environ.get("FUZZ_BASE_URL", "http://127.0.0.1:8000")
API_KEY = os.environ.get("FUZZ_API_KEY", "")
PASSWORD = "fuzzing-password-123"
_counter = itertools.count()
_turns = itertools.count()


@schemathesis.auth(refresh_interval=60, retry_on=[401])
class FreshAdmin:
    """A new organization and its admin's token: `{"token": ..., "name": ...}`."""

    def get(self, case: Any, ctx: Any) -> dict[str, str]:
        n = next(_counter)
        email, name = f"fuzz{n}@fuzz.example.com", f"fuzz org {n}"
        with httpx.Client(base_url=BASE_URL, timeout=30) as http:
            body = {"organization_name": name, "email": email, "password": PASSWORD}
            http.post("/org/create", json=body).raise_for_status()
            login = http.post("/admin/login", json={"email": email, "password": PASSWORD})
            login.raise_for_status()
            return {"token": login.json()["access_token"], "name": name}

    def set(self, case: Any, data: dict[str, str], ctx: Any) -> None:
        turn = next(_turns)
        case.headers = case.headers or {}
        path = case.operation.path
        if path == "/org/list" or (path == "/org/get" and turn % 3 == 0):
            case.headers["X-API-Key"] = API_KEY
        else:
            case.headers["Authorization"] = f"Bearer {data['token']}"
        # Half the reads and deletes name the caller's own organization, so the success paths
        # are fuzzed too (a delete then revokes the token: the 401 makes schemathesis re-login).
        if path in ("/org/get", "/org/delete") and turn % 2 == 0:
            case.query = {**(case.query or {}), "organization_name": data["name"]}
