"""Lease fencing (issue 8): a replica paused past its lease in the middle of a create, rename or
delete cannot act once another replica took the operation over.

Replica A is armed to SIGSTOP itself at one step (`FAULT_POINTS=<step>:stop`, a new replica A
for each step); replica B runs the reconciler every 0.2 s with a 1 s lease. The test waits until
B has taken A's operation over and finished it, then SIGCONTs A and reads A's answer. Whatever
A answers, an acknowledged change must be whole: the organization logs in, answers GET, owns
its name (creating it again is 409), and has its collection with every document; the store
ends consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from app.kit.db import EmbeddedMongo
from app.tenancy.lease import Hold, OperationLost
from app.tenancy.operations import Operation, OperationRepository
from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.consistency import assert_consistent
from tests.support.processes import ServiceProcess, nx_service_env

DB = "org_service_fencing"
DOCS = 300
CREATE_POINTS = [
    "create.after_intent",
    "create.after_claim",
    "create.after_org",
    "create.after_admin",
    "create.after_collection",
    "create.after_commit",
]
RENAME_POINTS = ["rename.after_lock", "rename.after_claim", "rename.after_collection"]
DELETE_POINTS = ["delete.after_lock", "delete.after_drop"]


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


async def wait_for(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Replicas:
    """Replica B (the reconciler that takes over) and, one at a time, a replica A armed to pause
    at one step."""

    def __init__(self, nx: EmbeddedMongo, b: ServiceProcess, db: Any, logs: Path) -> None:
        self.nx, self.b, self.db, self.logs = nx, b, db, logs
        self.a: ServiceProcess | None = None

    @contextlib.asynccontextmanager
    async def armed(self, point: str) -> AsyncIterator[ServiceProcess]:
        env = nx_service_env(
            self.nx, db=DB, FAULT_POINTS=point + ":stop", RECONCILE_INTERVAL_SECONDS="3600",
            OPERATION_LEASE_SECONDS="1",
        )  # fmt: skip
        self.a = ServiceProcess(env, log_path=self.logs / f"a-{point}.log")
        try:
            await self.a.start()
            yield self.a
        finally:
            if self.a.proc is not None and self.a.proc.poll() is None:
                os.kill(self.a.proc.pid, signal.SIGCONT)
            self.a.stop()
            self.a = None

    async def paused_request(self, point: str, send: Any) -> httpx.Response:
        """Run `send(http, a_url)` on a replica A that stops itself at `point`, let B take the
        operation over and finish it, resume A, and return A's answer."""
        async with self.armed(point) as a:
            assert a.proc is not None
            pid = a.proc.pid
            async with httpx.AsyncClient(timeout=60) as http:
                task = asyncio.create_task(send(http, a.url))

                async def stopped() -> bool:
                    return state_of(pid) == "T"

                await wait_for(stopped, "replica A to stop itself")

                async def taken_over() -> bool:
                    left: int = await self.db.operations.count_documents({})
                    return left == 0

                await wait_for(taken_over, "replica B to take the operation over and finish it")
                os.kill(pid, signal.SIGCONT)
                answer: httpx.Response = await task
                return answer


@pytest.fixture
async def replicas(
    nx_server: EmbeddedMongo, nx_client: AsyncMongoClient[Any], logs_dir: Path
) -> AsyncIterator[Replicas]:
    b = ServiceProcess(
        nx_service_env(
            nx_server, db=DB, RECONCILE_INTERVAL_SECONDS="0.2", OPERATION_LEASE_SECONDS="1"
        ),
        log_path=logs_dir / "b.log",
    )
    try:
        await b.start()
        yield Replicas(nx_server, b, nx_client[DB], logs_dir)
    finally:
        b.stop()


