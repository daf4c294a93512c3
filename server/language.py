"""Which language to decode in: one rule for REST, streaming, callbacks and the CLI.

Deepgram's rules, as far as Whisper can follow them: English unless told otherwise;
`detect_language` (or `language=multi`) detects; a language no served model can transcribe is
refused with a 400 rather than transcribed as something else, because that would hand the
client confident text in the wrong language.
"""

from __future__ import annotations

from server.engine.fw import LANGUAGE_CODES
from server.errors import InvalidParameter

DEFAULT = "en"


def whisper_language(code: str | None) -> str | None:
    """`en-US` -> `en`; None for codes Whisper does not know."""
    if not code:
        return None
    base = code.lower().split("-")[0]
    return base if base in LANGUAGE_CODES else None


def choose_language(
    requested: str | None, detect: bool, *, model: str, multilingual: bool
) -> str | None:
    """The Whisper language code to decode with, or None to detect it per channel/stream.

    Raises InvalidParameter for a language Whisper does not know, or one the chosen
    (English-only) model cannot transcribe. Detection on an English-only model answers "en".
    """
    language = whisper_language(requested) if requested else None
    if requested and language is None:
        raise InvalidParameter(
            f"Invalid value for 'language': {requested[:32]!r} is not a language this server "
            "can transcribe"
        )
    if not multilingual:
        if language not in (None, DEFAULT):
            raise InvalidParameter(
                f"Invalid value for 'language': model '{model}' is English-only and cannot "
                f"transcribe {requested!r}; ask for a multilingual model (e.g. model=base)"
            )
        return DEFAULT
    if detect:
        return None
    return language or DEFAULT
