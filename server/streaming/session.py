"""One live stream: frames in, controls handled, channels driven, messages out, clean close.

The session owns the connection's life: it feeds binary frames to the incremental decoder,
hands decoded audio to one `Channel` per transcribed channel, turns what the channels produce
into Deepgram messages, answers the control messages (KeepAlive, Finalize, CloseStream,
Configure), enforces the idle timeout, and ends every stream the same way (final Results ->
Metadata -> close 1000) whether the client asked (CloseStream or an empty frame) or the server
is shutting down (`shutdown()`).

A client may send faster than real time. While the audio still to be decoded into finals
exceeds `max_backlog_s`, the session stops reading the socket: TCP then slows the sender, memory
stays bounded, and every byte that was read is transcribed. If a stream must end before its
finals are done (the close deadline), the client gets an `Error` and a close that says so.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketState

from server import metrics
from server.audio.decode import AudioError, RawFormat
from server.audio.stream import make_decoder
from server.deepgram import live
from server.deepgram.text import TextOptions
from server.diarize import SpeakerHints
from server.engine import Engine, ModelInfo
from server.errors import KeytermLimitExceeded, ServiceError
from server.outbound import Outbound
from server.streaming.callback import CallbackSink
from server.streaming.channel import Channel
from server.streaming.config import StreamConfig
from server.streaming.decoding import EngineDecoder
from server.streaming.holdback import Holdback
from server.streaming.results import StreamEvent, StreamResult, StreamWord
from server.streaming.speakers import StreamSpeakers
from server.vad import SAMPLE_RATE

log = logging.getLogger(__name__)

KEEPALIVE_ONLY = "NET-0001: only KeepAlive and no audio for {seconds:g} s; closing the stream"
NET_0001 = (
    "Deepgram did not receive audio data or a text message within the timeout window. "
    "See https://dpgr.am/net0001"
)
# Deepgram's current troubleshooting page: close 1008 with the payload "DATA-0000" when the
# payload "cannot be decoded as audio" (not audio, or a codec it does not support).
DATA_0000 = "DATA-0000: the payload cannot be decoded as audio"
UNFINISHED = "the stream closed before all of its audio could be transcribed"
FAILED = "the stream failed inside the server (its log says why)"
CONTEXT_WORDS = 16  # final words kept per channel for redaction across results
CLOSE_NORMAL = 1000
CLOSE_DATA = 1008
CLOSE_TIMEOUT = 1011
CLOSE_UNFINISHED = 1011


@dataclass(frozen=True)
class StreamSpec:
    """What the handshake fixed for the stream's life; `config` is what `Configure` replaces."""

    request_id: str
    model_info: ModelInfo
    raw: RawFormat | None
    multichannel: bool
    idle_timeout_s: float
    max_backlog_s: float  # stop reading the socket while more audio than this awaits finals
    close_deadline_s: float  # longest wait for the last finals when the stream ends
    config: StreamConfig
    # `Configure {"features": ...}`: the new config for later results, or a ValueError or
    # ServiceError (the API layer validates features as it validates query parameters).
    reconfigure: Callable[[object, StreamConfig], StreamConfig] | None = None
    extra: dict[str, str] = field(default_factory=dict)  # echoed in every Results' metadata
    tags: tuple[str, ...] = ()  # echoed in the closing Metadata
    warnings: tuple[dict[str, str], ...] = ()  # sent in the closing Metadata
    callback: str | None = None  # every message is also POSTed (or PUT) there
    callback_method: str = "POST"
    # A stream that sends only KeepAlive (no audio) for this long is closed: it would otherwise
    # hold a stream slot forever.
    keepalive_only_timeout_s: float = 300.0
    speakers: SpeakerHints | None = None  # diarize=true: label final words with speakers
    # `Configure {"keyterms": [...]}`: the terms to use, or a ServiceError (the API layer holds
    # them to the query string's limits); a KeytermLimitExceeded is reported as such.
    check_keyterms: Callable[[object], list[str]] | None = None


