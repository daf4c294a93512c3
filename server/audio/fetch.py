"""Reading request bodies and `url=` sources with a size limit, spooled to disk when large."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from server.errors import InvalidRequest, PayloadTooLarge, RemoteContentError

SPOOL_BYTES = 64 * 1024 * 1024


@dataclass
class Payload:
    """Received audio bytes (in memory or spooled) and their sha256."""

    file: tempfile.SpooledTemporaryFile
    size: int
    sha256: str

    def close(self) -> None:
        self.file.close()


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"Payload too large: the limit is {limit} bytes")


async def collect(chunks: AsyncIterator[bytes], limit: int) -> Payload:
    """Drain a byte stream into a spooled file, refusing it once it passes `limit`."""
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 (returned)
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            digest.update(chunk)
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return Payload(spool, size, digest.hexdigest())


def _check_host(url: str, allow_private: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest(f"Invalid url: '{url[:200]}' is not an http(s) URL")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 80)
    except OSError as exc:
        raise InvalidRequest(f"Could not resolve the url's host: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_private or address.is_loopback or address.is_link_local:
            raise InvalidRequest("The url points at a private address, which this server refuses")


async def fetch_url(url: str, *, timeout_s: float, limit: int, allow_private: bool) -> Payload:
    """Download a `url=` source; the timeout bounds the whole download, not each read."""
    _check_host(url, allow_private)
    try:
        return await asyncio.wait_for(_download(url, timeout_s, limit), timeout_s)
    except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
        raise RemoteContentError(
            f"Could not download the url: no complete answer within {timeout_s:g} s"
        ) from exc
    except httpx.HTTPError as exc:
        raise RemoteContentError(f"Could not download the url: {exc}") from exc


async def _download(url: str, timeout_s: float, limit: int) -> Payload:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), follow_redirects=True) as client,
        client.stream("GET", url) as response,
    ):
        if response.status_code >= 400:
            raise RemoteContentError(
                f"Could not download the url: the remote server answered {response.status_code}"
            )
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        return await collect(response.aiter_bytes(), limit)
