"""Text shaping (server/deepgram/text/) over tables of Whisper's words, no server needed.

The inputs are words as faster-whisper's word timing splits them ("$5" ".50", "10" ".30.",
"1" ",000", "555" "-123" "-4" ",567", "2000" "-27"): the pieces below were written by tiny.en on
speech generated with espeak-ng, or follow the same splitting rule.
"""

from __future__ import annotations

import itertools
import re

import pytest

from server.deepgram import response
from server.deepgram.params import ParamError, parse
from server.deepgram.text import TextOptions, join, luhn, search, shape, word_of
from server.engine import Segment, Word


def words(pieces: str, step: float = 0.3) -> list[Word]:
    return [Word(p, i * step, i * step + step, 0.9) for i, p in enumerate(pieces.split("|"))]


def plain(pieces: str, **options) -> str:
    return join([word_of(t) for t in shape(words(pieces), TextOptions(**options))])


def punctuated(pieces: str, **options) -> str:
    opts = TextOptions(punctuate=True, **options)
    return join([t.text for t in shape(words(pieces), opts)])


# (Whisper's pieces, default, numerals=true, smart_format=true)
TABLE = [
    (
        " It| costs| $5|.50| today.",
        "it costs five dollars and fifty cents today",
        "it costs $5.50 today",
        "It costs $5.50 today.",
    ),
    (
        " Pi| is| about| 3|.14.",
        "pi is about three point one four",
        "pi is about 3.14",
        "Pi is about 3.14.",
    ),
    (
        " The| meeting| is| at| 10|:30.",
        "the meeting is at ten thirty",
        "the meeting is at 10:30",
        "The meeting is at 10:30.",
    ),
    (
        " The| meeting| is| at| 10|.30.",
        "the meeting is at ten thirty",
        "the meeting is at 10:30",
        "The meeting is at 10:30.",
    ),
    (
        " Sales| grew| 50|%| this| year.",
        "sales grew fifty percent this year",
        "sales grew 50% this year",
        "Sales grew 50% this year.",
    ),
    (
        " We| sold| 1|,000| units.",
        "we sold one thousand units",
        "we sold 1,000 units",
        "We sold 1,000 units.",
    ),
    (
        " The| plan| runs| until| 2027.",
        "the plan runs until twenty twenty seven",
        "the plan runs until 2027",
        "The plan runs until 2027.",
    ),
    (
        " The| plan| runs| until| 2000|-27.",
        "the plan runs until twenty twenty seven",
        "the plan runs until 2027",
        "The plan runs until 2027.",
    ),
    (
        " She| finished| 3|rd| in| the| race.",
        "she finished third in the race",
        "she finished 3rd in the race",
        "She finished 3rd in the race.",
    ),
    (
        " Wear| a| mask,| i|.e|.| cover| your| face.",
        "wear a mask i.e. cover your face",
        "wear a mask i.e. cover your face",
        "Wear a mask, i.e. cover your face.",
    ),
    (
        " Write| to| john|@example|.com| today.",
        "write to john@example.com today",
        "write to john@example.com today",
        "Write to john@example.com today.",
    ),
    (
        " Visit| www|.example|.com| for| more.",
        "visit www.example.com for more",
        "visit www.example.com for more",
        "Visit www.example.com for more.",
    ),
    (
        " Call| me| at| 555|-123|-4|,567| tomorrow.",
        "call me at five five five one two three four five six seven tomorrow",
        "call me at 555-123-4,567 tomorrow",
        "Call me at 555-123-4567 tomorrow.",
    ),
    (
        " one| two| three| four| five",
        "one two three four five",
        "1 2 3 4 5",
        "12345",
    ),
    (
        " It| was| twenty| five| dollars| and| fifty| cents.",
        "it was twenty five dollars and fifty cents",
        "it was 25 dollars and 50 cents",
        "It was $25.50.",
    ),
    (
        " In| 1990s| music",
        "in nineteen nineties music",
        "in 1990s music",
        "In 1990s music",
    ),
]


@pytest.mark.parametrize("pieces,default,numerals,smart", TABLE)
def test_numbers_in_each_mode(pieces, default, numerals, smart):
    assert plain(pieces) == default
    assert plain(pieces, numerals=True) == numerals
    assert punctuated(pieces, smart_format=True) == smart