def close_reason(text: str) -> str:
    """WebSocket close reasons are limited to 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode(errors="ignore")


class Outbox:
    """Serialises outgoing messages on one task, so sync code (VAD callbacks) can emit too;
    a stream `callback` gets a copy of each."""

    def __init__(self, ws: WebSocket, copy_to: CallbackSink | None = None) -> None:
        self._ws = ws
        self._copy_to = copy_to
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self.broken = False

    def put(self, message: dict[str, Any]) -> None:
        if message.get("type") not in live.KNOWN_TYPES:  # never put an unknown type on the wire
            raise ValueError(f"refusing to send message type {message.get('type')!r}")
        self._queue.put_nowait(message)
        if self._copy_to is not None:
            self._copy_to.put(message)

    async def _run(self) -> None:
        while True:
            message = await self._queue.get()
            if message is None:
                return
            if self.broken:
                continue
            try:
                await self._ws.send_text(json.dumps(message))
            except Exception:  # the client went away; keep draining so callers never block
                self.broken = True

    async def drain(self) -> None:
        """Send everything queued so far, then stop."""
        self._queue.put_nowait(None)
        await self._task


class Session:
    def __init__(
        self, ws: WebSocket, engine: Engine, spec: StreamSpec, outbound: Outbound | None = None
    ) -> None:
        self.ws = ws
        self.engine = engine
        self.spec = spec
        self.config = spec.config
        self.callback = (
            CallbackSink(outbound, spec.callback, spec.callback_method, spec.request_id)
            if spec.callback and outbound is not None
            else None
        )
        self.outbox = Outbox(ws, self.callback)
        self._keyterms: list[str] = []
        self.channels: list[Channel] = []
        self.audio_channels = 0
        self.samples = 0  # 16 kHz samples received per channel
        self.peak_backlog_s = 0.0  # the most audio ever waiting for finals (logged at close)
        self._sha = hashlib.sha256()
        self._wall: list[tuple[int, float]] = []  # (samples received, wall time) checkpoints
        self._wall_samples: list[int] = []
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._progress = asyncio.Event()  # a channel sent a final: the backlog shrank
        self._error: AudioError | None = None
        self._failure: BaseException | None = None  # a channel failed: no more finals come
        # Each channel's last final words: the context text shaping needs for a number cut
        # across results (redaction).
        self._said: dict[int, deque[StreamWord]] = {}
        self._holds: dict[int, Holdback] = {}  # per channel: finals ending inside a number
        self._decoders: list[EngineDecoder] = []  # one per channel, in channel order
        self.decoder = make_decoder(spec.raw, self._on_audio, self._on_audio_error)
        self.started = time.monotonic()
        self._last_audio = self.started

    # --- measurements ------------------------------------------------------------------------
    @property
    def backlog_s(self) -> float:
        """Seconds of received audio that finals have yet to cover (worst channel)."""
        return max((c.backlog_s for c in self.channels), default=0.0)

    def _wall_at(self, sample: int) -> float:
        """Wall time at which the audio up to `sample` had arrived."""
        index = bisect.bisect_left(self._wall_samples, sample)
        if index >= len(self._wall):
            return time.monotonic()
        return self._wall[index][1]

    # --- audio -------------------------------------------------------------------------------
    def _on_audio(self, samples: np.ndarray) -> None:
        if self._stop.is_set() and self._finished.is_set():
            return
        if not self.channels:
            self._open_channels(samples.shape[0])
        if not self.spec.multichannel:
            samples = samples.mean(axis=0, keepdims=True) if samples.shape[0] > 1 else samples
        self.samples += samples.shape[1]
        metrics.AUDIO_SECONDS.labels("stream").inc(samples.shape[1] / SAMPLE_RATE)
        now = time.monotonic()
        self._wall.append((self.samples, now))
        self._wall_samples.append(self.samples)
        if len(self._wall) > 20000:  # ~10 min of 32 ms chunks; older ones are long decoded
            del self._wall[:10000], self._wall_samples[:10000]
        for channel, track in zip(self.channels, samples, strict=False):
            channel.feed(np.ascontiguousarray(track, np.float32))
        self.peak_backlog_s = max(self.peak_backlog_s, self.backlog_s)

    def _open_channels(self, count: int) -> None:
        self.audio_channels = count
        total = count if self.spec.multichannel else 1
        for index in range(total):
            self.channels.append(
                Channel(
                    index,
                    self.config,
                    self._decoder(),
                    self._emit,
                    self._wall_at,
                    self._progress.set,
                    on_failure=self._on_channel_failure,
                    speakers=(
                        StreamSpeakers(self.engine, self.spec.speakers, index)
                        if self.spec.speakers is not None
                        else None
                    ),
                )
            )

    def _decoder(self) -> EngineDecoder:
        decoder = EngineDecoder(self.engine, self.config.final_options.language)
        self._decoders.append(decoder)
        return decoder

    def _emit(self, event: StreamEvent) -> None:
        # Redaction: words ending inside a number still being said wait (streaming/holdback.py).
        hold = self._holds.get(event.channel)
        if hold is None:
            undecided = partial(self._undecided, event.channel)
            hold = self._holds[event.channel] = Holdback(undecided)
        for out in hold.push(event):
            self._send(out)

    def _text(self, channel: int) -> TextOptions:
        """The channel's text shaping; with language detection, numbers are spoken in the
        language that was detected."""
        text = self.config.text
        detected = self._decoders[channel].detected if channel < len(self._decoders) else None
        return replace(text, language=detected) if detected and detected != text.language else text

    def _undecided(self, channel: int, words: Sequence[StreamWord]) -> int | None:
        return live.undecided_from(words, self._text(channel))

    def _send(self, event: StreamEvent) -> None:
        said = None
        text = self.config.text
        detected = None
        if isinstance(event, StreamResult):
            said = self._said.setdefault(event.channel, deque(maxlen=CONTEXT_WORDS))
            detected = self._decoders[event.channel].detected
            text = self._text(event.channel)
        self.outbox.put(
            live.message(
                event,
                channels=len(self.channels),
                text=text,
                request_id=self.spec.request_id,
                model=self.spec.model_info,
                search=self.config.search,
                context=tuple(said or ()),
                extra=self.spec.extra,
                detected=detected,
            )
        )
        if said is not None and event.is_final:
            said.extend(event.words)

    def _on_channel_failure(self, error: BaseException) -> None:
        self._failure = error
        self._stop.set()

    def _on_audio_error(self, error: AudioError) -> None:
        self._error = error
        self._stop.set()

    def _feed(self, data: bytes) -> None:
        self._sha.update(data)
        self.decoder.feed(data)

    # --- controls ----------------------------------------------------------------------------
    async def _control(self, text: str) -> bool:
        """Handle a text frame; True when the stream should end (CloseStream)."""
        try:
            message = json.loads(text)
            kind = message.get("type") if isinstance(message, dict) else None
        except (ValueError, RecursionError):  # `[[[[…` in a 16 MB frame recurses past the limit
            kind = None
        if kind == "KeepAlive":
            return False
        if kind == "CloseStream":
            return True
        if kind == "Finalize":
            await self.decoder.settle()
            try:
                targets = self._finalize_targets(message.get("channel"))
            except ValueError as exc:
                self.outbox.put(live.error(str(exc), text[:2048]))
                return False
            for channel in targets:
                channel.flush(from_finalize=True)
            return False
        if kind == "Configure":
            self._configure(message)
            return False
        self.outbox.put(
            live.error(
                "Failed to parse the text message: expected JSON with a 'type' of KeepAlive, "
                "Finalize, CloseStream or Configure",
                text[:2048],
            )
        )
        return False

    def _finalize_targets(self, index: object) -> list[Channel]:
        """The channels a Finalize flushes. Deepgram's `{"type": "Finalize", "channel": N}`
        flushes channel N alone (a multichannel client finalising one speaker must not cut
        the others' utterances); without `channel`, every channel. A channel the stream does
        not have is refused (ValueError), not silently widened to all of them."""
        if index is None:
            return list(self.channels)
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"Finalize 'channel' must be a channel index, got {index!r}"[:300])
        if self.channels and not 0 <= index < len(self.channels):
            raise ValueError(
                f"Finalize 'channel' {index} is out of range: the stream has "
                f"{len(self.channels)} channel(s), indexed from 0"
            )
        return [c for c in self.channels if c.index == index]

    def _configure(self, message: dict[str, Any]) -> None:
        """`keyterms` replace the hotwords, `features` the text shaping of later results; all
        or nothing: a bad part fails the whole message and changes nothing."""
        keyterms = message.get("keyterms")
        features = message.get("features")
        config = self.config
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
                config = self.spec.reconfigure(features, config)
        except (ValueError, ServiceError) as exc:
            code = (
                "CONFIGURE_KEYTERM_LIMIT_EXCEEDED"
                if isinstance(exc, KeytermLimitExceeded)
                else "CONFIGURE_INTERNAL_ERROR"
            )
            self.outbox.put(live.configure_failure(self.spec.request_id, code, str(exc)[:500]))
            return
        if keyterms is not None:
            self._keyterms = list(keyterms)
        self.config = config
        for channel in self.channels:
            channel.configure(self.config)
        self.outbox.put(live.configure_success(self.spec.request_id, self._keyterms))

    # --- the connection loop -----------------------------------------------------------------
    async def run(self) -> None:
        """Serve the stream until it ends; always leaves the socket closed."""
        metrics.ACTIVE_STREAMS.inc()
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            outcome = await self._receive_loop(stop_wait)
            if outcome == "disconnect":
                return
            if outcome == "idle":
                await self._end(CLOSE_TIMEOUT, NET_0001, metadata=False)
            elif outcome == "keepalive":
                reason = KEEPALIVE_ONLY.format(seconds=self.spec.keepalive_only_timeout_s)
                self.outbox.put(live.error(reason, variant="NET-0001"))
                await self._end(CLOSE_TIMEOUT, reason, metadata=True)
            else:
                await self._end(CLOSE_NORMAL, "", metadata=True)
        finally:
            stop_wait.cancel()
            await self._cleanup()
            metrics.ACTIVE_STREAMS.dec()
            self._finished.set()

    async def _receive_loop(self, stop_wait: asyncio.Task) -> str:
        while True:
            if self.backlog_s > self.spec.max_backlog_s:
                # Not reading is the backpressure: the socket's buffers fill and TCP slows the
                # sender. No idle timeout meanwhile: the wait is ours, not the client's.
                self._progress.clear()
                progress = asyncio.create_task(self._progress.wait())
                await asyncio.wait({progress, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                progress.cancel()
                if stop_wait.done():
                    return "stop"
                continue
            receive = asyncio.create_task(self.ws.receive())
            done, _ = await asyncio.wait(
                {receive, stop_wait},
                timeout=self.spec.idle_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if receive not in done:
                receive.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receive
                return "stop" if stop_wait in done else "idle"
            message = receive.result()
            if message["type"] == "websocket.disconnect":
                return "disconnect"
            data = message.get("bytes")
            if data is not None:
                if len(data) == 0:
                    return "close"  # the legacy close signal
                self._last_audio = time.monotonic()
                self._feed(data)
                continue
            text = message.get("text")
            if text is not None and await self._control(text):
                return "close"
            if time.monotonic() - self._last_audio > self.spec.keepalive_only_timeout_s:
                return "keepalive"

    async def _end(self, code: int, reason: str, *, metadata: bool) -> None:
        """Flush finals, then (optionally) Metadata, then the close frame."""
        if self._error is None and self._failure is None:
            await self.decoder.finish()
        if self._error is not None:
            code, reason = CLOSE_DATA, f"{DATA_0000}: {self._error}"
            metadata = False
            self.outbox.put(live.error(str(self._error), variant="DATA-0000"))
        if self._failure is not None:
            # A channel can send no more finals: say so at once instead of waiting for them.
            code, reason, metadata = CLOSE_UNFINISHED, FAILED, False
            self.outbox.put(
                live.error(f"{FAILED}: {type(self._failure).__name__}", variant="INTERNAL")
            )
            pending = []
        else:
            pending = [channel.flush(from_finalize=False) for channel in self.channels]
        if pending and not await self._settle(pending):
            # Never lose audio silently: say that (and how much) was left untranscribed.
            left = self.backlog_s
            log.warning("stream closed unfinished", extra={"untranscribed_s": round(left, 2)})
            self.outbox.put(
                live.error(
                    f"{UNFINISHED}: {left:.1f} s were not transcribed in time",
                    variant="INCOMPLETE",
                )
            )
            code, reason, metadata = CLOSE_UNFINISHED, UNFINISHED, False
        for hold in self._holds.values():  # numbers said last are decided by the end
            for event in hold.finish():
                self._send(event)
        if metadata:
            self.outbox.put(
                live.metadata(
                    request_id=self.spec.request_id,
                    sha256=self._sha.hexdigest(),
                    duration=self.samples / SAMPLE_RATE,
                    channels=self.audio_channels,
                    model=self.spec.model_info,
                    tags=self.spec.tags,
                    extra=self.spec.extra,
                    warnings=self.spec.warnings,
                )
            )
        await self.outbox.drain()
        if self.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.ws.close(code, close_reason(reason))

    async def _settle(self, pending: list[asyncio.Future]) -> bool:
        """Wait for the last finals; False when they did not all come in time.

        A client's close waits as long as finals keep coming (what is left is bounded by the
        backlog limit), giving up after `close_deadline_s` without one; a server shutdown gets
        `close_deadline_s` in all.
        """
        deadline = time.monotonic() + self.spec.close_deadline_s
        waiting: set[asyncio.Future] = set(pending)
        while waiting:
            self._progress.clear()
            progress = asyncio.ensure_future(self._progress.wait())
            done, _ = await asyncio.wait(
                waiting | {progress},
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
            progress.cancel()
            if not done:
                return False
            waiting -= done
            if not self._stop.is_set():
                deadline = time.monotonic() + self.spec.close_deadline_s
        return True

    async def _cleanup(self) -> None:
        if self.callback is not None:
            await self.callback.close(self.spec.close_deadline_s)
        self.decoder.close()
        for channel in self.channels:
            await channel.close()
        if not self.outbox._task.done():
            self.outbox._task.cancel()

    async def shutdown(self) -> None:
        """Server shutdown: flush final Results, send Metadata, close 1000 (as CloseStream)."""
        self._stop.set()
        await self._finished.wait()
