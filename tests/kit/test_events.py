"""Domain events: one in-process hook, emitted by the services and by the steps of operations,
with the audit log as the first consumer."""

from __future__ import annotations

import logging

import pytest

from app.kit.events import DomainEvent, EventHook
from tests.support.apps import custom_app
from tests.support.clients import PASSWORD, bearer, create_and_login


async def test_every_handler_gets_every_event_in_order_even_after_one_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hook = EventHook()
    seen: list[tuple[str, str]] = []

    async def first(event: DomainEvent) -> None:
        seen.append(("first", event.type))

    async def broken(event: DomainEvent) -> None:
        raise RuntimeError("a consumer bug")

    async def last(event: DomainEvent) -> None:
        seen.append(("last", event.type))

    for handler in (first, broken, last):
        hook.subscribe(handler)
    with caplog.at_level(logging.ERROR, logger="orgsvc.events"):
        await hook.emit(DomainEvent("organization.created", "o1"))
        await hook.emit(DomainEvent("organization.deleted", "o1"))
    assert seen == [
        ("first", "organization.created"), ("last", "organization.created"),
        ("first", "organization.deleted"), ("last", "organization.deleted"),
    ]  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == ["event handler failed"] * 2


async def test_an_organizations_life_as_events() -> None:
    async with custom_app() as (http, app):
        events: list[DomainEvent] = []

        async def record(event: DomainEvent) -> None:
            events.append(event)

        app.state.svc.events.subscribe(record)
        org, token = await create_and_login(http, "Eventful", "ev@x.com")
        headers = bearer(token)
        assert (
            await http.put("/org/update", json={"organization_name": "Renamed"}, headers=headers)
        ).status_code == 200
        assert (
            await http.put("/org/update", json={"email": "new@x.com"}, headers=headers)
        ).status_code == 200
        assert (
            await http.put("/org/update", json={"password": "another-pass"}, headers=headers)
        ).status_code == 200
        login = await http.post(
            "/admin/login", json={"email": "new@x.com", "password": "another-pass"}
        )
        token = login.json()["access_token"]
        assert (await http.post("/admin/logout", headers=bearer(token))).status_code == 204
        login = await http.post(
            "/admin/login", json={"email": "new@x.com", "password": "another-pass"}
        )
        token = login.json()["access_token"]
        failed = await http.post("/admin/login", json={"email": "new@x.com", "password": PASSWORD})
        assert failed.status_code == 401  # a failure is audited, but it is no event
        gone = await http.delete(
            "/org/delete", params={"organization_name": "Renamed"}, headers=bearer(token)
        )
        assert gone.status_code == 204
        assert [e.type for e in events] == [
            "organization.created", "admin.logged_in", "organization.renamed",
            "organization.updated", "admin.password_changed", "admin.logged_in",
            "admin.logged_out", "admin.logged_in", "organization.deleted",
        ]  # fmt: skip
        assert {e.organization_id for e in events} == {org["organization_id"]}
        by_type = {e.type: e for e in events}
        assert by_type["organization.renamed"].data == {
            "organization_name": "Renamed", "slug": "renamed", "from_slug": "eventful",
        }  # fmt: skip
        assert by_type["organization.updated"].data == {"fields": ["email"]}
        # The steps of an operation name it, so a request and the reconciler name one event.
        stepped = ("organization.created", "organization.renamed", "organization.deleted")
        assert all(by_type[t].op_id for t in (*stepped, "admin.password_changed"))
        # No secret in any event.
        assert "another-pass" not in repr(events) and token not in repr(events)
        # The audit log consumed organization.deleted: every entry of the organization has its
        # retention clock, the entry of the delete itself included.
        entries = await app.state.svc.repos.audit.col.find(
            {"organization_id": org["organization_id"]}
        ).to_list(None)
        assert entries and all(e.get("expires_ms") for e in entries), entries
        assert any(e["action"] == "org.delete" and e["outcome"] == "success" for e in entries)
