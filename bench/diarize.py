"""Diarization benchmark on a set it cannot be tuned to: a development part (where thresholds
are chosen) and a held-out part (only scored), REST and live streams side by side.

The set (`tests/conversations.py`) is assembled at run time from the corpus's voices, split by
voice: conversations of 2-4 speakers, turns of 0.5-15 s, gaps from 0.6 s down to none and some
overlap, same- and cross-gender pairs, wideband and 8 kHz telephone, with level, bandwidth,
room and noise shared by all speakers. The held-out part also holds the corpus's two real
multi-speaker recordings (the telephone call with its RTTM, the three-speaker file).

No speaker count is given. For each part, REST (the server's VAD regions, then the diarizer on
the whole file) and stream (each final's speech as the streaming endpointer cuts it, in stream
order, through the online clustering: what a stream at 1x gets, since cuts depend on the audio
alone) report:
- DER (pyannote.metrics, 0.25 s collar, overlap scored), pooled over the part;
- the speaker count: right on how many conversations, and on the 2-speaker ones of 15-60 s;
- words on the right speaker: each word Whisper finds (tiny.en, word timings) against the
  reference speaker at its middle (words in overlap are skipped), under the best one-to-one
  map of found speakers to reference ones, with a 95 % interval over conversations drawn
  again with replacement (how far the figure could move on as many other conversations);
then the held-out part by condition, the real recordings, and every single-speaker file of the
corpus (the share of its words on its main speaker; 95 % or more is one speaker).

    pip install -e '.[bench]'     # pyannote.metrics: the scorer
    .venv/bin/python bench/diarize.py [--quick] [--part dev|held|both] [--no-stream]
    .venv/bin/python bench/diarize.py --latency   # live endpointing with/without diarize=true

Word timings are cached under ~/.cache/openlisten/bench-words (keyed by the audio's hash).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from faster_whisper.vad import VadOptions  # noqa: E402

from server.audio.decode import decode  # noqa: E402
from server.diarize import Diarizer  # noqa: E402
from server.diarize.pipeline import Diarization, DiarizeOptions  # noqa: E402
from server.diarize.regions import speech_regions  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.streaming.endpointer import Closed, Cut, Endpointer, EndpointerConfig  # noqa: E402
from server.streaming.speakers import MIN_SPEAKER_AUDIO  # noqa: E402
from server.vad import StreamingVad  # noqa: E402
from tests import corpus  # noqa: E402
from tests.conversations import Conversation, conversation  # noqa: E402

TELEPHONE = "en_multispeaker_pyannote_sample_telephone"
THREE = "en_multispeaker_picovoice_diarization_3spk.wav"
CACHE = Path.home() / ".cache" / "openlisten" / "bench-words"

Turns = list[tuple[float, float, str]]


@dataclass
class Item:
    """One file to diarize: 16 kHz audio, its reference turns and conditions."""

    name: str
    audio: np.ndarray
    turns: Turns
    speakers: int
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / 16000


@dataclass
class Score:
    der: tuple[float, float]  # (error seconds, reference seconds)
    found: int
    words: tuple[int, int]  # (right, scored)


# --- the set ------------------------------------------------------------------------------------


def from_conversation(conv: Conversation) -> Item:
    audio = decode(conv.wav(), None).mono()  # the server's own path: resampled to 16 kHz
    length = "short" if conv.duration < 25 else "long"
    gap = "no-pause" if conv.min_gap <= 0 else "pauses"
    tags = {
        "band": "telephone" if conv.telephone else "wideband",
        "pairing": conv.pairing,
        "length": length,
        "gap": gap,
        "speakers": str(conv.speakers),
        "2spk 15-60 s": "yes" if conv.speakers == 2 and 15 <= conv.duration <= 60 else "no",
    }
    return Item(conv.name, audio, conv.turns, conv.speakers, tags)


def real_recordings() -> list[Item]:
    telephone = decode((corpus.CORPUS / f"{TELEPHONE}.wav").read_bytes(), None).mono()
    three = decode((corpus.CORPUS / THREE).read_bytes(), None).mono()
    return [
        Item(
            "telephone call",
            telephone,
            rttm_turns(corpus.CORPUS / f"{TELEPHONE}.rttm"),
            2,
            {"real": "yes"},
        ),
        # metadata.tsv: speaker 1 0-4 s, 2 6-11 s, 3 12.8-19.3 s
        Item(
            "3-speaker file",
            three,
            [(0, 4, "1"), (6, 11, "2"), (12.8, 19.3, "3")],
            3,
            {"real": "yes"},
        ),
    ]


def part_items(part: str, count: int) -> list[Item]:
    items = [from_conversation(conversation(part, i)) for i in range(count)]
    return items + (real_recordings() if part == "held" else [])


def single_speaker_files() -> list[Item]:
    """Every one-voice file of the corpus (the stereo extra as its two channels)."""
    out = []
    for clip in corpus.clips():
        if "multispeaker" in clip.tags:
            continue
        out.append(one_voice(clip.path.name, decode(clip.path.read_bytes(), None).mono()))
    for name in ("extras/en_jfk_16k_mono.wav", "extras/en_timit_LDC93S1_8k_resampled.wav"):
        out.append(one_voice(name, decode((corpus.CORPUS / name).read_bytes(), None).mono()))
    stereo = decode((corpus.CORPUS / "extras/en_stereo_2spk_per_channel.wav").read_bytes()).samples
    for channel in range(2):
        out.append(one_voice(f"stereo ch{channel}", np.ascontiguousarray(stereo[channel])))
    return out


def one_voice(name: str, audio: np.ndarray) -> Item:
    return Item(name, audio, [(0.0, len(audio) / 16000, "x")], 1)


def rttm_turns(rttm: Path) -> Turns:
    turns = []
    for line in rttm.read_text().splitlines():
        parts = line.split()
        start, length = float(parts[3]), float(parts[4])
        turns.append((start, start + length, parts[7]))
    return turns


# --- words --------------------------------------------------------------------------------------

_MODEL = None


def words_of(audio: np.ndarray) -> list[tuple[float, float]]:
    """Word times Whisper finds in the audio (the server's default model), cached by hash."""
    global _MODEL
    key = hashlib.sha256(audio.tobytes()).hexdigest()[:24]
    path = CACHE / f"{key}.json"
    if path.is_file():
        return [tuple(w) for w in json.loads(path.read_text())]
    if _MODEL is None:
        from faster_whisper import WhisperModel

        from server.engine.catalog import Catalog

        settings = Settings()
        model_path = Catalog.load(settings.models_dir).materialize(settings.model)
        _MODEL = WhisperModel(model_path, device="cpu", compute_type="int8", cpu_threads=2)
    segments, _ = _MODEL.transcribe(
        audio, beam_size=1, word_timestamps=True, vad_filter=True, condition_on_previous_text=False
    )
    words = [(w.start, w.end) for s in segments for w in (s.words or [])]
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(words))
    return words