async def assert_whole(url: str, db: Any, org: dict[str, Any], email: str, docs: int) -> None:
    """The acknowledged organization works end to end."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        login = await http.post("/admin/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        token = login.json()["access_token"]
        got = await http.get(
            "/org/get", params={"organization_name": org["organization_name"]},
            headers=bearer(token),
        )  # fmt: skip
        assert got.status_code == 200, got.text
        assert got.json()["slug"] == org["slug"]
        again = await http.post("/org/create", json=org_body(org["organization_name"], "z@z.com"))
        assert again.status_code == 409, again.text
    assert await db[org["collection_name"]].count_documents({}) == docs


async def test_creates_paused_past_the_lease(replicas: Replicas) -> None:
    outcomes: dict[str, int] = {}
    for i, point in enumerate(CREATE_POINTS):
        name, email = f"Paused Create {i}", f"pc{i}@x.com"

        async def create(http: httpx.AsyncClient, url: str) -> httpx.Response:
            return await http.post(url + "/org/create", json=org_body(name, email))  # noqa: B023

        res = await replicas.paused_request(point, create)
        outcomes[point] = res.status_code
        if res.status_code == 201:
            await assert_whole(replicas.b.url, replicas.db, res.json(), email, 0)
        else:
            assert res.status_code == 503, res.text
            assert res.json()["code"] == "operation_interrupted"
            # Undone: nothing of it is left, and the name is free again.
            async with httpx.AsyncClient(timeout=30) as http:
                retry = await http.post(replicas.b.url + "/org/create", json=org_body(name, email))
                assert retry.status_code == 201, retry.text
        await assert_consistent(replicas.db)
    print("paused creates:", outcomes)
    # Before the commit point the operation was undone; after it, rolled forward.
    assert outcomes == {p: 201 if p == "create.after_commit" else 503 for p in CREATE_POINTS}


async def test_renames_and_deletes_paused_past_the_lease(replicas: Replicas) -> None:
    outcomes: dict[str, tuple[int, str]] = {}
    async with httpx.AsyncClient(base_url=replicas.b.url, timeout=30) as http:
        for i, point in enumerate(RENAME_POINTS):
            email = f"pr{i}@x.com"
            made = await http.post("/org/create", json=org_body(f"Before {i}", email))
            assert made.status_code == 201, made.text
            await replicas.db[made.json()["collection_name"]].insert_many(
                [{"n": n} for n in range(DOCS)]
            )
            login = await http.post("/admin/login", json={"email": email, "password": PASSWORD})
            token = login.json()["access_token"]

            async def rename(h: httpx.AsyncClient, url: str) -> httpx.Response:
                return await h.put(
                    url + "/org/update", json={"organization_name": f"After {i}"},  # noqa: B023
                    headers=bearer(token),  # noqa: B023
                )  # fmt: skip

            res = await replicas.paused_request(point, rename)
            [org] = await replicas.db.organizations.find({"admin.email": email}).to_list(None)
            outcomes[point] = (res.status_code, org["slug"])
            if res.status_code == 200:
                assert res.json()["slug"] == org["slug"] == f"after_{i}"
            else:
                assert res.status_code == 503, res.text
                assert res.json()["code"] == "operation_interrupted"
            # Whatever the answer, the organization is whole under the name its record holds.
            public = {
                "organization_name": org["organization_name"], "slug": org["slug"],
                "collection_name": org["collection_name"],
            }  # fmt: skip
            await assert_whole(replicas.b.url, replicas.db, public, email, DOCS)
            await assert_consistent(replicas.db)

        for i, point in enumerate(DELETE_POINTS):
            email = f"pd{i}@x.com"
            made = await http.post("/org/create", json=org_body(f"Doomed {i}", email))
            login = await http.post("/admin/login", json={"email": email, "password": PASSWORD})
            token = login.json()["access_token"]

            async def delete(h: httpx.AsyncClient, url: str) -> httpx.Response:
                return await h.delete(
                    url + "/org/delete", params={"organization_name": f"Doomed {i}"},  # noqa: B023
                    headers=bearer(token),  # noqa: B023
                )  # fmt: skip

            res = await replicas.paused_request(point, delete)
            left = await replicas.db.organizations.count_documents({"admin.email": email})
            outcomes[point] = (res.status_code, "deleted" if left == 0 else "kept")
            assert res.status_code in (204, 503), res.text
            if res.status_code == 204:
                assert left == 0
            await assert_consistent(replicas.db)
            again = await http.post("/org/create", json=org_body(f"Doomed {i}", email))
            assert again.status_code == (201 if left == 0 else 409), again.text
    print("paused renames and deletes:", outcomes)
    # The rename's commit point is its new name's claim; the delete's, its lock.
    assert outcomes["rename.after_lock"] == (503, "before_0")
    assert outcomes["rename.after_claim"] == (503, "after_1")
    assert outcomes["rename.after_collection"] == (503, "after_2")
    assert outcomes["delete.after_lock"] == (503, "deleted")
    assert outcomes["delete.after_drop"] == (503, "deleted")


async def test_a_hold_taken_over_cannot_renew_commit_or_finish(
    nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """The fencing token itself: once another replica took the operation over (the intent still
    exists, it is mid-way), the old holder's renewal, commit and finish all fail."""
    ops = OperationRepository(nx_client[db_name])
    op = Operation(op_id="op1", kind="create", organization_id="o1")
    fence = await ops.start(op, owner="a", lease_seconds=0.05)
    old = Hold(ops, "op1", fence=fence, lease_seconds=0.05)
    await old.check()  # held: renews
    await asyncio.sleep(0.1)  # the lease runs out (a pause)
    taken = await ops.take_over("op1", owner="b", lease_seconds=30)
    assert taken is not None and taken.fence == fence + 1
    with pytest.raises(OperationLost):
        await old.check()
    with pytest.raises(OperationLost):
        await old.commit()
    await old.finish()  # a no-op for the old holder ...
    assert await ops.exists("op1")  # ... the new holder's intent is untouched
    new = Hold(ops, "op1", fence=taken.fence, lease_seconds=30)
    await new.commit()
    stored = await nx_client[db_name].operations.find_one({"_id": "op1"})
    assert stored is not None and stored["state"] == "committed"
    await new.finish()
    assert not await ops.exists("op1")


async def test_the_lease_is_renewed_while_a_step_runs(
    nx_client: AsyncMongoClient[Any], db_name: str
) -> None:
    """A step longer than the lease (a big renameCollection) keeps its operation: the hold
    renews in the background, so no reconciler can take it over meanwhile."""
    ops = OperationRepository(nx_client[db_name])
    op = Operation(op_id="op2", kind="rename", organization_id="o2")
    fence = await ops.start(op, owner="a", lease_seconds=0.3)
    async with Hold(ops, "op2", fence=fence, lease_seconds=0.3) as hold:
        for _ in range(10):  # 1 s of "work", over three leases
            await asyncio.sleep(0.1)
            assert await ops.take_over("op2", owner="b", lease_seconds=30) is None
        await hold.check()
    await asyncio.sleep(0.4)  # no renewals after the hold is released: now it can be taken
    assert await ops.take_over("op2", owner="b", lease_seconds=30) is not None
