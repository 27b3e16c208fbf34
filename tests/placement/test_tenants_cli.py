"""`orgsvc tenants move` and `orgsvc tenants rebalance [--dry-run]`, run as processes over two
nx-27017 processes standing in for the clusters `main` and `eu`.

Organizations are made by the in-process service with one placement setting, and the CLI runs
with another (more shared databases, or one dropped from TENANT_DATABASES), as an operator
would after changing the deployment. The moves the rebalances here plan all cross from one
process to the other, so that two databases of one process never share a collection name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from app.cli.tenants import Candidate, plan_moves
from app.kit.db import EmbeddedMongo
from app.kit.watch import LocalWrites
from app.tenancy.placement import Placement, Topology
from tests.support.apps import app_client, make_settings, new_key
from tests.support.cli import Cli, lines, no_traceback
from tests.support.clients import PASSWORD
from tests.support.processes import ROOT

pytestmark = pytest.mark.realstore

Api = tuple[httpx.AsyncClient, FastAPI]
PHASES = ["queued", "copying", "indexes", "verifying", "switching", "dropping_source", "done"]
LINE = re.compile(r"^(?P<slug>\S+): (?P<phase>[a-z_]+) (?P<copied>\d+)/(?P<total>\d+) documents$")


@dataclass
class Site:
    db: str  # MONGODB_DB on `main`: the records
    main_server: EmbeddedMongo
    eu_server: EmbeddedMongo
    main: AsyncMongoClient[Any]
    eu: AsyncMongoClient[Any]

    def settings_env(self, databases: str, **extra: str) -> dict[str, str]:
        return {
            "TENANT_CLUSTERS": f"eu={self.eu_server.url}",
            "TENANT_DATABASES": databases.format(db=self.db),
            "DEDICATED_DATABASE_PLANS": "enterprise",
            **extra,
        }

    @contextlib.asynccontextmanager
    async def service(self, databases: str) -> AsyncIterator[Api]:
        """The service in-process, placing new organizations over `databases`."""
        settings = make_settings(
            mongodb_db=self.db,
            tenant_clusters=f"eu={self.eu_server.url}",
            tenant_databases=databases.format(db=self.db),
            dedicated_database_plans="enterprise",
        )
        async with app_client(settings, self.main) as pair:
            yield pair

    def cli(self, databases: str, **extra: str) -> Cli:
        """`orgsvc` as a process, with the placement settings `databases`."""
        cli = Cli(self.main_server, make_settings(mongodb_db=self.db))
        cli.env.update(self.settings_env(databases, **extra))
        return cli

    def client(self, cluster: str) -> AsyncMongoClient[Any]:
        return self.main if cluster == "main" else self.eu

    def tenant(self, org: dict[str, Any], placement: dict[str, str] | None = None) -> Any:
        where = placement or org["placement"]
        return self.client(where["cluster"])[where["database"]][org["collection_name"]]

    async def record(self, org_id: str) -> dict[str, Any]:
        found = await self.main[self.db].organizations.find_one({"_id": org_id})
        assert found is not None
        return dict(found)

    async def stored_counts(self) -> dict[str, int]:
        return {d["_id"]: d["tenants"] async for d in self.main[self.db].placements.find()}


@pytest.fixture
async def site(clusters: tuple[EmbeddedMongo, ...]) -> AsyncIterator[Site]:
    main_server, eu_server = clusters
    main: AsyncMongoClient[Any] = AsyncMongoClient(
        main_server.url, tz_aware=True, event_listeners=[LocalWrites()]
    )
    eu: AsyncMongoClient[Any] = AsyncMongoClient(eu_server.url, serverSelectionTimeoutMS=5000)
    try:
        yield Site("tc_" + uuid.uuid4().hex[:10], main_server, eu_server, main, eu)
    finally:
        await main.close()
        await eu.close()


async def create(api: Api, name: str, *, plan: str | None = None) -> dict[str, Any]:
    http, app = api
    body: dict[str, Any] = {"organization_name": name, "password": PASSWORD,
                            "email": f"{uuid.uuid4().hex[:8]}@x.com"}  # fmt: skip
    headers = {}
    if plan is not None:
        body["plan"] = plan
        headers["X-API-Key"] = await new_key(app, "org:create", name=uuid.uuid4().hex[:8])
    res = await http.post("/org/create", json=body, headers=headers)
    assert res.status_code == 201, res.text
    org: dict[str, Any] = res.json()
    return org


def one_line(res: subprocess.CompletedProcess[str]) -> str:
    """A refusal: exit 1, nothing on stdout, one line on stderr, no traceback."""
    no_traceback(res)
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stderr
    return res.stderr.strip()


def where(cluster: str, database: str) -> dict[str, str]:
    return {"cluster": cluster, "database": database}


# ------------------------------------------------------------------------------------- move
def test_help_says_what_each_command_does() -> None:
    helps = {}
    for command in ("move", "rebalance"):
        res = subprocess.run(
            [sys.executable, "-m", "app.cli", "tenants", command, "--help"],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        helps[command] = " ".join(res.stdout.split())
    assert "OPERATION_LEASE_SECONDS" in helps["move"] and "--cluster" in helps["move"]
    assert (
        "smallest tenant collections (estimated document counts) move first" in (helps["rebalance"])
    )
    assert "--dry-run" in helps["rebalance"] and "orgdata_*" in helps["rebalance"]


ONE_EACH = "main={db}_a;eu={db}_eu"  # a shared database on each process


async def test_move_copies_every_document_and_index_and_prints_the_placement(site: Site) -> None:
    async with site.service(ONE_EACH) as api:
        org = await create(api, "Mover Ünïcode")
    source, target = where("main", f"{site.db}_a"), where("eu", f"{site.db}_eu")
    assert org["placement"] == source
    docs = [{"_id": i, "email": f"u{i}@x.com", "n": i} for i in range(2_500)]
    await site.tenant(org).insert_many(docs)
    await site.tenant(org).create_index("email", unique=True, name="email_unique")
    indexes = {i["name"]: i async for i in await site.tenant(org).list_indexes()}
    cli = site.cli(ONE_EACH)

    res = await cli(
        "tenants", "move", org["organization_id"], "--cluster", "eu",
        "--database", target["database"], "--progress",
    )  # fmt: skip
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    [shown] = lines(res)
    assert shown["status"] == "done" and shown["error"] is None, shown
    assert (shown["from"], shown["to"], shown["placement"]) == (source, target, target)
    assert shown["documents"] == 2_500 and shown["slug"] == org["slug"]
    # The bar (forced: stderr is a pipe here) ends full, with the phase beside it.
    assert "2500/2500" in res.stderr and "done" in res.stderr, res.stderr

    moved = site.tenant(org, target)
    assert sorted([d async for d in moved.find({})], key=lambda d: d["_id"]) == docs
    assert {i["name"]: i async for i in await moved.list_indexes()} == indexes
    assert org["collection_name"] not in await site.main[source["database"]].list_collection_names()
    record = await site.record(org["organization_id"])
    assert (record["placement"], record["pending_op"]) == (target, None)
    audit = await site.main[site.db].audit_log.find({"action": "org.move"}).to_list(None)
    assert [(a["actor"]["type"], a["outcome"]) for a in audit] == [("cli", "success")]
    assert audit[0]["details"]["operation_id"] == shown["operation_id"]

    # Back, by name, without a bar: a plain line per phase (what a CI log shows).
    res = await cli(
        "tenants", "move", org["organization_name"], "--cluster", "main",
        "--database", source["database"], "--no-progress",
    )  # fmt: skip
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    assert lines(res)[0]["placement"] == source
    assert "\r" not in res.stderr
    progress = [LINE.match(line) for line in res.stderr.splitlines()]
    assert all(progress), res.stderr
    phases = [m["phase"] for m in progress if m]
    changes = [p for i, p in enumerate(phases) if i == 0 or p != phases[i - 1]]
    assert changes == sorted(set(changes), key=PHASES.index) and changes[-1] == "done", phases
    assert [(m["copied"], m["total"]) for m in progress if m][-1] == ("2500", "2500")
    assert await site.tenant(org, source).count_documents({}) == 2_500


async def test_a_refused_move_is_one_line_and_exit_1(site: Site) -> None:
    async with site.service(ONE_EACH) as api:
        org = await create(api, "Refused")
        busy = await create(api, "Busy")
    cli = site.cli(ONE_EACH)
    org_id, eu_db = org["organization_id"], f"{site.db}_eu"
    orgs = site.main[site.db].organizations
    await orgs.update_one({"_id": busy["organization_id"]}, {"$set": {"pending_op": "other"}})
    try:
        results = await asyncio.gather(
            cli("tenants", "move", org_id, "--cluster", "nowhere", "--database", eu_db),
            cli("tenants", "move", org_id, "--cluster", "main", "--database", "admin"),
            cli("tenants", "move", org_id, "--cluster", "main",
                "--database", "orgdata_0123456789abcdef01234567"),  # another's own database
            cli("tenants", "move", org_id, "--cluster", "main", "--database", f"{site.db}_a"),
            cli("tenants", "move", "0123456789abcdef01234567", "--cluster", "eu",
                "--database", eu_db),
            cli("tenants", "move", busy["organization_id"], "--cluster", "eu",
                "--database", eu_db),
        )  # fmt: skip
    finally:
        await orgs.update_one({"_id": busy["organization_id"]}, {"$set": {"pending_op": None}})
    said = [one_line(res) for res in results]
    assert [s.rsplit("(", 1)[-1] for s in said if s.endswith(")")] == [
        "unknown_placement)", "unknown_placement)", "unknown_placement)", "already_placed)",
        "operation_in_progress)",
    ], said  # fmt: skip
    assert said[4] == "no organization named '0123456789abcdef01234567'", said
    # Nothing moved, nothing recorded.
    assert (await site.record(org_id))["placement"] == org["placement"]
    assert await site.main[site.db].moves.count_documents({}) == 0


# ------------------------------------------------------------------------------- rebalance
CROWDED = "main={db}_a"  # where the service put every organization
SPREAD = "main={db}_a;eu={db}_eu,{db}_f"  # the operator then adds two databases on `eu`
SIZES = [5, 0, 3, 8, 1, 2, 4]  # documents in each organization's tenant collection


@dataclass
class Crowded:
    orgs: list[dict[str, Any]]  # in SIZES' order
    dedicated: dict[str, Any]

    def by_size(self, n: int) -> dict[str, Any]:
        return self.orgs[SIZES.index(n)]


async def crowded(site: Site) -> Crowded:
    """Seven organizations all in main/<db>_a (the stored count for it wrong: 42, and one left
    for a database without tenants), and one on a dedicated plan (on `eu`, its own database)."""
    async with site.service(CROWDED) as api:
        orgs = [await create(api, f"Crowd {i} {uuid.uuid4().hex[:4]}") for i in range(7)]
        dedicated = await create(api, "Dedicated Bank", plan="enterprise")  # `eu`: fewest
    assert dedicated["placement"] == where("eu", f"orgdata_{dedicated['organization_id']}")
    assert {o["placement"]["database"] for o in orgs} == {f"{site.db}_a"}
    for org, n in zip(orgs, SIZES, strict=True):
        if n:
            await site.tenant(org).insert_many([{"_id": f"d{i}", "n": i} for i in range(n)])
    await site.tenant(dedicated).insert_many([{"_id": i} for i in range(3)])
    placements = site.main[site.db].placements
    await placements.update_one({"_id": f"main/{site.db}_a"}, {"$set": {"tenants": 42}})
    await placements.insert_one({"_id": f"main/{site.db}_z", "cluster": "main",
                                 "database": f"{site.db}_z", "tenants": 5})  # fmt: skip
    return Crowded(orgs, dedicated)


async def snapshot(site: Site, c: Crowded) -> dict[str, Any]:
    """Everything a rebalance could write."""
    control = site.main[site.db]
    tenants = {}
    for org in [*c.orgs, c.dedicated]:
        tenants[org["organization_id"]] = sorted(
            [d async for d in site.tenant(org).find({})], key=lambda d: str(d["_id"])
        )
    return {
        "records": await control.organizations.find().sort("_id").to_list(None),
        "placements": await control.placements.find().sort("_id").to_list(None),
        "operations": await control.operations.count_documents({}),
        "moves": await control.moves.count_documents({}),
        "audit": await control.audit_log.count_documents({}),
        "tenants": tenants,
        "eu": sorted(await site.eu.list_database_names()),
    }


def expected_moves(site: Site, c: Crowded, *, busy: int | None = None) -> list[Any]:
    """7 shared tenants over 3 databases (mean 2.33; the dedicated one takes no part): the
    smallest tenant collections first (but not one `busy` with another operation), each to the
    emptiest database (ties: the settings' order), until each is within 1 of the mean:
    7, 0, 0 -> 3, 2, 2."""
    a, eu, f = f"main/{site.db}_a", f"eu/{site.db}_eu", f"eu/{site.db}_f"
    sizes = [n for n in sorted(SIZES) if n != busy][:4]
    return [(c.by_size(n)["slug"], a, to, n) for n, to in zip(sizes, [eu, f, eu, f], strict=True)]


async def test_rebalance_dry_run_prints_the_plan_and_writes_nothing(site: Site) -> None:
    c = await crowded(site)
    # The smallest is busy with another operation (it would be refused): the plan passes it over.
    busy = c.by_size(0)["organization_id"]
    await site.main[site.db].organizations.update_one({"_id": busy}, {"$set": {"pending_op": "x"}})
    before = await snapshot(site, c)
    cli = site.cli(SPREAD)

    res = await cli("tenants", "rebalance", "--dry-run", "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    [plan] = lines(res)
    assert plan["dry_run"] is True
    assert [(m["slug"], f"{m['from']['cluster']}/{m['from']['database']}",
             f"{m['to']['cluster']}/{m['to']['database']}", m["documents"])
            for m in plan["moves"]] == expected_moves(site, c, busy=0)  # fmt: skip
    assert [(p["database"], p["stored"], p["tenants"], p["after"]) for p in plan["placements"]] == [
        (f"{site.db}_a", 42, 7, 3), (f"{site.db}_eu", None, 0, 2), (f"{site.db}_f", None, 0, 2),
    ]  # fmt: skip
    assert plan["dedicated"] == 1 and plan["balanced"] is True
    assert {(r["database"], r["stored"], r["counted"]) for r in plan["recount"]} == {
        (f"{site.db}_a", 42, 7), (f"{site.db}_z", 5, 0)
    }  # fmt: skip
    dedicated_id = c.dedicated["organization_id"]
    assert dedicated_id not in {m["organization_id"] for m in plan["moves"]}

    res = await cli("tenants", "rebalance", "--dry-run")  # the table
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0].split() == ["placement", "stored", "tenants", "now", "after"], out
    assert out[1].split() == [f"main/{site.db}_a", "42", "7", "3"], out
    assert out[2].split() == [f"eu/{site.db}_eu", "-", "0", "2"], out
    assert out[3].split() == [f"eu/{site.db}_f", "-", "0", "2"], out
    assert out[4].split()[-3:] == ["1", "1", "1"] and out[4].startswith("dedicated"), out
    assert any(line.startswith("stored counts would be set") for line in out), out
    assert "4 moves planned (smallest tenant collections first):" in out, out
    table = out[out.index("4 moves planned (smallest tenant collections first):") + 2 :]
    assert [(r.split()[1], r.split()[2], r.split()[3], int(r.split()[4])) for r in table] == (
        expected_moves(site, c, busy=0)
    )

    assert await snapshot(site, c) == before  # nothing written, counts included


async def test_rebalance_evens_out_the_databases_and_fixes_the_counts(site: Site) -> None:
    c = await crowded(site)
    dedicated_before = await site.record(c.dedicated["organization_id"])
    cli = site.cli(SPREAD)

    res = await cli("tenants", "rebalance", "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    plan, *outcomes = lines(res)
    assert plan["dry_run"] is False and len(plan["moves"]) == 4
    assert [o["status"] for o in outcomes] == ["done"] * 4, outcomes
    assert [f"move {i}/4" in res.stderr for i in range(1, 5)] == [True] * 4, res.stderr

    # Each moved organization is where the plan said, with every document; the source is gone.
    for (slug, source, target, n), outcome in zip(expected_moves(site, c), outcomes, strict=True):
        org = next(o for o in c.orgs if o["slug"] == slug)
        cluster, _, database = target.partition("/")
        assert outcome["placement"] == where(cluster, database)
        assert (await site.record(org["organization_id"]))["placement"] == where(cluster, database)
        assert await site.tenant(org, where(cluster, database)).count_documents({}) == n
        names = await site.main[source.partition("/")[2]].list_collection_names()
        assert org["collection_name"] not in names
    # Every shared database within 1 of the mean, from the records themselves.
    records = await site.main[site.db].organizations.find({}, {"placement": 1}).to_list(None)
    shared = [f"{site.db}_a", f"{site.db}_eu", f"{site.db}_f"]
    per = [sum(r["placement"]["database"] == d for r in records) for d in shared]
    assert per == [3, 2, 2] and all(abs(n - 7 / 3) <= 1 for n in per), per
    # The dedicated organization did not move, and its database is still there with its data.
    assert await site.record(c.dedicated["organization_id"]) == dedicated_before
    assert await site.tenant(c.dedicated).count_documents({}) == 3
    # The stored counts are the records' own again (42 fixed, the stale entry gone).
    assert await site.stored_counts() == {
        f"main/{site.db}_a": 3, f"eu/{site.db}_eu": 2, f"eu/{site.db}_f": 2,
        f"eu/orgdata_{c.dedicated['organization_id']}": 1,
    }  # fmt: skip

    again = await cli("tenants", "rebalance", "--dry-run", "--json")  # balanced now: no moves
    assert again.returncode == 0 and lines(again)[0]["moves"] == [], again.stderr


async def test_rebalance_drains_a_database_no_longer_in_the_settings(site: Site) -> None:
    async with site.service("main={db}_a;eu={db}_old") as api:
        orgs = [await create(api, f"Drain {i} {uuid.uuid4().hex[:4]}") for i in range(4)]
    old = [o for o in orgs if o["placement"]["database"] == f"{site.db}_old"]
    assert len(old) == 2
    for i, org in enumerate(old):
        await site.tenant(org).insert_many([{"_id": n} for n in range(10 * (i + 1))])
    cli = site.cli("main={db}_a,{db}_b")  # `eu` is gone from TENANT_DATABASES (still a cluster)

    res = await cli("tenants", "rebalance", "--json")
    no_traceback(res)
    assert res.returncode == 0, res.stderr
    plan, *outcomes = lines(res)
    rows = [(p["database"], p["drained"], p["tenants"], p["after"]) for p in plan["placements"]]
    assert rows == [
        (f"{site.db}_a", False, 2, 2), (f"{site.db}_b", False, 0, 2),
        (f"{site.db}_old", True, 2, 0),
    ]  # fmt: skip
    assert [(m["slug"], m["to"]["database"], m["documents"]) for m in plan["moves"]] == [
        (old[0]["slug"], f"{site.db}_b", 10), (old[1]["slug"], f"{site.db}_b", 20),
    ]  # fmt: skip
    assert [o["status"] for o in outcomes] == ["done", "done"]
    for i, org in enumerate(old):
        assert (await site.record(org["organization_id"]))["placement"] == where(
            "main", f"{site.db}_b"
        )
        assert await site.tenant(org, where("main", f"{site.db}_b")).count_documents({}) == 10 * (
            i + 1
        )
        assert org["collection_name"] not in await site.eu[f"{site.db}_old"].list_collection_names()


# --------------------------------------------------------------------- interrupted, stopped
def _stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "T"


async def test_ctrl_c_leaves_the_move_to_the_reconciler(site: Site) -> None:
    async with site.service(ONE_EACH) as api:
        org = await create(api, "Interrupted")
    await site.tenant(org).insert_many([{"_id": i} for i in range(10_000)])
    # Stopped (SIGSTOP) right after its first batch, so that Ctrl-C finds the copy under way.
    cli = site.cli(ONE_EACH, FAULT_POINTS="move.after_batch:stop", OPERATION_LEASE_SECONDS="1")
    args = ["tenants", "move", org["organization_id"], "--cluster", "eu",
            "--database", f"{site.db}_eu"]  # fmt: skip
    proc = subprocess.Popen(
        cli.command(*args), cwd=ROOT, env=cli.env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _stopped(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            await asyncio.sleep(0.05)
        os.kill(proc.pid, signal.SIGINT)
        os.kill(proc.pid, signal.SIGCONT)
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err and out == "", err
    said = err.splitlines()[-1]
    record = await site.record(org["organization_id"])
    op_id = record["pending_op"]
    assert op_id is not None and op_id in said, (record, err)  # still held by the move
    assert "reconciler resumes it" in said and "OPERATION_LEASE_SECONDS, 1 s" in said, said
    move = await site.main[site.db].moves.find_one({"_id": op_id})
    # Stopped within a batch or two (the copy goes on while the interruption is handled).
    assert move is not None and move["status"] == "running", move
    assert move["phase"] == "copying" and 1000 <= move["copied"] < 10_000, move

    await asyncio.sleep(1.5)  # the lease runs out; then any replica's reconciler resumes it
    res = await site.cli(ONE_EACH)("reconcile")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fixed"] == {"move_completed": 1}, res.stdout
    record = await site.record(org["organization_id"])
    assert (record["placement"], record["pending_op"]) == (where("eu", f"{site.db}_eu"), None)
    assert await site.tenant(org, record["placement"]).count_documents({}) == 10_000
    assert org["collection_name"] not in await site.main[f"{site.db}_a"].list_collection_names()


async def test_a_copy_that_stops_is_one_line_and_left_to_the_reconciler(site: Site) -> None:
    """The copy task ends without ending the move (here: the target cluster does not answer):
    the command does not wait for ever; it says so and exits 1."""
    async with site.service(ONE_EACH) as api:
        org = await create(api, "Stalled")
    await site.tenant(org).insert_many([{"_id": i} for i in range(100)])
    cli = site.cli(ONE_EACH, MONGODB_TIMEOUT_MS="1000", OPERATION_LEASE_SECONDS="1")
    eu_pid = int(site.eu_server.pid_file.read_text().strip())
    os.kill(eu_pid, signal.SIGSTOP)
    try:
        res = await cli(
            "tenants", "move", org["organization_id"], "--cluster", "eu",
            "--database", f"{site.db}_eu", "--no-progress",
        )  # fmt: skip
    finally:
        os.kill(eu_pid, signal.SIGCONT)
    no_traceback(res)
    assert res.returncode == 1, (res.stdout, res.stderr)
    [shown] = lines(res)
    assert shown["status"] in ("pending", "running") and shown["placement"] is None, shown
    said = res.stderr.splitlines()[-1]
    assert said.startswith(f"orgsvc: move {shown['operation_id']} stopped at "), said
    assert "reconciler resumes or rolls it back" in said, said

    await asyncio.sleep(1.5)
    res = await site.cli(ONE_EACH)("reconcile")
    assert res.returncode == 0, res.stderr
    record = await site.record(org["organization_id"])
    assert record["pending_op"] is None
    assert await site.tenant(org, record["placement"]).count_documents({}) == 100


# ------------------------------------------------------------------------- the plan alone
def _topology(*shared: str, clusters: tuple[str, ...] = ("eu",)) -> Topology:
    places = tuple(Placement(cluster=s.split("/")[0], database=s.split("/")[1]) for s in shared)
    return Topology("ctl", {c: f"mongodb://{c}" for c in clusters}, places, frozenset({"ent"}))


def _p(key: str) -> Placement:
    cluster, _, database = key.partition("/")
    return Placement(cluster=cluster, database=database)


async def test_the_plan_takes_small_tenants_from_full_databases_only() -> None:
    """No store: what is sized, what moves, what never does."""
    topology = _topology("main/a", "main/b", "eu/c")
    now = {_p("main/a"): 5, _p("main/b"): 1, _p("eu/c"): 0, _p("eu/orgdata_x"): 1,
           _p("main/old"): 2, _p("gone/x"): 4}  # fmt: skip
    sizes = {"a1": 9, "a2": 1, "a3": 5, "a4": 1, "b1": 0, "o1": 7, "o2": 3, "g1": 0, "x": 0}
    candidates = {
        _p("main/a"): [Candidate(s, s, _p("main/a"), s) for s in ("a1", "a2", "a3", "a4")],
        _p("main/b"): [Candidate("b1", "b1", _p("main/b"), "b1")],
        _p("main/old"): [Candidate(s, s, _p("main/old"), s) for s in ("o1", "o2")],
        _p("eu/orgdata_x"): [Candidate("x", "x", _p("eu/orgdata_x"), "x")],
        _p("gone/x"): [Candidate("g1", "g1", _p("gone/x"), "g1")],
    }  # a1..a4: a fifth tenant of main/a is busy (counted, not a candidate)
    asked: list[str] = []

    async def sized(orgs: Any) -> list[int]:
        asked.extend(o.slug for o in orgs)
        return [sizes[o.slug] for o in orgs]

    plan = await plan_moves(topology, now, candidates, sized)
    assert [(m.slug, m.source.key, m.target.key) for m in plan.moves] == [
        ("o2", "main/old", "eu/c"),  # drained first, smallest first, to the emptiest
        ("o1", "main/old", "main/b"),  # (main/b and eu/c at 1: the settings' order)
        ("a2", "main/a", "eu/c"),  # then from the fullest: smallest, ties by slug
        ("a4", "main/a", "main/b"),
    ]  # fmt: skip
    assert (plan.drained, plan.stranded) == ((_p("main/old"),), (_p("gone/x"),))
    assert [plan.after[p] for p in topology.shared] == [3, 3, 2] and plan.balanced
    assert plan.after[_p("main/old")] == 0 and plan.after[_p("gone/x")] == 4
    assert sorted(asked) == ["a1", "a2", "a3", "a4", "o1", "o2"]  # only the sources are sized

    # Already within 1 of the mean: nothing moves, nothing is sized.
    asked.clear()
    even = {_p("main/a"): 2, _p("main/b"): 3, _p("eu/c"): 2}
    plan = await plan_moves(topology, even, candidates, sized)
    assert plan.moves == [] and asked == []
