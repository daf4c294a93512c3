"""Content rewrites after numbers and redaction: dictation, measurements, filler words,
`replace`, and the profanity filter."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

from server.deepgram.text.numbers import numeric
from server.deepgram.text.tokens import Token, bare, merge, split_edges

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
        lead, core, _ = split_edges(prev.text)
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
        if out and numeric(out[-1].bare, "en"):
            for n in lengths:
                words = tuple(t.bare for t in tokens[i : i + n])
                unit = MEASUREMENTS.get(words) if len(words) == n else None
                if unit and all(not t.atomic for t in tokens[i : i + n]):
                    trail = split_edges(tokens[i + n - 1].text)[2]
                    out[-1] = replace(out[-1], atomic=True)  # the quantity stays in digits
                    out.append(merge(tokens[i : i + n], unit + trail, atomic=True))
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
            trail = split_edges(token.text)[2].strip(",")
            if trail and out:  # keep a sentence end the filler carried
                lead, core, _ = split_edges(out[-1].text)
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
        lead, trail = split_edges(said[0].text)[0], split_edges(said[-1].text)[2]
        out.append(merge(said, lead + to + trail, atomic=True))
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
            lead, core, trail = split_edges(token.text)
            token = replace(token, text=lead + "*" * len(core) + trail, atomic=True)
        out.append(token)
    return out
