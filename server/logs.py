"""Structured logs: one JSON object per line, with whatever `extra=` fields a call site adds.

Each HTTP exchange or WebSocket gets a log context (a dict in a context variable) opened by the
request middleware. Any log line written while serving it carries its `request_id`, and deeper
code (the transcription service) can `annotate()` facts such as the model and the audio
duration so that the one access line per request says what the request cost. API keys and
transcript text are never put in log fields; as a safety net, configured plain keys are masked
in every rendered line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}
_context: ContextVar[dict[str, Any] | None] = ContextVar("openlisten_log_context", default=None)
REDACTED = "[redacted]"


def open_context(**fields: Any) -> dict[str, Any]:
    """Start the log context of one request; the returned dict is shared with child tasks."""
    context = dict(fields)
    _context.set(context)
    return context


def annotate(**fields: Any) -> None:
    """Add fields to the current request's access log line (no-op outside a request)."""
    context = _context.get()
    if context is not None:
        context.update({k: v for k, v in fields.items() if v is not None})


def current() -> dict[str, Any]:
    return dict(_context.get() or {})


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line; masks configured secrets wherever they appear."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = _secret_patterns(secrets)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = (_context.get() or {}).get("request_id")
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(entry, default=str))

    def redact(self, line: str) -> str:
        # uvicorn logs WebSocket paths with their query string (`?token=...` for some clients).
        line = _QUERY.sub(r"\g<path>?" + REDACTED, line)
        for pattern in self._secrets:
            line = pattern.sub(REDACTED, line)
        return line


# A path followed by a query string, wherever it appears in a rendered line.
_QUERY = re.compile(r"(?P<path>/[^\s\"'?\\]*)\?[^\s\"'\\]+")


def _secret_patterns(secrets: Iterable[str]) -> list[re.Pattern[str]]:
    """One pattern per secret, longest first (a key containing another is masked whole). Short
    keys are masked too, but only as whole tokens, so a key "ab" does not eat every "ab" inside
    other words; each is also matched as it reads escaped inside a JSON string."""
    patterns = []
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        forms = {secret, json.dumps(secret)[1:-1]}
        body = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        if len(secret) < 8:
            body = rf"(?<![A-Za-z0-9_\-])(?:{body})(?![A-Za-z0-9_\-])"
        patterns.append(re.compile(body))
    return patterns


class TextFormatter(JsonFormatter):
    """Human-readable lines for a terminal; same masking."""

    def format(self, record: logging.LogRecord) -> str:
        line = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record)
        return self.redact(line)


def configure(level: str = "info", fmt: str = "json", secrets: Iterable[str] = ()) -> None:
    """Route every logger (uvicorn's included) through one stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        # Our middleware writes the access line (with request_id); uvicorn's would duplicate it.
        logging.getLogger(name).propagate = name != "uvicorn.access"
    logging.getLogger("faster_whisper").setLevel(logging.WARNING)
    # httpx logs every outbound request with its full URL (a url= source or callback may carry
    # a token in its query string): only its warnings.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
