"""`GET /org/get`'s fast path (`app.kit.routes`) answers exactly as the route declared through
FastAPI does: every request below is sent twice, once as the service answers it and once with
the fast path declining everything, and the two answers must be the same (status, body, headers
that matter). The fast path must also really answer the common request, or it saves nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from app.organizations import router as org_router
from tests.support.apps import custom_app, new_key
from tests.support.clients import bearer, create_and_login

Answer = tuple[int, Any, dict[str, str | None]]
FastPath = Callable[[Request], Awaitable[Response | None]]


def answer(res: httpx.Response) -> Answer:
    body = res.json()
    if isinstance(body, dict):
        body.pop("request_id", None)  # differs per request by design
    headers = {h: res.headers.get(h) for h in ("content-type", "www-authenticate", "allow")}
    return res.status_code, body, headers


async def test_the_fast_path_answers_as_the_declared_route_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast: FastPath = org_router.get_fast
    answered: list[bool] = []

    async def spy(request: Request) -> Response | None:
        try:
            response = await fast(request)
        except Exception:
            answered.append(True)  # it answered, with an error (through the same handlers)
            raise
        answered.append(response is not None)
        return response

    async def declined(request: Request) -> Response | None:
        return None

    async with custom_app() as (http, app):
        _, token = await create_and_login(http, "Acme", "a@acme.com")
        await create_and_login(http, "Café Zürich", "c@zurich.com")
        _, gone = await create_and_login(http, "Gone", "g@gone.com")
        assert (await http.post("/admin/logout", headers=bearer(gone))).status_code == 204
        reader = await new_key(app, "org:read")
        own = f"Bearer {token}"
        # (query string, headers, whether the fast path answers it)
        cases: list[tuple[str, dict[str, str], bool]] = [
            ("organization_name=Acme", {"Authorization": own}, True),
            ("organization_name=ACME", {"Authorization": own}, True),  # by slug
            ("organization_name=acme", {"Authorization": f"bearer {token}"}, True),
            ("organization_name=Acme", {"Authorization": f"Bearer   {token}  "}, True),
            ("organization_name=Caf%C3%A9%20Z%C3%BCrich", {"Authorization": own}, True),  # 403
            ("organization_name=Nobody", {"Authorization": own}, True),  # 404
            ("organization_name=Acme", {"Authorization": "Bearer not-a-token"}, True),  # 401
            ("organization_name=Gone", {"Authorization": f"Bearer {gone}"}, True),  # revoked
            ("organization_name=Acme", {"Authorization": f"Basic {token}"}, False),
            ("organization_name=Acme", {"Authorization": "Bearer"}, False),
            ("organization_name=Acme", {"Authorization": "Bearer "}, False),
            ("organization_name=Acme", {"Authorization": ""}, False),
            ("organization_name=Acme", {}, False),
            ("organization_name=Acme", {"Authorization": own, "X-API-Key": reader}, False),
            ("organization_name=Acme", {"Authorization": own, "X-API-Key": ""}, False),
            ("organization_name=Acme", {"X-API-Key": reader}, False),
            ("organization_name=Acme&organization_name=Nobody", {"Authorization": own}, False),
            ("organization_name=Acme&other=1", {"Authorization": own}, False),
            ("organization_name=", {"Authorization": own}, False),
            ("organization_name=%21%21%21", {"Authorization": own}, False),  # 422
            ("organization_name=%21%21%21", {"Authorization": "Bearer x"}, False),  # 401 first
            ("organization_name=%20%20", {"Authorization": own}, False),
            ("organization_name=a%E2%80%AEb", {"Authorization": own}, False),
            ("organization_name=" + "x" * 201, {"Authorization": own}, False),
            ("organization_name=" + "%C3%A9" * 200, {"Authorization": own}, False),
            ("organization_name=a%00b", {"Authorization": own}, False),
            ("", {"Authorization": own}, False),
            ("Organization_Name=Acme", {"Authorization": own}, False),
        ]

        async def ask(query: str, headers: dict[str, str]) -> Answer:
            return answer(await http.get(f"/org/get?{query}", headers=headers))

        monkeypatch.setattr(org_router.get_organization, "__fast_path__", spy)
        served = [await ask(query, headers) for query, headers, _ in cases]
        assert answered == [expected for _, _, expected in cases]

        monkeypatch.setattr(org_router.get_organization, "__fast_path__", declined)
        declared = [await ask(query, headers) for query, headers, _ in cases]

    for case, fast_answer, route_answer in zip(cases, served, declared, strict=True):
        assert fast_answer == route_answer, case
    statuses = [status for status, _, _ in served]
    assert statuses[:8] == [200, 200, 200, 200, 403, 404, 401, 401], served[:8]
    assert set(statuses[8:]) == {200, 401, 404, 422}, statuses  # the fallbacks, every kind
