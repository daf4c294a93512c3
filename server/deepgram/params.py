"""Deepgram query strings -> typed options, shared by REST and WebSocket.

Lenient where Deepgram is lenient (unknown parameters are accepted and reported as warnings),
strict where it is strict (a bad value for a known parameter is a 400).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from starlette.datastructures import QueryParams

from server.deepgram.text import (
    ALPHA2DIGIT_LANGUAGES,
    REDACT_SUPPORTED,
    TextOptions,
    parse_replacement,
)
from server.errors import InvalidParameter, KeytermLimitExceeded
from server.notices import Notices
from server.outbound import Refused, http_url
from server.settings import Settings

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}

# Accepted, but this server does not implement them: reported in metadata.warnings.
UNSUPPORTED = {
    "diarize_version",
    "summarize",
    "topics",
    "intents",
    "sentiment",
    "detect_entities",
    "custom_topic",
    "custom_topic_mode",
    "custom_intent",
    "custom_intent_mode",
    "alternatives",
    "language_hint",
    "tier",
    "detect_topics",
    "ner",
}


DIARIZE_MODELS = {"latest", "v1", "v2"}


class ParamError(InvalidParameter):
    """A known parameter with a value we cannot accept (400 INVALID_QUERY_PARAMETER)."""


class KeytermLimit(ParamError, KeytermLimitExceeded):
    """Keyterms beyond `keyterms_max` or `max_keyterm_chars`, by query string or Configure."""


@dataclass
class ListenParams:
    model: str | None = None
    language: str | None = None
    detect_language: bool = False
    punctuate: bool = False
    smart_format: bool = False
    utterances: bool = False
    utt_split: float = 0.8
    paragraphs: bool = False
    multichannel: bool = False
    diarize: bool = False
    diarize_model: str | None = None  # as asked (lower case): v2 exists for files only
    # Speaker-count hints: extensions (Deepgram has none), as pyannote and Gladia name them.
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    keyterms: list[str] = field(default_factory=list)
    # `keywords=word:-5`: negative intensifiers suppress the word instead of boosting it
    suppress: list[str] = field(default_factory=list)
    # content features (deepgram/text/)
    numerals: bool = False
    dictation: bool = False
    measurements: bool = False
    filler_words: bool = False
    profanity_filter: bool = False
    redact: set[str] = field(default_factory=set)
    replace: list[tuple[str, str]] = field(default_factory=list)
    search: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)
    encoding: str | None = None
    sample_rate: int | None = None
    channels: int = 1
    callback: str | None = None
    callback_method: str = "POST"
    # streaming
    interim_results: bool = False
    endpointing_ms: int | None = 10  # None: endpointing disabled
    utterance_end_ms: int | None = None
    vad_events: bool = False
    warnings: Notices = field(default_factory=Notices)

    @property
    def punctuated(self) -> bool:
        """Deepgram: smart_format and paragraphs both turn punctuation on."""
        return self.punctuate or self.smart_format or self.paragraphs

    def text_options(self, language: str | None = None) -> TextOptions:
        """How this request's text is shaped; `language` is the transcript's language."""
        return TextOptions(
            language=language or self.language or "en",
            punctuate=self.punctuated,
            numerals=self.numerals,
            smart_format=self.smart_format,
            dictation=self.dictation,
            measurements=self.measurements,
            filler_words=self.filler_words,
            profanity_filter=self.profanity_filter,
            redact=frozenset(self.redact),
            replace=tuple(self.replace),
        )

    @property
    def want_paragraphs(self) -> bool:
        return self.paragraphs or self.smart_format

    def warn(self, parameter: str, message: str, kind: str = "unsupported_parameter") -> None:
        self.warnings.add(parameter, message, kind)


def shown(value: str, limit: int = 64) -> str:
    """A client's value, quoted for an error message: short, so a huge value is not echoed."""
    return repr(value[:limit] + ("…" if len(value) > limit else ""))


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE or lowered == "":
        return True
    if lowered in FALSE:
        return False
    raise ParamError(f"Invalid value for '{name}': expected true or false, got {shown(value)}")


