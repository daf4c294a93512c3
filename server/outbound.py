"""Requests the server makes on a client's behalf (`url=` sources, callbacks), without SSRF.

A client chooses these URLs, so each would otherwise let anyone on the internet make the server
reach its own loopback, the private network behind it, or the cloud metadata service. Rules:

* The host is resolved once per hop, off the event loop, and every address it resolves to must
  be public (or in `outbound_allow_networks`, or private with `outbound_allow_private`); the
  metadata addresses stay refused unless listed explicitly.
* The connection goes to the address that was checked (the URL is pinned to the IP, with the
  original `Host` header and TLS server name), so a DNS answer that changes between the check
  and the connect (rebinding) changes nothing.
* Redirects are followed by hand, each hop checked the same way, at most `MAX_REDIRECTS`.
* Failures are `Refused` with a reason for the log; the client is told one generic message, so
  the server cannot be used to map which internal ports answer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_REDIRECTS = 5
REDIRECTS = {301, 302, 303, 307, 308}
# Cloud instance metadata (AWS, GCP, Azure, DigitalOcean / AWS IPv6 / Alibaba): never reachable
# through `outbound_allow_private`, only by naming them in `outbound_allow_networks`.
METADATA = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.169.254/32", "fd00:ec2::254/128", "100.100.100.200/32")
)


class Refused(Exception):
    """An outbound request that was not made or did not succeed; the reason is for logs only."""


def http_url(url: str) -> SplitResult:
    """The parts of an absolute http(s) URL that can be requested as written, else Refused.

    A client writes these URLs: `urlsplit` raises ValueError on `http://[::1` and on a bad
    port, and httpx refuses a NUL in the path only once the request is built, deep inside a
    fetch or a callback delivery. Checked here, up front, both are the client's error, never
    a 500 or a callback job that fails the same way forever.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL) as exc:
        raise Refused(f"malformed URL ({exc})") from exc
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise Refused("not an http(s) URL")
    return parts


@dataclass(frozen=True)
class AddressPolicy:
    allow_private: bool = False
    allow_networks: tuple[Network, ...] = ()

    @classmethod
    def of(cls, allow_private: bool, networks: Iterable[str]) -> AddressPolicy:
        return cls(allow_private, tuple(ipaddress.ip_network(n, strict=False) for n in networks))

    def allows(self, address: IPAddress) -> bool:
        embedded = _embedded_ipv4(address)
        if embedded is not None:  # ::ffff:127.0.0.1, 64:ff9b::7f00:1, 2002:7f00:1:: are 127.0.0.1
            return self.allows(embedded)
        if any(address in network for network in self.allow_networks):
            return True
        if any(address in network for network in METADATA):
            return False
        if address.is_multicast or address.is_unspecified:
            return self.allow_private and not address.is_multicast
        return address.is_global or self.allow_private


NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, NAT64, 6to4, Teredo client)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


async def system_resolver(host: str, port: int) -> list[str]:
    """getaddrinfo in the loop's executor: a slow DNS server never blocks the event loop."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


@dataclass
class Outbound:
    """One policy and resolver, shared by url fetches and callback deliveries."""

    policy: AddressPolicy = field(default_factory=AddressPolicy)
    resolver: Resolver = system_resolver

    async def check(self, url: str) -> tuple[str, IPAddress]:
        """Validate a URL and resolve its host to one allowed address; raises Refused."""
        parts = http_url(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        host = parts.hostname
        assert host is not None  # http_url refuses a URL without one
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [literal]
        else:
            try:
                found = await self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise Refused(f"cannot resolve {host}") from exc
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in found]
        if not addresses:
            raise Refused(f"{host} has no address")
        blocked = [a for a in addresses if not self.policy.allows(a)]
        if blocked:  # one bad answer spoils the name: never pick among them
            raise Refused(f"{host} resolves to a refused address ({blocked[0]})")
        return host, addresses[0]

    async def pinned(self, url: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        """The URL rewritten to the checked IP, with the Host header and TLS name to send."""
        host, address = await self.check(url)
        parts = urlsplit(url)
        ip = f"[{address}]" if address.version == 6 else str(address)
        netloc = ip if parts.port is None else f"{ip}:{parts.port}"
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        extensions: dict[str, Any] = {}
        if parts.scheme == "https":
            extensions["sni_hostname"] = host
        return target, {"Host": host_header}, extensions

    @asynccontextmanager
    async def stream(
        self, client: httpx.AsyncClient, method: str, url: str, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        """Open a response, following redirects hop by hop, each hop checked and pinned."""
        headers = dict(kwargs.pop("headers", {}) or {})
        for _ in range(MAX_REDIRECTS + 1):
            target, host, extensions = await self.pinned(url)
            request = client.build_request(
                method, target, headers={**headers, **host}, extensions=extensions, **kwargs
            )
            try:
                response = await client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                raise Refused(f"{type(exc).__name__} talking to {urlsplit(url).hostname}") from exc
            if response.status_code in REDIRECTS and "location" in response.headers:
                await response.aclose()
                try:
                    url = urljoin(url, response.headers["location"])
                except ValueError as exc:  # the next hop's check refuses the rest
                    raise Refused("malformed redirect") from exc
                if response.status_code == 303:
                    method, kwargs = "GET", {}
                continue
            try:
                yield response
            finally:
                await response.aclose()
            return
        raise Refused("too many redirects")


def describe(url: str) -> str:
    """A URL for logs: scheme and host only (a path or query may carry a token); a malformed
    one is described too, since it is logged from the handler that refuses it."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname or '?'}"
    except ValueError:
        return "(malformed URL)"
