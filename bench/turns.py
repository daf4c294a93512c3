"""End of turn: smart-turn v3.2 and our judge against v1's fixed-silence endpointing.

The turn set (real corpus speech, English):
- turn ends: the telephone call's turns (runs of one speaker's lines in its STM, which times
  each line; its RTTM agrees), the 3-speaker file's three turns (speakers at 0-4, 6-11 and
  12.8-19.3 s, the corpus metadata), LJ's first 60 s (read speech; a clip ending in a full stop
  ends a turn: its segments tsv), and each single-speaker English sentence clip as one turn;
- mid-turn pauses: natural ones (a gap of >= MIN_GAP_S between two words of one turn in
  faster-whisper's word times: comma pauses, LJ's clip seams inside a sentence, the callers'
  hesitations) with their real audio, and inserted ones: INSERT_S of digital silence after each
  "to", "the", "for", "a", "and", "of", "with" inside a turn (never its last word).
A turn's audio runs from its start to its last word's end; after a turn end the simulated
stream is digital silence (what a voice agent's microphone hears while the user waits).

Offline (always): each item's audio up to the pause is decoded by faster-whisper (tiny.en,
beam 5, as a final would be: Whisper's own punctuation) and scored by smart-turn at
SCORE_AFTER_S of silence (also every RESCORE_S up to SCORED_UP_TO_S, to compare re-scoring as
the pause grows, which the judge does not use); the judge then runs on a timeline of
JUDGE_EVERY_S ticks: end-of-turn latency after the last word (audio clock: silence until END;
the decode of the final runs while the pause is judged, and live numbers include it), mid-turn
pauses wrongly ended, turn ends missed until `eot_timeout_ms`. v1's rows offline are the ideal
fixed-silence endpointer (END at exactly `endpointing` ms of silence).

Live (`--url ws://host:port`): the same turns as one program per protocol (inserted pauses in
place, AFTER_TURN_S of silence after each turn end), sent at real-time pace in 100 ms chunks:
Flux over `/v2/listen` at default thresholds, and v1 `speech_final` at `endpointing=300` and
`=800`, side by side (or, with `--one-at-a-time`, each alone on the server). Latency is wall
time from sending the last word's audio to the event; an event is attributed to the pause its
audio time falls in.

    .venv/bin/python bench/turns.py [--url ws://127.0.0.1:8000 [--one-at-a-time]] [--tune]
        [--cache PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import csv
import itertools
import json
import math
import pickle
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from server.turns import features  # noqa: E402
from server.turns.judge import (  # noqa: E402
    JUDGE_EVERY_S,
    RULE,
    SCORE_AFTER_S,
    Rule,
    Thresholds,
    Verdict,
    judge,
)
from server.turns.model import TurnModel  # noqa: E402
from tests import corpus  # noqa: E402
from tests.ws_helpers import pcm16, samples16k  # noqa: E402

SR = 16000
MIN_GAP_S = 0.25  # a shorter gap between words is no pause anyone would end a turn in
INSERT_S = 0.8
INSERT_AFTER = {"to", "the", "for", "a", "and", "of", "with"}
RESCORE_S = 0.1
SCORED_UP_TO_S = 2.0  # past this the last score stands (the timeline runs to the timeout)
AFTER_TURN_S = 5.5  # live: silence after each turn end (past the default eot_timeout_ms)
CHUNK_S = 0.1
EAGER = 0.4
WORD_TIMES_MODEL = "base"
SNAP_S = 0.06
TELEPHONE = "en_multispeaker_pyannote_sample_telephone"
THREE_SPEAKERS = "en_multispeaker_picovoice_diarization_3spk.wav"
THREE_SPEAKER_TURNS = [(0.0, 4.0), (6.0, 11.0), (12.8, 19.3)]
LJ = "en_ljspeech_LJ001-0001_to_0032_long"
LJ_SECONDS = 60.0
SENTENCE_CLIPS = ("en_harvard", "en_librispeech", "en_cmuarctic", "en_librivox", "en_timit")


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float


@dataclass
class Item:
    """One pause to judge: the turn's audio up to the last word before it, and what follows."""

    source: str
    kind: str  # "end" (a real turn end) or "mid" (a mid-turn pause)
    how: str  # natural | inserted | turn
    turn: np.ndarray  # the turn's audio from its start to the word's end
    after: np.ndarray  # the audio that follows (the real gap, or silence)
    pause_s: float  # length of the pause (inf for a turn end)
    last_word: str
    text: str = ""  # faster-whisper's text of `turn` (filled by `transcribe`)
    scores: list[float] = field(default_factory=list)  # at SILENCES


