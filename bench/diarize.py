"""Diarization benchmark: DER on the corpus telephone call, speaker counts, CPU cost.

No speaker count is given to the diarizer. Prints, for the default embedder and settings:
- DER (pyannote.metrics, 0.25 s collar) of the two-party telephone sample against its RTTM;
- the speaker count found on the three-speaker file (3 expected) and on single-speaker files
  (1 expected), with the share of speech given to the main speaker;
- CPU seconds per audio second of diarization (VAD excluded: the server has already run it),
  beside the same figure for transcribing the file through the engine, measured in this run.

    .venv/bin/pip install 'pyannote.metrics>=3.2'   # the scorer; not a server dependency
    .venv/bin/python bench/diarize.py [--threshold 0.7] [--sweep 0.6,0.65,0.7,0.75]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from faster_whisper.vad import VadOptions  # noqa: E402

from server.audio.decode import decode  # noqa: E402
from server.diarize.embedder import load_embedder  # noqa: E402
from server.diarize.pipeline import DiarizeOptions, diarize  # noqa: E402
from server.diarize.regions import speech_regions  # noqa: E402
from server.settings import Settings  # noqa: E402
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
    settings = Settings()
    options = VadOptions(
        threshold=settings.vad_threshold,
        min_silence_duration_ms=settings.vad_min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms,
        max_speech_duration_s=settings.chunk_max_s,
    )
    return audio, speech_regions(audio, options)


def der(result, rttm: Path) -> float:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference = Annotation()
    for line in rttm.read_text().splitlines():
        parts = line.split()
        start, length = float(parts[3]), float(parts[4])
        reference[Segment(start, start + length)] = parts[7]
    hypothesis = Annotation()
    for turn in result.turns:
        hypothesis[Segment(turn.start, turn.end)] = turn.speaker
    metric = DiarizationErrorRate(collar=0.25)
    return float(metric(reference, hypothesis, uem=Segment(0, 30.0)))


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
    args = parser.parse_args()
    embedder = load_embedder(None, args.threads)
    files = {name: load(name) for name in [f"{TELEPHONE}.wav", THREE, *SINGLE]}
    thresholds = [float(t) for t in args.sweep.split(",")] if args.sweep else [args.threshold]

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
            f"{threshold:>9.3f} {der(tel, (corpus.CORPUS / f'{TELEPHONE}.rttm')):>8.1%} "
            f"{tel.speakers:>7} {results[THREE].speakers:>5} {singles} {cpu / audio_s:>13.4f}"
        )


if __name__ == "__main__":
    main()
