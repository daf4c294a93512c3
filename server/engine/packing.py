"""Window packing: several short windows decoded as one Whisper window, split back by word times.

On a CPU a Whisper encoder pass costs the same for 2 s of speech as for 30 s (the mel window is
always padded to 30 s), and it is most of the cost of a short window. Windows that wait together
with the same decode options (interims or finals of several streams, short REST windows) are
therefore laid end to end in one ≤30 s window with silence between them, decoded once, and each
decoded word goes back to the window it was spoken in, by its time.

A word must never reach another client's result, so the split trusts the decode only when every
word sits cleanly inside one piece. It refuses the pack (the caller decodes those windows one by
one instead) when:

- a word starts in a gap (not within `EDGE_TOLERANCE_S` of a piece), or runs into the next
  piece's audio;
- the packed decode fails Whisper's fallback rule (too repetitive, or unsure): a pack is
  decoded once, never retried (re-decoding a 30 s pack only to refuse it would waste the
  saving);
- two pieces share a run of words (`REPEAT_RUN`): the classic Whisper failure of repeating
  earlier text into later audio would copy one client's words into another's result.

A piece that yields no words is re-decoded alone (the decoder sometimes skips a short sentence
in a long window, and Whisper's no-speech rule judges a whole window by its start); its
neighbours' results stand.

Pure functions over numpy arrays and `Segment`s: the scheduler chooses which windows share a
pack (`plan`), the engine builds it (`build`), decodes it and splits it (`split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from server.engine.fw import WhisperModel, get_compression_ratio
from server.engine.whisper import (
    SAMPLE_RATE,
    DecodeOptions,
    Segment,
    Word,
    decode_batch,
    needs_fallback,
)

# A word may reach this far outside its piece's audio (alignment is coarse at the edges: Whisper
# word times are often 0.1-0.3 s off) and still count as inside it.
EDGE_TOLERANCE_S = 0.3
# Shared runs of this many normalised words between two pieces refuse the pack.
REPEAT_RUN = 4


@dataclass(frozen=True)
class Piece:
    """Where one input window sits in the packed window, in seconds."""

    start: float
    end: float


@dataclass(frozen=True)
class Pack:
    audio: np.ndarray
    pieces: tuple[Piece, ...]
    gap_s: float


def plan(
    lengths_s: Sequence[float], gap_s: float, window_s: float, most: int | None = None
) -> list[list[int]]:
    """Group windows (in priority order) into packs that fit `window_s` (and hold at most
    `most` windows), first fit.

    The first window always opens the first pack, so the most urgent work is in the first
    pack; a window too long to share stays alone.
    """
    packs: list[list[int]] = []
    used: list[float] = []
    for index, length in enumerate(lengths_s):
        for slot, taken in enumerate(used):
            if taken + gap_s + length <= window_s and (most is None or len(packs[slot]) < most):
                packs[slot].append(index)
                used[slot] = taken + gap_s + length
                break
        else:
            packs.append([index])
            used.append(length)
    return packs


def build(windows: Sequence[np.ndarray], gap_s: float) -> Pack:
    """Lay windows end to end with `gap_s` of digital silence between them."""
    gap = np.zeros(round(gap_s * SAMPLE_RATE), np.float32)
    parts: list[np.ndarray] = []
    pieces: list[Piece] = []
    at = 0
    for index, window in enumerate(windows):
        if index:
            parts.append(gap)
            at += len(gap)
        parts.append(np.asarray(window, np.float32))
        pieces.append(Piece(at / SAMPLE_RATE, (at + len(window)) / SAMPLE_RATE))
        at += len(window)
    return Pack(np.concatenate(parts), tuple(pieces), gap_s)


def _owner(pack: Pack, word: Word) -> int | None:
    """The piece a word was spoken in, or None when that is not clear.

    A word belongs to the piece its start lies in: alignment places word starts well, while a
    piece's last word often "ends" far into the following silence (the aligner gives it the
    pause). It must not reach into the next piece's audio, though.
    """
    pieces = pack.pieces
    for index, piece in enumerate(pieces):
        if not piece.start - EDGE_TOLERANCE_S <= word.start <= piece.end + EDGE_TOLERANCE_S:
            continue
        following = pieces[index + 1].start if index + 1 < len(pieces) else np.inf
        return index if word.end <= following + EDGE_TOLERANCE_S else None
    return None


_WORD = re.compile(r"[\w']+")


def _runs(words: Sequence[Word]) -> set[tuple[str, ...]]:
    tokens = [t for w in words for t in _WORD.findall(w.text.lower())]
    return {tuple(tokens[i : i + REPEAT_RUN]) for i in range(len(tokens) - REPEAT_RUN + 1)}


def _repeats_across(per_piece: list[list[Word]]) -> bool:
    seen: set[tuple[str, ...]] = set()
    for words in per_piece:
        runs = _runs(words)
        if runs & seen:
            return True
        seen |= runs
    return False


@dataclass(frozen=True)
class Split:
    """The per-window results of a packed decode; `redo` lists windows to decode alone."""

    results: list[list[Segment]]
    redo: list[int]


def _unsure(segments: Sequence[Segment], options: DecodeOptions) -> bool:
    """Whether the pack's single decode fails the rule that would re-sample a lone window."""
    if not segments:
        return False
    text = "".join(s.text for s in segments).strip()
    first = segments[0]
    return first.temperature > 0 or needs_fallback(
        first.avg_logprob, first.no_speech_prob, get_compression_ratio(text), options
    )