ALONE = Rule(bias=0.0, complete_shift=0.0, incomplete_shift=0.0, relax_per_s=0.0)
SILENCES = [round(SCORE_AFTER_S + k * RESCORE_S, 3) for k in range(200)]
SILENCES = [s for s in SILENCES if s <= SCORED_UP_TO_S + 1e-9]


# --- the turn set -----------------------------------------------------------------------------


class Whisper:
    """faster-whisper in this process: `base` places the pauses (its word times sit closer to
    the audio than tiny.en's, which run ~0.15 s late), the served model (tiny.en) writes the
    turn's text as a final would (beam 5, Whisper's own punctuation)."""

    def __init__(self) -> None:
        from server.engine.catalog import Catalog
        from server.engine.fw import WhisperModel
        from server.settings import Settings

        settings = Settings()
        catalog = Catalog.load(settings.models_dir)

        def load(name: str) -> WhisperModel:
            path = catalog.materialize(name)
            return WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=2)

        self.served = load(settings.model)
        self.timer = load(WORD_TIMES_MODEL)

    def words(self, audio: np.ndarray) -> list[Word]:
        segments, _ = self.timer.transcribe(
            audio, language="en", beam_size=5, word_timestamps=True, vad_filter=True
        )
        return [
            Word(w.word.strip(), w.start, _quietest(audio, w.end))
            for s in segments
            for w in (s.words or [])
        ]

    def text(self, audio: np.ndarray) -> str:
        segments, _ = self.served.transcribe(audio, language="en", beam_size=5)
        return " ".join(s.text.strip() for s in segments).strip()


def _quietest(audio: np.ndarray, t: float) -> float:
    """The quietest 10 ms within SNAP_S of a word's end: the seam between two words, where a
    pause is spliced in (Whisper's word ends are only good to a few tens of ms)."""
    hop = SR // 100
    first = max(0, int((t - SNAP_S) * SR))
    last = min(len(audio) - hop, int((t + SNAP_S) * SR))
    if last <= first:
        return t
    starts = np.arange(first, last, hop)
    energy = [float(np.mean(audio[i : i + hop] ** 2)) for i in starts]
    return float(starts[int(np.argmin(energy))] + hop / 2) / SR


def _bare(word: str) -> str:
    return word.lower().strip(".,?!;:\"'-…")


def _turn_items(source: str, audio: np.ndarray, words: list[Word], end: float) -> list[Item]:
    """The pauses of one turn whose words are `words` (in order), ending at `end`."""
    start = max(0.0, words[0].start - 0.3)
    s0 = int(start * SR)
    items = []

    def turn_to(t: float) -> np.ndarray:
        return audio[s0 : int(t * SR)]

    for word, nxt in itertools.pairwise(words):
        gap = nxt.start - word.end
        if gap >= MIN_GAP_S:
            after = audio[int(word.end * SR) : int(nxt.start * SR)]
            items.append(Item(source, "mid", "natural", turn_to(word.end), after, gap, word.text))
        if _bare(word.text) in INSERT_AFTER:
            after = np.zeros(int(INSERT_S * SR), np.float32)
            items.append(
                Item(source, "mid", "inserted", turn_to(word.end), after, INSERT_S, word.text)
            )
    silence = np.zeros(int((SCORED_UP_TO_S + 0.1) * SR), np.float32)
    items.append(Item(source, "end", "turn", turn_to(end), silence, math.inf, words[-1].text))
    return items


def _in(words: list[Word], start: float, end: float) -> list[Word]:
    return [w for w in words if w.start >= start - 0.15 and w.end <= end + 0.3]


