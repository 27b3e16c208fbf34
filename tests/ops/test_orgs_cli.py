"""`orgsvc orgs suspend|restore|stats|list`: the operator's lifecycle actions from the CLI, run
as a process over the same nx-27017 store as an in-process service (`real_api`)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.audit.service import Actor, RequestMeta
from app.kit.db import EmbeddedMongo
from app.kit.settings import Settings
from app.organizations.schemas import OrganizationPatch
from tests.support.cli import Cli, lines, no_traceback
from tests.support.clients import PASSWORD, bearer, create_and_login, org_body
from tests.support.processes import ROOT

Api = tuple[httpx.AsyncClient, FastAPI]


@pytest.fixture
def cli(nx_server: EmbeddedMongo, settings: Settings) -> Cli:
    return Cli(nx_server, settings)


@pytest.fixture
def db(nx_client: AsyncMongoClient[Any], settings: Settings) -> Any:
    return nx_client[settings.mongodb_db]


async def login(http: httpx.AsyncClient, name: str) -> httpx.Response:
    return await http.post(
        "/admin/login", json={"email": org_body(name)["email"], "password": PASSWORD}
    )


@pytest.mark.realstore  # runs the CLI as a process
@pytest.mark.parametrize(
    "args", [["orgs", "suspend"], ["orgs", "restore"], ["orgs", "stats"], ["orgs", "list"]]
)
def test_help(args: list[str]) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "app.cli", *args, "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "Usage" in res.stdout and len(res.stdout) > 100


async def test_suspend_then_restore(real_api: Api, cli: Cli, db: Any) -> None:
    http, _ = real_api
    org, token = await create_and_login(http, "Acme")
    org_id = org["organization_id"]

    res = await cli("orgs", "suspend", "ACME", "--reason", "unpaid invoices")
    assert res.returncode == 0, res.stderr
    [shown] = lines(res)
    assert (shown["organization_id"], shown["status"]) == (org_id, "suspended")
    assert shown["suspension_reason"] == "unpaid invoices" and shown["suspended_at"]
    record = await db.organizations.find_one({"_id": org_id})
    assert record["state"] == "suspended"
    entries = await db.audit_log.find({"action": "org.suspend"}).to_list(None)
    assert [(e["organization_id"], e["actor"]["type"], e["outcome"]) for e in entries] == [
        (org_id, "cli", "success")
    ]
    assert entries[0]["details"] == {"reason": "unpaid invoices"}
    # The service sees it from the next request on: the old token and a new login are refused.
    got = await http.get("/org/get", params={"organization_name": "Acme"}, headers=bearer(token))
    assert (got.status_code, got.json()["code"]) == (403, "organization_suspended")
    assert (await login(http, "Acme")).status_code == 403

    res = await cli("orgs", "suspend", org_id)  # again, by id: unchanged, no error
    assert res.returncode == 0, res.stderr
    assert lines(res)[0]["suspension_reason"] == "unpaid invoices"

    res = await cli("orgs", "restore", org_id)
    assert res.returncode == 0, res.stderr
    [shown] = lines(res)
    assert (shown["status"], shown["suspended_at"]) == ("active", None)
    assert (await db.organizations.find_one({"_id": org_id}))["state"] == "active"
    restored = await db.audit_log.find({"action": "org.restore"}).to_list(None)
    assert [(e["organization_id"], e["actor"]["type"]) for e in restored] == [(org_id, "cli")]
    assert (await login(http, "Acme")).status_code == 200


async def test_stats_of_named_organizations(real_api: Api, cli: Cli, db: Any) -> None:
    http, _ = real_api
    counted, _ = await create_and_login(http, "Counted")
    other, _ = await create_and_login(http, "Other")
    await db[counted["collection_name"]].insert_many([{"i": i} for i in range(5)])

    res = await cli("orgs", "stats", "counted")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # not a terminal: no bar
    [row] = lines(res)
    assert row["organization_id"] == counted["organization_id"]
    assert (row["member_count"], row["pending_invitations"], row["tenant_documents"]) == (1, 0, 5)
    assert row["last_login_at"] is not None

    res = await cli("orgs", "stats", other["organization_id"], "Counted")
    assert res.returncode == 0, res.stderr
    rows = lines(res)
    assert [r["slug"] for r in rows] == ["other", "counted"]
    assert [r["tenant_documents"] for r in rows] == [0, 5]


async def test_stats_all_walks_every_organization(real_api: Api, cli: Cli, db: Any) -> None:
    http, _ = real_api
    made = [(await create_and_login(http, name))[0] for name in ["One", "Two", "Three"]]
    assert (await cli("orgs", "suspend", "Two")).returncode == 0  # suspended ones count too

    res = await cli("orgs", "stats", "--all")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # stderr is not a terminal: the bar stays off
    rows = lines(res)
    assert [r["organization_id"] for r in rows] == [o["organization_id"] for o in made]
    assert [r["status"] for r in rows] == ["active", "suspended", "active"]
    assert all(r["member_count"] == 1 for r in rows)

    res = await cli("orgs", "stats", "--all", "--progress")  # forced: on stderr, with the total
    assert res.returncode == 0, res.stderr
    assert len(lines(res)) == 3  # stdout is still only the JSON lines
    assert "3/3" in res.stderr and "stats" in res.stderr


async def test_unknown_organizations_and_usage(real_api: Api, cli: Cli) -> None:
    http, _ = real_api
    await create_and_login(http, "Known")
    for args in [
        ["orgs", "suspend", "nobody"],
        ["orgs", "restore", "0123456789abcdef01234567"],
        ["orgs", "stats", "nobody"],
    ]:
        res = await cli(*args)
        assert res.returncode == 1, (args, res.stderr)
        assert res.stdout == "" and "no organization" in res.stderr
        no_traceback(res)
    res = await cli("orgs", "stats", "Known", "nobody")  # the known one is still shown
    assert res.returncode == 1
    assert [r["slug"] for r in lines(res)] == ["known"]
    assert res.stderr.strip() == "no organization 'nobody'"
    for args in [
        ["orgs", "stats"],
        ["orgs", "stats", "Known", "--all"],
        ["orgs", "suspend", "Known", "--reason", ""],
        ["orgs", "suspend"],
        ["orgs", "list", "--status", "gone"],
        ["orgs", "list", "--status", "active", "--after", "known"],
        ["orgs", "list", "--cursor", "bm90LWEta2V5"],
    ]:
        res = await cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        no_traceback(res)


async def test_operation_in_progress_is_one_line(real_api: Api, cli: Cli, db: Any) -> None:
    http, _ = real_api
    org, _ = await create_and_login(http, "Busy")
    # A rename holds the record (as `OrganizationRepository.lock` leaves it).
    await db.organizations.update_one(
        {"_id": org["organization_id"]}, {"$set": {"pending_op": "op-rename"}}
    )
    res = await cli("orgs", "suspend", "Busy")
    assert res.returncode == 1
    no_traceback(res)
    [line] = res.stderr.splitlines()
    assert line.startswith("orgsvc: ") and "(operation_in_progress)" in line
    assert (await db.organizations.find_one({"_id": org["organization_id"]}))["state"] == "active"


async def test_list_filters(real_api: Api, cli: Cli) -> None:
    http, app = real_api
    made = {name: (await create_and_login(http, name))[0] for name in ["Gamma", "Alpha", "Beta"]}
    assert (await cli("orgs", "suspend", "Beta")).returncode == 0
    await app.state.svc.lifecycle.patch(
        made["Gamma"]["organization_id"],
        OrganizationPatch(plan="pro", display_name="Zeta Labs"),
        actor=Actor("cli", "test"),
        meta=RequestMeta(),
    )

    res = await cli("orgs", "list")  # unfiltered: by slug, as before, with status and plan
    assert res.returncode == 0, res.stderr
    assert [(o["slug"], o["status"], o["plan"]) for o in lines(res)] == [
        ("alpha", "active", "free"),
        ("beta", "suspended", "free"),
        ("gamma", "active", "pro"),
    ]

    async def listed(*args: str) -> list[str]:
        res = await cli("orgs", "list", *args)
        assert res.returncode == 0, res.stderr
        return [o["slug"] for o in lines(res)]

    assert await listed("--status", "suspended") == ["beta"]
    assert await listed("--status", "active") == ["gamma", "alpha"]  # creation order
    assert await listed("--plan", "pro") == ["gamma"]
    assert await listed("--q", "AL") == ["alpha"]
    assert await listed("--q", "zeta") == ["gamma"]  # the display name's prefix
    assert await listed("--plan", "pro", "--status", "suspended") == []

    res = await cli("orgs", "list", "--status", "active", "--limit", "1")
    assert res.returncode == 0, res.stderr
    assert [o["slug"] for o in lines(res)] == ["gamma"]
    assert "1 shown, 2 matching; more with --cursor " in res.stderr
    cursor = res.stderr.rsplit("--cursor ", 1)[1].split()[0]
    assert await listed("--status", "active", "--cursor", cursor) == ["alpha"]
