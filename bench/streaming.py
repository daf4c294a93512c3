"""Streaming latency, measured the way Deepgram describes it, at 1 and N concurrent streams.

Each stream sends corpus speech (several English clips joined with 1 s pauses, so utterances
end) as 16 kHz linear16 in 100 ms chunks at real-time pace, with `interim_results=true`:

- interim cursor latency: wall time an interim Results arrives minus the wall time the audio up
  to that interim's end (`start + duration`) was sent;
- endpointing latency: wall time a `speech_final` Results arrives minus the wall time the audio
  at its last word's end was sent (stream time mapped to wall time through the send log);
  "decode p50" is the part after the endpoint's silence was heard (arrival minus the wall time
  of the final's window end), i.e. endpointing latency less the VAD hangover.

It prints p50/p90 of both for each concurrency level, and the largest N that keeps interim
p50 < 750 ms and endpointing p50 < 1 s. It starts its own server (tiny.en, as configured by
the environment) unless `--url` is given.

    .venv/bin/python bench/streaming.py [--levels 1,2,3,4,6] [--seconds 30] [--url http://...]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corpus  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.ws_helpers import pcm16, samples16k  # noqa: E402

CHUNK_S = 0.1
INTERIM_TARGET_S = 0.75
ENDPOINT_TARGET_S = 1.0


@dataclass
class Measured:
    interim: list[float] = field(default_factory=list)
    endpoint: list[float] = field(default_factory=list)
    after_vad: list[float] = field(default_factory=list)  # speech_final arrival - window end
    finals: int = 0


def program(seconds: float, offset: int) -> np.ndarray:
    """About `seconds` of speech: clean English clips (rotated per stream), 1 s apart."""
    clips = [c for c in corpus.english() if "clean" in c.tags]
    pause = np.zeros(16000, np.float32)
    parts: list[np.ndarray] = []
    total = 0.0
    index = offset
    while total < seconds:
        clip = clips[index % len(clips)]
        parts += [samples16k(clip.path), pause]
        total += clip.duration + 1
        index += 1
    return np.concatenate(parts)


async def one_stream(url: str, audio: np.ndarray) -> Measured:
    data = pcm16(audio)
    step = int(CHUNK_S * 32000)
    sent_end: list[float] = []  # stream seconds covered after each send
    sent_at: list[float] = []
    out = Measured()

    def wall_of(stream_s: float) -> float:
        index = min(bisect.bisect_left(sent_end, stream_s - 1e-6), len(sent_at) - 1)
        return sent_at[index]

    query = "encoding=linear16&sample_rate=16000&interim_results=true&punctuate=true"
    async with websockets.connect(f"{url}/v1/listen?{query}", max_size=None) as ws:

        async def send() -> None:
            started = time.perf_counter()
            for k, i in enumerate(range(0, len(data), step)):
                await ws.send(data[i : i + step])
                sent_at.append(time.perf_counter())
                sent_end.append(min(len(data), i + step) / 32000)
                delay = started + (k + 1) * CHUNK_S - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await ws.send(json.dumps({"type": "CloseStream"}))

        async def receive() -> None:
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") != "Results" or not sent_at:
                    continue
                words = message["channel"]["alternatives"][0]["words"]
                if not message["is_final"]:
                    end = message["start"] + message["duration"]
                    out.interim.append(now - wall_of(end))
                else:
                    out.finals += 1
                    if message["speech_final"] and words:
                        out.endpoint.append(now - wall_of(words[-1]["end"]))
                        end = message["start"] + message["duration"]
                        out.after_vad.append(now - wall_of(end))

        await asyncio.gather(send(), receive())
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def level(url: str, count: int, seconds: float) -> Measured:
    results = await asyncio.gather(
        *[one_stream(url, program(seconds, offset=i * 3)) for i in range(count)]
    )
    merged = Measured()
    for r in results:
        merged.interim += r.interim
        merged.endpoint += r.endpoint
        merged.after_vad += r.after_vad
        merged.finals += r.finals
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,3,4,6")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--url", help="an already running server (http://host:port)")
    args = parser.parse_args()
    if not corpus.clips():
        sys.exit(corpus.MISSING)
    server = None
    url = args.url
    if url is None:
        server = start_server(Path(tempfile.mkdtemp()))
        url = server.url
    ws_url = url.replace("http://", "ws://")
    rows = []
    try:
        for count in [int(x) for x in args.levels.split(",")]:
            m = asyncio.run(level(ws_url, count, args.seconds))
            ok = (
                pct(m.interim, 50) < INTERIM_TARGET_S * 1000
                and pct(m.endpoint, 50) < ENDPOINT_TARGET_S * 1000
            )
            rows.append((count, m, ok))
            print(
                f"N={count}: interim p50 {pct(m.interim, 50):.0f} ms, "
                f"endpoint p50 {pct(m.endpoint, 50):.0f} ms",
                file=sys.stderr,
            )
    finally:
        if server is not None:
            server.stop()
    print(
        f"\n{'streams':>7} | {'interim p50':>11} | {'interim p90':>11} | {'endpoint p50':>12} | "
        f"{'endpoint p90':>12} | {'decode p50':>10} | {'interims':>8} | {'endpoints':>9} | "
        "meets targets"
    )
    print("-" * 113)
    for count, m, ok in rows:
        print(
            f"{count:>7} | {pct(m.interim, 50):>8.0f} ms | {pct(m.interim, 90):>8.0f} ms | "
            f"{pct(m.endpoint, 50):>9.0f} ms | {pct(m.endpoint, 90):>9.0f} ms | "
            f"{pct(m.after_vad, 50):>7.0f} ms | {len(m.interim):>8} | {len(m.endpoint):>9} | "
            f"{'yes' if ok else 'no'}"
        )
    passing = [count for count, _, ok in rows if ok]
    best = max(passing) if passing else 0
    print(
        f"\nlargest N with interim p50 < {INTERIM_TARGET_S * 1000:.0f} ms and endpointing "
        f"p50 < {ENDPOINT_TARGET_S * 1000:.0f} ms: {best}"
    )


if __name__ == "__main__":
    main()
