"""The written unit: Whisper's timed words glued into Deepgram tokens, and how a token reads.

Whisper's word timing splits a written unit at punctuation ("$25" ".50", "i" ".e.", "john"
"@example" ".com"); `join_pieces` glues the pieces without a leading space back, so one written
unit is one token. `word` is always the spoken, lower-case, unpunctuated form;
`punctuated_word` the formatted one, sentence-cased.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from server.engine import Word
from server.words import EDGE, INITIALISM, bare

SENTENCE_END = (".", "?", "!", "。", "？", "！")


@dataclass
class Token:
    """One spoken unit as Deepgram reports it."""

    text: str  # written form: case and punctuation as they will be shown
    start: float
    end: float
    confidence: float
    atomic: bool = False  # a redaction or replacement: never split or reformatted
    speaker: int | None = None  # from diarization, carried through every step
    speaker_confidence: float | None = None

    @property
    def bare(self) -> str:
        return bare(self.text)


# --- the written unit ---------------------------------------------------------------------------
# `bare` and the edge rules are shared with the streaming transcript (server/words.py).


def split_edges(text: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a written token."""
    if INITIALISM.match(text):
        return "", text, ""
    core = text.strip(EDGE)
    if not core:
        return text, "", ""
    lead = text[: text.index(core)]
    trail = text[len(lead) + len(core) :]
    return lead, core, trail


def unspaced(char: str) -> bool:
    """Scripts written without spaces between words (Han, kana, Thai, Lao, Khmer, Myanmar)."""
    code = ord(char)
    return (
        0x3040 <= code <= 0x30FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
        or 0x3000 <= code <= 0x303F
        or 0x0E00 <= code <= 0x0EFF
        or 0x1000 <= code <= 0x109F
        or 0x1780 <= code <= 0x17FF
    )


def join_pieces(words: Iterable[Word]) -> list[Token]:
    """Whisper's timed words -> written units: a piece with no leading space continues the
    previous unit ("$25" + ".50", "i" + ".e.", "3" + "rd"), except in scripts written without
    spaces, where every character is a piece of its own."""
    tokens: list[Token] = []
    for w in words:
        text = w.text
        stripped = text.strip()
        if not stripped:
            continue
        prob = min(max(w.probability, 0.0), 1.0)
        glue = (
            tokens
            and not text[:1].isspace()
            and not unspaced(stripped[0])
            and not unspaced(tokens[-1].text[-1])
        )
        if glue:
            last = tokens[-1]
            last.text += stripped
            last.end = max(last.end, w.end)
            last.confidence = min(last.confidence, prob)
        else:
            tokens.append(
                Token(
                    stripped,
                    w.start,
                    max(w.end, w.start),
                    prob,
                    speaker=w.speaker,
                    speaker_confidence=w.speaker_confidence,
                )
            )
    return [t for t in tokens if t.text.strip(EDGE) or INITIALISM.match(t.text)]


def spread(token: Token, texts: Sequence[str], **extra: object) -> list[Token]:
    """Share a token's time between the words it is spoken as, in proportion to their length."""
    if not texts:
        return []
    weights = [max(len(t), 1) for t in texts]
    total = sum(weights)
    span = token.end - token.start
    out, at = [], token.start
    for text, weight in zip(texts, weights, strict=True):
        end = at + span * weight / total
        out.append(replace(token, text=text, start=round(at, 3), end=round(end, 3), **extra))
        at = end
    out[-1].end = token.end
    return out


def merge(tokens: Sequence[Token], text: str, **extra: object) -> Token:
    return replace(
        tokens[0],
        text=text,
        end=tokens[-1].end,
        confidence=min(t.confidence for t in tokens),
        **extra,
    )


# --- casing -------------------------------------------------------------------------------------
def sentence_case(tokens: Sequence[Token]) -> list[Token]:
    """Capitalise the first word and every word after a sentence end: Whisper starts a window
    cut mid-sentence in lower case ("Gutenberg Bible. is printed")."""
    out: list[Token] = []
    capital = True
    for token in tokens:
        text = token.text
        if capital and not token.atomic:
            lead, core, trail = split_edges(text)
            if core[:1].islower():
                text = lead + core[:1].upper() + core[1:] + trail
                token = replace(token, text=text)
        out.append(token)
        ends = text.rstrip("\"'”’)").endswith(SENTENCE_END) and not INITIALISM.match(text)
        capital = ends or text.endswith("\n")
    return out


def word_of(token: Token) -> str:
    """Deepgram's `word`: a redaction token is kept as it is written, `[CREDIT_CARD_1]`."""
    if token.atomic and token.text.startswith("[") and "]" in token.text:
        return token.text[: token.text.index("]") + 1]
    return token.bare


def punctuated_of(token: Token) -> str:
    return token.text


def join(texts: Sequence[str]) -> str:
    """Words joined by spaces, except between two words of a script written without spaces."""
    parts: list[str] = []
    for text in texts:
        if not text:
            continue
        if (
            parts
            and not (unspaced(parts[-1][-1]) and unspaced(text[0]))
            and not parts[-1].endswith("\n")
        ):
            parts.append(" ")
        parts.append(text)
    return "".join(parts)
