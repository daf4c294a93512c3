"""One request's preparation, whatever door it came in by: REST, a v1 stream or a Flux stream.

The query string (`params.py`) says what the client asked; this step turns it into what the
engine needs (the served model, the language to decode in, suppressed tokens, the prompt) and
the notices the client is owed (a model fallback, ignored parameters), so the three paths cannot
drift apart on how a model name or a language is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from server.audio.decode import AudioError, RawFormat, check_encoding
from server.deepgram.params import ListenParams
from server.deepgram.text import FILLER_PROMPT
from server.engine import DecodeOptions, Engine, ModelInfo
from server.engine.whisper import suppress_ids
from server.errors import InvalidParameter
from server.language import choose_language
from server.notices import Notices


@dataclass(frozen=True)
class Prepared:
    model: str  # the engine's name for the served model
    info: ModelInfo
    multilingual: bool
    language: str | None  # None: detect (per channel of a file, or on a stream's first speech)
    keyterms: tuple[str, ...]
    suppress_tokens: tuple[int, ...]
    prompt: str | None  # filler_words: a prompt that keeps Whisper writing "um" and "uh"
    notices: Notices = field(default_factory=Notices)

    def stream_options(self, beam_size: int) -> tuple[DecodeOptions, DecodeOptions]:
        """(final, interim) decode options for a stream. Each window is decoded once, as REST
        decodes its windows: one segment, words from the alignment (with timestamp tokens
        Whisper may stop early and leave words for a re-decode from a later seek that never
        comes). `language=""` tells the stream decoder to detect on its first speech."""
        final = DecodeOptions(
            language="" if self.language is None else self.language,
            beam_size=beam_size,
            hotwords=" ".join(self.keyterms) or None,
            suppress_tokens=self.suppress_tokens,
            initial_prompt=self.prompt,
            without_timestamps=True,
        )
        return final, replace(final, beam_size=1, temperatures=(0.0,))


def raw_format(params: ListenParams) -> RawFormat | None:
    """Headerless audio's format from `encoding`/`sample_rate`/`channels` (None: sniff)."""
    try:
        raw = check_encoding(params.encoding, params.sample_rate)
    except AudioError as exc:
        raise InvalidParameter(str(exc)) from exc
    if raw is not None:
        raw = RawFormat(raw.encoding, raw.sample_rate, params.channels)
    return raw


async def suppressed_tokens(engine: Engine, model: str, params: ListenParams) -> tuple[int, ...]:
    """Token ids for `keywords=word:-N`; a word no single token spells is refused, since
    suppressing its first token would suppress other words too."""
    if not params.suppress:
        return ()
    loaded = await engine.model(model)
    ids, unsupported = suppress_ids(loaded.model, params.suppress)
    if unsupported:
        raise InvalidParameter(
            "keywords with a negative intensifier can only suppress a word the model writes as "
            f"one token; cannot suppress: {', '.join(unsupported)}",
            param="keywords",
        )
    return ids


async def prepare(engine: Engine, params: ListenParams) -> Prepared:
    """Resolve the model (aliases, fallback), load it, choose the language; raises a domain
    error (a 400) for anything the request asks that cannot be honoured."""
    resolution = engine.resolve_model(params.model)
    loaded = await engine.model(resolution.name)
    language = choose_language(
        params.language,
        params.detect_language,
        model=resolution.name,
        multilingual=loaded.multilingual,
    )
    notices = Notices()
    notices.extend(params.warnings)
    if resolution.warning:
        notices.add("model", resolution.warning, "model_fallback")
    return Prepared(
        model=resolution.name,
        info=loaded.info,
        multilingual=loaded.multilingual,
        language=language,
        keyterms=tuple(params.keyterms),
        suppress_tokens=await suppressed_tokens(engine, resolution.name, params),
        prompt=FILLER_PROMPT if params.filler_words else None,
        notices=notices,
    )