def _number(name: str, value: str, kind: str) -> float:
    """A finite float: `inf`, `nan` and `1e400` are refused, not carried into arithmetic."""
    try:
        number = float(value)
    except ValueError:
        raise ParamError(
            f"Invalid value for '{name}': expected {kind}, got {shown(value)}"
        ) from None
    if not math.isfinite(number):
        raise ParamError(f"Invalid value for '{name}': expected a finite number")
    return number


def _int(name: str, value: str, low: int | None = None, high: int | None = None) -> int:
    number = int(_number(name, value, "an integer"))
    if (low is not None and number < low) or (high is not None and number > high):
        raise ParamError(f"Invalid value for '{name}': {number} is out of range")
    return number


def _float(name: str, value: str, low: float = 0.0, high: float = 1e6) -> float:
    number = _number(name, value, "a number")
    if not low <= number <= high:
        raise ParamError(f"Invalid value for '{name}': {number:g} is out of range")
    return number


def _language(value: str) -> str:
    """BCP-47 (`en-US`, `pt-BR`) -> Whisper code (`en`, `pt`); `multi` means detect."""
    code = value.strip().lower().replace("_", "-")
    if not code or not all(part.isalnum() for part in code.split("-")) or len(code) > 16:
        raise ParamError(f"Invalid value for 'language': {shown(value)}")
    return code


def _callback_url(value: str) -> str:
    """Refuse a callback we could never deliver now, rather than failing silently later."""
    try:
        http_url(value.strip())
    except Refused:
        raise ParamError(
            f"Invalid value for 'callback': {shown(value)} is not a well-formed http(s) URL"
        ) from None
    return value.strip()


@dataclass(frozen=True)
class ParamLimits:
    """Caps on what one query string may ask for (the settings `query_*` and `keyterms_max`)."""

    max_params: int = 256
    max_value_chars: int = 4096
    max_keyterms: int = 100
    max_keyterm_chars: int = 100
    max_channels: int = 32


def param_limits(settings: Settings) -> ParamLimits:
    """The caps configured in `Settings`."""
    return ParamLimits(
        max_params=settings.query_max_params,
        max_value_chars=settings.query_max_value_chars,
        max_keyterms=settings.keyterms_max,
        max_channels=settings.max_channels,
    )


def query_items(
    query: QueryParams | Iterable[tuple[str, str]], limits: ParamLimits
) -> list[tuple[str, str]]:
    """The query's (key, value) pairs, refused past `max_params` before any is read."""
    items = list(query.multi_items() if isinstance(query, QueryParams) else query)
    if len(items) > limits.max_params:
        raise ParamError(
            f"Too many query parameters: {len(items)} (this server accepts {limits.max_params})"
        )
    return items


def parse(
    query: QueryParams | Iterable[tuple[str, str]], limits: ParamLimits | None = None
) -> ListenParams:
    limits = limits or ParamLimits()
    items = query_items(query, limits)
    out = ListenParams()
    seen: set[str] = set()
    keyterms: dict[str, str] = {}  # casefolded -> first spelling: repeats steer nothing more
    for key, value in items:
        name = key.strip().lower()
        if len(value) > limits.max_value_chars or len(name) > 64:
            raise ParamError(
                f"Query parameter {shown(name)} is too long (the limit is "
                f"{limits.max_value_chars} characters)"
            )
        if name in {"keyterm", "keywords"}:
            term, boost = _term(name, value)
            _check_term_length(name, term, limits)
            if term and boost > 0:
                keyterms.setdefault(term.casefold(), term)
            elif term and boost < 0 and term not in out.suppress:
                out.suppress.append(term)
        elif name == "redact":
            _redact(out, value)
        elif name == "replace":
            find, to = parse_replacement(value)
            if not find:
                raise ParamError(f"Invalid value for 'replace': {shown(value)} (find:replace)")
            if len(out.replace) >= limits.max_keyterms:
                raise ParamError(f"Too many 'replace' pairs (the limit is {limits.max_keyterms})")
            out.replace.append((find, to))
        elif name == "search":
            if len(out.search) >= limits.max_keyterms:
                raise ParamError(f"Too many 'search' terms (the limit is {limits.max_keyterms})")
            if value.strip():
                out.search.append(" ".join(value.split()))
        elif name == "tag":
            out.tags.append(value)
        elif name == "extra":
            k, _, v = value.partition(":")
            out.extra[k] = v
        elif name in seen and name not in UNSUPPORTED:
            continue  # the first value of a scalar parameter wins
        else:
            _apply(out, name, value, limits)
        seen.add(name)
    _check_term_count(len(keyterms), limits)
    out.keyterms = list(keyterms.values())
    if out.smart_format and not out.punctuate:
        out.punctuate = True
    _check_content_features(out)
    return out


