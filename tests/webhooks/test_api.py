"""`/webhooks`: the endpoints' API (scope `webhooks:manage`), and the SSRF guard at registration."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable

import pytest

from tests.support.apps import new_key
from tests.support.feed import publish
from tests.support.receiver import Receiver
from tests.webhooks.conftest import Hooks
from tests.webhooks.test_delivery import wait_deliveries

Receivers = Callable[..., Awaitable[tuple[Receiver, str]]]
URL = "http://127.0.0.1:9/hook"


async def test_create_read_list_update_delete(hooks: Hooks) -> None:
    created = await hooks.create(URL, ["member.joined", "member.joined"], description="billing")
    assert set(created) == {
        "webhook_id", "url", "types", "description", "enabled", "created_at", "secret",
    }  # fmt: skip
    assert created["secret"].startswith("whsec_")
    assert created["types"] == ["member.joined"]
    assert created["enabled"] is True
    wid = created["webhook_id"]
    got = (await hooks.http.get(f"/webhooks/{wid}", headers=hooks.headers)).json()
    assert "secret" not in got
    assert got == {k: v for k, v in created.items() if k != "secret"}
    # Never stored in clear.
    stored = await hooks.db["webhooks"].find_one({"_id": wid})
    assert created["secret"] not in str(stored)
    assert created["secret"].removeprefix("whsec_") not in str(stored)

    others = [await hooks.create(URL) for _ in range(4)]
    page = (await hooks.http.get("/webhooks", params={"limit": 2}, headers=hooks.headers)).json()
    assert [h["webhook_id"] for h in page["items"]] == [wid, others[0]["webhook_id"]]
    assert all("secret" not in h for h in page["items"])
    rest = await hooks.http.get(
        "/webhooks", params={"cursor": page["next_cursor"]}, headers=hooks.headers
    )
    assert [h["webhook_id"] for h in rest.json()["items"]] == [o["webhook_id"] for o in others[1:]]
    assert rest.json()["next_cursor"] is None

    patched = await hooks.http.patch(
        f"/webhooks/{wid}",
        json={"types": ["organization.created"], "description": "x", "enabled": False},
        headers=hooks.headers,
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["types"], patched.json()["enabled"]) == (["organization.created"], False)
    bodies: list[dict[str, object]] = [
        {}, {"url": None}, {"types": []}, {"types": ["org.nope"]}, {"secret": "x"},
    ]  # fmt: skip
    for body in bodies:
        bad = await hooks.http.patch(f"/webhooks/{wid}", json=body, headers=hooks.headers)
        assert (bad.status_code, bad.json()["code"]) == (422, "validation_error"), body

    assert (await hooks.http.delete(f"/webhooks/{wid}", headers=hooks.headers)).status_code == 204
    for method in ("get", "delete"):
        gone = await hooks.http.request(method, f"/webhooks/{wid}", headers=hooks.headers)
        assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    for path in ("/webhooks/nope", f"/webhooks/{'f' * 24}/deliveries"):
        missing = await hooks.http.get(path, headers=hooks.headers)
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    rotate = await hooks.http.post(f"/webhooks/{'f' * 24}/rotate-secret", headers=hooks.headers)
    assert rotate.status_code == 404
    assert (await hooks.http.get("/webhooks?cursor=zz", headers=hooks.headers)).status_code == 422
    entries = await hooks.db["audit_log"].find({"action": {"$regex": "^webhook"}}).to_list(None)
    assert {e["action"] for e in entries} >= {
        "webhook.created",
        "webhook.updated",
        "webhook.deleted",
    }
    assert all("secret" not in str(e) for e in entries)


@pytest.mark.parametrize(
    "body",
    [
        {"url": URL, "types": []},
        {"url": URL, "types": ["organization.exploded"]},
        {"url": URL},
        {"url": "ftp://example.com/x", "types": ["member.joined"]},
        {"url": "http://user:pw@example.com/x", "types": ["member.joined"]},
        {"url": URL, "types": ["member.joined"], "secret": "whsec_mine"},
        {"url": URL, "types": ["member.joined"], "description": "x" * 501},
    ],
)
async def test_bad_bodies_are_422(hooks: Hooks, body: dict[str, object]) -> None:
    res = await hooks.http.post("/webhooks", json=body, headers=hooks.headers)
    assert (res.status_code, res.json()["code"]) == (422, "validation_error")
    assert "secret" not in res.text or "secret" in str(body)


async def test_the_scope_is_required(hooks: Hooks) -> None:
    assert (await hooks.http.get("/webhooks")).status_code == 401
    other = await new_key(hooks.app, "org:read", name="reader")
    res = await hooks.http.post(
        "/webhooks", json={"url": URL, "types": ["member.joined"]}, headers={"X-API-Key": other}
    )
    assert (res.status_code, res.json()["code"]) == (403, "insufficient_scope")


REFUSED = [
    "http://127.0.0.1/x",
    "http://127.9.9.9:8080/x",
    "http://10.1.2.3/x",
    "http://172.16.0.1/x",
    "http://172.31.255.254/x",
    "http://192.168.1.1/x",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.100.100.200/x",
    "http://100.64.0.1/x",
    "http://0.0.0.0/x",
    "http://224.0.0.1/x",
    "http://[::1]/x",
    "http://[fe80::1]/x",
    "http://[fd00:ec2::254]/x",
    "http://[fc00::1]/x",
    "http://[::ffff:127.0.0.1]/x",
    "http://[::ffff:169.254.169.254]/x",
    "http://[64:ff9b::a00:1]/x",
    "http://[2002:7f00:1::]/x",
    "http://localhost:8000/x",
    "https://LOCALHOST./x",
    "http://2130706433/x",  # 127.0.0.1 as one number (the resolver reads it so)
]


@pytest.mark.webhook_settings(webhook_allow_private_networks=False)
@pytest.mark.parametrize("url", REFUSED)
async def test_the_ssrf_guard_refuses_internal_addresses(hooks: Hooks, url: str) -> None:
    res = await hooks.http.post(
        "/webhooks", json={"url": url, "types": ["member.joined"]}, headers=hooks.headers
    )
    assert (res.status_code, res.json()["code"]) == (422, "validation_error"), res.text
    assert res.json()["detail"][0]["loc"] == ["body", "url"]
    assert (
        "refused" in res.json()["detail"][0]["msg"] or "resolve" in res.json()["detail"][0]["msg"]
    )


@pytest.mark.webhook_settings(webhook_allow_private_networks=False)
async def test_the_guard_applies_to_a_changed_url_and_passes_a_public_one(hooks: Hooks) -> None:
    public = await hooks.http.post(
        "/webhooks",
        json={"url": "https://93.184.215.14/hook", "types": ["member.joined"]},
        headers=hooks.headers,
    )
    assert public.status_code == 201, public.text
    wid = public.json()["webhook_id"]
    res = await hooks.http.patch(
        f"/webhooks/{wid}", json={"url": "http://10.0.0.1/x"}, headers=hooks.headers
    )
    assert res.status_code == 422


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x", "http://[::1]/x", "http://localhost/x"])
async def test_private_networks_are_allowed_when_the_setting_says_so(
    hooks: Hooks, url: str
) -> None:
    await hooks.create(url)  # WEBHOOK_ALLOW_PRIVATE_NETWORKS=true in these tests' settings


async def test_a_delivery_is_checked_again(hooks: Hooks, receivers: Receivers) -> None:
    receiver, url = await receivers()
    hook = await hooks.create(url)  # allowed at registration...
    worker = hooks.app.state.svc.webhooks.worker
    worker.policy = dataclasses.replace(worker.policy, allow_private=False)  # ...not any more
    await publish(hooks.db, 1)
    hooks.kick()
    items = await wait_deliveries(
        hooks, hook["webhook_id"], lambda i: bool(i and i[0]["last_error"])
    )
    assert items[0]["last_error"].startswith("refused by the SSRF guard: 127.0.0.1 resolves")
    assert items[0]["last_status_code"] is None
    assert receiver.arrivals == []
    metrics = await hooks.http.get("/metrics")
    assert 'orgsvc_webhook_attempts_total{outcome="refused"} 1.0' in metrics.text


def test_refusal_table() -> None:
    from app.webhooks.guard import refusal

    for text in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert refusal(ipaddress.ip_address(text)) is None, text
    for text in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "::ffff:10.0.0.1", "::"):
        assert refusal(ipaddress.ip_address(text)) is not None, text
