"""Live streaming at real-time pace: latency against this machine's floor, and live WER vs REST.

One run measures, side by side:

1. the floor t1: one 3-4 s utterance decoded directly by faster-whisper in this process, with
   every core, beam 5 and word timestamps (median of 5). Machines differ ~2x in speed, so the
   latencies are also given as multiples of t1;
2. for each concurrency N: N streams of conversational corpus speech (the two multi-speaker
   recordings, one after the other, rotated and started 0.7 s apart so streams don't move in
   lockstep; one stream sends both orders in turn) sent as 16 kHz linear16 in 100 ms chunks
   at real-time pace, with interim results:
   - interim cursor latency: arrival of an interim minus the wall time the audio up to its end
     (`start + duration`) was sent;
   - endpointing latency: arrival of a `speech_final` minus the wall time the audio at its last
     word's end was sent (`n`: how many speech_finals that p50 is over);
   - live WER: the finals of every stream against the references, next to REST WER: the same
     programs posted to `/v1/listen` on the same server (idle), scored the same way.

Targets (issue 8, 2-core CPU): N=1 endpointing p50 <= 0.3 s + 1.2 t1; N=4 endpointing p50 <=
0.3 s + 1.6 t1 and interim p50 <= 1.2 t1; live WER <= 1.1x REST at every N.

    .venv/bin/python bench/streaming.py [--levels 1,2,4,6] [--server-args "--pack off"]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corpus  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.ws_helpers import pcm16, samples16k  # noqa: E402

CHUNK_S = 0.1
STAGGER_S = 0.7
FLOOR_CLIP = "en_cmuarctic_a0024.wav"  # 3.96 s
CONVERSATIONS = [
    "en_multispeaker_pyannote_sample_telephone.wav",
    "en_multispeaker_picovoice_diarization_3spk.wav",
]
QUERY = "encoding=linear16&sample_rate=16000&interim_results=true&punctuate=true"


@dataclass
class Measured:
    interim: list[float] = field(default_factory=list)
    endpoint: list[float] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    unfinished: int = 0  # streams the server closed before transcribing all their audio


@dataclass(frozen=True)
class Program:
    audio: np.ndarray
    reference: str


def programs() -> list[Program]:
    """Both conversations one after the other (1 s apart), in each of the two orders."""
    clips = [corpus.by_name(name) for name in CONVERSATIONS]
    audio = [samples16k(c.path) for c in clips]
    pause = np.zeros(16000, np.float32)
    out = []
    for order in ([0, 1], [1, 0]):
        out.append(
            Program(
                np.concatenate([x for i in order for x in (audio[i], pause)]),
                " ".join(clips[i].reference for i in order),
            )
        )
    return out


class Floor:
    """faster-whisper decoding one short utterance with every core, in this process."""

    def __init__(self) -> None:
        from server.engine.catalog import Catalog
        from server.engine.fw import WhisperModel
        from server.settings import Settings

        settings = Settings()
        path = Catalog.load(settings.models_dir).materialize(settings.model)
        self.model = WhisperModel(
            path, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1
        )
        self.audio = samples16k(corpus.by_name(FLOOR_CLIP).path)
        self.measure(1)  # the first call pays for lazy allocations

    def measure(self, runs: int) -> float:
        """Median wall time of `runs` decodes (beam 5, word timestamps)."""
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            segments, _ = self.model.transcribe(
                self.audio, language="en", beam_size=5, word_timestamps=True
            )
            list(segments)
            times.append(time.perf_counter() - started)
        return statistics.median(times)


async def one_stream(url: str, program: Program, delay: float, params: str = "") -> Measured:
    await asyncio.sleep(delay)
    data = pcm16(program.audio)
    step = int(CHUNK_S * 32000)
    sent_end: list[float] = []  # stream seconds covered after each send
    sent_at: list[float] = []
    out = Measured()

    def wall_of(stream_s: float) -> float:
        index = min(bisect.bisect_left(sent_end, stream_s - 1e-6), len(sent_at) - 1)
        return sent_at[index]

    async with websockets.connect(f"{url}/v1/listen?{QUERY}{params}", max_size=None) as ws:

        async def send() -> None:
            started = time.perf_counter()
            for k, i in enumerate(range(0, len(data), step)):
                await ws.send(data[i : i + step])
                sent_at.append(time.perf_counter())
                sent_end.append(min(len(data), i + step) / 32000)
                pause = started + (k + 1) * CHUNK_S - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
            await ws.send(json.dumps({"type": "CloseStream"}))

        async def receive() -> None:
            try:
                await read()
            except websockets.ConnectionClosedError as exc:
                print(f"stream closed {exc.rcvd.code if exc.rcvd else '?'}", file=sys.stderr)
                out.unfinished += 1

        async def read() -> None:
            async for raw in ws:
                now = time.perf_counter()
                message = json.loads(raw)
                if message.get("type") != "Results" or not sent_at:
                    continue
                alternative = message["channel"]["alternatives"][0]
                if not message["is_final"]:
                    if alternative["words"]:
                        out.interim.append(now - wall_of(message["start"] + message["duration"]))
                    continue
                out.finals.append(alternative["transcript"])
                if message["speech_final"] and alternative["words"]:
                    out.endpoint.append(now - wall_of(alternative["words"][-1]["end"]))

        async def send_until_closed() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                await send()

        await asyncio.gather(send_until_closed(), receive())
    return out


async def level(
    url: str, count: int, progs: list[Program], params: str = ""
) -> tuple[Measured, float]:
    """`count` streams at once, in as many rounds as it takes to send every program (one
    stream sends both, one after the other: a p50 over one program's dozen endpoints is
    mostly noise); `params` is added to each one's query (`&diarize=true`)."""
    merged = Measured()
    refs: list[str] = []
    hyps: list[str] = []
    for chosen in rounds(count, progs):
        results = await asyncio.gather(
            *[one_stream(url, progs[p], i * STAGGER_S, params) for i, p in enumerate(chosen)]
        )
        for p, r in zip(chosen, results, strict=True):
            merged.interim += r.interim
            merged.endpoint += r.endpoint
            merged.unfinished += r.unfinished
            refs.append(progs[p].reference)
            hyps.append(" ".join(r.finals))
    return merged, corpus.wer(refs, hyps)


