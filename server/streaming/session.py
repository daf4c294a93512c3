"""One live stream's runner: frames in, channels driven, messages out, clean close.

The runner knows no wire protocol. It owns the connection's life: it feeds binary frames to the
incremental decoder, hands decoded audio to one `Channel` per transcribed channel, passes what
the channels produce to its `Adapter`, hands text frames to the adapter too, enforces the idle
timeout, and ends every stream the same way (last results -> the adapter's closing messages ->
close 1000) whether the client asked or the server is shutting down (`shutdown()`). The
adapter (Deepgram v1 `Results`, Flux `TurnInfo`: see `server/deepgram/`) decides which controls
exist, what each result becomes on the wire, and which message types may go out at all.

A client may send faster than real time. While the audio still to be decoded into finals
exceeds `max_backlog_s`, the session stops reading the socket: TCP then slows the sender, memory
stays bounded, and every byte that was read is transcribed. If a stream must end before its
finals are done (the close deadline), the client gets an error and a close that says so.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from starlette.websockets import WebSocket, WebSocketState

from server import metrics
from server.audio.decode import AudioError, RawFormat
from server.audio.stream import make_decoder
from server.diarize import SpeakerHints
from server.engine import Engine
from server.outbound import Outbound
from server.streaming.callback import CallbackSink
from server.streaming.channel import Channel, Heard
from server.streaming.config import StreamConfig
from server.streaming.decoding import EngineDecoder
from server.streaming.endpointer import Event
from server.streaming.results import StreamEvent
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
CLOSE_NORMAL = 1000
CLOSE_DATA = 1008
CLOSE_TIMEOUT = 1011
CLOSE_UNFINISHED = 1011


@dataclass(frozen=True)
class StreamSpec:
    """What the handshake fixed for the stream's life; `config` is what `Configure` replaces."""

    request_id: str
    raw: RawFormat | None
    multichannel: bool
    idle_timeout_s: float
    max_backlog_s: float  # stop reading the socket while more audio than this awaits finals
    close_deadline_s: float  # longest wait for the last finals when the stream ends
    config: StreamConfig
    callback: str | None = None  # every message is also POSTed (or PUT) there
    callback_method: str = "POST"
    # A stream that sends only control messages (no audio) for this long is closed: it would
    # otherwise hold a stream slot forever.
    keepalive_only_timeout_s: float = 300.0
    speakers: SpeakerHints | None = None  # diarize=true: label final words with speakers
    retain_s: float = 0.0  # audio each channel keeps behind its endpointer (Flux scores it)


# Why a stream ends badly, in the runner's words; the adapter says it in its protocol's.
Failure = Literal["idle", "keepalive", "data", "internal", "incomplete", "client"]
Control = Literal["continue", "close", "refuse"]


class Adapter:
    """One wire protocol over the runner: its controls, its messages, its closing words.

    Subclasses live beside their message builders (`server/deepgram/`); the runner calls them
    from one task, in stream order, and every message they `put` is checked against
    `known_types` before it may go out.
    """

    known_types: frozenset[str] = frozenset()
    numbered = False  # Flux: every message carries its `sequence_id`

    def attach(self, session: Session) -> None:
        self.session = session

    def opened(self) -> None:
        """The socket is accepted: anything to say before audio (Flux's `Connected`)."""

    def result(self, event: StreamEvent) -> None:
        """A channel produced a result (interim, final, speech started, utterance end)."""

    def endpoint(self, channel: Channel, event: Event | Heard) -> None:
        """What a channel's endpointer saw (speech started, paused, resumed, heard up to)."""

    async def control(self, message: Any, text: str) -> Control:
        """A text frame (`message` is its JSON, or None when it is not JSON)."""
        return "continue"

    def failure(self, kind: Failure, description: str) -> dict[str, Any] | None:
        """The message that says why the stream ends badly (None: say nothing)."""
        return None

    def settled(self) -> None:
        """The last finals are in (or will not come): send anything still held back."""

    def closing(self) -> list[dict[str, Any]]:
        """What goes out after the last results of a stream that ends well."""
        return []

    def closed(self) -> None:
        """The stream is over: drop anything still pending."""