def split(
    pack: Pack, segments: Sequence[Segment], options: DecodeOptions | None = None
) -> Split | None:
    """Give each piece its words, on its own clock; None when the pack can't be trusted."""
    count = len(pack.pieces)
    if _unsure(segments, options or DecodeOptions()):
        return None
    per_piece: list[list[Word]] = [[] for _ in range(count)]
    parts: list[list[tuple[Segment, list[Word]]]] = [[] for _ in range(count)]
    for segment in segments:
        grouped: dict[int, list[Word]] = {}
        for word in segment.words:
            owner = _owner(pack, word)
            if owner is None:
                return None
            grouped.setdefault(owner, []).append(word)
        for owner, words in grouped.items():
            per_piece[owner] += words
            parts[owner].append((segment, words))
    if _repeats_across(per_piece):
        return None
    results: list[list[Segment]] = []
    for piece, owned in zip(pack.pieces, parts, strict=True):
        duration = piece.end - piece.start
        out = []
        for segment, words in owned:
            shifted = [
                replace(
                    w,
                    start=round(float(min(max(w.start - piece.start, 0.0), duration)), 3),
                    end=round(float(min(max(w.end - piece.start, 0.0), duration)), 3),
                )
                for w in words
            ]
            share = max(1, round(segment.tokens * len(words) / max(1, len(segment.words))))
            out.append(
                replace(
                    segment,
                    start=shifted[0].start,
                    end=shifted[-1].end,
                    text="".join(w.text for w in shifted),
                    tokens=share,
                    words=shifted,
                )
            )
        results.append(out)
    # A piece without words is decoded alone: the decoder sometimes skips a short sentence in
    # a long window, and Whisper's no-speech rule judges a whole pack by its start.
    redo = [i for i, r in enumerate(results) if not r] if count > 1 else []
    return Split(results, redo)


def decode(
    model: WhisperModel,
    windows: Sequence[np.ndarray],
    groups: Sequence[Sequence[int]],
    options: DecodeOptions,
    gap_s: float,
) -> tuple[list[list[Segment]], int]:
    """Decode windows, those grouped together as one packed window each (one batched call).

    Returns the per-window results and how many packs were refused and decoded window by window.
    """
    packs = [build([windows[i] for i in g], gap_s) if len(g) > 1 else None for g in groups]
    alone = [i for p, g in zip(packs, groups, strict=True) if p is None for i in g]
    packed = [p for p in packs if p is not None]
    # Packs are decoded at the first temperature only; windows alone keep their fallback.
    once = replace(options, temperatures=options.temperatures[:1] or (0.0,), repair_ngram=0)
    decoded_alone = iter(decode_batch(model, [windows[i] for i in alone], options))
    decoded_packs = iter(decode_batch(model, [p.audio for p in packed], once))
    decoded = [next(decoded_alone) if p is None else next(decoded_packs) for p in packs]
    results: list[list[Segment] | None] = [None] * len(windows)
    redo: list[int] = []
    refused = 0
    for group, pack, segments in zip(groups, packs, decoded, strict=True):
        if pack is None:
            results[group[0]] = segments
            continue
        parts = split(pack, segments, once)
        if parts is None:
            refused += 1
            redo += group
            continue
        for index, result in zip(group, parts.results, strict=True):
            results[index] = result
        redo += [group[k] for k in parts.redo]
    if redo:
        again = decode_batch(model, [windows[i] for i in redo], options)
        for index, segments in zip(redo, again, strict=True):
            results[index] = segments
    return [r if r is not None else [] for r in results], refused