@pytest.mark.parametrize("pieces,default,_numerals,_smart", TABLE)
def test_default_has_no_digits_and_no_punctuation(pieces, default, _numerals, _smart):
    tokens = shape(words(pieces), TextOptions())
    assert not any(re.search(r"\d", word_of(t)) for t in tokens)
    assert all(word_of(t) == word_of(t).lower() for t in tokens)


@pytest.mark.parametrize("pieces,_default,_numerals,_smart", TABLE)
@pytest.mark.parametrize("mode", [{}, {"numerals": True}, {"smart_format": True}])
def test_transcript_words_and_paragraphs_agree(pieces, _default, _numerals, _smart, mode):
    """One value, one form: the transcript is its words, the paragraphs their punctuated forms,
    and a word's time lies inside the unit Whisper timed."""
    segment = Segment(0, 10, "", -0.1, 0.0, 0.0, 10, words(pieces))
    for punctuate in (False, True):
        options = TextOptions(punctuate=punctuate, **mode)
        alt, _ = response.alternative(segment.words, 0.9, options, paragraphs=punctuate)
        key = "punctuated_word" if punctuate else "word"
        assert alt["transcript"] == " ".join(w[key] for w in alt["words"])
        if punctuate:
            sentences = [s["text"] for p in alt["paragraphs"]["paragraphs"] for s in p["sentences"]]
            assert " ".join(sentences) == alt["transcript"]
        starts = [w["start"] for w in alt["words"]]
        assert starts == sorted(starts)
        assert all(w["start"] <= w["end"] for w in alt["words"])


@pytest.mark.parametrize(
    "pieces,written",
    [
        (" mail| john| at| example| dot| com| today.", "Mail john@example.com today."),
        (" Go| to| www| dot| example| dot| org.", "Go to www.example.org."),
        (" Meet| me| at| the| dot| com| party.", "Meet me at the dot com party."),
        (" I'm| at| home| dot.", "I'm at home dot."),
    ],
)
def test_smart_format_writes_spoken_addresses(pieces, written):
    assert punctuated(pieces, smart_format=True) == written


def test_one_token_per_written_unit():
    tokens = shape(words(" It| costs| $5|.50| and| pi| is| 3|.14."), TextOptions(numerals=True))
    assert [word_of(t) for t in tokens] == ["it", "costs", "$5.50", "and", "pi", "is", "3.14"]
    money = tokens[2]
    assert (money.start, money.end) == (0.6, 1.2)  # the two pieces' span


def test_spoken_words_share_the_unit_time():
    tokens = shape(words(" costs| $25|.50"), TextOptions())
    spoken = tokens[1:]
    assert [word_of(t) for t in spoken] == ["twenty", "five", "dollars", "and", "fifty", "cents"]
    assert spoken[0].start == 0.3 and spoken[-1].end == pytest.approx(0.9)
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(spoken))


def test_sentence_case_after_a_window_cut():
    assert punctuated(" the| Gutenberg| Bible.| is| printed.") == (
        "The Gutenberg Bible. Is printed."
    )


def test_numbers_as_words_in_other_languages():
    assert plain(" Il| a| 25| ans.", language="fr") == "il a vingt-cinq ans"
    assert plain(" Tengo| 3| gatos.", language="es") == "tengo tres gatos"
    assert plain(" Ich| habe| 1|,000| Euro", language="de") == "ich habe eintausend euro"
    # A language num2words does not know keeps its digits rather than inventing words.
    assert plain(" 25| xyz", language="xx") == "25 xyz"


def test_unspaced_scripts_are_not_glued_or_spaced():
    pieces = "我|有|三|本|书"
    assert plain(pieces, language="zh") == "我有三本书"


# --- redaction ---------------------------------------------------------------------------------
SPELLED = re.compile(
    r"\b(zero|oh|one|two|three|four|five|six|seven|eight|nine)\b(\s+\b(zero|oh|one|two|three|"
    r"four|five|six|seven|eight|nine)\b){2,}"
)


def leaks(text: str) -> bool:
    """A run of three digits, or three spelled-out digits, survived."""
    return bool(re.search(r"\d(\D?\d){2,}", text) or SPELLED.search(text.lower()))


