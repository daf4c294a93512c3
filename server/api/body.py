"""Request bodies that are not audio: small JSON objects, parsed within fixed bounds.

Python's `json` recurses once per nesting level, so a 200 KB body of `[[[[…` raises
RecursionError (a 500) or worse; the depth is checked by a flat scan before parsing.
"""

from __future__ import annotations

import json
from typing import Any

from server.errors import InvalidJson

MAX_DEPTH = 32


def nesting_depth(raw: bytes) -> int:
    """Deepest `[`/`{` nesting outside strings, found without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


def json_object(raw: bytes, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """A JSON object from a request body, or InvalidJson (never RecursionError, never a 500)."""
    if nesting_depth(raw) > max_depth:
        raise InvalidJson(f"Invalid JSON: nested deeper than {max_depth} levels")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, RecursionError) as exc:
        raise InvalidJson("Invalid JSON submitted.") from exc
    if not isinstance(body, dict):
        raise InvalidJson("Invalid JSON: expected an object")
    return body
