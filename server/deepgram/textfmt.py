"""Text shaping as Deepgram does it: pure functions from Whisper's words to Deepgram tokens.

One pass shared by REST, streaming and the CLI, so a value reads the same in a transcript, its
words, paragraphs, utterances, search snippets and every stream message:

1. `join_pieces`: Whisper's word timing splits a written unit at punctuation ("$25" ".50",
   "i" ".e.", "john" "@example" ".com"); the pieces without a leading space are glued back, so
   one written unit is one token.
2. Numbers: with `numerals` or `smart_format` spoken numbers become digits (text2num); with
   neither, every number is spoken as words (num2words) in the transcript's language, and a
   token like "$25.50" becomes "twenty five dollars and fifty cents", one token per spoken word
   with the unit's time shared out between them.
3. `smart_format`: phone numbers, spoken currency and percentages in their written forms.
4. Redaction on the digit view (so a spelled-out card number is caught too), then dictation,
   measurements, filler words, `replace`, and the profanity filter.
5. Casing and punctuation: `word` is always the spoken, lower-case, unpunctuated form;
   `punctuated_word` the formatted one, sentence-cased.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from num2words import CONVERTER_CLASSES, num2words
from text_to_num import alpha2digit

from server.engine import Word

SENTENCE_END = (".", "?", "!", "。", "？", "！")
CURRENCY = {"$": "USD", "€": "EUR", "£": "GBP", "¥": "JPY", "₹": "INR"}
# text2num's languages (spoken numbers -> digits), and the words that join the parts of one
# number there ("one hundred and five", "three point one four").
ALPHA2DIGIT_LANGUAGES = {"en", "fr", "es", "pt", "de", "nl", "da", "it"}
NUMBER_JOINERS = {
    "en": {"and", "point"},
    "fr": {"et", "virgule"},
    "es": {"y", "coma", "punto"},
    "pt": {"e", "vírgula", "ponto"},
    "de": {"und", "komma"},
    "nl": {"en", "komma", "punt"},
    "da": {"og", "komma"},
    "it": {"e", "virgola", "punto"},
}
# Whisper leaves out hesitations it was not shown; a prompt written with them keeps them.
FILLER_PROMPT = "Umm, let me think like, hmm... Okay, here's what I'm, like, thinking. Uh, so, um."
FILLERS = {"uh", "um", "umm", "uhm", "er", "erm", "hmm", "mm", "mhm", "ah", "uh-huh", "mm-hmm"}
# Deepgram's dictation commands (English), longest first so "question mark" wins over a word.
DICTATION = [
    (("exclamation", "point"), "!"),
    (("exclamation", "mark"), "!"),
    (("question", "mark"), "?"),
    (("new", "paragraph"), "\n\n"),
    (("new", "line"), "\n"),
    (("full", "stop"), "."),
    (("comma",), ","),
    (("period",), "."),
    (("colon",), ":"),
    (("semicolon",), ";"),
]
MEASUREMENTS = {
    ("milligram",): "mg",
    ("milligrams",): "mg",
    ("gram",): "g",
    ("grams",): "g",
    ("kilogram",): "kg",
    ("kilograms",): "kg",
    ("microgram",): "µg",
    ("micrograms",): "µg",
    ("millimeter",): "mm",
    ("millimeters",): "mm",
    ("centimeter",): "cm",
    ("centimeters",): "cm",
    ("meter",): "m",
    ("meters",): "m",
    ("kilometer",): "km",
    ("kilometers",): "km",
    ("kilometers", "per", "hour"): "km/h",
    ("miles", "per", "hour"): "mph",
    ("mile",): "mi",
    ("miles",): "mi",
    ("inch",): "in",
    ("inches",): "in",
    ("foot",): "ft",
    ("feet",): "ft",
    ("pound",): "lb",
    ("pounds",): "lbs",
    ("ounce",): "oz",
    ("ounces",): "oz",
    ("milliliter",): "mL",
    ("milliliters",): "mL",
    ("liter",): "L",
    ("liters",): "L",
    ("degrees", "celsius"): "°C",
    ("degrees", "fahrenheit"): "°F",
    ("kilobytes",): "KB",
    ("megabytes",): "MB",
    ("gigabytes",): "GB",
}
# Words in better-profanity's list that are ordinary in speech; masking them would corrupt text.
NOT_PROFANE = {
    "god",
    "kill",
    "gay",
    "sex",
    "sexy",
    "breast",
    "breasts",
    "drunk",
    "ugly",
    "fat",
    "hell",
    "lust",
    "nude",
    "naked",
    "urine",
    "vomit",
    "crap",
    "weed",
    "pot",
    "kinky",
    "hump",
    "pissed",
    "screw",
    "screwed",
    "sucks",
    "suck",
    "balls",
    "ball",
    "butt",
    "lesbian",
    "homo",
    "gays",
    "queer",
    "tit",
    "willy",
    "xx",
    "xxx",
    "ass",
}


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
_EDGE = "\"'“”‘’«»¿¡([{)]},;:!?.。，、！？：；…"
_INITIALISM = re.compile(r"^(?:[^\W\d_]\.){2,}$")


def bare(text: str) -> str:
    """Deepgram's `word`: lower case, no surrounding punctuation (inner marks of a value stay,
    so "$5.50" stays "$5.50", never "550"; "i.e." stays "i.e.")."""
    text = text.strip()
    if _INITIALISM.match(text):
        return text.lower()
    core = text.strip(_EDGE)
    if core.endswith("'s") or not core.endswith(("'", "’")):
        return core.lower()
    return core.rstrip("'’").lower()


def _split_edges(text: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation) of a written token."""
    if _INITIALISM.match(text):
        return "", text, ""
    core = text.strip(_EDGE)
    if not core:
        return text, "", ""
    lead = text[: text.index(core)]
    trail = text[len(lead) + len(core) :]
    return lead, core, trail


