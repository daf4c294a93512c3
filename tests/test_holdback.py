"""Redaction in streams leaks nothing, whatever the machine: pure tests of the hold-back rule
(`server/deepgram/text/holdback.py`) and of one channel's held finals
(`server/streaming/holdback.py`), rendered by the same builder that writes Results messages.

Where a stream cuts its interims and finals depends on the machine's speed; these tests try
every cut: each prefix of an example as an interim, and each way of splitting it into finals.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from server.deepgram import live
from server.deepgram.text import TextOptions
from server.deepgram.text.holdback import decided, undecided_from
from server.engine import ModelInfo
from server.streaming.holdback import Holdback
from server.streaming.results import StreamEvent, StreamResult, StreamWord, UtteranceEnd

SPELLED = r"zero|oh|one|two|three|four|five|six|seven|eight|nine"
SPELLED_RE = re.compile(rf"\b({SPELLED})\b", re.I)
MODEL = ModelInfo(name="tiny.en", arch="whisper", version="test", multilingual=False)


def shows_a_digit(text: str) -> bool:
    """Any digit, or any spelled-out digit: these examples hold no number but the entity."""
    text = re.sub(r"\[[A-Z_]+_\d+\]", "", text)  # a redaction's own number
    return bool(re.search(r"\d", text) or SPELLED_RE.search(text))


@dataclass(frozen=True)
class Example:
    text: str  # Whisper's words, `|` between pieces; `//` marks a pause between groups
    kinds: tuple[str, ...]  # each redact value that must hide it
    token: str  # what redaction writes for it, once decided (`numbers`: NUMERICAL_PII)
    after: str = " Thanks."  # the words that decide it

    def token_for(self, kind: str) -> str:
        return "[NUMERICAL_PII_1]" if kind in ("numbers", "aggressive_numbers") else self.token

    def words(self) -> list[StreamWord]:
        out, at = [], 0.0
        for piece in self.text.split("|"):
            if piece.strip() == "//":
                at += 1.2
                continue
            out.append(StreamWord(piece, at, at + 0.3, 0.9, -0.1))
            at += 0.35
        return out

    def pauses(self) -> list[int]:
        """Indexes of the words that follow a pause."""
        pieces = self.text.split("|")
        out, index = [], 0
        for piece in pieces:
            if piece.strip() == "//":
                out.append(index)
            else:
                index += 1
        return out

    def all_words(self) -> list[StreamWord]:
        words = self.words()
        at = words[-1].end + 0.1
        return [*words, StreamWord(self.after, at, at + 0.3, 0.9, -0.1)]


EXAMPLES = {
    "card-spelled": Example(
        " Please| charge| my| card.| The| number| is| four| five| three| nine,| //| one| four|"
        " eight| eight,| //| zero| three| four| three,| //| six| four| six| seven.",
        ("pci", "credit_card", "numbers"),
        "[CREDIT_CARD_1]",
    ),
    "card-no-context": Example(
        " four| five| three| nine| //| one| four| eight| eight| //| zero| three| four| three|"
        " //| six| four| six| seven",
        ("pci", "credit_card"),
        "[CREDIT_CARD_1]",
    ),
    "card-digits": Example(
        " My| card| is| 4539| //| 1488,| um,| //| 0343| //| 6467.",
        ("pci", "credit_card", "numbers", "aggressive_numbers"),
        "[CREDIT_CARD_1]",
    ),
    "card-one-token": Example(
        " Card| number| 4539-1488-0343-6467.", ("pci", "numbers"), "[CREDIT_CARD_1]"
    ),
    "expiry": Example(
        " It| expires| zero| eight,| //| twenty| seven.",
        ("pci", "credit_card_expiration"),
        "[CREDIT_CARD_EXPIRATION_1]",
    ),
    "expiry-oh": Example(
        " It| expires| oh| eight| //| two| seven.",
        ("pci", "credit_card_expiration", "numbers"),
        "[CREDIT_CARD_EXPIRATION_1]",
    ),
    "cvv": Example(" The| CVV| is| three| //| four| five.", ("pci", "cvv"), "[CVV_1]"),
    "ssn-spelled": Example(
        " My| social| security| number| is| one| two| three,| //| four| five,| //| six| seven|"
        " eight| nine.",
        ("ssn", "numbers"),
        "[SSN_1]",
    ),
    "ssn-digits": Example(
        " My| social| security| number| is| 123|-45|-6789.", ("ssn", "numbers"), "[SSN_1]"
    ),
    "ssn-groups": Example(" My| SSN| is| 123.| //| 45.| //| 6789.", ("ssn", "numbers"), "[SSN_1]"),
    "phone": Example(
        " You| can| call| me| back| at| four| one| five,| //| five| five| five,| //| one| two|"
        " three| four.",
        ("phone_number", "numbers"),
        "[PHONE_NUMBER_1]",
    ),
    "account": Example(
        " My| account| number| is| zero| zero| one| two| //| three| four| five| six.",
        ("numbers", "aggressive_numbers"),
        "[NUMERICAL_PII_1]",
    ),
}
CASES = [(name, kind) for name, example in EXAMPLES.items() for kind in example.kinds]
MODES = [{}, {"numerals": True, "punctuate": True}, {"smart_format": True, "punctuate": True}]


def render(
    words: Sequence[StreamWord],
    options: TextOptions,
    context: Sequence[StreamWord] = (),
    is_final: bool = False,
) -> str:
    """The text a client reads in the Results message for `words`."""
    start = words[0].start if words else 0.0
    end = words[-1].end if words else 0.0
    result = StreamResult(0, start, end, tuple(words), is_final)
    message = live.results(
        result, channels=1, text=options, request_id="r", model=MODEL, context=context
    )
    alternative = message["channel"]["alternatives"][0]
    return alternative["transcript"] + " " + " ".join(w["word"] for w in alternative["words"])


@pytest.mark.parametrize("mode", MODES, ids=["words", "numerals", "smart"])
@pytest.mark.parametrize("name,kind", CASES)
def test_no_prefix_of_an_interim_shows_a_digit(name, kind, mode):
    example = EXAMPLES[name]
    options = TextOptions(redact=frozenset({kind}), **mode)
    words = example.all_words()
    for n in range(1, len(words) + 1):
        shown = render(decided_words(words[:n], options), options)
        assert not shows_a_digit(shown), (n, shown)
    # Once what follows decides it, the whole number is redacted at once.
    assert example.token_for(kind) in render(decided_words(words, options), options)


def decided_words(words: Sequence[StreamWord], options: TextOptions) -> list[StreamWord]:
    cut = live.undecided_from(words, options)
    return list(words if cut is None else words[:cut])


def test_the_rule_on_plain_words():
    from server.engine import Word

    def w(text: str) -> list[Word]:
        return [Word(p, i, i + 1, 0.9) for i, p in enumerate(text.split("|"))]

    pci = TextOptions(redact=frozenset({"pci"}))
    assert undecided_from(w(" my| card| is| four| five"), pci) == 3
    assert undecided_from(w(" my| card| is| 4539| 1488.| um"), pci) == 3
    assert undecided_from(w(" four| five| thanks"), pci) is None
    assert undecided_from(w(" it| is| oh"), pci) == 2
    assert undecided_from(w(" four| five"), TextOptions()) is None  # no redaction: no hold
    email = TextOptions(redact=frozenset({"email_address"}))
    assert undecided_from(w(" four| five"), email) is None
    assert [x.text for x in decided(w(" call| 555|-1234"), pci)] == [" call"]
    # A greedy interim may misread the number's next group ("four five" as "four or"): the
    # words end on a word, yet an interim still shows nothing from its first number on.
    assert undecided_from(w(" is| four| or"), pci) is None
    assert undecided_from(w(" is| four| or"), pci, provisional=True) == 1
    assert undecided_from(w(" is| it| oh| no"), pci, provisional=True) == 2
    assert undecided_from(w(" thanks| a| lot"), pci, provisional=True) is None
    assert [x.text for x in decided(w(" is| four| or| so"), pci)] == [" is"]


def test_a_misheard_interim_shows_no_digit():
    """The interim that leaked on a loaded machine: "… number is four five" heard as "four or"
    by the greedy interim decode, later finals right."""
    options = TextOptions(redact=frozenset({"pci"}), punctuate=True)
    client = Client(options)
    said = [" The", " number", " is", " four", " or"]
    words = tuple(StreamWord(t, i * 0.4, i * 0.4 + 0.3, 0.6, -0.5) for i, t in enumerate(said))
    client.push(StreamResult(0, 0.0, 2.0, words, False))
    assert client.texts and not any(shows_a_digit(t) for t in client.texts), client.texts


# --- finals held back ----------------------------------------------------------------------------
def final(words: Sequence[StreamWord], start: float, end: float, **flags: bool) -> StreamResult:
    return StreamResult(0, start, end, tuple(words), True, **flags)


def cuts(example: Example) -> list[list[int]]:
    """Ways a stream could cut these words into finals: at any one word, and at every
    combination of the pauses between the groups of the number."""
    n = len(example.words())
    pauses = example.pauses()
    combos = [list(c) for k in range(1, len(pauses) + 1) for c in itertools.combinations(pauses, k)]
    return [[]] + [[i] for i in range(1, n) if i not in pauses] + combos


class Client:
    """What a client receives through one channel's hold-back, rendered as Results."""

    def __init__(self, options: TextOptions) -> None:
        self.options = options
        self.hold = Holdback(  # as the v1 adapter builds it (deepgram/live_stream.py)
            lambda words: live.undecided_from(words, options),
            provisional=lambda words: live.undecided_from(words, options, provisional=True),
        )
        self.finals: list[StreamResult] = []
        self.texts: list[str] = []
        self.events: list[StreamEvent] = []

    def push(self, event: StreamEvent) -> None:
        self.receive(self.hold.push(event))

    def finish(self) -> None:
        self.receive(self.hold.finish())

    def receive(self, events: Sequence[StreamEvent]) -> None:
        for event in events:
            self.events.append(event)
            if not isinstance(event, StreamResult):
                continue
            context = [w for f in self.finals for w in f.words][-16:]
            self.texts.append(render(event.words, self.options, context, event.is_final))
            if event.is_final:
                self.finals.append(event)


