"""One delivery attempt over HTTP: guard, sign, POST to the checked address, classify.

The request goes to the address the guard just checked, not to the host name (httpx would
resolve it again: a DNS rebinding window). The URL's host stays in the `Host` header and, for
https, in the TLS SNI and certificate check (httpcore's `sni_hostname` extension), so virtual
hosts and certificates work as with the name. Redirects are never followed (a 3xx is a failed
attempt); proxies from the environment are ignored (they would resolve the name themselves).
The whole attempt is bounded by WEBHOOK_TIMEOUT_SECONDS; the answer's body is read (up to
64 KiB, then cut) and dropped, so a plain-http connection can be reused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass

import httpx

from app.webhooks.guard import Target, UnsafeUrl, check

DELIVERED, FAILED_STATUS, TIMEOUT, REFUSED, ERROR = (
    "delivered",
    "failed_status",
    "timeout",
    "refused",
    "error",
)
OUTCOMES = (DELIVERED, FAILED_STATUS, TIMEOUT, REFUSED, ERROR)
USER_AGENT = "orgsvc-webhooks/1"
MAX_ERROR_CHARS = 300
MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt ended."""

    outcome: str
    status_code: int | None = None
    error: str | None = None
    seconds: float = 0.0


def _pinned(target: Target, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    parts = target.url
    path = parts.path or "/"
    query = f"?{parts.query}" if parts.query else ""
    return f"{parts.scheme}://{host}:{target.port}{path}{query}"


def make_client(*, timeout: float, max_connections: int) -> httpx.AsyncClient:
    """The worker's one HTTP client: no redirects, no environment proxies, bounded pool."""
    return httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=32),
        headers={"User-Agent": USER_AGENT},
    )


async def attempt(
    client: httpx.AsyncClient,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    allow_private: bool,
) -> Attempt:
    """Check `url` again, then POST `body` to it once; never raises for the receiver's sake."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_seconds):
            target = await check(url, allow_private=allow_private)
            return await _post(client, target, body=body, headers=headers, started=started)
    except UnsafeUrl as exc:
        return Attempt(REFUSED, error=f"refused by the SSRF guard: {exc}"[:MAX_ERROR_CHARS])
    except (TimeoutError, httpx.TimeoutException):
        return Attempt(
            TIMEOUT,
            error=f"no answer within {timeout_seconds:g} s",
            seconds=time.monotonic() - started,
        )
    except (httpx.HTTPError, OSError) as exc:
        text = " ".join(f"{type(exc).__name__}: {exc}".split())[:MAX_ERROR_CHARS]
        return Attempt(ERROR, error=text, seconds=time.monotonic() - started)


async def _post(
    client: httpx.AsyncClient,
    target: Target,
    *,
    body: bytes,
    headers: dict[str, str],
    started: float,
) -> Attempt:
    https = target.url.scheme == "https"
    extensions = {"sni_hostname": target.host} if https else {}
    sent = {**headers, "Host": target.url.netloc, "Content-Type": "application/json"}
    if https:
        # The pool keys connections by address, not by host name: a kept-alive TLS connection
        # made (and its certificate checked) for one host must never carry another host's
        # request to the same address. One connection per https attempt.
        sent["Connection"] = "close"
    last: Exception | None = None
    for address in target.addresses:  # the next checked address if one does not connect
        request = client.build_request(
            "POST", _pinned(target, address), content=body, headers=sent, extensions=extensions
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            last = exc
            continue
        # The answer's body is not ours to keep; reading a short one (within the attempt's
        # timeout) lets the connection be reused, a long one is cut off.
        seen = 0
        async for chunk in response.aiter_raw():
            seen += len(chunk)
            if seen > MAX_ANSWER_BYTES:
                break
        await response.aclose()
        elapsed = time.monotonic() - started
        code = response.status_code
        if 200 <= code < 300:
            return Attempt(DELIVERED, status_code=code, seconds=elapsed)
        error = f"HTTP {code}"
        if 300 <= code < 400:
            error += " (redirects are not followed)"
        return Attempt(FAILED_STATUS, status_code=code, error=error, seconds=elapsed)
    assert last is not None
    raise last
