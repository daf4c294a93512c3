"""Numbers both ways: spoken as words (num2words, Deepgram's default) or written as digits
(text2num, for `numerals`, `smart_format`, measurements and the digit view redaction needs)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from num2words import CONVERTER_CLASSES, num2words
from text_to_num import alpha2digit

from server.deepgram.text.tokens import Token, merge, split_edges, spread

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
NUMBER_RE = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_DIGIT_GROUPS_RE = re.compile(r"^\d+(?:[-./,]\d+)+$")
ANY_DIGIT = re.compile(r"\d")
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
    if not ANY_DIGIT.search(core):
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
        if NUMBER_RE.match(core) and "." in core and lang.startswith("en"):
            whole, _, decimals = core.replace(",", "").partition(".")
            return f"{_say(whole, lang)} point {_say_digits(decimals, lang)}"
        if NUMBER_RE.match(core):
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
            if ANY_DIGIT.match(part):
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
        lead, core, trail = split_edges(token.text)
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
def numeric(word: str, lang: str) -> bool:
    if not word or word in ARTICLES:
        return False
    return ANY_DIGIT.search(word) is not None or alpha2digit(word, lang, threshold=0) != word


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
        if token.atomic or not numeric(token.bare, lang) or ANY_DIGIT.search(token.bare):
            out.append(token)
            i += 1
            continue
        j = i + 1
        while j < len(tokens) and not tokens[j].atomic:
            word = tokens[j].bare
            if ANY_DIGIT.search(word) or split_edges(tokens[j - 1].text)[2].strip():
                break  # a written number or a sentence mark ends the spoken run
            if numeric(word, lang):
                j += 1
            elif (
                word in joiners
                and j + 1 < len(tokens)
                and numeric(tokens[j + 1].bare, lang)
                and not ANY_DIGIT.search(tokens[j + 1].bare)
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
            lead = split_edges(run[0].text)[0]
            trail = split_edges(run[-1].text)[2]
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
        out.append(merge(group, text))
    return out