def _check_content_features(out: ListenParams) -> None:
    """Refuse what would change or hide content and cannot be done in the asked language
    (a French transcript with `profanity_filter` would keep its profanity; spelled-out numbers
    in a language text2num cannot read would escape redaction). With language detection the
    language is known only afterwards: those are shaped as well as the language allows."""
    language = (out.language or "").split("-")[0]
    if language and language != "en" and out.profanity_filter:
        raise ParamError(
            f"profanity_filter cannot be honoured for language '{language}' "
            "(this server's word list is English)"
        )
    if language and out.redact and language not in ALPHA2DIGIT_LANGUAGES:
        raise ParamError(
            f"redact cannot be honoured for language '{language}': spelled-out numbers are read "
            f"only in {', '.join(sorted(ALPHA2DIGIT_LANGUAGES))}"
        )
    if out.dictation and not out.punctuated:
        out.warn(
            "dictation",
            "dictation turns spoken punctuation into marks only with punctuate=true "
            "(as Deepgram's does); it had no effect",
            "parameter_ignored",
        )


def _apply(out: ListenParams, name: str, value: str, limits: ParamLimits) -> None:
    if name == "model":
        out.model = value
    elif name in {"language", "lang"}:
        out.language = _language(value)
        if out.language == "multi":
            out.language, out.detect_language = None, True
    elif name == "detect_language":
        # Deepgram also accepts a candidate language list; any non-boolean value means "on".
        lowered = value.strip().lower()
        out.detect_language = lowered not in FALSE
    elif name in {
        "punctuate",
        "smart_format",
        "utterances",
        "paragraphs",
        "multichannel",
        "interim_results",
        "vad_events",
        "numerals",
        "dictation",
        "measurements",
        "filler_words",
        "profanity_filter",
    }:
        setattr(out, name, parse_bool(name, value))
    elif name in {"diarize", "diarization"}:
        out.diarize = parse_bool(name, value)
    elif name == "diarize_model":
        # Deepgram: naming a diarizer version enables diarization (`diarize` is deprecated).
        if value.strip().lower() not in DIARIZE_MODELS:
            raise ParamError(
                f"Invalid value for 'diarize_model': expected one of "
                f"{', '.join(sorted(DIARIZE_MODELS))}, got '{value[:50]}'"
            )
        out.diarize = True
        out.diarize_model = value.strip().lower()
    elif name in {"num_speakers", "min_speakers", "max_speakers"}:
        setattr(out, name, _int(name, value, 1, 32))
    elif name == "utt_split":
        out.utt_split = _float(name, value, 0.0, 3600.0)
    elif name in {"encoding", "format", "codec"}:
        enc = value.strip().lower()
        out.encoding = "linear16" if enc == "pcm" else enc
    elif name == "sample_rate":
        out.sample_rate = _int(name, value, 1000, 384000)
    elif name == "channels":
        out.channels = _int(name, value, 1, limits.max_channels)
    elif name == "callback":
        out.callback = _callback_url(value)
    elif name == "callback_method":
        method = value.strip().upper()
        if method not in {"POST", "PUT"}:
            raise ParamError("Invalid value for 'callback_method': expected POST or PUT")
        out.callback_method = method
    elif name == "endpointing":
        lowered = value.strip().lower()
        out.endpointing_ms = (
            None
            if lowered in FALSE - {"0"}
            else (10 if lowered in TRUE - {"1"} else _int(name, value, 0, 60000))
        )
    elif name == "utterance_end_ms":
        out.utterance_end_ms = _int(name, value, 0, 60000)
    elif name in {"version", "mip_opt_out", "no_delay", "url"}:
        pass
    elif name in UNSUPPORTED:
        if parse_bool_quiet(value) is not False:
            out.warn(name, f"'{name}' is not supported by this server and was ignored")
    else:
        out.warn(name, f"unknown parameter '{name}' was ignored", "unknown_parameter")


