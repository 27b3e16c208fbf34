"""The SSRF guard: a webhook URL may only reach public addresses.

A URL must be `http` or `https` with a host and no credentials. Its host is resolved without
blocking the event loop (`loop.getaddrinfo`, bounded in time), and *every* address it resolves
to must be public: loopback, private (RFC 1918, ULA fc00::/7), link-local (169.254/16,
fe80::/10), the cloud metadata addresses, unspecified, multicast, reserved, shared/CGNAT
(100.64/10), benchmarking, documentation, and the IPv4 forms hidden in IPv6 (IPv4-mapped,
IPv4-compatible, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo) are refused. It runs at
registration (a 422) and again before every delivery attempt, and the attempt connects to the
very address that was checked (`app.webhooks.sender`), so a DNS answer that changes between the
check and the connection (DNS rebinding) cannot move the request onto an internal address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RESOLVE_TIMEOUT_SECONDS = 5.0

METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# Ranges refused besides what `ipaddress` already calls non-global (kept explicit on purpose:
# the library's tables have changed between Python versions).
REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
        "2001:db8::/32",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UnsafeUrl(ValueError):
    """A URL the guard refuses; the message says why (it names no secret)."""


def refusal(address: IPAddress) -> str | None:
    """Why `address` may not be called (None: it is a public address)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address.teredo is not None:
            embedded = address.teredo[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is None and int(address) >> 32 == 0 and int(address) > 1:
            embedded = ipaddress.IPv4Address(int(address))  # IPv4-compatible ::a.b.c.d
        if embedded is not None:
            inner = refusal(embedded)
            return None if inner is None else f"{inner} (inside {address})"
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        return f"{address} is a link-local address"
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if any(address in net for net in REFUSED_NETWORKS if net.version == address.version):
        return f"{address} is a private or reserved address"
    if address.is_private or address.is_reserved or not address.is_global:
        return f"{address} is a private or reserved address"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: its parts, and the addresses it resolved to (all allowed)."""

    url: SplitResult
    host: str  # as in the URL, without brackets
    port: int
    addresses: tuple[IPAddress, ...]


def parse(url: str) -> SplitResult:
    """The URL's parts, or UnsafeUrl when it is not an absolute http(s) URL with a host."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise UnsafeUrl("not a valid URL") from exc
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL must not carry credentials")
    return parts


async def check(url: str, *, allow_private: bool) -> Target:
    """Resolve `url`'s host and check every address; UnsafeUrl when one is refused or the
    host does not resolve."""
    parts = parse(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    else:
        addresses = await resolve(host, port)
    if not allow_private:
        for address in addresses:
            reason = refusal(address)
            if reason is not None:
                raise UnsafeUrl(f"{host} resolves to a refused address: {reason}")
    return Target(url=parts, host=host, port=port, addresses=addresses)


async def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address of `host` (the system resolver, off the event loop, bounded in time)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError) as exc:
        raise UnsafeUrl(f"{host} does not resolve") from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # An IPv6 sockaddr may carry a zone (`fe80::1%eth0`): the address is what is checked.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeUrl(f"{host} does not resolve")
    return tuple(found)
