"""Window packing against one window at a time: speed and WER on short corpus utterances.

The utterances are the corpus's short English clips plus the 32 sentences of the long LJ file
(cut at their `.segments.tsv` times), each cut to its speech the way the server cuts a stream
final or a REST window (offline VAD, speech regions joined). Each configuration decodes all of
them through the engine's own code (`decode_batch`, `packing.decode`) in one process, with a
model of the given thread count, and reports wall time, WER against the references, and how
many packs the guards refused. "alone" decodes one window per call (a lone worker's cost);
"k per window, g s gaps" packs k consecutive utterances per window, g seconds of silence apart.
Alone and packed run chunk by chunk in turn, so other load on the machine hits both alike.

    .venv/bin/python bench/packing.py [--threads 1] [--configs 2x1.0,4x1.0] [--beam 5]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.engine import packing  # noqa: E402
from server.engine.catalog import Catalog  # noqa: E402
from server.engine.fw import VadOptions, WhisperModel, decode_audio  # noqa: E402
from server.engine.models import ModelPool  # noqa: E402
from server.engine.whisper import DecodeOptions, decode_batch, warm_up  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.vad import plan_speech  # noqa: E402
from tests import corpus  # noqa: E402

LONG = "en_ljspeech_LJ001-0001_to_0032_long.wav"


def utterances() -> list[tuple[np.ndarray, str]]:
    out = []
    for clip in corpus.english():
        if clip.duration and clip.duration <= 12 and "multispeaker" not in clip.tags:
            out.append((decode_audio(str(clip.path)), clip.reference))
    long = decode_audio(str(corpus.CORPUS / LONG))
    with (corpus.CORPUS / LONG.replace(".wav", ".segments.tsv")).open() as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            a, b = int(float(row["start_s"]) * 16000), int(float(row["end_s"]) * 16000)
            out.append((long[a:b], row["text"]))
    vad = VadOptions(threshold=0.5, min_silence_duration_ms=500, speech_pad_ms=200)
    cut = []
    for audio, text in out:
        plan = plan_speech(audio, vad)
        if len(plan.windows) == 1:
            cut.append((plan.windows[0].audio, text))
    return cut


def load(threads: int) -> WhisperModel:
    settings = Settings(cpu_threads=threads, workers=1)
    pool = ModelPool(settings, Catalog.load(settings.models_dir))
    model = pool.load(settings.model).model
    warm_up(model)
    return model


def text_of(segments) -> str:
    return "".join(w.text for s in segments for w in s.words)


def run(model, windows, refs, options, k: int, gap: float) -> dict[str, float]:
    """Alone and packed, chunk by chunk in turn, so load from other processes hits both alike."""
    alone_s = packed_s = 0.0
    alone: list[str] = []
    packed: list[str] = []
    refused = 0
    for i in range(0, len(windows), k):
        chunk = windows[i : i + k]
        started = time.perf_counter()
        alone += [text_of(decode_batch(model, [w], options)[0]) for w in chunk]
        middle = time.perf_counter()
        groups = packing.plan([len(w) / 16000 for w in chunk], gap, 30.0)
        results, n = packing.decode(model, chunk, groups, options, gap)
        packed_s += time.perf_counter() - middle
        alone_s += middle - started
        refused += n
        packed += [text_of(r) for r in results]
    return {
        "alone_s": alone_s,
        "packed_s": packed_s,
        "alone_wer": corpus.wer(refs, alone),
        "packed_wer": corpus.wer(refs, packed),
        "refused": refused,
        "packs": -(-len(windows) // k),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--configs", default="2x1.0,4x1.0,4x1.5")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--timestamps", action="store_true", help="decode with timestamp tokens")
    args = parser.parse_args()
    if not corpus.clips():
        sys.exit(corpus.MISSING)
    items = utterances()
    windows = [a for a, _ in items]
    refs = [t for _, t in items]
    model = load(args.threads)
    options = DecodeOptions(beam_size=args.beam, without_timestamps=not args.timestamps)
    speech = sum(len(w) for w in windows) / 16000
    print(
        f"{len(windows)} utterances, {speech:.0f} s of speech, {args.threads} thread(s), "
        f"beam {args.beam}, timestamps {'on' if args.timestamps else 'off'}"
    )
    print("| packing | alone s | packed s | speed-up | WER alone | WER packed | refused packs |")
    print("|---|---|---|---|---|---|---|")
    for config in args.configs.split(","):
        k, gap = config.split("x")
        r = run(model, windows, refs, options, int(k), float(gap))
        print(
            f"| {k} per window, {gap} s gaps | {r['alone_s']:.1f} | {r['packed_s']:.1f} | "
            f"{r['alone_s'] / r['packed_s']:.2f}x | {r['alone_wer']:.2f} % | "
            f"{r['packed_wer']:.2f} % | {r['refused']} of {r['packs']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