CARD = " My| card| number| is| 4111| 1111| 1111| 1111| and| it| expires| 04|/27."
SPOKEN_CARD = " card| is| " + "| ".join(["four"] + ["one"] * 15) + "."
SSN = " My| social| security| number| is| 123|-45|-6789."
SPOKEN_SSN = " ssn| is| one| two| three| four| five| six| seven| eight| nine."


@pytest.mark.parametrize("pieces", [CARD, SPOKEN_CARD])
@pytest.mark.parametrize("mode", [{}, {"numerals": True}, {"smart_format": True}])
def test_pci_leaves_no_card_number(pieces, mode):
    for punctuate in (False, True):
        options = TextOptions(redact=frozenset({"pci"}), punctuate=punctuate, **mode)
        tokens = shape(words(pieces), options)
        text = join([t.text for t in tokens]) + " " + join([word_of(t) for t in tokens])
        assert "[CREDIT_CARD_1]" in text
        assert not leaks(text.replace("04/27", "")), text


def test_pci_redacts_expiry_and_uses_luhn():
    options = TextOptions(redact=frozenset({"pci"}), numerals=True)
    text = join([word_of(t) for t in shape(words(CARD), options)])
    assert text == "my card number is [CREDIT_CARD_1] and it expires [CREDIT_CARD_EXPIRATION_1]"
    assert luhn("4111111111111111") and not luhn("4111111111111112")
    # Sixteen digits failing Luhn, with nothing saying "card", are not a card.
    other = " order| 4111| 1111| 1111| 1112| shipped"
    assert "[CREDIT_CARD" not in plain(other, redact=frozenset({"pci"}))


@pytest.mark.parametrize("pieces", [SSN, SPOKEN_SSN])
def test_ssn(pieces):
    for mode in ({}, {"smart_format": True}):
        text = plain(pieces, redact=frozenset({"ssn"}), **mode)
        assert "[SSN_1]" in text and not leaks(text), text


@pytest.mark.parametrize("kind", ["numbers", "true", "aggressive_numbers"])
def test_numbers_redaction_numbers_every_run(kind):
    pieces = " Call| 555|-123|-4|,567| or| one| two| three| four| and| bring| 2| friends."
    text = punctuated(pieces, redact=frozenset({kind}))
    assert "[NUMERICAL_PII_1]" in text and "[NUMERICAL_PII_2]" in text
    assert not leaks(text), text
    if kind == "aggressive_numbers":
        assert "two friends" not in text.lower()


def test_redaction_tokens_are_the_same_everywhere():
    segment = Segment(0, 10, "", -0.1, 0.0, 0.0, 10, words(SSN))
    options = TextOptions(redact=frozenset({"ssn"}), punctuate=True)
    alt, _ = response.alternative(segment.words, 0.9, options, paragraphs=True)
    token = next(w for w in alt["words"] if "SSN" in w["word"])
    assert token["word"] == "[SSN_1]" and token["punctuated_word"] == "[SSN_1]."
    assert "[SSN_1]." in alt["transcript"] and "[SSN_1]." in alt["paragraphs"]["transcript"]
    utterances = response.utterances_of(0, alt["words"], 0.8, True)
    assert "[SSN_1]" in utterances[0]["transcript"]


def test_email_redaction():
    assert plain(" mail| john|@example|.com| now", redact=frozenset({"email_address"})) == (
        "mail [EMAIL_ADDRESS_1] now"
    )


@pytest.mark.parametrize("value", ["pii", "phi", "name", "location", "pci,name"])
def test_redaction_that_cannot_be_honoured_is_refused(value):
    with pytest.raises(ParamError, match="cannot be honoured"):
        parse([("redact", value)])


# --- the other content features ----------------------------------------------------------------
def test_replace_several_pairs_and_phrases():
    pairs = (("hello", "hi"), ("new york", "NYC"), ("um", ""))
    text = punctuated(" Hello| there,| I| live| in| New| York.", replace=pairs)
    assert text == "hi there, I live in NYC."  # a replacement is written as given


def test_profanity_filter_masks_only_profanity():
    text = punctuated(" Oh| shit,| the| damn| god| of| hell.", profanity_filter=True)
    assert text == "Oh ****, the **** god of hell."
    assert punctuated(" Oh| shit.") == "Oh shit."


