"""Flux (`/v2/listen`) query strings and `Configure` messages -> typed options.

Flux's reference gives narrower ranges than v1 (eot_threshold 0.5-1.0, eager_eot_threshold
0.3-0.9 and never above eot_threshold, eot_timeout_ms 500-60000, six raw encodings at five
sample rates, redact only `numbers`/`aggressive_numbers`); a value outside them is a 400 before
the upgrade, and the same checks answer a `Configure` with a ConfigureFailure. The request then
goes through the same preparation as v1 and REST (`prepare.py`), as `ListenParams`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from starlette.datastructures import QueryParams

from server.deepgram.params import (
    ListenParams,
    ParamError,
    ParamLimits,
    _check_term_count,
    _check_term_length,
    _language,
    parse_bool,
    query_items,
    shown,
)
from server.notices import Notices
from server.turns.judge import Thresholds

MODEL_EN = "flux-general-en"
MODEL_MULTI = "flux-general-multi"
ENCODINGS = {"linear16", "linear32", "mulaw", "alaw", "opus", "ogg-opus"}
SAMPLE_RATES = {8000, 16000, 24000, 44100, 48000}
REDACT = {"numbers", "aggressive_numbers"}
EOT_RANGE = (0.5, 1.0)
EAGER_RANGE = (0.3, 0.9)
TIMEOUT_RANGE = (500, 60000)
IGNORED = {"mip_opt_out", "version"}


@dataclass
class FluxParams:
    model: str = MODEL_EN
    encoding: str | None = None
    sample_rate: int | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    keyterms: list[str] = field(default_factory=list)
    language_hints: list[str] = field(default_factory=list)
    numerals: bool = False
    profanity_filter: bool = False
    redact: set[str] = field(default_factory=set)
    tags: list[str] = field(default_factory=list)
    warnings: Notices = field(default_factory=Notices)

    @property
    def multilingual(self) -> bool:
        return self.model.strip().lower() == MODEL_MULTI

    def listen(self) -> ListenParams:
        """The same request as v1 options, for the shared preparation and text shaping.

        `flux-general-en` decodes English; `flux-general-multi` detects the language on the
        first speech unless exactly one `language_hint` names it (Whisper takes one language
        or detects; it cannot be biased toward several)."""
        params = ListenParams(
            model=self.model,
            keyterms=list(self.keyterms),
            numerals=self.numerals,
            profanity_filter=self.profanity_filter,
            redact=set(self.redact),
            encoding=self.encoding,
            sample_rate=self.sample_rate,
            tags=list(self.tags),
            punctuate=True,
            warnings=self.warnings,
        )
        if self.model.strip().lower() == MODEL_EN:
            params.language = "en"
        elif len(self.language_hints) == 1:
            params.language = self.language_hints[0]
        elif self.multilingual:
            params.detect_language = True
        return params


def _bounded(name: str, value: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ParamError(
            f"Invalid value for '{name}': expected a number, got {shown(value)}"
        ) from None
    if not low <= number <= high:  # also refuses nan
        raise ParamError(f"Invalid value for '{name}': must be between {low:g} and {high:g}")
    return number


def check_thresholds(thresholds: Thresholds) -> Thresholds:
    eager = thresholds.eager_eot_threshold
    if eager is not None and eager > thresholds.eot_threshold:
        raise ParamError(
            f"eager_eot_threshold ({eager:g}) must be less than or equal to eot_threshold "
            f"({thresholds.eot_threshold:g})"
        )
    return thresholds


def threshold_value(name: str, value: object) -> float | int:
    """One threshold, from a query string (text) or a Configure message (JSON number)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ParamError(f"Invalid value for '{name}': expected a number")
    text = str(value)
    if name == "eot_threshold":
        return _bounded(name, text, *EOT_RANGE)
    if name == "eager_eot_threshold":
        return _bounded(name, text, *EAGER_RANGE)
    number = _bounded(name, text, *TIMEOUT_RANGE)
    if number != int(number):
        raise ParamError(f"Invalid value for '{name}': expected whole milliseconds")
    return int(number)


def parse_flux(
    query: QueryParams | Iterable[tuple[str, str]], limits: ParamLimits | None = None
) -> FluxParams:
    limits = limits or ParamLimits()
    items = query_items(query, limits)
    out = FluxParams()
    changes: dict[str, float | int] = {}
    keyterms: dict[str, str] = {}
    seen: set[str] = set()
    for key, value in items:
        name = key.strip().lower()
        if len(value) > limits.max_value_chars or len(name) > 64:
            raise ParamError(f"Query parameter {shown(name)} is too long")
        if name == "keyterm":
            term = " ".join(value.split())
            _check_term_length(name, term, limits)
            if term:
                keyterms.setdefault(term.casefold(), term)
        elif name == "language_hint":
            out.language_hints.append(_language(value))
        elif name == "tag":
            out.tags.append(value)
        elif name == "redact":
            for item in value.split(","):
                kind = item.strip().lower()
                if kind in {"", "false"}:
                    continue
                if kind not in REDACT:
                    raise ParamError(
                        f"redact={shown(kind, 40)} is not available on Flux; use numbers or "
                        "aggressive_numbers"
                    )
                out.redact.add(kind)
        elif name in seen:
            continue  # the first value of a scalar parameter wins
        elif name == "model":
            out.model = value.strip() or MODEL_EN
        elif name == "encoding":
            encoding = value.strip().lower()
            if encoding not in ENCODINGS:
                raise ParamError(
                    f"Invalid value for 'encoding': {shown(value)}; Flux takes "
                    f"{', '.join(sorted(ENCODINGS))}, or none for WAV/Ogg/WebM containers"
                )
            out.encoding = encoding
        elif name == "sample_rate":
            rate = _bounded(name, value, 1, 384000)
            if rate not in SAMPLE_RATES:
                raise ParamError(
                    f"Invalid value for 'sample_rate': {shown(value)}; Flux takes "
                    f"{', '.join(map(str, sorted(SAMPLE_RATES)))}"
                )
            out.sample_rate = int(rate)
        elif name in {"eot_threshold", "eager_eot_threshold", "eot_timeout_ms"}:
            changes[name] = threshold_value(name, value)
        elif name in {"numerals", "profanity_filter"}:
            setattr(out, name, parse_bool(name, value))
        elif name in IGNORED:
            pass
        else:
            out.warnings.add(name, f"unknown parameter '{name}' was ignored", "unknown_parameter")
        seen.add(name)
    _check_term_count(len(keyterms), limits)
    out.keyterms = list(keyterms.values())
    out.thresholds = check_thresholds(replace(out.thresholds, **changes))  # type: ignore[arg-type]
    if out.encoding and out.encoding not in {"opus", "ogg-opus"} and not out.sample_rate:
        raise ParamError(f"encoding '{out.encoding}' needs a sample_rate")
    if out.language_hints and not out.multilingual:
        raise ParamError(f"language_hint is only available with model={MODEL_MULTI}")
    language = out.language_hints[0].split("-")[0] if len(out.language_hints) == 1 else "en"
    if out.profanity_filter and out.multilingual and language != "en":
        raise ParamError("profanity_filter cannot be honoured beyond English")
    return out