def build_items(whisper: Whisper) -> list[Item]:
    items: list[Item] = []
    # The telephone call: its STM times each line and names its speaker.
    audio = samples16k(corpus.CORPUS / f"{TELEPHONE}.wav")
    words = whisper.words(audio)
    lines = []
    with (corpus.CORPUS / f"{TELEPHONE}.stm").open() as fh:
        for row in fh:
            parts = row.split(maxsplit=5)
            lines.append((parts[2], float(parts[3]), float(parts[4])))
    turns = [
        (group[0][1], group[-1][2])
        for _, g in itertools.groupby(lines, key=lambda line: line[0])
        for group in [list(g)]
    ]
    for start, end in turns:
        turn_words = _in(words, start, end)
        if turn_words:
            items += _turn_items("telephone", audio, turn_words, turn_words[-1].end)
    # The 3-speaker file: three turns, one per speaker.
    audio = samples16k(corpus.CORPUS / THREE_SPEAKERS)
    words = whisper.words(audio)
    for start, end in THREE_SPEAKER_TURNS:
        turn_words = _in(words, start, end)
        items += _turn_items("3-speaker", audio, turn_words, turn_words[-1].end)
    # LJ, first 60 s: a clip that ends in a full stop ends a turn.
    audio = samples16k(corpus.CORPUS / f"{LJ}.wav")
    with (corpus.CORPUS / f"{LJ}.segments.tsv").open() as fh:
        clips = [r for r in csv.DictReader(fh, delimiter="\t") if float(r["end_s"]) <= LJ_SECONDS]
    audio = audio[: int(float(clips[-1]["end_s"]) * SR)]
    words = whisper.words(audio)
    start = 0.0
    for clip in clips:
        if clip["text"].rstrip().endswith((".", "?", "!")):
            end = float(clip["end_s"])
            turn_words = _in(words, start, end)
            items += _turn_items("LJ 60 s", audio, turn_words, turn_words[-1].end)
            start = end
    # Single-speaker sentence clips: each one turn.
    for clip in corpus.english():
        if clip.path.name.startswith(SENTENCE_CLIPS):
            audio = samples16k(clip.path)
            words = whisper.words(audio)
            if words:
                items += _turn_items("sentences", audio, words, words[-1].end)
    return items


def transcribe_and_score(items: list[Item], whisper: Whisper, model: TurnModel) -> None:
    for item in items:
        # The final decode reads the speech pad after the last word, as the endpointer's does.
        pad = item.after[: int(0.2 * SR)]
        item.text = whisper.text(np.concatenate([item.turn, pad]))
        silences = [s for s in SILENCES if s < item.pause_s]
        audios = [np.concatenate([item.turn, item.after[: int(s * SR)]]) for s in silences]
        item.scores = model.score_batch(audios)


def load_items(cache: Path | None) -> list[Item]:
    if cache is not None and cache.is_file():
        return pickle.loads(cache.read_bytes())
    whisper = Whisper()
    model = TurnModel.load()
    items = build_items(whisper)
    transcribe_and_score(items, whisper, model)
    if cache is not None:
        cache.write_bytes(pickle.dumps(items))
    return items


# --- offline: the judge on a simulated pause timeline -------------------------------------------


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)  # turn ends: silence until END
    eager: list[float] = field(default_factory=list)  # turn ends: silence until EAGER
    missed: int = 0  # turn ends that only the timeout ended
    ends: int = 0
    wrong: int = 0  # mid-turn pauses ended
    mids: int = 0

    def row(self) -> dict[str, str]:
        return {
            "p50": _ms(_pct(self.latencies, 50)),
            "p90": _ms(_pct(self.latencies, 90)),
            "wrong": f"{self.wrong}/{self.mids} = {_share(self.wrong, self.mids)}",
            "missed": f"{self.missed}/{self.ends} = {_share(self.missed, self.ends)}",
        }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    return float(np.percentile(values, p))


def _ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.0f} ms"


def _share(k: int, n: int) -> str:
    return f"{100 * k / n:.0f} %" if n else "-"