def close_reason(text: str) -> str:
    """WebSocket close reasons are limited to 123 bytes of UTF-8."""
    data = text.encode()[:123]
    return data.decode(errors="ignore")


class Outbox:
    """Serialises outgoing messages on one task, so sync code (VAD callbacks) can emit too;
    a stream `callback` gets a copy of each."""

    def __init__(
        self,
        ws: WebSocket,
        known_types: frozenset[str],
        copy_to: CallbackSink | None = None,
        numbered: bool = False,
    ) -> None:
        self._ws = ws
        self._known = known_types
        self._copy_to = copy_to
        self._next_sequence = 0 if numbered else None
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run())
        self.broken = False

    def put(self, message: dict[str, Any]) -> None:
        if message.get("type") not in self._known:  # never put an unknown type on the wire
            raise ValueError(f"refusing to send message type {message.get('type')!r}")
        if self._next_sequence is not None:
            message = {**message, "sequence_id": self._next_sequence}
            self._next_sequence += 1
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
        self,
        ws: WebSocket,
        engine: Engine,
        spec: StreamSpec,
        adapter: Adapter,
        outbound: Outbound | None = None,
    ) -> None:
        self.ws = ws
        self.engine = engine
        self.spec = spec
        self.config = spec.config
        self.adapter = adapter
        self.callback = (
            CallbackSink(outbound, spec.callback, spec.callback_method, spec.request_id)
            if spec.callback and outbound is not None
            else None
        )
        self.outbox = Outbox(ws, adapter.known_types, self.callback, numbered=adapter.numbered)
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
        self._decoders: list[EngineDecoder] = []  # one per channel, in channel order
        self.decoder = make_decoder(spec.raw, self._on_audio, self._on_audio_error)
        self.started = time.monotonic()
        self._last_audio = self.started
        adapter.attach(self)

    # --- what adapters may use ---------------------------------------------------------------
    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def put(self, message: dict[str, Any]) -> None:
        self.outbox.put(message)

    def detected(self, channel: int) -> str | None:
        """The language a channel detected (None until then, or when one was named)."""
        return self._decoders[channel].detected if channel < len(self._decoders) else None

    def reconfigure(self, config: StreamConfig) -> None:
        """Later decodes and cuts of every channel use `config`."""
        self.config = config
        for channel in self.channels:
            channel.configure(config)

    async def settle_audio(self) -> None:
        """Every frame received so far is decoded into samples and fed to the channels."""
        await self.decoder.settle()

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

            def observe(event: Event | Heard, index: int = index) -> None:
                self.adapter.endpoint(self.channels[index], event)

            channel = Channel(
                index,
                self.config,
                self._decoder(),
                self.adapter.result,
                self._wall_at,
                self._progress.set,
                on_failure=self._on_channel_failure,
                speakers=(
                    StreamSpeakers(self.engine, self.spec.speakers, index)
                    if self.spec.speakers is not None
                    else None
                ),
                on_endpoint=observe,
                retain_s=self.spec.retain_s,
            )
            self.channels.append(channel)

    def _decoder(self) -> EngineDecoder:
        decoder = EngineDecoder(self.engine, self.config.final_options.language)
        self._decoders.append(decoder)
        return decoder

    def _on_channel_failure(self, error: BaseException) -> None:
        self._failure = error
        self._stop.set()

    def _on_audio_error(self, error: AudioError) -> None:
        self._error = error
        self._stop.set()

    def _feed(self, data: bytes) -> None:
        self._sha.update(data)
        self.decoder.feed(data)

    async def _control(self, text: str) -> Control:
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # `[[[[…` in a 16 MB frame recurses past the limit
            message = None
        return await self.adapter.control(message, text)

    def _fail(self, kind: Failure, description: str) -> None:
        message = self.adapter.failure(kind, description)
        if message is not None:
            self.outbox.put(message)

    # --- the connection loop -----------------------------------------------------------------
    async def run(self) -> None:
        """Serve the stream until it ends; always leaves the socket closed."""
        metrics.ACTIVE_STREAMS.inc()
        stop_wait = asyncio.create_task(self._stop.wait())
        try:
            self.adapter.opened()
            outcome = await self._receive_loop(stop_wait)
            if outcome == "disconnect":
                return
            if outcome == "idle":
                await self._end(CLOSE_TIMEOUT, NET_0001, closing=False, failure="idle")
            elif outcome == "keepalive":
                reason = KEEPALIVE_ONLY.format(seconds=self.spec.keepalive_only_timeout_s)
                await self._end(CLOSE_TIMEOUT, reason, closing=True, failure="keepalive")
            elif outcome == "refuse":
                reason = "the client sent a message this protocol does not have"
                await self._end(CLOSE_DATA, reason, closing=False, failure="client")
            else:
                await self._end(CLOSE_NORMAL, "", closing=True)
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
                if stop_wait in done:
                    return "stop"
                if any(channel.busy for channel in self.channels):
                    continue  # the wait is ours: the idle clock starts once we caught up
                return "idle"
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
            if text is not None:
                control = await self._control(text)
                if control != "continue":
                    return control
            if time.monotonic() - self._last_audio > self.spec.keepalive_only_timeout_s:
                return "keepalive"

    async def flush(self, channels: list[Channel], from_finalize: bool) -> list[asyncio.Future]:
        """Everything received on `channels` becomes final (Finalize, ForceEndTurn)."""
        await self.decoder.settle()
        return [channel.flush(from_finalize=from_finalize) for channel in channels]

    async def _end(
        self, code: int, reason: str, *, closing: bool, failure: Failure | None = None
    ) -> None:
        """Flush finals, then why it ended badly (`failure`, with `reason`), then (optionally)
        the adapter's closing messages, then the close."""
        if self._error is None and self._failure is None:
            await self.decoder.finish()
            for channel in self.channels:  # held pauses judged first (bounded by the deadline)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(channel.drain(), self.spec.close_deadline_s)
        fail: tuple[Failure, str] | None = None if failure is None else (failure, reason)
        if self._error is not None:
            code, reason = CLOSE_DATA, f"{DATA_0000}: {self._error}"
            closing, fail = False, ("data", str(self._error))
        if self._failure is not None:
            # A channel can send no more finals: say so at once instead of waiting for them.
            code, reason, closing, fail = CLOSE_UNFINISHED, FAILED, False, None
            self._fail("internal", f"{FAILED}: {type(self._failure).__name__}")
            pending = []
        else:
            pending = [channel.flush(from_finalize=False) for channel in self.channels]
        if pending and not await self._settle(pending):
            # Never lose audio silently: say that (and how much) was left untranscribed.
            left = self.backlog_s
            log.warning("stream closed unfinished", extra={"untranscribed_s": round(left, 2)})
            fail = ("incomplete", f"{UNFINISHED}: {left:.1f} s were not transcribed in time")
            code, reason, closing = CLOSE_UNFINISHED, UNFINISHED, False
        self.adapter.settled()
        if fail is not None:  # after the last results: the error is the last word
            self._fail(*fail)
        if closing:
            for message in self.adapter.closing():
                self.outbox.put(message)
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
        self.adapter.closed()
        if self.callback is not None:
            await self.callback.close(self.spec.close_deadline_s)
        self.decoder.close()
        for channel in self.channels:
            await channel.close()
        if not self.outbox._task.done():
            self.outbox._task.cancel()

    async def shutdown(self) -> None:
        """Server shutdown: flush the last results, say goodbye, close 1000 (as CloseStream)."""
        self._stop.set()
        await self._finished.wait()
