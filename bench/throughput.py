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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    server: Server, bodies: list[tuple[bytes, float]], count: int, each: int
) -> tuple[float, float]:
    """(audio s per wall s, server CPU s per audio s): the second shrugs off other load."""
    audio = sum(bodies[(i * each + k) % len(bodies)][1] for i in range(count) for k in range(each))
    before = cpu_seconds(server.process.pid)
    rate = asyncio.run(clients(server.url, bodies, count, each))
    return rate, (cpu_seconds(server.process.pid) - before) / audio


def peer_long_file(model_name: str, path: Path, threads: int) -> float:
    """faster-whisper's own `WhisperModel.transcribe` on the long file, as peers serve a
    request (VAD on, word timestamps, beam 5, all cores): audio s per wall s."""
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    from server.engine.catalog import Catalog
    from server.settings import Settings

    settings = Settings(model=model_name)
    global _PEER
    if _PEER is None:
        source = Catalog.load(settings.models_dir).materialize(model_name)
        _PEER = WhisperModel(source, device="cpu", compute_type="int8", cpu_threads=threads)
    started = time.perf_counter()
    audio = decode_audio(str(path))
    segments, _ = _PEER.transcribe(audio, **corpus.direct_options(settings))
    list(segments)
    return (len(audio) / 16000) / (time.perf_counter() - started)


_PEER = None


def cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


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
    parser.add_argument("--skip-peer", action="store_true", help="no faster-whisper baseline")
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
    rows: list[tuple[str, list[tuple[float, float]], list[tuple[float, float]]]] = []
    peer: list[float] = []
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
            if not args.skip_peer:
                peer.append(peer_long_file(args.model, long_clip.path, cores))
        rows.append((f"long file {long_clip.duration:.0f} s", b_runs, s_runs))
        print(f"  {rows[-1][0]}: batched {b_runs} sequential {s_runs} peer {peer}", flush=True)
    finally:
        batched.stop()
        sequential.stop()

    print()
    print(f"model {args.model}, {cores} CPU cores, median (min–max) of {args.runs} runs")
    print(f"batched:    {' '.join(batched_flags)}")
    print(f"sequential: {' '.join(sequential_flags)}")
    print("speed = audio s per wall s; CPU ratio = sequential server CPU s / batched, per audio s")
    header = ["workload", "batched speed", "sequential speed", "speed ratio", "CPU ratio"]
    print(f"{header[0]:<18}" + "".join(f"{h:>22}" for h in header[1:]))
    for name, b_runs, s_runs in rows:
        ratios = [b[0] / s[0] for b, s in zip(b_runs, s_runs, strict=True)]
        cpu = [s[1] / b[1] for b, s in zip(b_runs, s_runs, strict=True)]
        cells = [cell([b[0] for b in b_runs]), cell([s[0] for s in s_runs]), cell(ratios)]
        print(f"{name:<18}" + "".join(f"{c:>22}" for c in [*cells, cell(cpu)]))
    if peer:
        long_b = [b[0] for b in rows[-1][1]]
        print(
            f"long file vs faster-whisper WhisperModel.transcribe in-process (peer baseline): "
            f"{cell(peer).strip()} audio s/s, ratio "
            f"{cell([b / p for b, p in zip(long_b, peer, strict=True)]).strip()}"
        )

    if not args.skip_admission:
        predicted, actual = admission_check(batched_flags, burst=16)
        print(
            f"\nadmission estimate: a burst of 16 windows predicted to drain in {predicted:.1f} s,"
            f" drained in {actual:.1f} s (ratio {predicted / actual:.2f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
