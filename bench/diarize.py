"""Diarization benchmark: DER on the corpus telephone call, speaker counts, CPU cost, the same
as a live stream would see it, and what `diarize=true` adds to a stream's latency.

No speaker count is given to the diarizer. Prints, for the default embedder and settings:
- DER (pyannote.metrics, 0.25 s collar) of the two-party telephone sample against its RTTM;
- the speaker count found on the three-speaker file (3 expected) and on single-speaker files
  (1 expected), with the share of speech given to the main speaker;
- CPU seconds per audio second of diarization (VAD excluded: the server has already run it);
- a robustness table, file (REST) and live (each final's speech in stream order through the
  streaming endpointer, as a stream at any pace cuts it) side by side, on files the method
  was not tuned on too: the stereo two-speaker extra mixed to mono, the 222 s LJ file, and
  synthetic calls alternating clips of two different corpus speakers;
- with `--stream` (instead of the above): endpointing latency of live streams at 1x with and
  without `diarize=true`, alternated on one server in one run (bench/streaming.py's measure).

    .venv/bin/pip install 'pyannote.metrics>=3.2'   # the scorer; not a server dependency
    .venv/bin/python bench/diarize.py [--threshold 0.7] [--sweep 0.6,0.65,0.7,0.75] [--stream]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from faster_whisper.vad import VadOptions  # noqa: E402

from server.audio.decode import decode  # noqa: E402
from server.diarize import Diarizer  # noqa: E402
from server.diarize.embedder import load_embedder  # noqa: E402
from server.diarize.pipeline import Diarization, DiarizeOptions, diarize  # noqa: E402
from server.diarize.regions import speech_regions  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.streaming.endpointer import Closed, Cut, Endpointer, EndpointerConfig  # noqa: E402
from server.streaming.speakers import MIN_SPEAKER_AUDIO  # noqa: E402
from server.vad import StreamingVad  # noqa: E402
from tests import corpus  # noqa: E402

TELEPHONE = "en_multispeaker_pyannote_sample_telephone"
THREE = "en_multispeaker_picovoice_diarization_3spk.wav"
SINGLE = [
    "en_jfk_inaugural_1961.flac",
    "en_librispeech_1995-1837-0001.wav",
    "en_cheetah_test_en.wav",
    "en_ljspeech_LJ001-0001_to_0032_long.wav",
]


def load(name: str):
    """A corpus file and its speech regions as the server finds them (its VAD settings)."""
    audio = decode((corpus.CORPUS / name).read_bytes(), None).mono()
    return audio, load_regions(audio)


Turns = list[tuple[float, float, str]]


def rttm_turns(rttm: Path) -> Turns:
    turns = []
    for line in rttm.read_text().splitlines():
        parts = line.split()
        start, length = float(parts[3]), float(parts[4])
        turns.append((start, start + length, parts[7]))
    return turns


def der(result, reference_turns: Turns, duration: float) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = Annotation()
    for start, end, speaker in reference_turns:
        reference[Segment(start, end)] = speaker
    hypothesis = Annotation()
    for turn in result.turns:
        hypothesis[Segment(turn.start, turn.end)] = turn.speaker
    metric = DiarizationErrorRate(collar=0.25)
    return float(metric(reference, hypothesis, uem=Segment(0, duration)))


def main_share(result) -> float:
    spoken: dict[int, float] = {}
    for turn in result.turns:
        spoken[turn.speaker] = spoken.get(turn.speaker, 0.0) + turn.end - turn.start
    return max(spoken.values()) / sum(spoken.values()) if spoken else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=DiarizeOptions().threshold)
    parser.add_argument("--sweep", help="comma-separated thresholds to compare")
    parser.add_argument("--turn-threshold", type=float, default=DiarizeOptions().turn_threshold)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stream", action="store_true", help="also measure live latency")
    args = parser.parse_args()
    if args.stream:
        stream_latency()
        return
    embedder = load_embedder(None, args.threads)
    files = {name: load(name) for name in [f"{TELEPHONE}.wav", THREE, *SINGLE]}
    thresholds = [float(t) for t in args.sweep.split(",")] if args.sweep else [args.threshold]
    tel_turns = rttm_turns(corpus.CORPUS / f"{TELEPHONE}.rttm")

    print(
        f"{'threshold':>9} {'DER tel':>8} {'tel spk':>7} {'3spk':>5} "
        + " ".join(f"{n.split('_')[1][:10]:>14}" for n in SINGLE)
        + f" {'cpu s/audio s':>13}"
    )
    for threshold in thresholds:
        options = DiarizeOptions(threshold=threshold, turn_threshold=args.turn_threshold)
        cpu = audio_s = 0.0
        results = {}
        for name, (audio, regions) in files.items():
            started = time.process_time()
            results[name] = diarize(audio, regions, embedder, options)
            cpu += time.process_time() - started
            audio_s += len(audio) / 16000
        tel = results[f"{TELEPHONE}.wav"]
        singles = " ".join(
            f"{results[n].speakers:>3} ({main_share(results[n]):.0%})".rjust(14) for n in SINGLE
        )
        print(
            f"{threshold:>9.3f} {der(tel, tel_turns, 30.0):>8.1%} "
            f"{tel.speakers:>7} {results[THREE].speakers:>5} {singles} {cpu / audio_s:>13.4f}"
        )

    robustness(embedder, DiarizeOptions(threshold=args.threshold))


# --- robustness: file and live, on files the thresholds were not tuned on ----------------------


def cases() -> list[tuple[str, np.ndarray, Turns, int]]:
    """(name, 16 kHz audio, reference turns, true speaker count)."""
    out = []
    audio, _ = load(f"{TELEPHONE}.wav")
    out.append(("telephone", audio, rttm_turns(corpus.CORPUS / f"{TELEPHONE}.rttm"), 2))
    audio, _ = load(THREE)  # metadata.tsv: speaker 1 0-4 s, 2 6-11 s, 3 12.8-19.3 s
    out.append(("3-speaker", audio, [(0, 4, "1"), (6, 11, "2"), (12.8, 19.3, "3")], 3))
    stereo = decode((corpus.CORPUS / "extras/en_stereo_2spk_per_channel.wav").read_bytes()).samples
    turns = [(a, b, f"ch{c}") for c in range(2) for a, b in speech_regions(stereo[c].copy())]
    out.append(("stereo mixed", stereo.mean(axis=0).astype(np.float32), turns, 2))
    for name in (SINGLE[0], SINGLE[3]):
        audio, regions = load(name)
        out.append((name.split("_")[1], audio, [(a, b, "x") for a, b in regions], 1))
    voices = {
        "librivox": [f"en_librivox_sense_and_sensibility_01-0{n}.wav" for n in (870, 890, 920)],
        "arctic-aew": [f"en_cmuarctic_aew_a000{n}.wav" for n in (1, 2, 3)],
        "harvard1": [f"en_harvard_speechbrain_spk1_snt{n}.wav" for n in (1, 3, 4, 5)],
        "harvard2": [f"en_harvard_speechbrain_spk2_snt{n}.wav" for n in (2, 4)],
    }
    for a, b in (("librivox", "arctic-aew"), ("harvard1", "harvard2"), ("librivox", "harvard1")):
        out.append((f"{a}/{b} x4", *alternation(voices[a], voices[b], 4), 2))
    return out


def alternation(first: list[str], second: list[str], rounds: int) -> tuple[np.ndarray, Turns]:
    """A synthetic call: clips of two speakers taking turns, 0.6 s apart."""
    gap = np.zeros(int(0.6 * 16000), np.float32)
    parts, turns, at = [], [], 0.0
    for i in range(rounds):
        for label, pool in (("A", first), ("B", second)):
            clip = load(pool[i % len(pool)])[0]
            parts += [clip, gap]
            turns.append((at, at + len(clip) / 16000, label))
            at += (len(clip) + len(gap)) / 16000
    return np.concatenate(parts).astype(np.float32), turns


def live(audio: np.ndarray, diarizer: Diarizer):
    """What a stream's finals would say: speech cut as the streaming endpointer cuts it (the
    default endpointing), each final's speech labelled in order, as `Channel` does."""
    settings = Settings()
    endpointer = Endpointer(
        EndpointerConfig(
            threshold=settings.vad_threshold,
            endpoint_ms=settings.ws_min_endpointing_ms,
            speech_final=True,
            max_utterance_s=settings.ws_max_utterance_s,
        )
    )
    vad = StreamingVad()
    spans = []
    for i in range(0, len(audio), 1600):
        events = endpointer.push(vad.feed(audio[i : i + 1600]))
        spans += [e.span for e in events if isinstance(e, Closed | Cut)]
    spans.append(endpointer.flush(len(audio)))
    speakers = diarizer.online()
    found = []
    for span in spans:
        if span.speech_start is None:
            continue
        end = min(span.decode_end, span.end)
        begin = max(0, min(span.speech_start, end - MIN_SPEAKER_AUDIO))
        result = diarizer.run_online(speakers, audio[begin:end]).shifted(begin / 16000)
        found += [t for t in result.turns if t.end > span.start / 16000]
    return Diarization(found)


