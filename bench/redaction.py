"""What holding numbers back costs a stream with `redact`: final latency side by side.

Each call of tests/test_redact_live.py (a card with its expiry and CVV; an SSN and a phone
number; numbers read in groups with pauses, espeak-ng speech) is streamed twice at the same
time at real-time pace, once plain and once with `redact=pci&redact=ssn&redact=numbers`. For
every word of the plain stream's finals, its final latency is the arrival of the final that
covers the word's end minus the wall time the audio at that end was sent; the redacted stream
is measured at the same audio positions (its finals cover them, redacted or not). Rows: all
words, the number words alone (the ones a hold can delay), the rest.

    .venv/bin/python bench/redaction.py [--url http://127.0.0.1:8000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import start_server  # noqa: E402
from tests.test_redact_live import CALLS, NUMBER_WORDS, REDACT, call_audio  # noqa: E402
from tests.ws_helpers import RAW16, pcm16  # noqa: E402

CHUNK_S = 0.1
QUERY = f"{RAW16}&interim_results=true&punctuate=true"
NUMBER = re.compile(rf"^(?:{NUMBER_WORDS})$", re.I)

Final = tuple[float, float, list[tuple[str, float]]]  # (arrival since t0, audio end, words)


async def stream(url: str, audio: bytes) -> list[Final]:
    """Send at real-time pace; every final as (arrival - t0, start + duration, words)."""
    finals: list[Final] = []
    async with websockets.connect(url, max_size=None) as ws:
        t0 = time.monotonic()

        async def send() -> None:
            step = int(CHUNK_S * 32000)
            for n, i in enumerate(range(0, len(audio), step)):
                await asyncio.sleep(max(0.0, t0 + n * CHUNK_S - time.monotonic()))
                await ws.send(audio[i : i + step])
            await ws.send(json.dumps({"type": "CloseStream"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            message = json.loads(raw)
            if message.get("type") == "Results" and message["is_final"]:
                words = message["channel"]["alternatives"][0]["words"]
                finals.append(
                    (
                        time.monotonic() - t0,
                        message["start"] + message["duration"],
                        [(w["word"], w["end"]) for w in words],
                    )
                )
        await sender
    return finals


def covering(finals: list[Final], at: float) -> tuple[float, float]:
    """(arrival, audio end) of the first final whose audio reaches `at`."""
    return next((arrival, end) for arrival, end, _ in finals if end >= at - 1e-3)


def row(name: str, plain: list[float], held: list[float]) -> str:
    def stats(values: list[float]) -> str:
        if not values:
            return f"{'-':>7} {'-':>7} {'-':>7}"
        p90 = statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]
        return f"{statistics.median(values):7.2f} {p90:7.2f} {max(values):7.2f}"

    return f"{name:14} {len(plain):>5}  {stats(plain)}  {stats(held)}"


async def run(base: str) -> None:
    directory = Path(tempfile.mkdtemp())
    audio = {name: pcm16(call_audio(lines, directory)) for name, lines in CALLS.items()}
    url = f"{base.replace('http://', 'ws://')}/v1/listen?{QUERY}"
    jobs = [stream(url, a) for a in audio.values()]
    jobs += [stream(f"{url}&{REDACT}", a) for a in audio.values()]
    done = await asyncio.gather(*jobs)
    plain_runs, redact_runs = done[: len(audio)], done[len(audio) :]
    wall: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("all words", "number words", "other words")
    }
    audio_wait = {k: ([], []) for k in wall}
    for plain, redacted in zip(plain_runs, redact_runs, strict=True):
        for arrival, final_end, words in plain:
            for word, end in words:
                held_arrival, held_end = covering(redacted, end)
                kind = "number words" if NUMBER.match(word) else "other words"
                for key in ("all words", kind):
                    wall[key][0].append(arrival - end)
                    wall[key][1].append(held_arrival - end)
                    audio_wait[key][0].append(final_end - end)
                    audio_wait[key][1].append(held_end - end)
    for title, groups in (
        ("audio heard after a word before its final (s): the hold's own cost", audio_wait),
        ("final latency (s): arrival minus the wall time the word's end was sent", wall),
    ):
        print(f"\n{title}")
        print(f"{'':14} {'words':>5}  {'plain':^23}  {'with redact':^23}")
        columns = f"{'p50':>7} {'p90':>7} {'max':>7}"
        print(f"{'':14} {'':>5}  {columns}  {columns}")
        for name, (plain, held) in groups.items():
            print(row(name, plain, held))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running server (http://host:port)")
    args = parser.parse_args()
    server = None if args.url else start_server(Path(tempfile.mkdtemp()))
    try:
        asyncio.run(run(args.url or server.url))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