# --- scoring ------------------------------------------------------------------------------------


def der_parts(result: Diarization, reference: Turns, duration: float) -> tuple[float, float]:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    ref = Annotation()
    for i, (start, end, speaker) in enumerate(reference):
        ref[Segment(start, end), i] = speaker
    hyp = Annotation()
    for i, turn in enumerate(result.turns):
        hyp[Segment(turn.start, turn.end), i] = turn.speaker
    metric = DiarizationErrorRate(collar=0.25)
    parts = metric.compute_components(ref, hyp, uem=Segment(0, duration))
    error = parts["confusion"] + parts["missed detection"] + parts["false alarm"]
    return float(error), float(parts["total"])


def reference_speaker(start: float, end: float, turns: Turns) -> str | None:
    """Who the reference says spoke this word; None in overlap or outside every turn."""
    middle = (start + end) / 2
    speakers = {s for a, b, s in turns if a <= middle <= b}
    return speakers.pop() if len(speakers) == 1 else None


def words_right(
    result: Diarization, words: Iterable[tuple[float, float]], turns: Turns
) -> tuple[int, int]:
    """Words on the right speaker under the best one-to-one map of found to true speakers (a
    true speaker split in two keeps only its larger half right)."""
    from scipy.optimize import linear_sum_assignment

    pairs = []
    for start, end in words:
        truth = reference_speaker(start, end, turns)
        hit = result.speaker_at(start, end)
        if truth is not None:
            pairs.append((truth, hit[0] if hit else -1))
    if not pairs:
        return 0, 0
    truths = sorted({t for t, _ in pairs})
    found = sorted({h for _, h in pairs})
    table = np.zeros((len(truths), len(found)))
    for truth, hit in pairs:
        table[truths.index(truth), found.index(hit)] += 1
    rows, cols = linear_sum_assignment(-table)
    return int(table[rows, cols].sum()), len(pairs)


