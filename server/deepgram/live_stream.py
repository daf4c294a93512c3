"""Deepgram's v1 live protocol over the stream runner: `Results`, `Metadata` and friends.

The runner (`server/streaming/session.py`) feeds audio and drives channels; this adapter says
what v1 clients see: which text frames are controls (KeepAlive, Finalize, CloseStream,
Configure), how each protocol-neutral result reads (text shaping, search, detected language),
the `Metadata` that closes a stream that ended well, and the `Error` variants for the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from server.deepgram import live
from server.deepgram.text import TextOptions
from server.engine import ModelInfo
from server.errors import KeytermLimitExceeded, ServiceError
from server.streaming.channel import Channel
from server.streaming.holdback import MAX_HOLD_S, RELEASE_SILENCE_S, Holdback
from server.streaming.results import StreamEvent, StreamResult, StreamWord
from server.streaming.session import Adapter, Control, Failure
from server.vad import SAMPLE_RATE

CONTEXT_WORDS = 16  # final words kept per channel for redaction across results
VARIANTS: dict[Failure, str | None] = {
    "idle": None,  # Deepgram closes an idle stream with NET-0001 in the close frame alone
    "keepalive": "NET-0001",
    "data": "DATA-0000",
    "internal": "INTERNAL",
    "incomplete": "INCOMPLETE",
    "client": "SchemaError",
}


@dataclass(frozen=True)
class LiveSpec:
    """What v1 results say beyond their words, fixed at the handshake (text: until Configure)."""

    request_id: str
    model_info: ModelInfo
    text: TextOptions
    search: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)  # echoed in every Results' metadata
    tags: tuple[str, ...] = ()  # echoed in the closing Metadata
    warnings: tuple[dict[str, str], ...] = ()  # sent in the closing Metadata
    # With redact: how long a number may stay undecided (streaming/holdback.py).
    release_silence_s: float = RELEASE_SILENCE_S
    max_hold_s: float = MAX_HOLD_S
    # `Configure {"features": ...}`: the new (text, search) for later results, or a ValueError
    # or ServiceError (validated as the query string is).
    reconfigure: (
        Callable[[object, TextOptions, tuple[str, ...]], tuple[TextOptions, tuple[str, ...]]] | None
    ) = None
    # `Configure {"keyterms": [...]}`: the terms to use, or a ServiceError (held to the query
    # string's limits); a KeytermLimitExceeded is reported as such.
    check_keyterms: Callable[[object], list[str]] | None = None


class LiveAdapter(Adapter):
    known_types = live.KNOWN_TYPES

    def __init__(self, spec: LiveSpec) -> None:
        self.spec = spec
        self.text = spec.text
        self.search = spec.search
        self._keyterms: list[str] = []
        # Each channel's last final words: the context text shaping needs for a number cut
        # across results (redaction).
        self._said: dict[int, deque[StreamWord]] = {}
        self._holds: dict[int, Holdback] = {}  # per channel: finals ending inside a number

    # --- results -----------------------------------------------------------------------------
    def result(self, event: StreamEvent) -> None:
        # Redaction: words ending inside a number still being said wait (streaming/holdback.py).
        hold = self._holds.get(event.channel)
        if hold is None:
            hold = self._holds[event.channel] = Holdback(
                partial(self._undecided, event.channel),
                self.spec.release_silence_s,
                self.spec.max_hold_s,
                provisional=partial(self._undecided, event.channel, provisional=True),
            )
        for out in hold.push(event):
            self._send(out)

    def settled(self) -> None:
        for hold in self._holds.values():  # numbers said last are decided by the end
            for event in hold.finish():
                self._send(event)

    def _text(self, channel: int) -> TextOptions:
        """The channel's text shaping; with language detection, numbers are spoken in the
        language that was detected."""
        text = self.text
        detected = self.session.detected(channel)
        return replace(text, language=detected) if detected and detected != text.language else text

    def _undecided(
        self, channel: int, words: Sequence[StreamWord], *, provisional: bool = False
    ) -> int | None:
        return live.undecided_from(words, self._text(channel), provisional=provisional)

    def _send(self, event: StreamEvent) -> None:
        session = self.session
        said = None
        text = self.text
        detected = None
        if isinstance(event, StreamResult):
            said = self._said.setdefault(event.channel, deque(maxlen=CONTEXT_WORDS))
            detected = session.detected(event.channel)
            text = self._text(event.channel)
        session.put(
            live.message(
                event,
                channels=len(session.channels),
                text=text,
                request_id=self.spec.request_id,
                model=self.spec.model_info,
                search=self.search,
                context=tuple(said or ()),
                extra=self.spec.extra,
                detected=detected,
            )
        )
        if said is not None and event.is_final:
            said.extend(event.words)

    def failure(self, kind: Failure, description: str) -> dict[str, Any] | None:
        variant = VARIANTS[kind]
        return None if variant is None else live.error(description, variant=variant)

    def closing(self) -> list[dict[str, Any]]:
        session = self.session
        return [
            live.metadata(
                request_id=self.spec.request_id,
                sha256=session.sha256,
                duration=session.samples / SAMPLE_RATE,
                channels=session.audio_channels,
                model=self.spec.model_info,
                tags=self.spec.tags,
                extra=self.spec.extra,
                warnings=self.spec.warnings,
            )
        ]

    # --- controls ----------------------------------------------------------------------------
    async def control(self, message: Any, text: str) -> Control:
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "KeepAlive":
            return "continue"
        if kind == "CloseStream":
            return "close"
        if kind == "Finalize":
            try:
                targets = self._finalize_targets(message.get("channel"))
            except ValueError as exc:
                self.session.put(live.error(str(exc), text[:2048]))
                return "continue"
            await self.session.flush(targets, from_finalize=True)
            return "continue"
        if kind == "Configure":
            self._configure(message)
            return "continue"
        self.session.put(
            live.error(
                "Failed to parse the text message: expected JSON with a 'type' of KeepAlive, "
                "Finalize, CloseStream or Configure",
                text[:2048],
            )
        )
        return "continue"

    def _finalize_targets(self, index: object) -> list[Channel]:
        """The channels a Finalize flushes. Deepgram's `{"type": "Finalize", "channel": N}`
        flushes channel N alone (a multichannel client finalising one speaker must not cut
        the others' utterances); without `channel`, every channel. A channel the stream does
        not have is refused (ValueError), not silently widened to all of them."""
        channels = self.session.channels
        if index is None:
            return list(channels)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"Finalize 'channel' must be a channel index, got {index!r}"[:300])
        if channels and not 0 <= index < len(channels):
            raise ValueError(
                f"Finalize 'channel' {index} is out of range: the stream has "
                f"{len(channels)} channel(s), indexed from 0"
            )
        return [c for c in channels if c.index == index]

    def _configure(self, message: dict[str, Any]) -> None:
        """`keyterms` replace the hotwords, `features` the text shaping of later results; all
        or nothing: a bad part fails the whole message and changes nothing."""
        keyterms = message.get("keyterms")
        features = message.get("features")
        config = self.session.config
        text, search = self.text, self.search
        try:
            if keyterms is None and features is None:
                raise ValueError("Configure needs 'keyterms' or 'features'")
            if keyterms is not None:
                if self.spec.check_keyterms is None:
                    raise ValueError("this stream's keyterms cannot be changed")
                keyterms = self.spec.check_keyterms(keyterms)
                hotwords = " ".join(keyterms) or None
                config = replace(
                    config,
                    final_options=replace(config.final_options, hotwords=hotwords),
                    interim_options=replace(config.interim_options, hotwords=hotwords),
                )
            if features is not None:
                if self.spec.reconfigure is None:
                    raise ValueError("this stream's features cannot be changed")
                text, search = self.spec.reconfigure(features, text, search)
        except (ValueError, ServiceError) as exc:
            code = (
                "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
                if isinstance(exc, KeytermLimitExceeded)
                else "CONFIGURE_INTERNAL_ERROR"
            )
            self.session.put(live.configure_failure(self.spec.request_id, code, str(exc)[:500]))
            return
        if keyterms is not None:
            self._keyterms = list(keyterms)
        self.text, self.search = text, search
        self.session.reconfigure(config)
        self.session.put(live.configure_success(self.spec.request_id, self._keyterms))
