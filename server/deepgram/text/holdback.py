"""Where a stream's words end inside a number still being said, which redaction cannot judge yet.

A card number read aloud arrives in groups ("four five three nine … one four eight eight"),
and a stream shows words as they come: interims every fraction of a second, a final at every
pause. Four digits are not a card number, so redaction cannot recognise the first group
alone; showing it would leak it. So a run of digits (or spelled digits) at the very end of
what a stream has heard is *undecided* while redaction is on: interims leave it out, and a
final that ends inside it is held back until what follows decides it (the next words, a long
silence, Finalize, or the end of the stream). Then redaction sees the whole number at once.

Pure and protocol-neutral in what it returns (an index into the words), so Deepgram v1
Results and Flux `Update`s use the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from server.deepgram.text.numbers import numbers_as_digits
from server.deepgram.text.redaction import REDACT_SUPPORTED, ZERO_WORDS, numeric_runs
from server.deepgram.text.rewrites import FILLERS
from server.deepgram.text.shape import TextOptions
from server.deepgram.text.smart import dotted_times
from server.deepgram.text.tokens import join_pieces
from server.engine import Word

# Every kind but email addresses is found among digits.
NUMBER_KINDS = frozenset(REDACT_SUPPORTED - {"email_address"})


def undecided_from(
    words: Sequence[Word], options: TextOptions, *, provisional: bool = False
) -> int | None:
    """Index of the first word of the number `words` end inside (trailing hesitations and
    punctuation do not end it), or None when the end is decided: no redaction by digits was
    asked for, or the words end on something else.

    Any such run is undecided whatever its length so far: with `pci` even one digit may be the
    first of a card number with no word announcing it; with `numbers` a third digit makes it
    redactable.

    `provisional` words (an interim, a Flux `Update`) are a fast greedy guess that the final
    decode may read otherwise: "four five" heard as "four or" ends on a word, yet the number
    goes on. So there the first number anywhere is undecided, not only one at the very end;
    the final says what the number was, redacted whole."""
    if not options.redact & NUMBER_KINDS or not words:
        return None
    tokens = numbers_as_digits(dotted_times(join_pieces(words)), options.language, 0)
    if provisional:
        starts = [tokens[a].start for a, _, _ in numeric_runs(tokens)]
        starts += [t.start for t in tokens if not t.atomic and t.bare in ZERO_WORDS]
        if not starts:
            return None
        first = min(starts)
        return next((i for i, w in enumerate(words) if w.start >= first - 1e-6), 0)
    end = len(tokens)
    while end and not tokens[end - 1].atomic and tokens[end - 1].bare in FILLERS:
        end -= 1
    if not end:
        return None
    last = tokens[end - 1]
    runs = [run for run in numeric_runs(tokens[:end]) if run[1] == end]
    if runs:
        first = tokens[runs[0][0]].start
    elif last.bare in ZERO_WORDS:  # "… is oh": a zero, or the word; the next words say which
        first = last.start
    else:
        return None
    return next((i for i, w in enumerate(words) if w.start >= first - 1e-6), 0)


def decided(words: Sequence[Word], options: TextOptions) -> list[Word]:
    """`words` up to their first number: what an interim may show."""
    cut = undecided_from(words, options, provisional=True)
    return list(words if cut is None else words[:cut])
