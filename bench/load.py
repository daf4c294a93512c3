"""Load test: REST clients and live streams at 2x and 4x the server's capacity.

A server is started with a known capacity: `--streams` stream slots and an inference queue
of `--queue` windows (each REST request here is one short clip, one window), so capacity is
`--queue` REST requests plus `--streams` streams in flight. At each level, N x that many
clients run in a closed loop for `--seconds`: REST clients post a corpus clip, stream clients
stream one at real-time pace. Every attempt ends in exactly one of:

- served: 200 (REST) or a stream that closed 1000 after its finals, with the transcript's WER
  against the reference under `--max-wer`;
- refused: 503 or 429 with a `Retry-After` header (the client waits that long, capped at 2 s,
  and tries again);
- lost: anything else (a 5xx without Retry-After, a reset, a timeout, a wrong transcript, a
  stream closed abnormally). Lost must be 0.

    flock /tmp/openlisten-heavy.lock .venv/bin/python bench/load.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corpus  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.ws_helpers import RAW16, chunks, pcm16, samples16k  # noqa: E402

REST_CLIPS = [
    "en_timit_LDC93S1.wav",
    "en_cmuarctic_a0010.wav",
    "en_harvard_speechbrain_spk1_snt1.wav",
    "en_librispeech_1995-1837-0001.wav",
]
STREAM_CLIPS = ["en_cmuarctic_a0024.wav", "en_timit_LDC93S1.wav", "en_cmuarctic_a0010.wav"]
CHUNK_S = 0.1


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def served(self, seconds: float) -> None:
        self.outcomes["served"] += 1
        self.latencies.append(seconds)

    def refused(self) -> None:
        self.outcomes["refused"] += 1

    def lose(self, why: str) -> None:
        self.outcomes["lost"] += 1
        self.lost.append(why)


def retry_after(headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


async def rest_client(url: str, clips, until: float, tally: Tally, max_wer: float) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        index = 0
        while time.monotonic() < until:
            clip, data = clips[index % len(clips)]
            index += 1
            started = time.monotonic()
            try:
                reply = await client.post(f"{url}/v1/listen", content=data)
            except httpx.HTTPError as exc:
                tally.lose(f"rest {type(exc).__name__}")
                continue
            wait = retry_after(reply.headers)
            if reply.status_code in (429, 503) and wait is not None and wait >= 1:
                tally.refused()
                await asyncio.sleep(min(wait, 2.0))
                continue
            if reply.status_code != 200:
                tally.lose(f"rest {reply.status_code} {reply.text[:120]}")
                continue
            text = reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"]
            error = corpus.wer([clip.reference], [text])
            if error > max_wer:
                tally.lose(f"rest WER {error:.0f}% on {clip.path.name}: {text!r}")
                continue
            tally.served(time.monotonic() - started)


async def stream_once(ws_url: str, frames: list[bytes]) -> tuple[int | None, str, str]:
    texts: list[str] = []
    async with websockets.connect(f"{ws_url}/v1/listen?{RAW16}", open_timeout=60) as ws:

        async def send() -> None:
            loop = asyncio.get_running_loop()
            due = loop.time()
            for frame in frames:
                await asyncio.sleep(max(0.0, due - loop.time()))
                due += CHUNK_S
                await ws.send(frame)
            await ws.send(json.dumps({"type": "CloseStream"}))

        sender = asyncio.create_task(send())
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "Results" and message.get("is_final"):
                    texts.append(message["channel"]["alternatives"][0]["transcript"])
        except websockets.ConnectionClosed:
            pass
        sender.cancel()
        return ws.close_code, ws.close_reason or "", " ".join(t for t in texts if t)


async def stream_client(ws_url: str, clips, until: float, tally: Tally, max_wer: float) -> None:
    index = 0
    while time.monotonic() < until:
        clip, frames = clips[index % len(clips)]
        index += 1
        started = time.monotonic()
        try:
            code, reason, text = await asyncio.wait_for(stream_once(ws_url, frames), 300)
        except websockets.InvalidStatus as exc:
            wait = retry_after(exc.response.headers)
            if exc.response.status_code in (429, 503) and wait is not None and wait >= 1:
                tally.refused()
                await asyncio.sleep(min(wait, 2.0))
            else:
                tally.lose(f"stream handshake {exc.response.status_code}")
            continue
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            tally.lose(f"stream {type(exc).__name__}")
            continue
        if code != 1000:
            tally.lose(f"stream closed {code} {reason}")
            continue
        error = corpus.wer([clip.reference], [text])
        if error > max_wer:
            tally.lose(f"stream WER {error:.0f}% on {clip.path.name}: {text!r}")
            continue
        tally.served(time.monotonic() - started)


async def level(url: str, factor: int, args, rest_clips, stream_clips) -> dict[str, Tally]:
    until = time.monotonic() + args.seconds
    tallies = {"rest": Tally(), "stream": Tally()}
    ws_url = url.replace("http://", "ws://")
    await asyncio.gather(
        *[
            rest_client(url, rest_clips[i:] + rest_clips[:i], until, tallies["rest"], args.max_wer)
            for i in range(factor * args.queue)
        ],
        *[
            stream_client(ws_url, stream_clips[i % 3 :] + stream_clips[: i % 3], until,
                          tallies["stream"], args.max_wer)
            for i in range(factor * args.streams)
        ],
    )  # fmt: skip
    return tallies


def row(name: str, kind: str, clients: int, tally: Tally) -> str:
    lat = sorted(tally.latencies)
    p50 = statistics.median(lat) if lat else float("nan")
    p95 = lat[int(0.95 * (len(lat) - 1))] if lat else float("nan")
    o = tally.outcomes
    return (
        f"| {name} | {kind} | {clients} | {o['served']} | {o['refused']} | {o['lost']} "
        f"| {p50:.2f} | {p95:.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="length of each level")
    parser.add_argument("--streams", type=int, default=4, help="stream slots (capacity)")
    parser.add_argument("--queue", type=int, default=8, help="queued windows (REST capacity)")
    parser.add_argument("--levels", default="2,4", help="multiples of capacity to offer")
    parser.add_argument("--max-wer", type=float, default=35.0)
    args = parser.parse_args()

    rest_clips = [(corpus.by_name(n), corpus.by_name(n).path.read_bytes()) for n in REST_CLIPS]
    stream_clips = [
        (corpus.by_name(n), chunks(pcm16(samples16k(corpus.by_name(n).path)), int(CHUNK_S * 32000)))
        for n in STREAM_CLIPS
    ]  # fmt: skip
    env = {
        "OPENLISTEN_WS_MAX_STREAMS": str(args.streams),
        "OPENLISTEN_QUEUE_MAX": str(args.queue),
        "OPENLISTEN_LOG_LEVEL": "warning",
    }
    server = start_server(Path(tempfile.mkdtemp(prefix="openlisten-load-")), env=env)
    print(
        f"capacity: {args.queue} REST requests (queue_max windows) + {args.streams} streams; "
        f"{args.seconds:g} s per level; served = 200/1000 with WER <= {args.max_wer:g} %\n"
    )
    print("| level | kind | clients | served | refused (Retry-After) | lost | p50 s | p95 s |")
    print("|---|---|---|---|---|---|---|---|")
    lost = 0
    try:
        for factor in (int(f) for f in args.levels.split(",")):
            tallies = asyncio.run(level(server.url, factor, args, rest_clips, stream_clips))
            for kind, clients in (("rest", args.queue), ("stream", args.streams)):
                print(row(f"{factor}x", kind, factor * clients, tallies[kind]), flush=True)
                lost += tallies[kind].outcomes["lost"]
                for why in tallies[kind].lost[:5]:
                    print(f"    lost: {why}")
        alive = server.process.poll() is None
    finally:
        server.stop()
    print(f"\nlost in total: {lost}; server alive at the end: {alive}; log: {server.log}")
    return 0 if lost == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