def _unspaced(char: str) -> bool:
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
            and not _unspaced(stripped[0])
            and not _unspaced(tokens[-1].text[-1])
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
    return [t for t in tokens if t.text.strip(_EDGE) or _INITIALISM.match(t.text)]


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


def _merge(tokens: Sequence[Token], text: str, **extra: object) -> Token:
    return replace(
        tokens[0],
        text=text,
        end=tokens[-1].end,
        confidence=min(t.confidence for t in tokens),
        **extra,
    )


# --- numbers as words ---------------------------------------------------------------------------
def _n2w_lang(language: str) -> str | None:
    code = language.replace("-", "_")
    if code in CONVERTER_CLASSES:
        return code
    base = code.split("_")[0]
    return base if base in CONVERTER_CLASSES else None


@lru_cache(maxsize=4096)
def _say(value: str, lang: str, to: str = "cardinal") -> str:
    """num2words, with English written as Deepgram writes it: no hyphens, no commas."""
    number: int | Decimal = Decimal(value) if "." in value else int(value)
    words = num2words(number, lang=lang, to=to)
    if lang.startswith("en"):
        words = words.replace("-", " ").replace(",", "")
    return words


def _say_digits(digits: str, lang: str) -> str:
    return " ".join(_say(d, lang) for d in digits)


_CURRENCY_RE = re.compile(r"^([$€£¥₹])(\d[\d,]*)(?:\.(\d{1,2}))?$")
_PERCENT_RE = re.compile(r"^(-?\d[\d,]*(?:\.\d+)?)%$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")
_ORDINAL_RE = re.compile(r"^(\d+)(?:st|nd|rd|th|º|ª|e|er|ème|\.)$", re.IGNORECASE)
_YEAR_RE = re.compile(r"^(1[1-9]\d\d|20\d\d)(s?)$")
_NUMBER_RE = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_DIGIT_GROUPS_RE = re.compile(r"^\d+(?:[-./,]\d+)+$")
_ANY_DIGIT = re.compile(r"\d")
_PARTS_RE = re.compile(r"\d+(?:\.\d+)?|[^\d]+")


def _currency_words(symbol: str, whole: str, cents: str | None, lang: str) -> str:
    amount = int(whole.replace(",", ""))
    if lang.startswith("en"):
        names = {
            "$": ("dollar", "dollars"),
            "€": ("euro", "euros"),
            "£": ("pound", "pounds"),
            "¥": ("yen", "yen"),
            "₹": ("rupee", "rupees"),
        }[symbol]
        words = f"{_say(str(amount), lang)} {names[amount != 1]}"
        if cents and int(cents.ljust(2, "0")):
            c = int(cents.ljust(2, "0"))
            unit = "pence" if symbol == "£" else "cents"
            words += f" and {_say(str(c), lang)} {unit if c != 1 else unit.rstrip('s')}"
        return words
    value = f"{amount}.{cents.ljust(2, '0')}" if cents else str(amount)
    try:
        return num2words(Decimal(value), lang=lang, to="currency", currency=CURRENCY[symbol])
    except (NotImplementedError, KeyError, TypeError, ValueError):
        return f"{_say(value, lang)} {symbol}"