def robustness(embedder, options: DiarizeOptions) -> None:
    diarizer = Diarizer(None, options, threads=1)
    diarizer._embedder = embedder
    print(f"\n{'file':>22} {'true':>4} | {'file DER':>8} {'spk':>3} | {'live DER':>8} {'spk':>3}")
    for name, audio, turns, true in cases():
        duration = len(audio) / 16000
        offline = diarize(audio, load_regions(audio), embedder, options)
        online = live(audio, diarizer)
        print(
            f"{name:>22} {true:>4} | {der(offline, turns, duration):>8.1%} "
            f"{offline.speakers:>3} | {der(online, turns, duration):>8.1%} {online.speakers:>3}"
        )


def load_regions(audio: np.ndarray) -> list[tuple[float, float]]:
    settings = Settings()
    return speech_regions(
        audio,
        VadOptions(
            threshold=settings.vad_threshold,
            min_silence_duration_ms=settings.vad_min_silence_ms,
            speech_pad_ms=settings.vad_speech_pad_ms,
            max_speech_duration_s=settings.chunk_max_s,
        ),
    )


# --- live latency with and without diarize=true -----------------------------------------------


def stream_latency(rounds: int = 2) -> None:
    """Endpointing latency (bench/streaming.py's measure and programs) of 1 and 2 streams at
    1x, with and without `diarize=true`, alternated on one server so load drifts hit both."""
    import asyncio
    import tempfile

    from bench.streaming import level, pct, programs
    from tests.conftest import start_server

    progs = programs()
    server = start_server(Path(tempfile.mkdtemp()))
    ws = server.url.replace("http://", "ws://")
    rows: dict[tuple[int, str], list[float]] = {}
    try:
        for _ in range(rounds):
            for count in (1, 2):
                for label, params in (("off", ""), ("diarize", "&diarize=true")):
                    measured, _ = asyncio.run(level(ws, count, progs, params))
                    rows.setdefault((count, label), []).extend(measured.endpoint)
    finally:
        server.stop()
    print(f"\n{'streams':>7} {'diarize':>8} | {'endpoint p50':>12} {'p90':>7} | {'endpoints':>9}")
    for (count, label), values in sorted(rows.items()):
        print(
            f"{count:>7} {label:>8} | {pct(values, 50):>10.2f} s {pct(values, 90):>5.2f} s | "
            f"{len(values):>9}"
        )


if __name__ == "__main__":
    main()