def stream(example: Example, options: TextOptions, cut_at: Sequence[int], end: str) -> Client:
    """Interims at every word, finals at `cut_at`, then the number decided by `end`."""
    words = example.words()
    client = Client(options)
    bounds = [0, *cut_at, len(words)]
    start = 0.0
    for lo, hi in itertools.pairwise(bounds):
        for n in range(lo + 1, hi + 1):
            client.push(StreamResult(0, start, words[n - 1].end, tuple(words[lo:n]), False))
        stop = words[hi - 1].end + 0.05
        client.push(final(words[lo:hi], start, stop, speech_final=True))
        client.push(UtteranceEnd(0, words[hi - 1].end))
        start = stop
    last = words[-1].end
    if end == "words":
        after = StreamWord(example.after, last + 0.5, last + 0.8, 0.9, -0.1)
        client.push(StreamResult(0, start, after.end, (after,), False))
        client.push(final([after], start, after.end + 0.1, speech_final=True))
    elif end == "silence":
        client.push(final([], start, last + 3.0))
    elif end == "finalize":
        client.push(final([], start, last + 0.2, from_finalize=True))
    else:
        client.finish()
    return client


@pytest.mark.parametrize("end", ["words", "silence", "finalize", "close"])
@pytest.mark.parametrize("name,kind", CASES)
def test_finals_cut_anywhere_leak_nothing_and_keep_every_word_once(name, kind, end):
    example = EXAMPLES[name]
    options = TextOptions(redact=frozenset({kind}), punctuate=True)
    words = example.words()
    for cut_at in cuts(example):
        client = stream(example, options, cut_at, end)
        for text in client.texts:
            assert not shows_a_digit(text), (cut_at, text)
        said = [w for f in client.finals for w in f.words]
        expected = [*words, *([] if end != "words" else said[-1:])]
        assert said == expected, cut_at  # every word in exactly one final, in order
        for before, after in itertools.pairwise(client.finals):
            assert before.end == pytest.approx(after.start), cut_at  # finals tile the stream
        redacted = [t for t in client.texts if example.token_for(kind) in t]
        assert redacted, (cut_at, client.texts)
        sent: list[StreamWord] = []
        for event in client.events:  # an UtteranceEnd follows the final of its last word
            if isinstance(event, StreamResult) and event.is_final:
                sent += event.words
            elif isinstance(event, UtteranceEnd):
                assert sent and sent[-1].end >= event.last_word_end, cut_at


def test_a_held_number_waits_for_a_long_silence_not_a_short_one():
    options = TextOptions(redact=frozenset({"numbers"}))
    client = Client(options)
    words = EXAMPLES["account"].words()
    client.push(final(words[:6], 0.0, words[5].end))  # "... is zero zero": held
    assert [w.text for w in client.finals[-1].words] == [" My", " account", " number", " is"]
    assert client.hold.held is not None
    client.push(final([], words[5].end, words[5].end + 1.0))  # a short pause: still held
    assert client.hold.held is not None and len(client.finals) == 1
    client.push(final([], words[5].end + 1.0, words[5].end + 2.5))  # long enough: decided
    assert client.hold.held is None and len(client.finals) == 2
    # Two digits alone are no entity: decided by the silence, they are shown as said.
    assert "zero zero" in client.texts[-1].lower()


def test_without_redaction_everything_passes_through():
    client = Client(TextOptions())
    words = EXAMPLES["phone"].words()
    events: list[StreamEvent] = [
        StreamResult(0, 0.0, words[7].end, tuple(words[:8]), False),
        final(words[:8], 0.0, words[7].end, speech_final=True),
        UtteranceEnd(0, words[7].end),
    ]
    for event in events:
        client.push(event)
    assert client.events == events