def test_dictation_needs_punctuation_and_writes_marks():
    pieces = " Dear| John| comma| thanks| period| new| line| Bye| exclamation| point"
    assert punctuated(pieces, dictation=True) == "Dear John, thanks.\nBye!"
    assert plain(pieces, dictation=True).startswith("dear john comma")


def test_measurements():
    assert punctuated(" Take| 5| milligrams| daily.", measurements=True) == "Take 5 mg daily."
    assert plain(" drive| sixty| miles| per| hour", measurements=True, numerals=True) == (
        "drive 60 mph"
    )
    assert plain(" a| meter| away", measurements=True) == "a meter away"


def test_filler_words_are_left_out_unless_asked():
    pieces = " Um,| I| think,| uh,| yes."
    assert punctuated(pieces) == "I think, yes."
    assert punctuated(pieces, filler_words=True) == "Um, I think, uh, yes."


def test_search_hits_line_up_with_word_times():
    tokens = shape(words(" the| quick| brown| fox| jumps| over| the| lazy| dog"), TextOptions())
    results = search(tokens, ["brown fox", "lazy dogs", "zebra"])
    by_query = {r["query"]: r["hits"] for r in results}
    best = by_query["brown fox"][0]
    assert best["confidence"] == 1.0 and best["snippet"] == "brown fox"
    assert (best["start"], best["end"]) == (tokens[2].start, tokens[3].end)
    assert by_query["lazy dogs"][0]["snippet"] == "lazy dog"
    assert by_query["zebra"] == []


def test_keywords_intensifiers_boost_or_suppress():
    params = parse(
        [("keywords", "Deepgram:2"), ("keywords", "um:-5"), ("keywords", "x:0"), ("keyterm", "a b")]
    )
    assert params.keyterms == ["Deepgram", "a b"]
    assert params.suppress == ["um"]
    with pytest.raises(ParamError):
        parse([("keywords", "word:loud")])


@pytest.mark.parametrize(
    "query,match",
    [
        ([("language", "fr"), ("profanity_filter", "true")], "profanity_filter"),
        ([("language", "ru"), ("redact", "pci")], "redact"),
    ],
)
def test_content_features_a_language_cannot_have_are_refused(query, match):
    with pytest.raises(ParamError, match=match):
        parse(query)
    parse([("language", "es"), ("redact", "pci")])  # text2num reads Spanish numbers


def test_dictation_without_punctuation_is_a_warning():
    params = parse([("dictation", "true")])
    assert [w["parameter"] for w in params.warnings.as_dicts()] == ["dictation"]
    assert not parse([("dictation", "true"), ("punctuate", "true")]).warnings.as_dicts()


def test_content_parameters_reach_the_text_options():
    params = parse(
        [
            ("numerals", "true"),
            ("profanity_filter", "true"),
            ("redact", "pci"),
            ("redact", "ssn"),
            ("replace", "a:b"),
            ("replace", "c d:e"),
            ("search", "foo"),
            ("dictation", "true"),
            ("punctuate", "true"),
            ("measurements", "true"),
            ("filler_words", "true"),
        ]
    )
    options = params.text_options("en")
    assert options.numerals and options.profanity_filter and options.dictation
    assert options.redact == {"pci", "ssn"} and options.replace == (("a", "b"), ("c d", "e"))
    assert params.search == ["foo"] and not params.warnings.as_dicts()


def test_a_card_number_cut_across_stream_results_is_redacted_in_each():
    options = TextOptions(redact=frozenset({"pci"}), punctuate=True)
    first = words(" Charge| my| card.| The| number| is| four| two| four| two.")
    second = words(" Four| two| four| two.")
    sent = shape(first, options, open_end=True)
    assert join([t.text for t in sent]).endswith("is [CREDIT_CARD_1].")
    following = shape(second, options, context=first, open_end=True)
    assert [t.text for t in following] == ["[CREDIT_CARD_1]."]
    # A whole transcript (REST) does not guess: four digits are not a card number.
    assert "CREDIT_CARD" not in join([t.text for t in shape(first, options)])


def test_a_hesitation_or_an_oh_does_not_split_a_number():
    pieces = " card| is| 4539,| um,| 1488| oh| 343| 6467| thanks"
    text = plain(pieces, redact=frozenset({"pci"}))
    assert text == "card is [CREDIT_CARD_1] thanks", text
    assert plain(" oh| well", redact=frozenset({"aggressive_numbers"})) == "oh well"
