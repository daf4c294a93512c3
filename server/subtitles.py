"""Subtitle cues from timed words, and their SRT and WebVTT renderings. Pure functions.

The usual broadcast rules (Netflix, BBC and EBU guides agree on them): at most two lines of about
42 characters, at most about 7 s on screen, a new cue at a speaker change or a clear pause, and a
preference for ending cues at the end of a sentence. Cues are cut between words, at the words'
own times, so a cue never shows a word before it is spoken. The REST API's OpenAI `srt`/`vtt`,
the CLI and the web page's downloads all follow these rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

SENTENCE_END = (".", "?", "!", "。", "？", "！")
CLAUSE_END = (",", ";", ":", "，", "、")


@dataclass(frozen=True)
class CueRules:
    max_line_chars: int = 42
    max_lines: int = 2
    max_duration_s: float = 7.0
    # A silence this long between two words always starts a new cue.
    pause_s: float = 1.0
    # After a sentence ends, start a new cue once the current one holds this many characters.
    sentence_min_chars: int = 24


@dataclass(frozen=True)
class TimedWord:
    text: str  # as displayed (punctuated), without surrounding spaces
    start: float
    end: float
    speaker: int | None = None


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]
    speaker: int | None = None

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def _greedy_lines(words: Sequence[str], width: int) -> list[str]:
    lines: list[str] = []
    for word in words:
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def fits(words: Sequence[str], rules: CueRules) -> bool:
    """Whether these words can be laid out within the line rules (a lone word always fits)."""
    return len(words) <= 1 or len(_greedy_lines(words, rules.max_line_chars)) <= rules.max_lines


def layout(words: Sequence[str], rules: CueRules = CueRules()) -> tuple[str, ...]:
    """Lines for one cue: one line when it fits, else two balanced lines, broken after
    punctuation where that costs little (a bottom-heavy pyramid reads best)."""
    text = " ".join(words)
    if len(text) <= rules.max_line_chars or len(words) < 2:
        return (text,)
    if rules.max_lines < 2 or not fits(words, rules):
        return tuple(_greedy_lines(words, rules.max_line_chars))
    best: tuple[float, int] | None = None
    for cut in range(1, len(words)):
        top, bottom = " ".join(words[:cut]), " ".join(words[cut:])
        if len(top) > rules.max_line_chars or len(bottom) > rules.max_line_chars:
            continue
        cost = abs(len(top) - len(bottom)) + (2 if len(top) > len(bottom) else 0)
        if words[cut - 1].endswith(SENTENCE_END + CLAUSE_END):
            cost -= rules.max_line_chars // 2
        if best is None or cost < best[0]:
            best = (cost, cut)
    assert best is not None  # fits() guarantees a two-line split exists
    cut = best[1]
    return (" ".join(words[:cut]), " ".join(words[cut:]))


def _breaks_before(cue: list[TimedWord], word: TimedWord, rules: CueRules) -> bool:
    last = cue[-1]
    if word.speaker != last.speaker:
        return True
    if word.start - last.end >= rules.pause_s:
        return True
    if word.end - cue[0].start > rules.max_duration_s:
        return True
    if not fits([w.text for w in [*cue, word]], rules):
        return True
    chars = sum(len(w.text) + 1 for w in cue)
    return last.text.endswith(SENTENCE_END) and chars >= rules.sentence_min_chars


def cues(words: Iterable[TimedWord], rules: CueRules = CueRules()) -> list[Cue]:
    """Group words into cues under `rules`; each cue spans its first word's start to its last
    word's end (never past the next cue's start)."""
    groups: list[list[TimedWord]] = []
    for word in words:
        if not word.text:
            continue
        if groups and not _breaks_before(groups[-1], word, rules):
            groups[-1].append(word)
        else:
            groups.append([word])
    out = []
    for group in groups:
        start, end = group[0].start, max(group[-1].end, group[0].start)
        out.append(Cue(start, end, layout([w.text for w in group], rules), group[0].speaker))
    for index in range(len(out) - 1):
        following = out[index + 1].start
        if out[index].end > following:
            cue = out[index]
            out[index] = Cue(cue.start, max(cue.start, following), cue.lines, cue.speaker)
    return out


def timestamp(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{decimal}{ms:03d}"


def srt(items: Iterable[Cue]) -> str:
    blocks = [
        f"{n}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n" + "\n".join(c.lines)
        for n, c in enumerate(items, 1)
    ]
    return "\n\n".join(blocks) + "\n" if blocks else ""


def vtt(items: Iterable[Cue]) -> str:
    """WebVTT; a diarized cue names its speaker in a voice span (`<v Speaker 0>`)."""
    blocks = ["WEBVTT"]
    for c in items:
        lines = list(c.lines)
        if c.speaker is not None:
            lines[0] = f"<v Speaker {c.speaker}>{lines[0]}"
        blocks.append(f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n" + "\n".join(lines))
    return "\n\n".join(blocks) + "\n"
