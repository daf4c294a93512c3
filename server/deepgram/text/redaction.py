"""Redaction on the digit view (so a spelled-out card number is caught too): each sensitive
value becomes Deepgram's `[TYPE_N]` token."""

from __future__ import annotations

import re
from collections.abc import Sequence

from server.deepgram.text.rewrites import FILLERS
from server.deepgram.text.tokens import Token, merge, split_edges

REDACT_NUMBERS = {"numbers", "true", "aggressive_numbers", "numerical_pii"}
REDACT_SUPPORTED = {
    "pci",
    "ssn",
    "credit_card",
    "credit_card_expiration",
    "cvv",
    "email_address",
    "phone_number",
    *REDACT_NUMBERS,
}
_CARD_CONTEXT = {
    "card",
    "visa",
    "mastercard",
    "amex",
    "discover",
    "credit",
    "debit",
    "number",
    "account",
}
_CVV_CONTEXT = {"cvv", "cvc", "cv2", "security"}
_EXPIRY_CONTEXT = {"expires", "expiry", "expiration", "exp", "expiring", "valid"}
_SSN_CONTEXT = {"ssn", "social", "security"}


def luhn(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        d = int(char)
        if index % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


# Said inside a number without ending it: hesitations ("four one, um, one one"), and "oh" for
# a zero ("four oh one").
ZERO_WORDS = {"oh", "o"}
BRIDGES = FILLERS | ZERO_WORDS


def digits_of(token: Token) -> str:
    """The digits a token says ("oh" is a zero); '' for a word or a redaction."""
    if token.atomic:
        return ""
    if token.bare in ZERO_WORDS:
        return "0"
    return re.sub(r"\D", "", token.text)


def _near(tokens: Sequence[Token], i: int, words: set[str], back: int = 6) -> bool:
    return any(t.bare in words for t in tokens[max(0, i - back) : i])


def numeric_runs(tokens: Sequence[Token]) -> list[tuple[int, int, str]]:
    """Maximal runs of tokens holding digits: (start, end, digits). Punctuation between them
    does not end a run: Whisper puts a full stop wherever a speaker pauses between the groups
    of a card number; nor does a hesitation. A lone "oh" is a word, not a number."""
    runs, i = [], 0
    while i < len(tokens):
        if not digits_of(tokens[i]):
            i += 1
            continue
        j = end = i + 1
        while j < len(tokens) and not tokens[j].atomic:
            if digits_of(tokens[j]):
                end = j = j + 1
            elif tokens[j].bare in BRIDGES:
                j += 1
            else:
                break
        run = tokens[i:end]
        if any(t.bare not in ZERO_WORDS for t in run):
            runs.append((i, end, "".join(digits_of(t) for t in run)))
        i = end
    return runs


def _entity(
    tokens: Sequence[Token], start: int, digits: str, kinds: frozenset[str], partial: bool
) -> str | None:
    """The entity type a run of digits is, among those requested; None to keep it. A
    `partial` run may continue in a stream's next message (or began in its last one), so its
    digits so far are judged by the words around them."""
    pci = "pci" in kinds
    n = len(digits)
    card_context = _near(tokens, start, _CARD_CONTEXT, 10)
    if (pci or "credit_card" in kinds) and (
        (12 <= n <= 19 and luhn(digits))
        or (n >= 12 and card_context)
        or (partial and n >= 3 and card_context)
    ):
        return "CREDIT_CARD"
    if (pci or "cvv" in kinds) and n in (3, 4) and _near(tokens, start, _CVV_CONTEXT):
        return "CVV"
    if (
        (pci or "credit_card_expiration" in kinds)
        and 3 <= n <= 6
        and _near(tokens, start, _EXPIRY_CONTEXT)
    ):
        return "CREDIT_CARD_EXPIRATION"
    ssn_context = _near(tokens, start, _SSN_CONTEXT, 8)
    if "ssn" in kinds and (
        n == 9 or (n == 4 and ssn_context) or (partial and n >= 3 and ssn_context)
    ):
        return "SSN"
    if "phone_number" in kinds and n in (7, 10, 11):
        return "PHONE_NUMBER"
    if kinds & {"numbers", "true", "numerical_pii"} and n >= 3:
        return "NUMERICAL_PII"
    if "aggressive_numbers" in kinds:
        return "NUMERICAL_PII"
    return None


def redact(
    tokens: Sequence[Token],
    kinds: frozenset[str],
    context: Sequence[Token] = (),
    open_end: bool = False,
) -> list[Token]:
    """Replace each sensitive value with Deepgram's token, `[TYPE_N]`, numbered per type in
    order of appearance. Runs on the digit view, so spelled-out numbers are caught too.

    A stream cuts its results at pauses, often inside a card number: `context` holds the words
    already sent before `tokens` (for the words that announce a number and the digits said so
    far), and `open_end` says the run at the end may go on in the next result."""
    if not kinds:
        return list(tokens)
    everything = [*context, *tokens]
    offset = len(context)
    counts: dict[str, int] = {}
    spans: list[tuple[int, int, str]] = []
    for start, end, digits in numeric_runs(everything):
        if end <= offset:
            continue
        partial = start < offset or (open_end and end == len(everything))
        kind = _entity(everything, start, digits, kinds, partial)
        if kind:
            spans.append((max(start, offset) - offset, end - offset, kind))
    if "email_address" in kinds:
        spans += [
            (i, i + 1, "EMAIL_ADDRESS")
            for i, t in enumerate(tokens)
            if re.search(r"\w@\w+\.\w", t.text) and not any(s <= i < e for s, e, _ in spans)
        ]
    spans.sort()
    out: list[Token] = []
    i = 0
    for start, end, kind in spans:
        out.extend(tokens[i:start])
        counts[kind] = counts.get(kind, 0) + 1
        trail = split_edges(tokens[end - 1].text)[2]
        label = f"[{kind}_{counts[kind]}]"
        out.append(merge(tokens[start:end], label + trail, atomic=True))
        i = end
    out.extend(tokens[i:])
    return out
