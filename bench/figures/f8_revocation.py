"""Figure 8: revocation latency across replicas, with the authentication cache on.

Two service processes over one store: the main one (A) and a second one started here (B). In
each trial a client hammers `GET /org/get` on B with a token (one connection, back to back, so
B serves it from its cache) while the token is revoked on A, one of three ways:
- **password**: `PUT /org/update {password}` (every token of the member dies);
- **session**: `DELETE /admin/sessions/{id}` of the token's session, from a second session;
- **suspension**: `POST /orgs/{id}/suspend` with an operator key (then restored for the next).
The latency of a trial is from the arrival of A's acknowledgement to the arrival of B's first
401/403 for the token (this process's `time.monotonic()`). Any 200 that B answers for a request
*sent* after the acknowledgement arrived is a stale answer, counted and reported. Trials run one
after another (`--revocation-trials` of each kind); the figure is the p99 over all of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

import httpx
import jwt

from bench.common import PASSWORD, say
from bench.context import Context
from bench.load import percentile
from bench.record import Figure
from bench.seed import create_org, service_key

KINDS = ("password", "session", "suspension")
TARGET_P99_MS = 50.0
TRIAL_TIMEOUT_S = 5.0  # a trial whose 401/403 does not come is a failure, not a hang


@dataclass
class Kind:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    stale: int = 0  # 200s for requests sent after the acknowledgement
    failed: int = 0


def measure(ctx: Context) -> None:
    b, b_url = ctx.stack.launch_service("replica-b", ctx.stack.mongo_url)
    say(f"figure 8: replica B {b_url} (pid {b.pid})")
    key = service_key(ctx, "bench-f8", "org:read,org:write")
    kinds = asyncio.run(_run(ctx, b_url, {"X-API-Key": key}))
    b.stop()
    ctx.res.figures.append(figure(ctx, kinds))


async def _run(ctx: Context, b_url: str, key: dict[str, str]) -> list[Kind]:
    trials = ctx.args.revocation_trials
    kinds = [Kind(name) for name in KINDS]
    async with (
        httpx.AsyncClient(base_url=ctx.stack.url, timeout=60, trust_env=False) as a,
        httpx.AsyncClient(base_url=b_url, timeout=60, trust_env=False) as b,
    ):
        await _serving(b)
        for kind in kinds:
            email = f"bench-f8-{kind.name}-{ctx.run_id}@bench.example.com"
            name = f"Bench Revoke {kind.name} {ctx.run_id}"
            org = await asyncio.to_thread(create_org, ctx.stack, name, email)
            password = PASSWORD
            for i in range(trials):
                victim = await _login(b, email, password)
                if kind.name == "password":
                    password = f"bench-password-{i}-{ctx.run_id}"
                    act = _put(a, "/org/update", {"password": password}, victim)
                elif kind.name == "session":
                    other = await _login(b, email, password)
                    act = _end_session(a, victim, other)
                else:
                    act = _post(a, f"/orgs/{org['organization_id']}/suspend", key)
                latency, stale = await _trial(b, name, victim, act)
                if latency is None:
                    kind.failed += 1
                else:
                    kind.latencies_ms.append(latency * 1000)
                kind.stale += stale
                if kind.name == "suspension":
                    res = await a.post(f"/orgs/{org['organization_id']}/restore", headers=key)
                    res.raise_for_status()
            say(
                f"figure 8 {kind.name}: p50 {_pct(kind, 50):.1f} ms, p99 {_pct(kind, 99):.1f} "
                f"ms over {len(kind.latencies_ms)} trials ({kind.stale} stale, "
                f"{kind.failed} failed)"
            )
    return kinds


async def _serving(b: httpx.AsyncClient) -> None:
    deadline = time.monotonic() + 30
    while (await b.get("/ready")).json().get("auth_cache") != "serving":
        if time.monotonic() > deadline:
            raise RuntimeError("replica B's authentication cache never served")
        await asyncio.sleep(0.05)


async def _login(http: httpx.AsyncClient, email: str, password: str) -> str:
    res = await http.post("/admin/login", json={"email": email, "password": password})
    res.raise_for_status()
    token: str = res.json()["access_token"]
    return token


async def _put(a: httpx.AsyncClient, path: str, body: dict[str, str], token: str) -> None:
    res = await a.put(path, json=body, headers={"Authorization": f"Bearer {token}"})
    res.raise_for_status()


async def _post(a: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
    res = await a.post(path, headers=headers)
    res.raise_for_status()


async def _end_session(a: httpx.AsyncClient, victim: str, other: str) -> None:
    """End the victim token's session (its `sid`, read without verifying: the bench is no
    judge of tokens) from another session of the same member."""
    sid = jwt.decode(victim, options={"verify_signature": False})["sid"]
    res = await a.delete(f"/admin/sessions/{sid}", headers={"Authorization": f"Bearer {other}"})
    res.raise_for_status()


async def _trial(
    b: httpx.AsyncClient, name: str, token: str, act: Awaitable[None]
) -> tuple[float | None, int]:
    """Hammer B while `act` (a coroutine) revokes on A; (seconds from A's ack to B's first
    refusal, stale answers)."""
    params = {"organization_name": name}
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(3):  # B caches the token's entry
        (await b.get("/org/get", params=params, headers=headers)).raise_for_status()
    acked: list[float] = []
    stale = 0

    async def revoke() -> None:
        await act
        acked.append(time.monotonic())

    task = asyncio.create_task(revoke())
    deadline = time.monotonic() + TRIAL_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            sent = time.monotonic()
            res = await b.get("/org/get", params=params, headers=headers)
            arrived = time.monotonic()
            if res.status_code in (401, 403):
                await task
                return arrived - acked[0], stale
            res.raise_for_status()
            if acked and sent > acked[0]:
                stale += 1
        return None, stale
    finally:
        await task


def _pct(kind: Kind, pct: float) -> float:
    return percentile(sorted(kind.latencies_ms), pct)


def figure(ctx: Context, kinds: list[Kind]) -> Figure:
    every = sorted(x for k in kinds for x in k.latencies_ms)
    p99 = percentile(every, 99) if every else None
    failed = sum(k.failed for k in kinds)
    if failed:
        ctx.res.notes.append(f"figure 8: {failed} trials saw no refusal within 5 s")
    parts = ", ".join(f"{k.name} p50 {_pct(k, 50):.1f} / p99 {_pct(k, 99):.1f} ms" for k in kinds)
    return Figure(
        "8",
        "Revocation latency across replicas (A's ack → B's first 401/403), p99",
        p99,
        "<=",
        TARGET_P99_MS,
        f"{parts}; {len(every)} trials, p50 {percentile(every, 50):.1f} ms, "
        f"{sum(k.stale for k in kinds)} stale answers after an ack",
        {
            k.name: {
                "trials": len(k.latencies_ms),
                "p50_ms": round(_pct(k, 50), 1),
                "p99_ms": round(_pct(k, 99), 1),
                "max_ms": round(max(k.latencies_ms, default=0.0), 1),
                "stale_after_ack": k.stale,
                "failed": k.failed,
            }
            for k in kinds
        },
        unit=" ms",
    )