def spoken(core: str, lang: str) -> str | None:
    """A written value as it is spoken ("$25.50" -> "twenty five dollars and fifty cents"),
    or None when it holds no number."""
    if not _ANY_DIGIT.search(core):
        return None
    try:
        if m := _CURRENCY_RE.match(core):
            return _currency_words(m[1], m[2], m[3], lang)
        if m := _PERCENT_RE.match(core):
            percent = "percent" if lang.startswith("en") else "%"
            return f"{_say(m[1].replace(',', ''), lang)} {percent}"
        if m := _TIME_RE.match(core):
            hour, minute = int(m[1]), int(m[2])
            if minute == 0:
                return _say(str(hour), lang) + (" o'clock" if lang.startswith("en") else "")
            if minute < 10 and lang.startswith("en"):
                return f"{_say(str(hour), lang)} oh {_say(str(minute), lang)}"
            return f"{_say(str(hour), lang)} {_say(str(minute), lang)}"
        if m := _YEAR_RE.match(core):
            words = _say(m[1], lang, "year") if lang.startswith("en") else _say(m[1], lang)
            if m[2]:
                words = words[:-1] + "ies" if words.endswith("y") else words + "s"
            return words
        if m := _ORDINAL_RE.match(core):
            return _say(m[1], lang, "ordinal")
        if _NUMBER_RE.match(core) and "." in core and lang.startswith("en"):
            whole, _, decimals = core.replace(",", "").partition(".")
            return f"{_say(whole, lang)} point {_say_digits(decimals, lang)}"
        if _NUMBER_RE.match(core):
            plain = core.replace(",", "")
            unsigned = plain.lstrip("-")
            # Leading zeros, or a long digit string written without separators (an account or
            # card number), are said digit by digit.
            if "." not in plain and (
                (unsigned.startswith("0") and len(unsigned) > 1)
                or ("," not in core and len(unsigned) >= 7)
            ):
                return _say_digits(plain, lang)
            return _say(plain, lang)
        if _DIGIT_GROUPS_RE.match(core):  # phone numbers, card numbers, dates written 3/4/25
            return " ".join(
                _say_digits(g, lang) if len(g) > 2 or g.startswith("0") else _say(g, lang)
                for g in re.split(r"[-./,]", core)
            )
        # Mixed letters and digits ("3D", "COVID-19", "mp3"): say the digits, keep the rest.
        parts = []
        for part in _PARTS_RE.findall(core):
            if _ANY_DIGIT.match(part):
                parts.append(_say(part, lang))
            elif part.strip("-"):
                parts.append(part.strip("-"))
        return " ".join(parts)
    except (NotImplementedError, OverflowError, InvalidOperation, ValueError, KeyError):
        return None


def numbers_as_words(tokens: Sequence[Token], language: str) -> list[Token]:
    """Every number spoken as words (Deepgram's default), one token per spoken word."""
    lang = _n2w_lang(language)
    if lang is None:
        return list(tokens)
    out: list[Token] = []
    for token in tokens:
        if token.atomic:
            out.append(token)
            continue
        lead, core, trail = _split_edges(token.text)
        words = spoken(core, lang)
        if words is None:
            out.append(token)
            continue
        pieces = words.split()
        if lead:
            pieces[0] = lead + pieces[0]
        pieces[-1] += trail
        out.extend(spread(token, pieces))
    return out


# --- numbers as digits --------------------------------------------------------------------------
# Articles text2num reads as "1" when nothing follows ("a" -> "1"): never a number alone.
ARTICLES = {"a", "an"}


@lru_cache(maxsize=8192)
def _numeric(word: str, lang: str) -> bool:
    if not word or word in ARTICLES:
        return False
    return _ANY_DIGIT.search(word) is not None or alpha2digit(word, lang, threshold=0) != word


