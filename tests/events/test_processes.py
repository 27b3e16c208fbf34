"""The feed under concurrent writers on two service processes: a consumer paging
`GET /events?after=` during and after the load sees every change's event exactly once, each
organization's in the order they happened, and none for a change that failed."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from tests.support.clients import PASSWORD, bearer, org_body
from tests.support.events import service_key, settled_events
from tests.support.processes import PROCS_DB as DB
from tests.support.processes import ServiceProcess

Pair = tuple[ServiceProcess, ServiceProcess]
CLIENTS = 8
CHANGES = 200


async def test_two_hundred_changes_on_two_replicas_are_seen_once_in_order(
    replicas: Pair, nx_client: AsyncMongoClient[Any]
) -> None:
    a, b = replicas
    urls = [a.url, b.url]
    key = await service_key(nx_client[DB], "events:read", "org:write", "org:read")
    expected: dict[str, list[str]] = {}  # organization id -> its event types, in order
    failed_creates: list[str] = []
    done = asyncio.Event()
    rng = random.Random(7)

    async with httpx.AsyncClient(timeout=60) as http:

        async def client(i: int, count: int) -> None:
            """One client: its own organizations, changed one after the other (so their order
            is known), alternating replicas."""
            mine: list[tuple[str, str]] = []  # (id, token)
            for step in range(count):
                url = urls[(i + step) % 2]
                choice = rng.random() if mine else 0.0
                if choice < 0.2:
                    name = f"Load {i}-{step}"
                    res = await http.post(
                        url + "/org/create", json=org_body(name, f"c{i}.{step}@load.example.com")
                    )
                    assert res.status_code == 201, res.text
                    org_id = res.json()["organization_id"]
                    expected[org_id] = ["organization.created"]
                    login = await http.post(
                        url + "/admin/login",
                        json={"email": f"c{i}.{step}@load.example.com", "password": PASSWORD},
                    )
                    mine.append((org_id, login.json()["access_token"]))
                    continue
                org_id, token = rng.choice(mine)
                if choice < 0.3:
                    # A create that fails (the name is taken): no event.
                    taken = await http.post(
                        url + "/org/create", json=org_body(f"Load {i}-0", f"x{i}.{step}@x.com")
                    )
                    assert taken.status_code == 409, taken.text
                    failed_creates.append(f"x{i}.{step}@x.com")
                elif choice < 0.55:
                    res = await http.put(
                        url + "/org/update",
                        json={"display_name": f"Shown {step}"},
                        headers=bearer(token),
                    )
                    assert res.status_code == 200, res.text
                    expected[org_id].append("organization.updated")
                elif choice < 0.75:
                    res = await http.patch(
                        f"{url}/orgs/{org_id}", json={"plan": f"p{step}"}, headers=key
                    )
                    assert res.status_code == 200, res.text
                    expected[org_id].append("organization.updated")
                else:
                    res = await http.post(
                        url + "/org/invitations",
                        json={"email": f"inv{i}.{step}@load.example.com", "role": "member"},
                        headers=bearer(token),
                    )
                    assert res.status_code == 201, res.text
                    expected[org_id].append("member.invited")

        async def consumer() -> list[dict[str, Any]]:
            """Pages the feed, alternating replicas, during the load and until it is quiet."""
            seen: list[dict[str, Any]] = []
            after: str | None = None
            quiet = 0
            for turn in itertools.count():
                params: dict[str, Any] = {"limit": 50, **({"after": after} if after else {})}
                res = await http.get(urls[turn % 2] + "/events", params=params, headers=key)
                assert res.status_code == 200, res.text
                page = res.json()
                seen += page["items"]
                after = page["next_cursor"] or after
                quiet = 0 if page["items"] or not done.is_set() else quiet + 1
                if quiet >= 20:  # 20 empty pages after the load: nothing is left pending
                    return seen
                await asyncio.sleep(0.02)
            raise AssertionError("unreachable")

        reader = asyncio.create_task(consumer())
        per_client = CHANGES // CLIENTS
        await asyncio.gather(*(client(i, per_client) for i in range(CLIENTS)))
        done.set()
        events = await reader

    changes = sum(len(types) for types in expected.values())
    print(f"{changes} events expected for {len(expected)} organizations; "
          f"{len(failed_creates)} creates failed; {len(events)} events seen")  # fmt: skip
    stored = await settled_events(nx_client[DB])
    assert [e["id"] for e in stored] == [e["id"] for e in events]  # the consumer missed none
    ids = [e["id"] for e in events]
    assert len(ids) == len(set(ids)), "an event was seen twice"
    for org_id, types in expected.items():
        got = [e["type"] for e in events if e["organization_id"] == org_id]
        assert got == types, (org_id, got, types)  # every one, once, in order
    assert len(events) == changes  # and nothing else: no event for a failed create
    assert changes + len(failed_creates) > CHANGES // 2