def rounds(count: int, progs: list[Program]) -> list[list[int]]:
    """Which program each of `count` streams sends, round by round."""
    needed = -(-len(progs) // count)
    return [[(r * count + i) % len(progs) for i in range(count)] for r in range(needed)]


def rest_transcripts(url: str, progs: list[Program]) -> list[str]:
    hyps = []
    for p in progs:
        response = httpx.post(
            f"{url}/v1/listen?encoding=linear16&sample_rate=16000&punctuate=true",
            content=pcm16(p.audio),
            headers={"Content-Type": "application/octet-stream"},
            timeout=300,
        )
        response.raise_for_status()
        hyps.append(response.json()["results"]["channels"][0]["alternatives"][0]["transcript"])
    return hyps


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,6")
    parser.add_argument("--url", help="an already running server (http://host:port)")
    parser.add_argument("--server-args", default="", help="flags for the server this starts")
    args = parser.parse_args()
    if not corpus.clips():
        sys.exit(corpus.MISSING)
    progs = programs()
    floor = Floor()
    t1 = floor.measure(5)
    print(f"floor t1 = {t1:.3f} s ({FLOOR_CLIP}, all {os.cpu_count()} cores)", file=sys.stderr)
    server = None
    url = args.url
    if url is None:
        server = start_server(Path(tempfile.mkdtemp()), *shlex.split(args.server_args))
        url = server.url
    rows = []
    try:
        rest_hyps = rest_transcripts(url, progs)
        for count in [int(x) for x in args.levels.split(",")]:
            # REST over the very programs this level streams.
            chosen = [p for one in rounds(count, progs) for p in one]
            rest = corpus.wer([progs[i].reference for i in chosen], [rest_hyps[i] for i in chosen])
            # The box's load drifts (shared cores): each level is judged against the floor
            # measured right before it.
            level_t1 = floor.measure(3)
            m, live = asyncio.run(level(url.replace("http://", "ws://"), count, progs))
            rows.append((count, m, live, rest, level_t1))
            print(
                f"N={count}: interim p50 {pct(m.interim, 50):.2f} s, endpoint p50 "
                f"{pct(m.endpoint, 50):.2f} s, live WER {live:.1f} % (REST {rest:.1f} %)",
                file=sys.stderr,
            )
    finally:
        if server is not None:
            server.stop()

    print(
        f"\nfloor t1 = {t1:.3f} s at the start (each row: t1 measured right before it); "
        f"server flags: {args.server_args or '(defaults)'}"
    )
    head = (
        "| N | t1 | interim p50 | interim p90 | endpoint p50 | endpoint p90 | n | live WER "
        "| REST WER | live/REST | unfinished | targets |"
    )
    print(head)
    print("|" + "---|" * 12)

    for count, m, live, rest, t1 in rows:

        def cell(values: list[float], q: float, t1: float = t1) -> str:
            v = pct(values, q)
            return f"{v:.2f} s ({v / t1:.2f} t1)"

        ratio = live / rest if rest else float("inf") if live else 1.0
        verdict = []
        if count == 1:
            verdict.append(f"endpoint {'ok' if pct(m.endpoint, 50) <= 0.3 + 1.2 * t1 else 'MISS'}")
        if count == 4:
            verdict.append(f"endpoint {'ok' if pct(m.endpoint, 50) <= 0.3 + 1.6 * t1 else 'MISS'}")
            verdict.append(f"interim {'ok' if pct(m.interim, 50) <= 1.2 * t1 else 'MISS'}")
        verdict.append(f"WER {'ok' if live <= 1.1 * rest + 1e-9 else 'MISS'}")
        print(
            f"| {count} | {t1:.2f} s | {cell(m.interim, 50)} | {cell(m.interim, 90)} | "
            f"{cell(m.endpoint, 50)} | {cell(m.endpoint, 90)} | {len(m.endpoint)} | "
            f"{live:.1f} % | {rest:.1f} % | {ratio:.2f} | "
            f"{m.unfinished} | {', '.join(verdict)} |"
        )
    print(
        "\ntargets: N=1 endpoint p50 <= 0.3 s + 1.2 t1; N=4 endpoint p50 <= 0.3 s + 1.6 t1, "
        "interim p50 <= 1.2 t1; live WER <= 1.1x REST"
    )


if __name__ == "__main__":
    main()