def numbers_as_digits(tokens: Sequence[Token], language: str, threshold: int = 3) -> list[Token]:
    """Spoken numbers -> digits (text2num), keeping times: a run of number words becomes the
    digits it spells, each group of digits taking the time of the words that said it."""
    lang = language.split("-")[0]
    if lang not in ALPHA2DIGIT_LANGUAGES:
        return list(tokens)
    joiners = NUMBER_JOINERS.get(lang, set())
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.atomic or not _numeric(token.bare, lang) or _ANY_DIGIT.search(token.bare):
            out.append(token)
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and not tokens[j].atomic:
            word = tokens[j].bare
            if _ANY_DIGIT.search(word) or _split_edges(tokens[j - 1].text)[2].strip():
                break  # a written number or a sentence mark ends the spoken run
            if _numeric(word, lang):
                j += 1
            elif (
                word in joiners
                and j + 1 < len(tokens)
                and _numeric(tokens[j + 1].bare, lang)
                and not _ANY_DIGIT.search(tokens[j + 1].bare)
            ):
                j += 2
            else:
                break
        run = tokens[i:j]
        said = " ".join(t.bare for t in run)
        written = alpha2digit(said, lang, threshold=threshold)
        if written == said:
            out.extend(run)
        else:
            lead = _split_edges(run[0].text)[0]
            trail = _split_edges(run[-1].text)[2]
            out.extend(_regroup(run, written.split(), lead, trail))
        i = j
    return out


def _regroup(run: Sequence[Token], pieces: list[str], lead: str, trail: str) -> list[Token]:
    """Give each written piece a contiguous share of the spoken words it came from."""
    n, k = len(run), len(pieces)
    out = []
    for index, piece in enumerate(pieces):
        lo = index * n // k
        hi = max(lo + 1, (index + 1) * n // k)
        group = run[lo:hi]
        text = (lead if index == 0 else "") + piece + (trail if index == k - 1 else "")
        if run[0].text[:1].isupper() and index == 0:
            text = text[:1].upper() + text[1:]
        out.append(_merge(group, text))
    return out


# --- smart_format -------------------------------------------------------------------------------
_DIGITS_ONLY = re.compile(r"^\d+$")


def _digit_run(tokens: Sequence[Token], i: int) -> int:
    """End of the run of bare-digit tokens starting at i (no sentence marks inside)."""
    j = i
    while j < len(tokens) and not tokens[j].atomic and _DIGITS_ONLY.match(tokens[j].text):
        j += 1
    if j < len(tokens) and j > i and not tokens[j].atomic:
        lead, core, _ = _split_edges(tokens[j].text)
        if not lead and _DIGITS_ONLY.match(core):
            j += 1  # the last digits of the run carry the sentence's punctuation
    return j


def _phone(digits: str) -> str | None:
    if len(digits) == 10:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    if len(digits) == 11 and digits.startswith("1"):
        return f"1-{digits[1:4]}-{digits[4:7]}-{digits[7:]}"
    if len(digits) == 7:
        return f"{digits[:3]}-{digits[3:]}"
    return None


_PHONE_WRITTEN = re.compile(r"^\(?\d{3}\)?[-. ]?\d{3}[-.,]?\d[\d,]{3,4}$|^\d{3}-\d[\d,]{3,4}$")
_SPELLED_DIGITS = re.compile(r"^\d(?:-\d)+$")
_DOTTED_TIME = re.compile(r"^([01]?\d|2[0-3])\.([0-5]\d)$")
_TIME_CONTEXT = {"at", "by", "until", "till", "from", "before", "after", "around"}
_MERIDIEM = {"am", "pm", "a.m", "p.m", "a.m.", "p.m."}


def _spelled_digits(tokens: Sequence[Token]) -> list[Token]:
    """Whisper writes digits said one by one as "4-1-1-1": as a written value, "4111"."""
    out = []
    for token in tokens:
        lead, core, trail = _split_edges(token.text)
        if not token.atomic and _SPELLED_DIGITS.match(core):
            token = replace(token, text=lead + core.replace("-", "") + trail)
        out.append(token)
    return out


_SPLIT_YEAR = re.compile(r"^(19|20)00-(\d\d)$")


def _dotted_times(tokens: Sequence[Token]) -> list[Token]:
    """Whisper's slips in writing what was said: a time after "at" as "10.30" ("10:30"), and
    "twenty twenty seven" as "2000-27" ("2027")."""
    out = []
    for i, token in enumerate(tokens):
        lead, core, trail = _split_edges(token.text)
        if not token.atomic and (m := _SPLIT_YEAR.match(core)):
            token = replace(token, text=f"{lead}{m[1]}{m[2]}{trail}")
        elif not token.atomic and (m := _DOTTED_TIME.match(core)):
            before = tokens[i - 1].bare if i else ""
            after = tokens[i + 1].bare if i + 1 < len(tokens) else ""
            if before in _TIME_CONTEXT or after in _MERIDIEM:
                token = replace(token, text=f"{lead}{m[1]}:{m[2]}{trail}")
        out.append(token)
    return out


TOP_LEVEL_DOMAINS = {
    "com", "org", "net", "edu", "gov", "io", "co", "ai", "app", "dev", "info", "biz", "us",
    "uk", "de", "fr", "es", "it", "nl", "ca", "au", "in", "jp",
}  # fmt: skip


_NOT_ADDRESS = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "this", "that",
                "me", "you", "him", "us", "them", "it", "i", "we", "they"}  # fmt: skip


