"""How the process's C heap is shared between threads (glibc only).

glibc gives a thread that finds the heap busy an arena of its own, up to eight per core. This
server runs decode workers, onnxruntime's threads, the event loop and its executor at once, so
under load a request's buffers are freed into whichever arenas their threads happened to use,
and memory freed in one arena is not reused by another: the resident set creeps up wave after
wave of overload though nothing is held. Measured on a 2-core machine with
tests/test_load.py's overload scenario (24 clients a wave, 14 waves): peaks crept from 589 to
646 MiB with glibc's default, and stayed within 541-549 MiB from the third wave on with two
arenas. Decode buffers themselves live in CTranslate2's and onnxruntime's own allocators, so
fewer arenas cost little contention: bench/rest.py's API / direct faster-whisper ratio read
0.967 capped and 0.946 with glibc's default (median of 3 paired runs each, one machine), run
to run noise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def limit_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` (0: leave glibc's default). Call before the
    server starts its threads. False where it does not apply (not glibc) or glibc refused."""
    if count <= 0 or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = mallopt(M_ARENA_MAX, count) == 1
    if not applied:
        log.warning("malloc arenas not capped", extra={"arenas": count})
    return applied