def first_end(
    item: Item, thresholds: Thresholds, rule: Rule, rescore: bool = False
) -> tuple[float, float, bool]:
    """(silence at the first EAGER, silence at END, END by timeout) on JUDGE_EVERY_S ticks;
    the model re-scores every RESCORE_S of silence, or only once at SCORE_AFTER_S."""
    eager = math.inf
    limit = min(item.pause_s, thresholds.eot_timeout_ms / 1000 + JUDGE_EVERY_S)
    ticks = int(limit / JUDGE_EVERY_S + 1e-9)
    for k in range(ticks + 1):
        silence = round(k * JUDGE_EVERY_S, 3)
        if silence >= item.pause_s:
            break
        index = bisect.bisect_right(SILENCES, silence + 1e-9) - 1 if rescore else 0
        score = item.scores[min(index, len(item.scores) - 1)] if index >= 0 else 0.0
        verdict = judge(score, silence, item.text, thresholds, rule)
        if verdict.verdict is Verdict.EAGER and eager == math.inf:
            eager = silence
        if verdict.verdict is Verdict.END:
            return eager, silence, verdict.timed_out
    return eager, math.inf, False


def flux_offline(
    items: Iterable[Item], thresholds: Thresholds, rule: Rule = RULE, rescore: bool = False
) -> Outcome:
    out = Outcome()
    for item in items:
        eager, end, timed_out = first_end(item, thresholds, rule, rescore)
        if item.kind == "end":
            out.ends += 1
            out.latencies.append(end)
            if eager < math.inf:
                out.eager.append(eager)
            out.missed += timed_out
        else:
            out.mids += 1
            out.wrong += end < item.pause_s
    return out


def eager_row(items: list[Item], thresholds: Thresholds) -> tuple[str, dict[str, str]]:
    """With eager end of turn on: the first event of each turn end (EagerEndOfTurn or
    EndOfTurn), and the mid-turn pauses that got an EagerEndOfTurn (then TurnResumed)."""
    first, resumed, mids = [], 0, 0
    for item in items:
        eager, end, _ = first_end(item, thresholds, RULE)
        if item.kind == "end":
            first.append(min(eager, end))
        else:
            mids += 1
            resumed += eager < item.pause_s
    name = f"  + eager_eot_threshold={thresholds.eager_eot_threshold}: first event"
    return name, {
        "p50": _ms(_pct(first, 50)),
        "p90": _ms(_pct(first, 90)),
        "wrong": f"{resumed}/{mids} = {_share(resumed, mids)} eager",
        "missed": "",
    }


def v1_offline(items: Iterable[Item], endpointing_ms: int) -> Outcome:
    """The ideal fixed-silence endpointer: END at exactly `endpointing_ms` of silence."""
    out = Outcome()
    for item in items:
        if item.kind == "end":
            out.ends += 1
            out.latencies.append(endpointing_ms / 1000)
        else:
            out.mids += 1
            out.wrong += item.pause_s > endpointing_ms / 1000
    return out


def model_alone(items: list[Item]) -> dict[str, str]:
    """smart-turn's own accuracy (> 0.5 = complete) at SCORE_AFTER_S of silence."""
    right = {"end": 0, "mid": 0}
    total = {"end": 0, "mid": 0}
    for item in items:
        total[item.kind] += 1
        complete = item.scores[0] > 0.5
        right[item.kind] += complete == (item.kind == "end")
    both = right["end"] + right["mid"]
    return {
        "all": f"{both}/{len(items)} = {_share(both, len(items))}",
        "ends": f"{right['end']}/{total['end']}",
        "mids": f"{right['mid']}/{total['mid']}",
    }


def cost_per_decision(items: list[Item], model: TurnModel, runs: int = 30) -> tuple[float, float]:
    """Median CPU time (thread time, one onnxruntime thread) of features and of the model."""
    feats, infer = [], []
    for item in items[:runs]:
        audio = np.concatenate([item.turn, item.after[: int(SCORE_AFTER_S * SR)]])
        t0 = time.thread_time()
        x = features.batch_features([audio])
        t1 = time.thread_time()
        model.score_features(x)
        t2 = time.thread_time()
        feats.append(t1 - t0)
        infer.append(t2 - t1)
    return statistics.median(feats), statistics.median(infer)


