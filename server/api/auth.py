"""Reading and checking API keys: `Authorization` headers, browser subprotocols, digests."""

from __future__ import annotations

import hashlib
import hmac

SCHEMES = {"token", "bearer"}


def parse_authorization(value: str | None) -> str | None:
    """`Token KEY` / `Bearer JWT`, scheme in any case; a bare key is accepted too."""
    if not value:
        return None
    scheme, _, credential = value.strip().partition(" ")
    if credential and scheme.lower() in SCHEMES:
        return credential.strip()
    return value.strip() if not credential else None


def parse_subprotocols(protocols: list[str]) -> tuple[str | None, str | None]:
    """Browser auth: `Sec-WebSocket-Protocol: token, KEY[, x-deepgram-session-id, UUID]`.

    Returns (scheme to echo, key). Items are read by position; extra pairs are ignored.
    """
    for index, item in enumerate(protocols[:-1]):
        if item.strip().lower() in SCHEMES:
            return item.strip().lower(), protocols[index + 1].strip()
    return None, None


def key_matches(key: str | None, digests: frozenset[str]) -> bool:
    if not key:
        return False
    digest = hashlib.sha256(key.encode()).hexdigest()
    return any(hmac.compare_digest(digest, known) for known in digests)
