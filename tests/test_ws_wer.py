"""Streaming accuracy: finals over the English corpus stay within 1.15x the REST WER.

Both sides run now, on the same files, through the same live server, so the bound compares the
streaming path (VAD endpointing, per-utterance windows, piecewise commits) with the batch path
rather than with a number written down once.
"""

from __future__ import annotations

import asyncio

import httpx

from tests import corpus
from tests.ws_helpers import CLOSE, chunks, run_stream

PACE = 0.025  # 100 ms chunks every 25 ms: 4x real time keeps the test short
CONCURRENCY = 2


def _rest(server, clips: list[corpus.Clip]) -> list[str]:
    out = []
    with httpx.Client(timeout=300) as client:
        for clip in clips:
            reply = client.post(f"{server.url}/v1/listen", content=clip.path.read_bytes())
            reply.raise_for_status()
            out.append(reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"])
    return out


async def _streams(server, clips: list[corpus.Clip]) -> list[str]:
    gate = asyncio.Semaphore(CONCURRENCY)
    url = f"{server.ws_url}/v1/listen"

    async def one(clip: corpus.Clip) -> str:
        # The very bytes REST gets, container and all (sniffed, no encoding given), in chunks
        # of 100 ms of audio each: both paths then see bit-identical samples.
        data = clip.path.read_bytes()
        size = max(512, int(len(data) / clip.duration * 0.1))
        async with gate:
            result = await run_stream(url, [*chunks(data, size), CLOSE], pace_s=PACE)
        assert result.close_code == 1000
        return result.final_text()

    return list(await asyncio.gather(*[one(c) for c in clips]))


def test_streaming_wer_within_115_percent_of_rest(server, english_clips):
    clips = english_clips
    refs = [c.reference for c in clips]
    rest = _rest(server, clips)
    streamed = asyncio.run(_streams(server, clips))
    rest_wer = corpus.wer(refs, rest)
    stream_wer = corpus.wer(refs, streamed)
    print(f"\nREST WER {rest_wer:.2f}%  streaming WER {stream_wer:.2f}%  ({len(clips)} clips)")
    for clip, a, b in zip(clips, rest, streamed, strict=True):
        if corpus.normalize(a) != corpus.normalize(b):
            print(f"  {clip.path.name}\n    rest:   {a}\n    stream: {b}")
    assert stream_wer <= 1.15 * rest_wer, (rest_wer, stream_wer)