def tune(items: list[Item], thresholds: Thresholds) -> list[tuple]:
    """Every rule on a grid, the model re-scored as the pause grows or scored once: (wrong
    share, p50, p90, missed share, rule, rescore), best first: those within the targets with room
    to spare (p50 <= half of v1@800's, p90 <= 2 s, wrong <= 1/3 of v1@300's) by wrong +
    missed, then by p50; then the rest."""
    v300 = v1_offline(items, 300)
    most_wrong = v300.wrong / v300.mids / 3
    results = []
    grid = itertools.product(
        (0.0, -1.0, -2.0, -3.0, -4.0, -5.0),
        (0.0, 1.0, 2.0),
        (-2.0, -4.0, -6.0),
        (1.0, 2.0, 3.0, 4.0, 6.0),
        (True, False),
    )
    for bias, complete, incomplete, relax, rescore in grid:
        rule = Rule(bias, complete, incomplete, relax)
        out = flux_offline(items, thresholds, rule, rescore)
        wrong, missed = out.wrong / out.mids, out.missed / out.ends
        p50, p90 = _pct(out.latencies, 50), _pct(out.latencies, 90)
        results.append((wrong, p50, p90, missed, rule, rescore))
    return sorted(
        results,
        key=lambda r: (
            not (r[0] <= most_wrong and r[1] <= 0.4 and r[2] <= 2.0),
            r[0] + r[3],
            r[1],
        ),
    )


# --- live: the same turns streamed to a server ---------------------------------------------------


@dataclass(frozen=True)
class Program:
    audio: np.ndarray
    ends: list[float]  # stream time of each turn's last word end
    pauses: list[tuple[float, float]]  # mid-turn pauses: (last word end, next speech)


def build_program(items: list[Item], after_s: float = AFTER_TURN_S) -> Program:
    """Each turn once, its inserted pauses in place, then AFTER_TURN_S of silence.

    A turn's items share its audio: the turn-end item holds the whole turn; the mid items cut
    it at their word ends. Inserted pauses are spliced in at those cuts."""
    pieces: list[np.ndarray] = []
    ends: list[float] = []
    pauses: list[tuple[float, float]] = []
    clock = 0.0
    pending: list[Item] = []
    for item in items:
        if item.kind == "mid":
            pending.append(item)
            continue
        cut = 0
        for mid in sorted(pending, key=lambda m: len(m.turn)):
            at = len(mid.turn)
            pieces.append(item.turn[cut:at])
            clock += (at - cut) / SR
            if mid.how == "inserted":
                pieces.append(mid.after)
                pauses.append((clock, clock + mid.pause_s))
                clock += mid.pause_s
            else:
                pauses.append((clock, clock + mid.pause_s))
            cut = at
        pieces.append(item.turn[cut:])
        clock += (len(item.turn) - cut) / SR
        ends.append(clock)
        pieces.append(np.zeros(int(after_s * SR), np.float32))
        clock += after_s
        pending = []
    return Program(np.concatenate(pieces), ends, pauses)


@dataclass
class LiveEvents:
    # (last word's end, where the server decided, stream seconds sent when it arrived)
    ends: list[tuple[float, float, float]] = field(default_factory=list)
    error: str = ""


async def _stream(url: str, program: Program, on_message) -> LiveEvents:
    """Send `program` at real-time pace; `on_message(msg)` gives (last word's end, decision
    time) for an end-of-turn message, None for any other."""
    import websockets

    events = LiveEvents()
    data = pcm16(program.audio)
    step = int(CHUNK_S * SR) * 2
    sent_s = 0.0
    try:
        # No client keepalive: a loaded server may answer a ping late, and the audio keeps the
        # socket busy anyway.
        async with websockets.connect(
            url, max_size=None, open_timeout=10, ping_interval=None
        ) as ws:

            async def send() -> None:
                nonlocal sent_s
                started = time.perf_counter()
                for k, i in enumerate(range(0, len(data), step)):
                    await ws.send(data[i : i + step])
                    sent_s = min(len(data), i + step) / (2 * SR)
                    await asyncio.sleep(max(0.0, started + (k + 1) * CHUNK_S - time.perf_counter()))
                await ws.send(json.dumps({"type": "CloseStream"}))

            sender = asyncio.create_task(send())
            try:
                async for raw in ws:
                    if isinstance(raw, str):
                        at = on_message(json.loads(raw))
                        if at is not None:
                            events.ends.append((*at, sent_s))
            finally:
                if not sender.done():
                    sender.cancel()
            if not sender.cancelled():
                await sender
    except Exception as exc:  # the report says why a protocol was not (fully) measured
        events.error = f"{type(exc).__name__}: {exc}"
    return events


