"""Reading request bodies and `url=` sources with a size limit, spooled to disk when large."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from server.errors import InvalidRequest, PayloadTooLarge, RemoteContentError
from server.outbound import Outbound, Refused, describe, http_url

SPOOL_BYTES = 16 * 1024 * 1024  # larger bodies go to disk: memory per waiting upload stays small
log = logging.getLogger(__name__)


@dataclass
class Payload:
    """Received audio bytes (in memory or spooled) and their sha256."""

    file: tempfile.SpooledTemporaryFile
    size: int
    sha256: str

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Payload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


FETCH_FAILED = (
    "Could not fetch the audio from the url: the address is refused, unreachable, or did not "
    "answer with audio in time"
)


async def fetch_url(url: str, *, outbound: Outbound, timeout_s: float, limit: int) -> Payload:
    """Download a `url=` source. The timeout bounds the whole download, not each read; every
    failure but a size limit is the same message for the client (the reason goes to the log)."""
    try:
        http_url(url)
    except Refused:  # the client's typo, not a fetch failure: said as such
        raise InvalidRequest("Invalid url: only well-formed http(s) URLs can be fetched") from None
    try:
        return await asyncio.wait_for(_download(url, outbound, timeout_s, limit), timeout_s)
    except PayloadTooLarge:
        raise
    except asyncio.TimeoutError as exc:
        log.info("url fetch timed out", extra={"url": describe(url)})
        raise RemoteContentError(FETCH_FAILED) from exc
    except Refused as exc:
        log.info("url fetch refused", extra={"url": describe(url), "reason": str(exc)})
        raise RemoteContentError(FETCH_FAILED) from exc


async def _download(url: str, outbound: Outbound, timeout_s: float, limit: int) -> Payload:
    # No connection reuse: connections are pinned to a checked IP per hop.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with (
        httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), limits=limits, trust_env=False
        ) as client,
        outbound.stream(client, "GET", url) as response,
    ):
        if response.status_code >= 400:
            raise Refused(f"the remote server answered {response.status_code}")
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise too_large(limit)
        try:
            return await collect(response.aiter_bytes(), limit)
        except httpx.HTTPError as exc:
            raise Refused(f"{type(exc).__name__} while reading") from exc