def score(item: Item, result: Diarization, words: list[tuple[float, float]]) -> Score:
    return Score(
        der_parts(result, item.turns, item.duration),
        result.speakers,
        words_right(result, words, item.turns),
    )


# --- the two paths ------------------------------------------------------------------------------


def rest_vad_options() -> VadOptions:
    """The region finder's options as the server sets them for REST."""
    settings = Settings()
    return VadOptions(
        threshold=settings.vad_threshold,
        min_silence_duration_ms=settings.vad_min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms,
        max_speech_duration_s=settings.chunk_max_s,
    )


def load_regions(audio: np.ndarray) -> list[tuple[float, float]]:
    return speech_regions(audio, rest_vad_options())


def rest(diarizer: Diarizer, audio: np.ndarray) -> Diarization:
    return diarizer.run(audio, load_regions(audio))


def stream_spans(audio: np.ndarray, vad: StreamingVad | None = None) -> list[tuple[int, int, int]]:
    """(begin, end, span start) of each final's speech as the streaming endpointer cuts it."""
    settings = Settings()
    endpointer = Endpointer(
        EndpointerConfig(
            threshold=settings.vad_threshold,
            endpoint_ms=settings.ws_min_endpointing_ms,
            speech_final=True,
            max_utterance_s=settings.ws_max_utterance_s,
        )
    )
    vad = vad or StreamingVad()
    spans = []
    for i in range(0, len(audio), 1600):
        events = endpointer.push(vad.feed(audio[i : i + 1600]))
        spans += [e.span for e in events if isinstance(e, Closed | Cut)]
    spans.append(endpointer.flush(len(audio)))
    out = []
    for span in spans:
        if span.speech_start is None:
            continue
        end = min(span.decode_end, span.end)
        begin = max(0, min(span.speech_start, end - MIN_SPEAKER_AUDIO))
        out.append((begin, end, span.start))
    return out


def stream(diarizer: Diarizer, audio: np.ndarray) -> Diarization:
    """What a stream's finals say: each final's speech labelled in order, as `Channel` does."""
    speakers = diarizer.online()
    found = []
    for begin, end, start in stream_spans(audio):
        result = diarizer.run_online(speakers, audio[begin:end]).shifted(begin / 16000)
        found += [t for t in result.turns if t.end > start / 16000]
    return Diarization(found)


# --- tables -------------------------------------------------------------------------------------


@dataclass
class Tally:
    error: float = 0.0
    total: float = 0.0
    right_count: int = 0
    files: int = 0
    words_right: int = 0
    words: int = 0
    count_target: list[bool] = field(default_factory=list)  # 2 speakers, 15-60 s

    def add(self, item: Item, got: Score) -> None:
        self.error += got.der[0]
        self.total += got.der[1]
        self.files += 1
        self.right_count += got.found == item.speakers
        self.words_right += got.words[0]
        self.words += got.words[1]
        if item.tags.get("2spk 15-60 s") == "yes":
            self.count_target.append(got.found == item.speakers)

    def row(self) -> str:
        target = (
            f"{sum(self.count_target) / len(self.count_target):>6.0%} ({len(self.count_target):>2})"
            if self.count_target
            else f"{'-':>11}"
        )
        return (
            f"{self.error / max(self.total, 1e-9):>6.1%} | {self.right_count / self.files:>6.0%} "
            f"({self.files:>2}) | {target} | {self.words_right / max(self.words, 1):>6.1%} "
            f"({self.words:>4})"
        )


HEADER = f"{'DER':>6} | {'count right':>11} | {'2spk 15-60s':>11} | {'words right':>13}"


