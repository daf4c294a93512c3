"""Throughput: the batched scheduler vs sequential per-request decoding, through live servers.

Two servers run the same model, compute type, beam size and VAD windows:

- batched: the scheduler's defaults (or the flags given), batching windows across requests;
- sequential: `--batch-size 1 --workers 1 --cpu-threads <all cores>`: every window decoded on
  its own, one after another, with every core on it: what a server that runs one
  `transcribe` per request at a time does.

For 1, 2, 4, 8 and 16 concurrent REST clients (each sends `--per-client` corpus clips one after
another), it prints audio seconds transcribed per wall second for both and their ratio; then
the same for the long 222 s file sent alone. Runs alternate batched/sequential so load from
other processes hits both alike; each cell is the median of `--runs`, with the min–max spread.
Last, an in-process check of the admission estimate: predicted vs measured drain time of a
burst of windows. Targets (2 CPU cores, tiny.en): ≥ 1.5x at 8 clients, ≥ 1.8x on the long file.

    .venv/bin/python bench/throughput.py [--runs 3] [--per-client 2] [--levels 1,2,4,8,16]
        [--batched-args "--batch-size 8 --workers 1"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import corpus  # noqa: E402
from tests.conftest import Server, start_server  # noqa: E402

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"


async def clients(url: str, bodies: list[tuple[bytes, float]], count: int, each: int) -> float:
    """`count` clients, each posting `each` bodies back to back; returns audio s per wall s."""
    async with httpx.AsyncClient(timeout=1800, limits=httpx.Limits(max_connections=64)) as http:

        async def one(index: int) -> float:
            seconds = 0.0
            for k in range(each):
                body, duration = bodies[(index * each + k) % len(bodies)]
                reply = await http.post(f"{url}/v1/listen", content=body)
                reply.raise_for_status()
                seconds += duration
            return seconds

        started = time.perf_counter()
        audio = sum(await asyncio.gather(*[one(i) for i in range(count)]))
        return audio / (time.perf_counter() - started)


def measure(server: Server, bodies: list[tuple[bytes, float]], count: int, each: int) -> float:
    return asyncio.run(clients(server.url, bodies, count, each))


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):7.2f} ({min(values):.2f}–{max(values):.2f})"


def admission_check(flags: list[str], burst: int) -> tuple[float, float]:
    """Predicted vs measured time to drain a burst of real 30 s windows, in-process."""
    import numpy as np
    from faster_whisper.audio import decode_audio
    from faster_whisper.vad import VadOptions

    from server import cli
    from server.engine import DecodeOptions, Engine, Priority
    from server.settings import Settings
    from server.vad import plan_speech

    parsed = vars(cli.build_parser().parse_args(["serve", *flags]))
    overrides = {k: v for k, v in parsed.items() if k in cli._SETTING_FLAGS and v is not None}
    engine = Engine(Settings(**overrides))
    engine.load()
    try:
        audio = decode_audio(str(corpus.CORPUS / LONG))
        plan = plan_speech(audio, VadOptions(min_silence_duration_ms=500, speech_pad_ms=200))
        windows: list[np.ndarray] = [w.audio for w in plan.windows]
        options = DecodeOptions(beam_size=engine.settings.beam_size)
        for future in engine.scheduler.submit("tiny.en", windows, options, Priority.BULK):
            future.result()  # warm the per-window cost estimate on real work
        work = [windows[i % len(windows)] for i in range(burst)]
        started = time.perf_counter()
        futures = engine.scheduler.submit("tiny.en", work, options, Priority.BULK, admit=False)
        predicted = engine.scheduler.expected_wait_s(0, "tiny.en")
        for future in futures:
            future.result()
        return predicted, time.perf_counter() - started
    finally:
        engine.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-client", type=int, default=2)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--batched-args", default="", help="extra flags for the batched server")
    parser.add_argument("--skip-admission", action="store_true")
    args = parser.parse_args()
    if not corpus.clips():
        print(corpus.MISSING)
        return 1
    cores = os.cpu_count() or 1
    levels = [int(x) for x in args.levels.split(",")]
    common = ["--model", args.model]
    batched_flags = [*common, *shlex.split(args.batched_args)]
    sequential_flags = [
        *common,
        *["--batch-size", "1", "--workers", "1", "--cpu-threads", str(cores)],
    ]
    clips = [c for c in corpus.english() if c.duration >= 2.5]
    bodies = [(c.path.read_bytes(), c.duration) for c in clips]
    long_clip = corpus.by_name(LONG)
    long_body = [(long_clip.path.read_bytes(), long_clip.duration)]

    tmp = Path(tempfile.mkdtemp(prefix="throughput-"))
    batched = start_server(tmp, *batched_flags)
    sequential = start_server(tmp, *sequential_flags)
    rows: list[tuple[str, list[float], list[float]]] = []
    try:
        for server in (batched, sequential):  # warm both: first requests pay lazy allocations
            measure(server, bodies, 2, 1)
        for count in levels:
            b_runs, s_runs = [], []
            for _ in range(args.runs):
                b_runs.append(measure(batched, bodies, count, args.per_client))
                s_runs.append(measure(sequential, bodies, count, args.per_client))
            rows.append((f"{count} client{'s' if count > 1 else ''}", b_runs, s_runs))
            print(f"  {rows[-1][0]}: batched {b_runs} sequential {s_runs}", flush=True)
        b_runs, s_runs = [], []
        for _ in range(args.runs):
            b_runs.append(measure(batched, long_body, 1, 1))
            s_runs.append(measure(sequential, long_body, 1, 1))
        rows.append((f"long file {long_clip.duration:.0f} s", b_runs, s_runs))
        print(f"  {rows[-1][0]}: batched {b_runs} sequential {s_runs}", flush=True)
    finally:
        batched.stop()
        sequential.stop()

    print()
    print(f"model {args.model}, {cores} CPU cores, median (min–max) of {args.runs} runs")
    print(f"batched:    {' '.join(batched_flags)}")
    print(f"sequential: {' '.join(sequential_flags)}")
    print(f"{'workload':<18} {'batched audio s/s':>24} {'sequential audio s/s':>24} {'ratio':>18}")
    for name, b_runs, s_runs in rows:
        ratios = [b / s for b, s in zip(b_runs, s_runs, strict=True)]
        print(f"{name:<18} {cell(b_runs):>24} {cell(s_runs):>24} {cell(ratios):>18}")

    if not args.skip_admission:
        predicted, actual = admission_check(batched_flags, burst=16)
        print(
            f"\nadmission estimate: a burst of 16 windows predicted to drain in {predicted:.1f} s,"
            f" drained in {actual:.1f} s (ratio {predicted / actual:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
