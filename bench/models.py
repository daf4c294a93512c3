"""Model tiers: what each served model and compute type costs and buys on this machine.

For every model (`tiny.en`, `base`, or an operator's CTranslate2 directory as `name=dir`) and
every compute type that makes sense on the device (CPU: int8, int8_float32, float32; GPU:
float16, int8_float16), one live server serving only that model, measured side by side:

- load: seconds from starting `openlisten serve` to /readyz, and the server's resident memory
  (peak over the run; GPU: the server's GPU memory too);
- REST: WER on the corpus's English clips (Whisper's English normaliser) and, for multilingual
  models, on the other languages (`language=` given: WER for de/fr/it/pt/ru after Whisper's
  basic normaliser, CER for zh/ja/ko); real-time factor (wall / audio) one request at a time
  and with 4 requests in flight;
- live at 1x: one stream of a conversation (two corpus recordings) sent at real-time pace:
  live WER and endpoint p50, the latter also as a multiple of t1, this model's own time to
  decode one 4 s utterance in-process (beam 5, word timestamps, every core), measured right
  before the row.

Each model decodes the same audio with the same settings, so rows compare; the machine may be
shared (figures drift with its load), which is why latency is also given in units of t1.

    .venv/bin/python bench/models.py [--models tiny.en,base,mine=/srv/ct2-dir]
        [--compute-types int8,float32] [--device cpu|cuda] [--quick] [--out docs-table.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.streaming import FLOOR_CLIP, Program, level, pct  # noqa: E402
from tests import corpus  # noqa: E402
from tests.conftest import Server, start_server  # noqa: E402
from tests.ws_helpers import samples16k  # noqa: E402

CPU_TYPES = ["int8", "int8_float32", "float32"]
GPU_TYPES = ["float16", "int8_float16"]
CJK = {"zh", "ja", "ko"}
LIVE_CLIPS = [
    "en_multispeaker_picovoice_diarization_3spk.wav",
    "en_multispeaker_pyannote_sample_telephone.wav",
]
QUICK_CLIPS = 3


@dataclass
class Row:
    model: str
    compute_type: str
    load_s: float
    rss_mb: float
    gpu_mb: float | None
    t1: float
    en_wer: float
    other_wer: float | None
    cjk_cer: float | None
    rtf1: float
    rtf4: float
    live_wer: float
    endpoint_p50: float
    endpoints: int


def device_of(requested: str) -> str:
    if requested != "auto":
        return requested
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def served_name(spec: str) -> str:
    from server.engine.catalog import split_operator_spec

    return split_operator_spec(spec)[0]


def model_path(spec: str) -> str:
    from server.engine.catalog import Catalog
    from server.settings import Settings

    catalog = Catalog.for_settings(Settings())
    return catalog.materialize(catalog.add_operator_model(spec))


def floor_t1(path: str, device: str, compute_type: str, runs: int = 3) -> float:
    """This model's own time for one short utterance, in this process, every core."""
    from server.engine.fw import WhisperModel

    model = WhisperModel(
        path, device=device, compute_type=compute_type, cpu_threads=os.cpu_count() or 1
    )
    audio = samples16k(corpus.by_name(FLOOR_CLIP).path)
    times = []
    for _ in range(runs + 1):  # the first pays for lazy allocations
        started = time.perf_counter()
        segments, _ = model.transcribe(audio, language="en", beam_size=5, word_timestamps=True)
        list(segments)
        times.append(time.perf_counter() - started)
    del model
    return statistics.median(times[1:])


def memory_mb(pid: int, field: str = "VmHWM") -> float:
    """The process's resident memory (VmHWM: its peak) from /proc, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def gpu_memory_mb(pid: int) -> float | None:
    """GPU memory the process holds (nvidia-smi), None without an NVIDIA GPU."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            return float(parts[1])
    return None


async def post_all(
    url: str, clips: list[corpus.Clip], concurrency: int, params: Callable[[corpus.Clip], dict]
) -> tuple[list[str], float]:
    """Every clip posted with `concurrency` requests in flight: transcripts in order, wall s."""
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:

        async def one(clip: corpus.Clip) -> str:
            async with gate:
                reply = await client.post(
                    f"{url}/v1/listen", params=params(clip), content=clip.path.read_bytes()
                )
            reply.raise_for_status()
            return reply.json()["results"]["channels"][0]["alternatives"][0]["transcript"]

        started = time.perf_counter()
        texts = await asyncio.gather(*[one(c) for c in clips])
        return list(texts), time.perf_counter() - started


def other_language_scores(references: list[corpus.Clip], texts: list[str]) -> tuple[float, float]:
    """WER over the space-delimited languages, CER over zh/ja/ko (basic normaliser)."""
    import jiwer
    from whisper_normalizer.basic import BasicTextNormalizer

    norm = BasicTextNormalizer()
    pairs = [
        (c.language, norm(c.reference), norm(t)) for c, t in zip(references, texts, strict=True)
    ]
    words = [(r, h or "<empty>") for lang, r, h in pairs if lang not in CJK]
    chars = [(r.replace(" ", ""), h.replace(" ", "") or "?") for lang, r, h in pairs if lang in CJK]
    wer = 100 * jiwer.wer([r for r, _ in words], [h for _, h in words]) if words else float("nan")
    cer = 100 * jiwer.cer([r for r, _ in chars], [h for _, h in chars]) if chars else float("nan")
    return wer, cer