def _check_term_length(name: str, term: str, limits: ParamLimits) -> None:
    if len(term) > limits.max_keyterm_chars:
        raise KeytermLimit(
            f"Invalid value for '{name}': a term is longer than "
            f"{limits.max_keyterm_chars} characters"
        )


def _check_term_count(count: int, limits: ParamLimits) -> None:
    if count > limits.max_keyterms:
        raise KeytermLimit(
            f"Too many keyterms: {count} (this server accepts {limits.max_keyterms})"
        )


def configure_keyterms(keyterms: object, limits: ParamLimits) -> list[str]:
    """A stream's `Configure {"keyterms": [...]}`, held to the limits of `keyterm=` in the
    query string (a Configure is no way around `keyterms_max`: every term is prompt text that
    each later decode of the stream pays for); repeats count once, as there."""
    if not isinstance(keyterms, list) or not all(isinstance(k, str) for k in keyterms):
        raise ParamError("Configure accepts 'keyterms' as a list of strings")
    unique: dict[str, str] = {}
    for value in keyterms:
        term = " ".join(value.split())
        _check_term_length("keyterms", term, limits)
        if term:
            unique.setdefault(term.casefold(), term)
            _check_term_count(len(unique), limits)
    return list(unique.values())


def _term(name: str, value: str) -> tuple[str, float]:
    """A keyterm, or a keyword with its intensifier (`word:2` boosts, `word:-5` suppresses,
    `word:0` does nothing); whitespace collapsed."""
    term, sep, level = value.rpartition(":")
    if name == "keyterm" or not sep:
        return " ".join(value.split()), 1.0
    boost = _number(name, level, "word:intensifier")
    return " ".join(term.split()), boost


def _redact(out: ListenParams, value: str) -> None:
    """Deepgram's redaction groups and entity types; one this server cannot honour is a 400,
    never a silently unredacted transcript."""
    for item in value.split(","):
        kind = item.strip().lower()
        if not kind or kind == "false":
            continue
        if kind not in REDACT_SUPPORTED:
            raise ParamError(
                f"redact={shown(kind, 40)} cannot be honoured by this server (entity recognition "
                f"of that kind is not available); supported: "
                f"{', '.join(sorted(REDACT_SUPPORTED))}"
            )
        out.redact.add(kind)


def parse_bool_quiet(value: str) -> bool | None:
    lowered = value.strip().lower()
    return True if lowered in TRUE else False if lowered in FALSE else None


# Text features a stream's `Configure` message may change for later results.
CONFIGURE_FEATURES = {
    "numerals",
    "punctuate",
    "smart_format",
    "profanity_filter",
    "dictation",
    "measurements",
    "redact",
    "replace",
    "search",
}


def configure_features(
    features: object, text: TextOptions, search: tuple[str, ...]
) -> tuple[TextOptions, tuple[str, ...]]:
    """Apply `Configure {"features": {...}}` to a stream's text options, validated as the same
    query parameters would be; anything else is a ParamError (a ConfigureFailure)."""
    if not isinstance(features, dict) or not features:
        raise ParamError("'features' must be an object of feature names and values")
    unknown = sorted(set(features) - CONFIGURE_FEATURES)
    if unknown:
        raise ParamError(
            f"these features cannot be changed mid-stream: {', '.join(map(str, unknown))[:200]}"
        )
    items: list[tuple[str, str]] = []
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, str | bool | int | float):
                raise ParamError(f"Invalid value for '{name}'")
            items.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
    parsed = parse(items)
    changes: dict[str, object] = {
        name: getattr(parsed, name)
        for name in ("numerals", "smart_format", "profanity_filter", "dictation", "measurements")
        if name in features
    }
    if "punctuate" in features or "smart_format" in features:
        punctuate = parsed.punctuate if "punctuate" in features else text.punctuate
        changes["punctuate"] = punctuate or changes.get("smart_format", text.smart_format)
    if "redact" in features:
        changes["redact"] = frozenset(parsed.redact)
    if "replace" in features:
        changes["replace"] = tuple(parsed.replace)
    searched = tuple(parsed.search) if "search" in features else search
    return replace(text, **changes), searched  # type: ignore[arg-type]