def flux_live(base: str, program: Program) -> asyncio.Task:
    def on_message(msg: dict) -> tuple[float, float] | None:
        if msg.get("type") == "TurnInfo" and msg.get("event") == "EndOfTurn":
            words = msg.get("words") or []
            decided = float(msg["audio_window_end"])
            return (float(words[-1]["end"]) if words else decided), decided
        return None

    url = f"{base}/v2/listen?model=flux-general-en&encoding=linear16&sample_rate=16000"
    return asyncio.ensure_future(_stream(url, program, on_message))


def v1_live(base: str, program: Program, endpointing_ms: int) -> asyncio.Task:
    def on_message(msg: dict) -> tuple[float, float] | None:
        if msg.get("type") == "Results" and msg.get("speech_final"):
            words = msg["channel"]["alternatives"][0].get("words") or []
            decided = float(msg["start"]) + float(msg["duration"])
            return (float(words[-1]["end"]), decided) if words else None
        return None

    url = (
        f"{base}/v1/listen?encoding=linear16&sample_rate=16000&punctuate=true"
        f"&interim_results=true&endpointing={endpointing_ms}"
    )
    return asyncio.ensure_future(_stream(url, program, on_message))


def score_live(program: Program, events: LiveEvents, wall: bool) -> Outcome:
    """Attribute each end event (by its last word's time) to the pause it falls in. Latency on
    the wall clock (what a user waits: the decision plus any decode backlog, so it depends on
    the machine and its load) or on the audio clock (where in the audio the server decided)."""
    out = Outcome(ends=len(program.ends), mids=len(program.pauses))
    ended_mid = set()
    latency: dict[int, float] = {}
    for word_end, decided, sent in events.ends:
        for k, (start, _) in enumerate(program.pauses):
            if start - 0.3 <= word_end <= start + 0.3:
                ended_mid.add(k)
        k = min(range(len(program.ends)), key=lambda j: abs(program.ends[j] - word_end))
        if abs(program.ends[k] - word_end) <= 0.5 and k not in latency:
            latency[k] = (sent if wall else decided) - program.ends[k]
    out.wrong = len(ended_mid)
    out.latencies = list(latency.values())
    out.missed = out.ends - len(latency)
    return out


# --- report ----------------------------------------------------------------------------------


