"""Who submitted a window: the tenant (an API key's digest), for the scheduler's packing rule.

The request's middleware sets it once per HTTP request or WebSocket; every task the request
starts (a stream's decode loop, a REST transcription) inherits it through the context, so the
engine reads it without every caller passing it along. None means "no key" (auth off): one
tenant.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

CURRENT: ContextVar[str | None] = ContextVar("openlisten_owner", default=None)


def of_key(key: str | None) -> str | None:
    """A stable, non-secret name for the key (never the key itself: it may reach logs)."""
    if not key:
        return None
    return hashlib.sha256(key.encode()).hexdigest()[:16]