def _spoken_address(tokens: Sequence[Token], i: int) -> tuple[int, str] | None:
    """ "john at example dot com" / "www dot example dot com" from position i: (end, written),
    or None. Only a run that ends on a known top-level domain counts."""
    parts: list[str] = []
    j = i
    at = False
    while j < len(tokens) and not tokens[j].atomic:
        word = tokens[j].bare
        if not re.fullmatch(r"[a-z0-9-]+", word):
            break
        parts.append(word)
        j += 1
        if j < len(tokens) and not _split_edges(tokens[j - 1].text)[2]:
            joiner = tokens[j].bare
            if joiner == "dot" or (joiner == "at" and not at and len(parts) == 1):
                at = at or joiner == "at"
                parts.append("." if joiner == "dot" else "@")
                j += 1
                continue
        break
    if parts and parts[-1] in {".", "@"}:
        parts, j = parts[:-1], j - 1
    written = "".join(parts)
    if "." not in written or written.rsplit(".", 1)[1] not in TOP_LEVEL_DOMAINS:
        return None
    if any(p in _NOT_ADDRESS for p in parts[:-1]):
        return None  # "meet me at the dot com party" is speech, not an address
    return j, written


def smart(tokens: Sequence[Token]) -> list[Token]:
    """Written forms for values said in parts: phone numbers, "25 dollars and 50 cents",
    "50 percent", emails and web addresses said aloud."""
    tokens = _spelled_digits(tokens)
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        lead, core, trail = _split_edges(token.text)
        address = _spoken_address(tokens, i)
        if address is not None:
            end, written = address
            trail = _split_edges(tokens[end - 1].text)[2]
            out.append(_merge(tokens[i:end], lead + written + trail))
            i = end
            continue
        if not token.atomic and _PHONE_WRITTEN.match(core) and "-" in core:
            phone = _phone(re.sub(r"\D", "", core))
            if phone:  # Whisper's "555-123-4,567"
                out.append(replace(token, text=lead + phone + trail))
                i += 1
                continue
        j = _digit_run(tokens, i)
        if j - i >= 2:
            run = tokens[i:j]
            trail = _split_edges(run[-1].text)[2]
            groups = [_split_edges(t.text)[1] for t in run]
            digits = "".join(groups)
            phone = _phone(digits)
            if phone and all(len(g) <= 4 for g in groups):
                out.append(_merge(run, phone + trail))
            elif all(len(g) == 1 for g in groups) and len(groups) >= 4:
                out.append(_merge(run, digits + trail))  # digits dictated one by one
            else:
                out.extend(run)
            i = j
            continue
        nxt = tokens[i + 1].bare if i + 1 < len(tokens) else ""
        lead, core, trail = _split_edges(token.text)
        if (
            not token.atomic
            and _NUMBER_RE.match(core)
            and not trail
            and nxt in {"dollars", "dollar", "bucks"}
        ):
            amount, used = f"${core}", 2
            after = [t.bare for t in tokens[i + 2 : i + 5]]
            if (
                len(after) == 3
                and after[0] == "and"
                and re.fullmatch(r"\d{1,2}", after[1])
                and after[2] in {"cents", "cent"}
            ):
                amount, used = f"${core}.{after[1].zfill(2)}", 5
            end_trail = _split_edges(tokens[i + used - 1].text)[2]
            out.append(_merge(tokens[i : i + used], lead + amount + end_trail))
            i += used
            continue
        if not token.atomic and _NUMBER_RE.match(core) and not trail and nxt == "percent":
            end_trail = _split_edges(tokens[i + 1].text)[2]
            out.append(_merge(tokens[i : i + 2], lead + core + "%" + end_trail))
            i += 2
            continue
        out.append(token)
        i += 1
    return out


