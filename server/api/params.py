"""Deepgram query strings -> typed options, shared by REST and WebSocket.

Lenient where Deepgram is lenient (unknown parameters are accepted and reported as warnings),
strict where it is strict (a bad value for a known parameter is a 400).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import QueryParams

TRUE = {"true", "1", "yes", "on"}
FALSE = {"false", "0", "no", "off"}

# Accepted, but this server does not implement them: reported in metadata.warnings.
UNSUPPORTED = {
    "diarize",
    "diarize_model",
    "diarization",
    "diarize_version",
    "redact",
    "search",
    "replace",
    "summarize",
    "topics",
    "intents",
    "sentiment",
    "detect_entities",
    "custom_topic",
    "custom_topic_mode",
    "custom_intent",
    "custom_intent_mode",
    "profanity_filter",
    "dictation",
    "filler_words",
    "measurements",
    "alternatives",
    "language_hint",
    "tier",
    "detect_topics",
    "ner",
}


class ParamError(ValueError):
    """A known parameter with a value we cannot accept (400 INVALID_QUERY_PARAMETER)."""


@dataclass
class Warning_:
    parameter: str
    type: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"parameter": self.parameter, "type": self.type, "message": self.message}


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
    keyterms: list[str] = field(default_factory=list)
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
    warnings: list[Warning_] = field(default_factory=list)

    @property
    def punctuated(self) -> bool:
        return self.punctuate or self.smart_format

    @property
    def want_paragraphs(self) -> bool:
        return self.paragraphs or self.smart_format

    def warn(self, parameter: str, message: str, kind: str = "unsupported_parameter") -> None:
        self.warnings.append(Warning_(parameter, kind, message))


def parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in TRUE or lowered == "":
        return True
    if lowered in FALSE:
        return False
    raise ParamError(f"Invalid value for '{name}': expected true or false, got '{value}'")


def _int(name: str, value: str, low: int | None = None, high: int | None = None) -> int:
    try:
        number = int(float(value))
    except ValueError:
        raise ParamError(
            f"Invalid value for '{name}': expected an integer, got '{value}'"
        ) from None
    if (low is not None and number < low) or (high is not None and number > high):
        raise ParamError(f"Invalid value for '{name}': {number} is out of range")
    return number


def _float(name: str, value: str, low: float = 0.0) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ParamError(f"Invalid value for '{name}': expected a number, got '{value}'") from None
    if number < low:
        raise ParamError(f"Invalid value for '{name}': {number} is out of range")
    return number


def _language(value: str) -> str:
    """BCP-47 (`en-US`, `pt-BR`) -> Whisper code (`en`, `pt`); `multi` means detect."""
    code = value.strip().lower().replace("_", "-")
    if not code or not all(part.isalnum() for part in code.split("-")) or len(code) > 16:
        raise ParamError(f"Invalid value for 'language': '{value}'")
    return code


def _callback_url(value: str) -> str:
    """Refuse a callback we could never deliver now, rather than failing silently later."""
    parts = urlsplit(value.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ParamError(f"Invalid value for 'callback': '{value[:200]}' is not an http(s) URL")
    return value.strip()


def parse(query: QueryParams | Iterable[tuple[str, str]]) -> ListenParams:
    items = list(query.multi_items() if isinstance(query, QueryParams) else query)
    out = ListenParams()
    seen: set[str] = set()
    for key, value in items:
        name = key.strip().lower()
        if name in {"keyterm", "keywords"}:
            term = value.rsplit(":", 1)[0] if name == "keywords" and ":" in value else value
            if term.strip():
                out.keyterms.append(term.strip())
        elif name == "tag":
            out.tags.append(value)
        elif name == "extra":
            k, _, v = value.partition(":")
            out.extra[k] = v
        elif name in seen and name not in UNSUPPORTED:
            continue  # the first value of a scalar parameter wins
        else:
            _apply(out, name, value)
        seen.add(name)
    if out.smart_format and not out.punctuate:
        out.punctuate = True
    return out


def _apply(out: ListenParams, name: str, value: str) -> None:
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
    }:
        setattr(out, name, parse_bool(name, value))
    elif name == "utt_split":
        out.utt_split = _float(name, value)
    elif name in {"encoding", "format", "codec"}:
        enc = value.strip().lower()
        out.encoding = "linear16" if enc == "pcm" else enc
    elif name == "sample_rate":
        out.sample_rate = _int(name, value, 1000, 384000)
    elif name == "channels":
        out.channels = _int(name, value, 1, 32)
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
    elif name == "numerals":
        parse_bool(name, value)  # Whisper already writes numerals; accepted as a no-op
    elif name in {"version", "mip_opt_out", "no_delay", "url"}:
        pass
    elif name in UNSUPPORTED:
        if parse_bool_quiet(value) is not False:
            out.warn(name, f"'{name}' is not supported by this server and was ignored")
    else:
        out.warn(name, f"unknown parameter '{name}' was ignored", "unknown_parameter")


def parse_bool_quiet(value: str) -> bool | None:
    lowered = value.strip().lower()
    return True if lowered in TRUE else False if lowered in FALSE else None
