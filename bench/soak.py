"""Soak: the server's memory and file descriptors over 1,000 requests stay flat.

A server is started; after a warm-up (`--warmup` requests, so models, arenas and caches reach
their working size) its RSS and open descriptors are the baseline. Then `--requests` requests
run, `--clients` at a time: mostly REST transcriptions of short corpus clips, every 10th an
undecodable body (the error path), every 25th a short stream (the WebSocket path). RSS and
descriptors are sampled every 100 requests. Pass: RSS within ±10 % of the baseline at every
sample, descriptors within ±2, every transcription 200 and every bad body 400.

    flock /tmp/openlisten-heavy.lock .venv/bin/python bench/soak.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corpus  # noqa: E402
from tests.conftest import start_server  # noqa: E402
from tests.ws_helpers import RAW16, chunks, pcm16, samples16k  # noqa: E402

CLIPS = [
    "en_timit_LDC93S1.wav",
    "en_cmuarctic_a0010.wav",
    "en_cmuarctic_a0024.wav",
    "en_harvard_speechbrain_spk1_snt1.wav",
]
STREAM_CLIP = "en_cmuarctic_a0010.wav"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def one(index: int, url: str, bodies: list[bytes], frames: list[bytes]) -> str | None:
    """Run request `index`; None when it went as expected, else what went wrong."""
    if index % 25 == 24:
        async with websockets.connect(f"{url.replace('http', 'ws', 1)}/v1/listen?{RAW16}") as ws:
            for frame in frames:
                await ws.send(frame)
                await asyncio.sleep(0.025)  # 4x real time
            await ws.send(json.dumps({"type": "CloseStream"}))
            async for _ in ws:
                pass
            return None if ws.close_code == 1000 else f"stream closed {ws.close_code}"
    async with httpx.AsyncClient(timeout=300) as client:
        if index % 10 == 9:
            reply = await client.post(f"{url}/v1/listen", content=b"not audio" * 200)
            return None if reply.status_code == 400 else f"bad body: {reply.status_code}"
        reply = await client.post(f"{url}/v1/listen", content=bodies[index % len(bodies)])
        return None if reply.status_code == 200 else f"rest: {reply.status_code}"


async def run(url: str, start: int, count: int, clients: int, bodies, frames) -> list[str]:
    problems: list[str] = []
    queue = iter(range(start, start + count))

    async def worker() -> None:
        for index in queue:
            problem = await one(index, url, bodies, frames)
            if problem:
                problems.append(problem)

    await asyncio.gather(*(worker() for _ in range(clients)))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--every", type=int, default=100, help="sample after this many")
    args = parser.parse_args()

    bodies = [corpus.by_name(name).path.read_bytes() for name in CLIPS]
    frames = chunks(pcm16(samples16k(corpus.by_name(STREAM_CLIP).path)), 3200)
    server = start_server(
        Path(tempfile.mkdtemp(prefix="openlisten-soak-")),
        env={"OPENLISTEN_LOG_LEVEL": "warning"},
    )
    pid = server.process.pid
    try:
        started = time.monotonic()
        problems = asyncio.run(run(server.url, 0, args.warmup, args.clients, bodies, frames))
        base_rss, base_fds = rss_mb(pid), fds(pid)
        print(f"after {args.warmup} warm-up requests: RSS {base_rss:.0f} MB, {base_fds} fds\n")
        print("| requests | RSS MB | vs baseline | fds | elapsed s |")
        print("|---|---|---|---|---|")
        worst_rss = worst_fds = 0.0
        done = 0
        while done < args.requests:
            step = min(args.every, args.requests - done)
            start = args.warmup + done
            problems += asyncio.run(run(server.url, start, step, args.clients, bodies, frames))
            done += step
            rss, open_fds = rss_mb(pid), fds(pid)
            change = (rss - base_rss) / base_rss
            worst_rss = max(worst_rss, abs(change))
            worst_fds = max(worst_fds, abs(open_fds - base_fds))
            print(
                f"| {done} | {rss:.0f} | {change:+.1%} | {open_fds} | "
                f"{time.monotonic() - started:.0f} |",
                flush=True,
            )
    finally:
        server.stop()
    ok = worst_rss <= 0.10 and worst_fds <= 2 and not problems
    print(
        f"\nworst RSS change {worst_rss:.1%} (limit 10 %), worst fd change {worst_fds:.0f} "
        f"(limit 2), unexpected answers: {len(problems)} {problems[:5]}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