def live_program(quick: bool) -> Program:
    """The two conversations one after the other (quick: the first 12 s of one)."""
    clips = [corpus.by_name(n) for n in LIVE_CLIPS]
    if quick:
        clip = corpus.by_name("en_librispeech_1995-1837-0001.wav")
        return Program(samples16k(clip.path), clip.reference)
    pause = np.zeros(16000, np.float32)
    audio = np.concatenate([x for c in clips for x in (samples16k(c.path), pause)])
    return Program(audio, " ".join(c.reference for c in clips))


def measure(spec: str, compute_type: str, device: str, quick: bool, tmp: Path) -> Row:
    name = served_name(spec)
    english = corpus.english()
    others = [c for c in corpus.clips() if c.language != "en"]
    if quick:
        english, others = english[:QUICK_CLIPS], []
    t1 = floor_t1(model_path(spec), device, compute_type)
    started = time.perf_counter()
    # Speed, not admission, is measured: a slow type on a busy box must not be refused.
    server: Server = start_server(
        tmp,
        "--model",
        spec,
        "--compute-type",
        compute_type,
        "--device",
        device,
        env={"OPENLISTEN_QUEUE_MAX_WAIT_S": "3600"},
    )
    load_s = time.perf_counter() - started
    try:
        url = server.url
        multilingual = bool(
            next(m for m in httpx.get(f"{url}/v1/models").json()["models"] if m["name"] == name)[
                "languages"
            ]
            != ["en"]
        )
        en_params = {"model": name, "language": "en"} if multilingual else {"model": name}
        audio_s = sum(c.duration for c in english)
        texts, wall1 = asyncio.run(post_all(url, english, 1, lambda c: en_params))
        en_wer = corpus.wer([c.reference for c in english], texts)
        _, wall4 = asyncio.run(post_all(url, english, 4, lambda c: en_params))
        other_wer = cjk_cer = None
        if multilingual and others:
            other_texts, _ = asyncio.run(
                post_all(url, others, 1, lambda c: {"model": name, "language": c.language})
            )
            other_wer, cjk_cer = other_language_scores(others, other_texts)
        program = live_program(quick)
        live, live_wer = asyncio.run(level(server.ws_url, 1, [program], f"&model={name}"))
        return Row(
            model=name,
            compute_type=compute_type,
            load_s=load_s,
            rss_mb=memory_mb(server.process.pid),
            gpu_mb=gpu_memory_mb(server.process.pid) if device == "cuda" else None,
            t1=t1,
            en_wer=en_wer,
            other_wer=other_wer,
            cjk_cer=cjk_cer,
            rtf1=wall1 / audio_s,
            rtf4=wall4 / audio_s,
            live_wer=live_wer,
            endpoint_p50=pct(live.endpoint, 50),
            endpoints=len(live.endpoint),
        )
    finally:
        server.stop()


def table(rows: list[Row], device: str) -> str:
    def num(value: float | None, fmt: str = "{:.1f}", unit: str = "") -> str:
        return "—" if value is None or value != value else fmt.format(value) + unit

    memory = "GPU MiB" if device == "cuda" else "peak RSS MiB"
    lines = [
        f"| model | compute | load s | {memory} | t1 s | EN WER % | other WER % | CJK CER % "
        "| RTF 1 | RTF 4 | live WER % | endpoint p50 (t1) |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        mem = r.gpu_mb if device == "cuda" else r.rss_mb
        lines.append(
            f"| {r.model} | {r.compute_type} | {r.load_s:.1f} | {num(mem, '{:.0f}')} | "
            f"{r.t1:.2f} | {r.en_wer:.1f} | {num(r.other_wer)} | {num(r.cjk_cer)} | "
            f"{r.rtf1:.3f} | {r.rtf4:.3f} | {r.live_wer:.1f} | "
            f"{r.endpoint_p50:.2f} s ({r.endpoint_p50 / r.t1:.1f} t1, n={r.endpoints}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny.en,base", help="names or name=dir, commas")
    parser.add_argument("--compute-types", help="default: every type that fits the device")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny.en, one type, 3 clips")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args(argv)
    if not corpus.clips():
        sys.exit(corpus.MISSING)
    device = device_of(args.device)
    types = (args.compute_types or ",".join(GPU_TYPES if device == "cuda" else CPU_TYPES)).split(
        ","
    )
    specs = args.models.split(",")
    if args.quick:
        specs, types = specs[:1], types[:1]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            for compute_type in types:
                row = measure(spec, compute_type, device, args.quick, Path(tmp))
                rows.append(row)
                print(table([row], device).splitlines()[-1], file=sys.stderr, flush=True)
    text = (
        f"{table(rows, device)}\n\n{device}, {os.cpu_count()} cores; RTF = wall / audio "
        "(lower is faster); t1 = this model's decode of one 4 s utterance with every core."
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