# --- redaction ----------------------------------------------------------------------------------
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


def _digits_of(token: Token) -> str:
    return re.sub(r"\D", "", token.text) if not token.atomic else ""


def _near(tokens: Sequence[Token], i: int, words: set[str], back: int = 6) -> bool:
    return any(t.bare in words for t in tokens[max(0, i - back) : i])


def _numeric_runs(tokens: Sequence[Token]) -> list[tuple[int, int, str]]:
    """Maximal runs of tokens holding digits: (start, end, digits). Punctuation between them
    does not end a run: Whisper puts a full stop wherever a speaker pauses between the groups
    of a card number."""
    runs, i = [], 0
    while i < len(tokens):
        if _digits_of(tokens[i]):
            j = i
            while j < len(tokens) and _digits_of(tokens[j]):
                j += 1
            runs.append((i, j, "".join(_digits_of(t) for t in tokens[i:j])))
            i = j
        else:
            i += 1
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
    for start, end, digits in _numeric_runs(everything):
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
        trail = _split_edges(tokens[end - 1].text)[2]
        label = f"[{kind}_{counts[kind]}]"
        out.append(_merge(tokens[start:end], label + trail, atomic=True))
        i = end
    out.extend(tokens[i:])
    return out


# --- dictation, measurements, fillers, replace, profanity ----------------------------------------
def _match(tokens: Sequence[Token], i: int, words: Sequence[str]) -> bool:
    if i + len(words) > len(tokens):
        return False
    return all(not tokens[i + k].atomic and tokens[i + k].bare == w for k, w in enumerate(words))


def _rewrite(
    tokens: Sequence[Token],
    rules: Sequence[tuple[Sequence[str], str]],
    apply: Callable[[list[Token], Sequence[Token], str], bool],
) -> list[Token]:
    """Walk the tokens; where a rule's words match (first rule first), `apply(out, matched,
    value)` writes the rewrite into `out` and the matched tokens are consumed; when it declines
    (returns False) the token is kept."""
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        for words, value in rules:
            if _match(tokens, i, words) and apply(out, tokens[i : i + len(words)], value):
                i += len(words)
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def _punctuate_previous(out: list[Token], _said: Sequence[Token], mark: str) -> bool:
    if not out:
        return False  # nothing to attach a mark to: the word stays a word
    prev = out[-1]
    if mark.startswith("\n"):  # a line break keeps the sentence's mark
        text = prev.text + mark
    else:
        lead, core, _ = _split_edges(prev.text)
        text = lead + core + mark
    out[-1] = replace(prev, text=text)
    return True


def dictate(tokens: Sequence[Token]) -> list[Token]:
    """Spoken punctuation commands ("comma", "new line") become the marks they name."""
    return _rewrite(tokens, DICTATION, _punctuate_previous)


def measure(tokens: Sequence[Token]) -> list[Token]:
    """Units said after a number become their abbreviations ("five milligrams" -> "5 mg")."""
    lengths = sorted({len(k) for k in MEASUREMENTS}, reverse=True)
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        if out and _numeric(out[-1].bare, "en"):
            for n in lengths:
                words = tuple(t.bare for t in tokens[i : i + n])
                unit = MEASUREMENTS.get(words) if len(words) == n else None
                if unit and all(not t.atomic for t in tokens[i : i + n]):
                    trail = _split_edges(tokens[i + n - 1].text)[2]
                    out[-1] = replace(out[-1], atomic=True)  # the quantity stays in digits
                    out.append(_merge(tokens[i : i + n], unit + trail, atomic=True))
                    i += n
                    break
            else:
                out.append(tokens[i])
                i += 1
            continue
        out.append(tokens[i])
        i += 1
    return out


def drop_fillers(tokens: Sequence[Token]) -> list[Token]:
    """Deepgram leaves out "uh" and "um" unless `filler_words` asks for them."""
    out: list[Token] = []
    for token in tokens:
        if not token.atomic and token.bare in FILLERS:
            trail = _split_edges(token.text)[2].strip(",")
            if trail and out:  # keep a sentence end the filler carried
                lead, core, _ = _split_edges(out[-1].text)
                out[-1] = replace(out[-1], text=lead + core + trail)
            continue
        out.append(token)
    return out


