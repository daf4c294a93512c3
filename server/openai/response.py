"""OpenAI audio response bodies from a transcript: json, text, srt, vtt, verbose_json, and the
server-sent events of `stream=true`. Pure functions.

`srt` and `vtt` are cut by the subtitle rules (server/subtitles.py) at word times rather than
one cue per Whisper segment, whose windows run up to 30 s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from server.engine import Segment
from server.subtitles import TimedWord, cues, srt, vtt

FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("word", "segment")


@dataclass(frozen=True)
class Result:
    task: str  # "transcribe" | "translate"
    language: str  # ISO 639-1 code of the spoken language
    duration: float
    segments: Sequence[Segment]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments).strip()


def timed_words(segments: Sequence[Segment]) -> list[TimedWord]:
    return [
        TimedWord(w.text.strip(), w.start, w.end, w.speaker)
        for s in segments
        for w in s.words
        if w.text.strip()
    ]


def speaker_label(speaker: int) -> str:
    """OpenAI labels unknown speakers A, B, C, ..."""
    return chr(ord("A") + speaker) if 0 <= speaker < 26 else f"S{speaker}"


def diarized(result: Result) -> dict[str, Any]:
    """OpenAI's diarized_json: one segment per speaker turn, cut where the speaker changes."""
    turns: list[list[Any]] = []
    for word in (w for s in result.segments for w in s.words if w.text.strip()):
        if turns and turns[-1][0].speaker == word.speaker:
            turns[-1].append(word)
        else:
            turns.append([word])
    return {
        "task": "transcribe",
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": [
            {
                "type": "transcript.text.segment",
                "id": f"seg_{index}",
                "start": round(turn[0].start, 3),
                "end": round(turn[-1].end, 3),
                "text": "".join(w.text for w in turn).strip(),
                "speaker": speaker_label(turn[0].speaker or 0),
            }
            for index, turn in enumerate(turns)
        ],
        "usage": {"type": "duration", "seconds": round(result.duration, 3)},
    }


def verbose(result: Result, granularities: Sequence[str]) -> dict[str, Any]:
    """OpenAI's verbose_json: segments unless only words were asked for, words when asked."""
    body: dict[str, Any] = {
        "task": result.task,
        "language": result.language,
        "duration": round(result.duration, 3),
        "text": result.text,
    }
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": index,
                "seek": round(s.start * 100),  # Whisper's seek is in 10 ms mel frames
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": list(s.token_ids),
                "temperature": s.temperature,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for index, s in enumerate(result.segments)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
            for w in timed_words(result.segments)
        ]
    body["usage"] = {"type": "duration", "seconds": round(result.duration, 3)}
    return body


def render(result: Result, fmt: str, granularities: Sequence[str] = ()) -> tuple[str, str]:
    """(body, media type) for a finished transcript."""
    if fmt == "text":
        return result.text + "\n", "text/plain; charset=utf-8"
    if fmt == "srt":
        return srt(cues(timed_words(result.segments))), "application/x-subrip; charset=utf-8"
    if fmt == "vtt":
        return vtt(cues(timed_words(result.segments))), "text/vtt; charset=utf-8"
    if fmt == "verbose_json":
        body = verbose(result, granularities)
    elif fmt == "diarized_json":
        body = diarized(result)
    else:
        body = {"text": result.text, "usage": {"type": "duration", "seconds": result.duration}}
    return json.dumps(body, ensure_ascii=False), "application/json"


def event(payload: dict[str, Any]) -> bytes:
    """One server-sent event, named after its type as OpenAI names them."""
    name = payload.get("type", "error")
    return f"event: {name}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def delta(text: str) -> bytes:
    return event({"type": "transcript.text.delta", "delta": text})


def done(text: str) -> bytes:
    return event({"type": "transcript.text.done", "text": text})