def table(rows: list[tuple[str, dict[str, str]]]) -> str:
    head = ("", "EOT p50", "EOT p90", "mid-turn pauses ended", "turn ends missed to timeout")
    keys = ("p50", "p90", "wrong", "missed")
    body = [(name, *(r[k] for k in keys)) for name, r in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(head, *body, strict=True)]

    def line(cells):
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep, *(line(b) for b in body)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="also stream live to this server (ws://host:port)")
    parser.add_argument(
        "--one-at-a-time",
        action="store_true",
        help="live: stream the three protocols one after another, each alone on the server "
        "(wall-clock latency without the three lockstep streams queueing for the same cores)",
    )
    parser.add_argument("--cache", type=Path, help="keep decodes and scores here between runs")
    parser.add_argument("--tune", action="store_true", help="print the best rules on a grid")
    parser.add_argument(
        "--after-s", type=float, default=AFTER_TURN_S, help="live: silence after each turn"
    )
    args = parser.parse_args()
    if not (corpus.CORPUS / "refs.tsv").is_file():
        sys.exit(corpus.MISSING)

    started = time.perf_counter()
    items = load_items(args.cache)
    ends = sum(i.kind == "end" for i in items)
    natural = sum(i.how == "natural" for i in items)
    print(
        f"turn set: {len(items)} pauses: {ends} turn ends, {natural} natural mid-turn pauses "
        f"(>= {MIN_GAP_S} s), {len(items) - ends - natural} inserted ({INSERT_S} s after "
        f"{'/'.join(sorted(INSERT_AFTER))}); built in {time.perf_counter() - started:.0f} s"
    )
    for source in dict.fromkeys(i.source for i in items):
        group = [i for i in items if i.source == source]
        print(f"  {source}: {sum(i.kind == 'end' for i in group)} ends, "
              f"{sum(i.kind == 'mid' for i in group)} mid-turn pauses")  # fmt: skip

    model = TurnModel.load()
    feats, infer = cost_per_decision(items, model)
    alone = model_alone(items)
    print(
        f"smart-turn v3.2 alone (> 0.5 at {SCORE_AFTER_S} s of silence): accuracy {alone['all']}"
        f" (turn ends {alone['ends']}, mid-turn pauses {alone['mids']}); CPU per decision, one"
        f" thread: features {feats * 1000:.1f} ms, model {infer * 1000:.1f} ms"
    )
    defaults = Thresholds()
    flux = flux_offline(items, defaults)
    rows = [
        ("Flux, our judge (defaults), offline", flux.row()),
        ("Flux, model alone >= 0.7, offline", flux_offline(items, defaults, ALONE).row()),
        ("Flux, judge, model re-scored", flux_offline(items, defaults, RULE, True).row()),
        ("v1 endpointing=300, ideal, offline", v1_offline(items, 300).row()),
        ("v1 endpointing=800, ideal, offline", v1_offline(items, 800).row()),
    ]
    rows.append(eager_row(items, replace(defaults, eager_eot_threshold=EAGER)))
    for source in dict.fromkeys(i.source for i in items):
        group = [i for i in items if i.source == source]
        rows.append((f"  Flux, our judge: {source} only", flux_offline(group, defaults).row()))

    if args.url:
        program = build_program(items, args.after_s)
        how = "one stream at a time" if args.one_at_a_time else "three streams at once"
        print(
            f"live: {len(program.audio) / SR:.0f} s program ({len(program.ends)} turns, "
            f"{len(program.pauses)} mid-turn pauses) at real-time pace, {how}"
        )

        async def run_live() -> list[LiveEvents]:
            runs = (
                lambda: flux_live(args.url, program),
                lambda: v1_live(args.url, program, 300),
                lambda: v1_live(args.url, program, 800),
            )
            if args.one_at_a_time:
                return [await run() for run in runs]
            return list(await asyncio.gather(*(run() for run in runs)))

        names = ["Flux /v2/listen (defaults), live", "v1 endpointing=300, live",
                 "v1 endpointing=800, live"]  # fmt: skip
        for name, events in zip(names, asyncio.run(run_live()), strict=True):
            if events.error and not events.ends:
                if name.startswith("Flux") and (
                    "HTTP 404" in events.error or "HTTP 403" in events.error
                ):
                    events.error = "this server has no /v2/listen yet (" + events.error + ")"
                print(f"  {name}: not measured: {events.error}")
                continue
            if events.error:
                print(
                    f"  {name}: the stream ended early ({events.error}); counted as far as it got"
                )
            rows.append((name, score_live(program, events, wall=True).row()))
            rows.append(("  the same, audio clock", score_live(program, events, wall=False).row()))

    print()
    print(table(rows))
    print()
    v300 = v1_offline(items, 300)
    target_wrong = v300.wrong / v300.mids / 3
    print(
        f"target: Flux p50 <= v1@800 p50 ({_ms(0.8)}): {_ms(_pct(flux.latencies, 50))}; "
        f"mid-turn pauses ended <= 1/3 of v1@300's ({100 * target_wrong:.0f} %): "
        f"{_share(flux.wrong, flux.mids)}"
    )
    if args.tune:
        print("\nrules, fewest (wrong + missed) first:")
        for wrong, p50, p90, missed, rule, rescore in tune(items, defaults)[:15]:
            how = "re-scored" if rescore else "scored once"
            print(
                f"  {rule}, {how}: wrong {100 * wrong:.0f} %, p50 {_ms(p50)}, p90 {_ms(p90)}, "
                f"missed {100 * missed:.0f} %"
            )


if __name__ == "__main__":
    main()
