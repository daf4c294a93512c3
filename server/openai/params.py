"""OpenAI audio form fields -> typed options. Pure; every refusal names its field.

Fields OpenAI defines that this server cannot honour (`include[]=logprobs`, known speakers) are
refused, never silently dropped; `chunking_strategy` (`auto`, or a `server_vad` object) is
accepted because the server always cuts at VAD boundaries, which is what both ask for; any
other value is refused as OpenAI refuses it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from server.errors import InvalidParameter
from server.language import whisper_language
from server.openai.response import FORMATS, GRANULARITIES

MAX_PROMPT_CHARS = 4000  # Whisper keeps the last 223 prompt tokens; more is only cost
REFUSED = {
    "include[]": "include[] (logprobs) is not supported by this server",
    "include": "include (logprobs) is not supported by this server",
    "known_speaker_names[]": "known speakers are not supported by this server",
    "known_speaker_references[]": "known speakers are not supported by this server",
}


def invalid(message: str, param: str) -> InvalidParameter:
    return InvalidParameter(message, param=param)


@dataclass
class AudioParams:
    task: str  # "transcribe" | "translate"
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    granularities: tuple[str, ...] = ()
    stream: bool = False
    keywords: list[str] = field(default_factory=list)

    @property
    def diarize(self) -> bool:
        return self.response_format == "diarized_json"

    @property
    def temperatures(self) -> tuple[float, ...] | None:
        """0: the server's deterministic decode (see `DecodeOptions.temperatures`); t > 0 samples,
        a ladder from t, as OpenAI documents."""
        if self.temperature <= 0:
            return None
        steps = math.floor((1.0 - self.temperature) / 0.2 + 1e-9)
        return tuple(round(self.temperature + 0.2 * i, 3) for i in range(steps + 1))


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off", ""}:
        return False
    raise invalid(f"Invalid value for '{name}': expected true or false", name)


def _chunking_strategy(value: str) -> None:
    """`auto`, or OpenAI's `{"type": "server_vad", ...}` (sent as JSON in the form)."""
    if value.strip() == "auto":
        return
    try:
        strategy = json.loads(value)
    except (ValueError, RecursionError):
        strategy = None
    if not isinstance(strategy, dict) or strategy.get("type") != "server_vad":
        raise invalid(
            "Invalid chunking_strategy: expected 'auto' or an object with type 'server_vad'",
            "chunking_strategy",
        )


def parse(fields: Iterable[tuple[str, str]], task: str) -> AudioParams:
    out = AudioParams(task=task)
    granularities: list[str] = []
    for key, value in fields:
        if key in REFUSED and value.strip():
            raise invalid(REFUSED[key], key)
        if key == "model":
            out.model = value.strip() or None
        elif key == "language":
            if value.strip():
                code = whisper_language(value.strip().lower())
                if code is None:
                    raise invalid(f"Unsupported language '{value[:20]}'", "language")
                out.language = code
        elif key == "prompt":
            if len(value) > MAX_PROMPT_CHARS:
                raise invalid(f"'prompt' is longer than {MAX_PROMPT_CHARS} characters", "prompt")
            out.prompt = value.strip() or None
        elif key == "response_format":
            if value not in FORMATS:
                raise invalid(
                    f"Invalid response_format '{value[:20]}': expected one of {', '.join(FORMATS)}",
                    "response_format",
                )
            out.response_format = value
        elif key == "temperature":
            try:
                out.temperature = float(value)
            except ValueError:
                raise invalid("'temperature' must be a number", "temperature") from None
            if not 0.0 <= out.temperature <= 1.0:  # also refuses nan
                raise invalid("'temperature' must be between 0 and 1", "temperature")
        elif key in {"timestamp_granularities[]", "timestamp_granularities"}:
            if value not in GRANULARITIES:
                raise invalid(
                    f"Invalid timestamp granularity '{value[:20]}': expected word or segment",
                    "timestamp_granularities",
                )
            granularities.append(value)
        elif key == "stream":
            out.stream = _bool("stream", value)
        elif key == "chunking_strategy":
            _chunking_strategy(value)
        elif key == "chunking_strategy[type]":  # the object, as OpenAI's clients flatten it
            _chunking_strategy(json.dumps({"type": value}))
        elif key in {"keywords[]", "keywords"} and value.strip():
            out.keywords.append(value.strip())
    out.granularities = tuple(dict.fromkeys(granularities))
    if out.granularities and out.response_format != "verbose_json":
        raise invalid(
            "timestamp_granularities requires response_format=verbose_json",
            "timestamp_granularities",
        )
    if out.response_format == "diarized_json" and task != "transcribe":
        raise invalid("diarized_json is for transcriptions", "response_format")
    if out.stream and out.response_format not in {"json", "text"}:
        raise invalid("stream=true supports response_format json or text", "stream")
    return out
