"""The pipeline: Whisper's words -> Deepgram tokens, one pass shared by REST, streaming and the
CLI, so a value reads the same in a transcript, its words, paragraphs, utterances, search
snippets and every stream message."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.deepgram.text.numbers import numbers_as_digits, numbers_as_words
from server.deepgram.text.redaction import redact
from server.deepgram.text.rewrites import (
    apply_replacements,
    dictate,
    drop_fillers,
    mask_profanity,
    measure,
)
from server.deepgram.text.smart import dotted_times, smart
from server.deepgram.text.tokens import Token, join_pieces, sentence_case
from server.engine import Word


@dataclass(frozen=True)
class TextOptions:
    """Everything that shapes text, fixed per request or stream (`Configure` replaces it)."""

    language: str = "en"
    punctuate: bool = False
    numerals: bool = False
    smart_format: bool = False
    dictation: bool = False
    measurements: bool = False
    filler_words: bool = False
    profanity_filter: bool = False
    redact: frozenset[str] = frozenset()
    replace: tuple[tuple[str, str], ...] = ()

    @property
    def digits(self) -> bool:
        """Numbers as digits (numerals or smart_format) rather than spoken words."""
        return self.numerals or self.smart_format


# --- the pipeline -------------------------------------------------------------------------------
def shape(
    words: Iterable[Word],
    options: TextOptions,
    context: Iterable[Word] = (),
    open_end: bool = False,
) -> list[Token]:
    """Whisper's words -> Deepgram tokens for one transcript (a channel, or a stream result).

    `context` (the words a stream already sent) and `open_end` (more may follow) only inform
    redaction; see `redact`."""
    tokens = dotted_times(join_pieces(words))
    if options.digits or options.redact or options.measurements:
        # Redaction needs the digit view even when the output speaks numbers as words.
        # Measurements need the quantity as digits ("5 mg") whatever the other numbers are.
        tokens = numbers_as_digits(tokens, options.language, 0 if options.redact else 3)
    if options.smart_format:
        tokens = smart(tokens)
    if options.redact:
        before = numbers_as_digits(dotted_times(join_pieces(context)), options.language, 0)
        tokens = redact(tokens, options.redact, before, open_end)
    if not options.filler_words:
        tokens = drop_fillers(tokens)
    if options.dictation and options.punctuate:
        tokens = dictate(tokens)
    if options.measurements:
        tokens = measure(tokens)
    if not options.digits:
        tokens = numbers_as_words(tokens, options.language)
    tokens = apply_replacements(tokens, options.replace)
    if options.profanity_filter:
        tokens = mask_profanity(tokens)
    if options.punctuate:
        tokens = sentence_case(tokens)
    return [t for t in tokens if t.text.strip()]
