"""Silero's drift on long noisy tracks: one recurrent state against the server's two readings.

Silero's state, carried through a whole track, drifts under steady noise and room echo: its
probabilities for clear speech sink until nothing counts as speech (snakers4/silero-vad#725).
`server.vad` reads every frame twice, with a state that reads the whole track and one cleared
every `FRESH_FRAMES`, and keeps the larger. This bench puts side by side, on the 48 assembled
conversations of `tests/conversations.py` (dev and held-out parts: one room, pink noise at
15-30 dB SNR, 10-70 s) and on noise alone:

- frames inside reference turns (0.1 s in from each end) at probability >= 0.5;
- frames 0.3 s or more from every turn at >= 0.5 (speech heard in the gaps);
- the share of reference speech inside the REST speech regions (faster-whisper's region
  finder, the server's options) and inside a stream's finals (the streaming endpointer);
- how many conversations lose or gain coverage;
- frames >= 0.5 on 120 s of pink and white noise at -40 and -26 dBFS (no speech at all);
- the time each reading takes, per audio second.

    .venv/bin/python bench/vad_drift.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from bench.diarize import from_conversation, rest_vad_options, stream_spans
from server.engine import fw
from server.vad import FRAME, SAMPLE_RATE, StreamingVad
from tests.conversations import conversation


def _probabilities(make: Callable[[], StreamingVad], audio: np.ndarray) -> np.ndarray:
    """As a stream reads it: 100 ms at a time."""
    reader = make()
    return np.concatenate([reader.feed(audio[at : at + 1600]) for at in range(0, len(audio), 1600)])


def _regions(make: Callable[[], StreamingVad], audio: np.ndarray) -> list[tuple[float, float]]:
    """The REST path's speech regions, the region finder reading `make`'s probabilities."""
    fw.score_vad_with(lambda track: make().feed(track))
    found = fw.get_speech_timestamps(audio, rest_vad_options())
    return [(r["start"] / SAMPLE_RATE, r["end"] / SAMPLE_RATE) for r in found]


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spectrum = (rng.normal(size=len(freqs)) + 1j * rng.normal(size=len(freqs))) / np.sqrt(freqs)
    noise = np.fft.irfft(spectrum, n)
    return (noise / noise.std()).astype(np.float32)


def _covered(turns: list[tuple[float, float, str]], spans: list[tuple[float, float]]) -> float:
    """Share of the reference speech (10 ms steps) inside `spans`."""
    end = max(b for _, b, _ in turns) + 1
    ref = np.zeros(int(end * 100), bool)
    got = np.zeros_like(ref)
    for a, b, _ in turns:
        ref[int(a * 100) : int(b * 100)] = True
    for a, b in spans:
        got[int(a * 100) : int(b * 100)] = True
    return float((ref & got).sum() / max(ref.sum(), 1))


def main() -> None:
    readings: dict[str, Callable[[], StreamingVad]] = {
        "one state (before)": lambda: StreamingVad(fresh_frames=None),
        "two readings (server)": StreamingVad,
    }
    items = [from_conversation(conversation(p, i)) for p in ("dev", "held") for i in range(24)]
    rng = np.random.default_rng(1)
    noises = {
        "pink -40": _pink(SAMPLE_RATE * 120, rng) * 0.01,
        "pink -26": _pink(SAMPLE_RATE * 120, rng) * 0.05,
        "white -40": rng.normal(size=SAMPLE_RATE * 120).astype(np.float32) * 0.01,
        "white -26": rng.normal(size=SAMPLE_RATE * 120).astype(np.float32) * 0.05,
    }
    rows: dict[str, dict[str, object]] = {}
    per_item: dict[str, list[tuple[float, float]]] = {}
    for name, make in readings.items():
        inside = [0, 0]
        gaps = [0, 0]
        seconds = 0.0
        audio_s = 0.0
        coverage = []
        for item in items:
            t0 = time.process_time()
            above = _probabilities(make, item.audio) >= 0.5
            seconds += time.process_time() - t0
            audio_s += item.duration
            mid = (np.arange(len(above)) + 0.5) * FRAME / SAMPLE_RATE
            core = np.zeros(len(mid), bool)
            near = np.zeros(len(mid), bool)
            for a, b, _ in item.turns:
                core |= (mid > a + 0.1) & (mid < b - 0.1)
                near |= (mid > a - 0.3) & (mid < b + 0.3)
            inside[0] += int((above & core).sum())
            inside[1] += int(core.sum())
            gaps[0] += int((above & ~near).sum())
            gaps[1] += int((~near).sum())
            rest = _covered(item.turns, _regions(make, item.audio))
            spans = stream_spans(item.audio, make())
            live = _covered(item.turns, [(b / SAMPLE_RATE, e / SAMPLE_RATE) for b, e, _ in spans])
            coverage.append((rest, live))
        per_item[name] = coverage
        rows[name] = {
            "inside": inside[0] / inside[1],
            "gaps": gaps[0] / max(gaps[1], 1),
            "rest": float(np.mean([c[0] for c in coverage])),
            "rest_min": min(c[0] for c in coverage),
            "live": float(np.mean([c[1] for c in coverage])),
            "live_min": min(c[1] for c in coverage),
            "noise": {k: float(np.mean(_probabilities(make, x) >= 0.5)) for k, x in noises.items()},
            "cost": seconds / audio_s,
        }
    before, after = per_item.values()
    print(f"{len(items)} conversations, {sum(i.duration for i in items):.0f} s\n")
    print(
        "| reading | speech frames >= 0.5 | gap frames >= 0.5 | REST regions cover (worst) "
        "| stream finals cover (worst) | noise frames >= 0.5 | CPU s per audio s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        noise = max(row["noise"].values())  # type: ignore[union-attr]
        print(
            f"| {name} | {row['inside']:.1%} | {row['gaps']:.2%} | {row['rest']:.1%} "
            f"({row['rest_min']:.0%}) | {row['live']:.1%} ({row['live_min']:.0%}) "
            f"| {noise:.2%} | {row['cost']:.4f} |"
        )
    for k, label in ((0, "REST"), (1, "stream")):
        worse = sum(was[k] - now[k] > 0.005 for now, was in zip(after, before, strict=True))
        better = sum(now[k] - was[k] > 0.005 for now, was in zip(after, before, strict=True))
        print(f"\n{label}: coverage up on {better} conversations, down on {worse}", end="")
    print()


if __name__ == "__main__":
    main()