def parse_replacement(value: str) -> tuple[str, str]:
    """`find:replace` (the last colon splits, so a find term may hold none)."""
    find, _, to = value.partition(":")
    return find.strip(), to.strip()


def _replace_with(out: list[Token], said: Sequence[Token], to: str) -> bool:
    if to:  # an empty replacement removes the words
        lead, trail = _split_edges(said[0].text)[0], _split_edges(said[-1].text)[2]
        out.append(_merge(said, lead + to + trail, atomic=True))
    return True


def apply_replacements(tokens: Sequence[Token], pairs: Sequence[tuple[str, str]]) -> list[Token]:
    """Deepgram's `replace`: whole words (or phrases), matched case-insensitively, the longest
    find term first."""
    rules = [(tuple(bare(w) for w in find.split()), to) for find, to in pairs if find.split()]
    rules.sort(key=lambda r: -len(r[0]))
    return _rewrite(tokens, rules, _replace_with) if rules else list(tokens)


@lru_cache(maxsize=1)
def _profanities() -> frozenset[str]:
    from importlib.resources import files

    listed = files("better_profanity").joinpath("profanity_wordlist.txt").read_text()
    words = {w.strip().lower() for w in listed.splitlines() if w.strip()}
    return frozenset(w for w in words if w.isalpha() and w not in NOT_PROFANE)


def mask_profanity(tokens: Sequence[Token]) -> list[Token]:
    """Profane words become asterisks, as Deepgram writes them."""
    profane = _profanities()
    out = []
    for token in tokens:
        if not token.atomic and token.bare in profane:
            lead, core, trail = _split_edges(token.text)
            token = replace(token, text=lead + "*" * len(core) + trail, atomic=True)
        out.append(token)
    return out


# --- casing -------------------------------------------------------------------------------------
def sentence_case(tokens: Sequence[Token]) -> list[Token]:
    """Capitalise the first word and every word after a sentence end: Whisper starts a window
    cut mid-sentence in lower case ("Gutenberg Bible. is printed")."""
    out: list[Token] = []
    capital = True
    for token in tokens:
        text = token.text
        if capital and not token.atomic:
            lead, core, trail = _split_edges(text)
            if core[:1].islower():
                text = lead + core[:1].upper() + core[1:] + trail
                token = replace(token, text=text)
        out.append(token)
        ends = text.rstrip("\"'”’)").endswith(SENTENCE_END) and not _INITIALISM.match(text)
        capital = ends or text.endswith("\n")
    return out


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
    tokens = _dotted_times(join_pieces(words))
    if options.digits or options.redact or options.measurements:
        # Redaction needs the digit view even when the output speaks numbers as words.
        # Measurements need the quantity as digits ("5 mg") whatever the other numbers are.
        tokens = numbers_as_digits(tokens, options.language, 0 if options.redact else 3)
    if options.smart_format:
        tokens = smart(tokens)
    if options.redact:
        before = numbers_as_digits(_dotted_times(join_pieces(context)), options.language, 0)
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
            and not (_unspaced(parts[-1][-1]) and _unspaced(text[0]))
            and not parts[-1].endswith("\n")
        ):
            parts.append(" ")
        parts.append(text)
    return "".join(parts)


# --- search -------------------------------------------------------------------------------------
SEARCH_MIN_CONFIDENCE = 0.6
SEARCH_MAX_HITS = 20


def search(tokens: Sequence[Token], queries: Sequence[str]) -> list[dict[str, object]]:
    """Deepgram's `search` on the words: each query against every run of as many words,
    scored by string similarity (Deepgram matches sounds; a transcript is what we have)."""
    words = [word_of(t) for t in tokens]
    results = []
    for query in queries:
        target = " ".join(bare(w) for w in query.split())
        n = max(1, len(query.split()))
        hits = []
        for i in range(0, max(0, len(words) - n + 1)):
            text = " ".join(words[i : i + n])
            score = difflib.SequenceMatcher(None, target, text).ratio()
            if score >= SEARCH_MIN_CONFIDENCE:
                hits.append(
                    {
                        "confidence": round(score, 4),
                        "start": tokens[i].start,
                        "end": tokens[i + n - 1].end,
                        "snippet": text,
                    }
                )
        hits.sort(key=lambda h: (-h["confidence"], h["start"]))
        results.append({"query": query, "hits": hits[:SEARCH_MAX_HITS]})
    return results
