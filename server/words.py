"""How a written word compares: the one rule shared by text shaping and the streaming parts.

Deepgram's `word` is a written token lower-cased without its surrounding punctuation; the
streaming transcript compares decoded words the same way (to recognise the echo of a final in
the next decode). It lives here, outside both, so that `streaming/` needs nothing from
`deepgram/`.
"""

from __future__ import annotations

import re

EDGE = "\"'“”‘’«»¿¡([{)]},;:!?.。，、！？：；…"
INITIALISM = re.compile(r"^(?:[^\W\d_]\.){2,}$")


def bare(text: str) -> str:
    """Deepgram's `word`: lower case, no surrounding punctuation (inner marks of a value stay,
    so "$5.50" stays "$5.50", never "550"; "i.e." stays "i.e.")."""
    text = text.strip()
    if INITIALISM.match(text):
        return text.lower()
    core = text.strip(EDGE)
    if core.endswith("'s") or not core.endswith(("'", "’")):
        return core.lower()
    return core.rstrip("'’").lower()
