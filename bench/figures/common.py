"""What figures share: the event feed's last event of a type, and a figure's problems and the
machine's noise as run notes."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import FOREIGN_WARN_CORES, PASSWORD, Doc
from bench.context import Context


async def feed_tail(
    http: httpx.AsyncClient, headers: dict[str, str], type_: str, page: int = 100
) -> str | None:
    """The id of the feed's last event of type `type_` (None: there is none yet)."""
    after: str | None = None
    while True:
        params = {"types": type_, "limit": str(page), **({"after": after} if after else {})}
        resp = await http.get("/events", params=params, headers=headers)
        resp.raise_for_status()
        body: Doc = resp.json()
        if body["next_cursor"] is None:
            return after
        after = body["next_cursor"]


def note_problems(ctx: Context, num: str, problems: list[str], cpu: dict[str, float]) -> None:
    """Each of figure `num`'s problems as a note, and one if other work on the machine, or the
    hypervisor, took more than `FOREIGN_WARN_CORES` while it was measured."""
    for problem in problems:
        ctx.res.notes.append(f"figure {num}: {problem}")
    if cpu["foreign_cores"] > FOREIGN_WARN_CORES or cpu["steal_cores"] > FOREIGN_WARN_CORES:
        ctx.res.notes.append(
            f"figure {num}: other work on the machine used {cpu['foreign_cores']:.2f} cores and "
            f"the hypervisor stole {cpu['steal_cores']:.2f}"
        )


async def timed_creates(
    url: str, tags: list[str], *, kind: str, clients: int
) -> list[tuple[float, int, str]]:
    """`POST /org/create` of one organization per tag ("Bench <kind> Create <tag>"), by
    `clients` clients one create after another each: (seconds, status, body) per create."""
    todo = iter(tags)
    done: list[tuple[float, int, str]] = []

    async def client(http: httpx.AsyncClient) -> None:
        for tag in todo:
            body = {
                "organization_name": f"Bench {kind} Create {tag}",
                "email": f"{kind.lower()}-create-{tag}@bench.example.com",
                "password": PASSWORD,
            }
            t0 = time.perf_counter()
            resp = await http.post("/org/create", json=body)
            done.append((time.perf_counter() - t0, resp.status_code, resp.text))

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(
        base_url=url, timeout=120.0, trust_env=False, limits=limits
    ) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return done