def words_interval(
    words: list[tuple[int, int]], draws: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of words right over conversations drawn again with replacement, from
    each conversation's (right, total). A part of 24 conversations is a small sample: this
    says how far its figure could move on 24 others like them, so a gap to a target smaller
    than the interval is not read as a property of the method."""
    right = np.array([r for r, _ in words], np.float64)
    total = np.array([t for _, t in words], np.float64)
    picks = np.random.default_rng(seed).integers(0, len(words), (draws, len(words)))
    shares = right[picks].sum(axis=1) / np.maximum(total[picks].sum(axis=1), 1)
    low, high = np.percentile(shares, [2.5, 97.5])
    return float(low), float(high)


def evaluate(
    items: list[Item], paths: dict[str, Callable[[np.ndarray], Diarization]]
) -> dict[str, list[tuple[Item, Score]]]:
    out: dict[str, list[tuple[Item, Score]]] = {name: [] for name in paths}
    for item in items:
        words = words_of(item.audio)
        for name, run in paths.items():
            out[name].append((item, score(item, run(item.audio), words)))
    return out


def tally(rows: list[tuple[Item, Score]], keep: Callable[[Item], bool] = lambda _: True) -> Tally:
    total = Tally()
    for item, got in rows:
        if keep(item):
            total.add(item, got)
    return total


def report(part: str, results: dict[str, list[tuple[Item, Score]]]) -> None:
    print(f"\n== {part} ==  {'path':>7} | {HEADER} | words right, 95 % interval")
    for path, rows in results.items():
        assembled = tally(rows, lambda i: "real" not in i.tags)
        low, high = words_interval([got.words for item, got in rows if "real" not in item.tags])
        print(f"{'assembled':>17} {path:>7} | {assembled.row()} | {low:.1%}-{high:.1%}")
    if part != "held":
        return
    for path, rows in results.items():
        for item, got in rows:
            if "real" in item.tags:
                print(
                    f"{item.name:>17} {path:>7} | {got.der[0] / got.der[1]:>6.1%} | "
                    f"{got.found:>2} of {item.speakers:<6} | {'':>11} | "
                    f"{got.words[0] / max(got.words[1], 1):>6.1%} ({got.words[1]:>4})"
                )
    print(f"\nheld-out by condition   {'path':>7} | {HEADER}")
    for key, values in (
        ("band", ["wideband", "telephone"]),
        ("pairing", ["same", "cross", "mixed"]),
        ("speakers", ["2", "3", "4"]),
        ("length", ["short", "long"]),
        ("gap", ["no-pause", "pauses"]),
    ):
        for value in values:
            for path, rows in results.items():
                t = tally(rows, lambda i, k=key, v=value: i.tags.get(k) == v)
                if t.files:
                    print(f"{key + ' ' + value:>23} {path:>7} | {t.row()}")


def singles(paths: dict[str, Callable[[np.ndarray], Diarization]]) -> None:
    print(f"\n{'one-voice files':>40} | " + " | ".join(f"{p:>13}" for p in paths))
    worst = dict.fromkeys(paths, 1.0)
    for item in single_speaker_files():
        words = words_of(item.audio)
        shares = []
        for path, run in paths.items():
            result = run(item.audio)
            labels = [hit[0] for w in words if (hit := result.speaker_at(*w)) is not None]
            share = max(labels.count(s) for s in set(labels)) / len(labels) if labels else 1.0
            worst[path] = min(worst[path], share)
            shares.append(f"{result.speakers} spk {share:>6.1%}")
        print(f"{item.name[:40]:>40} | " + " | ".join(f"{s:>13}" for s in shares))
    print(f"{'worst main-speaker share':>40} | " + " | ".join(f"{worst[p]:>13.1%}" for p in paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 conversations per part, not 48")
    parser.add_argument("--conversations", type=int, help="conversations per part")
    parser.add_argument("--part", choices=["dev", "held", "both"], default="both")
    parser.add_argument("--no-stream", action="store_true", help="REST only")
    parser.add_argument("--no-singles", action="store_true", help="skip the one-voice files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", choices=["auto", "campplus", "dvector"], default="auto")
    parser.add_argument("--latency", action="store_true", help="live latency with/without")
    args = parser.parse_args()
    if args.latency:
        stream_latency()
        return
    diarizer = Diarizer(None, DiarizeOptions(), threads=args.threads, backend=args.backend)
    print(f"speaker model: {diarizer.info()['model_uuid']} ({diarizer.kind})")
    paths: dict[str, Callable[[np.ndarray], Diarization]] = {
        "REST": lambda audio: rest(diarizer, audio)
    }
    if not args.no_stream:
        paths["stream"] = lambda audio: stream(diarizer, audio)
    count = args.conversations or (12 if args.quick else 48)
    started = time.monotonic()
    for part in ("dev", "held") if args.part == "both" else (args.part,):
        report(part, evaluate(part_items(part, count), paths))
    if not args.no_singles:
        singles(paths)
    print(f"\n({time.monotonic() - started:.0f} s)")


# --- live latency with and without diarize=true -------------------------------------------------


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
