"""One engine for every client, checked through live servers.

- Under load (8 REST requests and 4 streams at once) every transcript matches the same request
  run alone: batching across clients changes speed, never text, and nothing leaks between them.
- Overloaded (4x more clients than the queue holds) the server admits what it can, decodes all
  of it correctly, refuses the rest with 503 + Retry-After, and its memory stays bounded.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests import corpus
from tests.ws_helpers import RAW16, audio_frames, run_stream, samples16k

REST_CLIPS = [
    "en_multispeaker_picovoice_diarization_3spk.wav",
    "en_jfk_inaugural_1961.flac",
    "en_librispeech_1995-1837-0001.wav",
    "en_librivox_sense_and_sensibility_01-0870.wav",
    "en_librispeech_1272-128104-0000.wav",
    "en_librivox_sense_and_sensibility_01-0920.wav",
    "en_cheetah_test_en.wav",
    "en_cmuarctic_aew_a0002.wav",
]
STREAM_CLIPS = [
    "en_librivox_sense_and_sensibility_01-0890.wav",
    "en_librispeech_1089-134686-0001.wav",
    "en_cmuarctic_a0024.wav",
    "en_timit_LDC93S1.wav",
]
PACE = 0.025  # 100 ms of audio every 25 ms: 4x real time
WAVES, WARM_WAVES = 5, 3  # overload waves; the first ones reach the allocator's steady state


def clips(names: list[str]) -> list[corpus.Clip]:
    try:
        return [corpus.by_name(name) for name in names]
    except StopIteration:
        pytest.skip(corpus.MISSING)


def transcript(reply: httpx.Response) -> str:
    return reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"]


async def rest_one(client: httpx.AsyncClient, url: str, path: Path) -> str:
    reply = await client.post(f"{url}/v1/listen", content=path.read_bytes())
    assert reply.status_code == 200, reply.text
    return transcript(reply)


async def stream_one(ws_url: str, path: Path) -> str:
    frames = audio_frames(samples16k(path))
    result = await run_stream(f"{ws_url}/v1/listen?{RAW16}", frames, pace_s=PACE, timeout=300)
    assert result.close_code == 1000, (result.close_code, result.close_reason)
    return result.final_text()


def assert_matches_alone(
    refs: list[str], alone: list[str], loaded: list[str], what: str, names: list[str]
) -> None:
    alone_wer, loaded_wer = corpus.wer(refs, alone), corpus.wer(refs, loaded)
    print(f"\n{what}: WER alone {alone_wer:.2f}%  under load {loaded_wer:.2f}%")
    assert abs(loaded_wer - alone_wer) <= 0.5, (what, alone_wer, loaded_wer)
    # No cross-talk: each loaded transcript is nearest to its own request's solo transcript.
    for index, text in enumerate(loaded):
        distances = [corpus.wer([other], [text]) for other in alone]
        assert min(range(len(alone)), key=distances.__getitem__) == index, (names[index], text)


def test_concurrent_clients_match_alone(server) -> None:
    rest = clips(REST_CLIPS)
    streams = clips(STREAM_CLIPS)

    async def alone() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(timeout=300) as client:
            rest_out = [await rest_one(client, server.url, c.path) for c in rest]
        stream_out = [await stream_one(server.ws_url, c.path) for c in streams]
        return rest_out, stream_out

    async def together() -> tuple[list[str], list[str]]:
        async with httpx.AsyncClient(timeout=300) as client:
            results = await asyncio.gather(
                *[rest_one(client, server.url, c.path) for c in rest],
                *[stream_one(server.ws_url, c.path) for c in streams],
            )
        return list(results[: len(rest)]), list(results[len(rest) :])

    rest_alone, stream_alone = asyncio.run(alone())
    rest_loaded, stream_loaded = asyncio.run(together())
    assert_matches_alone(
        [c.reference for c in rest], rest_alone, rest_loaded, "REST x8", REST_CLIPS
    )
    assert_matches_alone(
        [c.reference for c in streams], stream_alone, stream_loaded, "streams x4", STREAM_CLIPS
    )


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


class RssSampler:
    """Samples a process's RSS every 20 ms in a thread; `peak()` since the last `reset()`."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self._peak = max(self._peak, rss_bytes(self._pid))

    def reset(self) -> None:
        self._peak = rss_bytes(self._pid)

    def peak(self) -> int:
        return max(self._peak, rss_bytes(self._pid))


def test_overload_admits_what_fits_and_refuses_the_rest(server_factory) -> None:
    """Capacity: 4 queued windows + a batch of 2 running; 24 one-window clients at once, 5 times.

    Memory must settle, not merely stay small: the allocator reaches its working set over the
    first waves (how fast depends on how the machine's speed overlaps the decodes: one fast
    machine peaked 569, 637, 626 MiB), so the high-water mark of the first three waves is the
    steady state, and a leak shows as the last two rising past it. Refused requests held
    anywhere would cost some 20 MiB a wave (24 bodies and their decoded audio): past the
    margin by the fifth wave. It settles because the server caps glibc's malloc arenas
    (`malloc_arenas`, server/memory.py): with glibc's default of 8 per core, freed memory
    scattered over many arenas crept up some 5 MiB a wave (589 -> 646 MiB over 14 waves),
    which failed this test on a clean-clone rehearsal."""
    (clip,) = clips(["en_librispeech_1995-1837-0001.wav"])
    srv = server_factory("--batch-size", "2", "--queue-max", "4", "--queue-max-wait-s", "4")
    body = clip.path.read_bytes()
    with httpx.Client(timeout=300) as client:
        expected = corpus.normalize(transcript(client.post(f"{srv.url}/v1/listen", content=body)))
    assert expected

    async def wave() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            return list(
                await asyncio.gather(
                    *[client.post(f"{srv.url}/v1/listen", content=body) for _ in range(24)]
                )
            )

    peaks: list[int] = []
    idle = rss_bytes(srv.process.pid)
    with RssSampler(srv.process.pid) as rss:
        for _ in range(WAVES):
            rss.reset()
            replies = asyncio.run(wave())
            peaks.append(rss.peak())
            admitted = [r for r in replies if r.status_code == 200]
            refused = [r for r in replies if r.status_code != 200]
            assert admitted and refused, [r.status_code for r in replies]
            for reply in admitted:  # admitted work is decoded, and decoded right
                assert corpus.normalize(transcript(reply)) == expected
            for reply in refused:
                assert reply.status_code in (429, 503), reply.text
                assert int(reply.headers["retry-after"]) >= 1
            time.sleep(1)
    mib = 1024 * 1024
    print(f"\nRSS idle {idle / mib:.0f} MiB, peaks per wave {[round(p / mib) for p in peaks]} MiB")
    assert max(peaks) - idle < 512 * mib  # bounded: refused requests are not held anywhere
    settled = max(peaks[:WARM_WAVES])
    assert max(peaks[WARM_WAVES:]) <= settled + 32 * mib, peaks  # and it does not keep growing


def test_malloc_arenas_are_capped_where_glibc_runs() -> None:
    """`malloc_arenas` reaches glibc (0 leaves glibc's default); elsewhere it is a no-op."""
    import platform

    from server.memory import limit_arenas

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc only")
    assert limit_arenas(2)
    assert not limit_arenas(0)
