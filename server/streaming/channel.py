"""The async driver of one audio channel: samples in, decodes out, results to the session.

Everything that decides *what* a result says lives in synchronous parts: the `Endpointer` cuts
the stream into spans (from VAD probabilities and positions only), the `Transcript` decides
which decoded words each result shows, the `SampleBuffer` holds the audio. This class only
runs the decodes (through a `WindowDecoder`) and hands protocol-neutral values
(`results.StreamEvent`) to `emit`.

Finals are emitted in stream order. Up to `FINALS_IN_FLIGHT` final decodes run at once (so a
backlog drains on every worker), and a final's decode starts early when the speaker pauses:
the `Paused` event carries exactly the window the final would decode, so reusing it changes
when the final arrives, never what it says. Interims re-decode the open utterance every
`interim_step_s` of new audio, one at a time; one that returns after its utterance closed is
still shown if its final is not out yet (on a slow machine that is most of them). Under load
each channel rests about as long as its last interim took, so interims yield to finals.
With `diarize=true` a final also waits for its speaker labelling (`StreamSpeakers`), started
when its span is known and run beside its decode.

What the endpointer sees (speech started, paused, resumed, and how far it has heard) also goes
to `on_endpoint`, for a protocol that decides more than v1's endpoints (Flux turns). Such a
protocol may `hold` the endpointer at a pause while it judges it: the audio keeps arriving and
is buffered, but no later frame is endpointed until the judgement is in, so where turns end
depends on the audio and the judgement alone, never on how fast the judgement came.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from server import metrics
from server.engine import DeadlineExpired, Overloaded
from server.streaming.buffer import SampleBuffer
from server.streaming.config import StreamConfig
from server.streaming.decoding import WindowDecoder
from server.streaming.endpointer import (
    FRAME,
    MAX_WINDOW_S,
    Closed,
    Cut,
    Endpointer,
    Event,
    Paused,
    Quiet,
    Resumed,
    Span,
    Started,
)
from server.streaming.results import SpeechStarted, StreamEvent, StreamWord
from server.streaming.speakers import MIN_SPEAKER_AUDIO, StreamSpeakers
from server.streaming.transcript import Transcript
from server.vad import SAMPLE_RATE, StreamingVad

log = logging.getLogger(__name__)

# Already-final audio decoded again in front of each final's window. The encoder always reads
# a full 30 s mel window, so this context costs little there, and it gives a phrase cut at a
# pause the acoustic and linguistic lead-in it lacks (its words are left out again by
# `policy.owned`).
LEFT_CONTEXT = int(4.0 * SAMPLE_RATE)
FINALS_IN_FLIGHT = 2

Window = tuple[int, int]


@dataclass(frozen=True)
class Heard:
    """The endpointer has heard the stream up to sample `position` (after the events of the
    frames before it)."""

    position: int


EndpointObserver = Callable[[Event | Heard], None]


@dataclass
class _Final:
    """A span on its way to becoming a final result, in stream order."""

    span: Span
    from_finalize: bool = False
    silent: bool = False  # send nothing (a stream ending where its finals end): just complete
    done: list[asyncio.Future] = field(default_factory=list)
    task: asyncio.Task | None = None  # its decode (None: not started, or nothing to decode)
    speakers: asyncio.Task | None = None  # its speaker labelling (diarize=true)
    labelled_at: float = 0.0  # when the labelling finished (monotonic)

    @property
    def ready(self) -> bool:
        decoded = self.span.window is None or (self.task is not None and self.task.done())
        return decoded and (self.speakers is None or self.speakers.done())


class Channel:
    def __init__(
        self,
        index: int,
        config: StreamConfig,
        decoder: WindowDecoder,
        emit: Callable[[StreamEvent], None],
        wall_at: Callable[[int], float],
        on_progress: Callable[[], None] = lambda: None,
        vad: Callable[[np.ndarray], np.ndarray] | None = None,
        speakers: StreamSpeakers | None = None,
        on_failure: Callable[[BaseException], None] = lambda _: None,
        on_endpoint: EndpointObserver | None = None,
        retain_s: float = 0.0,
    ) -> None:
        self.index = index
        self.config = config
        self._decoder = decoder
        self._emit = emit
        self._wall_at = wall_at  # wall time at which the audio up to a sample had arrived
        self._on_progress = on_progress
        self._on_failure = on_failure
        self._vad = vad or StreamingVad().feed  # samples -> one speech probability per frame
        self._speakers = speakers
        self._decoded_at: dict[asyncio.Task, float] = {}  # diarize=true: when decodes finished
        self._buffer = SampleBuffer()
        self._endpointer = Endpointer(config.endpointer)
        self.transcript = Transcript(index)
        self._finals: deque[_Final] = deque()
        self._speculation: tuple[Window, asyncio.Task] | None = None
        self._interim: asyncio.Task | None = None
        self._interim_from = 0  # where the last interim decode's audio ended
        self._interim_rest_until = 0.0
        self._wake = asyncio.Event()
        self._on_endpoint = on_endpoint
        self._retain = int(retain_s * SAMPLE_RATE)  # audio kept behind the endpointer
        self._pending: deque[float] = deque()  # VAD frames not yet endpointed (a hold)
        self._hold: asyncio.Future | None = None
        self._final_sent = asyncio.Event()
        self._loop_task = asyncio.create_task(self._run())
        self._loop_task.add_done_callback(self._loop_ended)

    def configure(self, config: StreamConfig) -> None:
        """Later decodes and cuts use `config` (decodes already started keep theirs)."""
        self.config = config
        self._endpointer.config = config.endpointer

    # --- audio in ----------------------------------------------------------------------------
    @property
    def received(self) -> int:
        return self._buffer.end

    @property
    def busy(self) -> bool:
        """Audio received is still being endpointed, judged or made final."""
        return bool(self._pending) or self._hold is not None or bool(self._finals)

    @property
    def position(self) -> int:
        """How far the endpointer has heard (behind `received` while held)."""
        return self._endpointer.frames * FRAME

    def feed(self, samples: np.ndarray) -> None:
        """Take new 16 kHz samples: VAD, endpointing, and whatever decodes that starts."""
        self._buffer.append(samples)
        self._pending.extend(float(p) for p in self._vad(samples))
        self._advance()

    def _advance(self, force: bool = False) -> None:
        """Endpoint the frames heard so far, one at a time, stopping at a hold."""
        advanced = False
        while self._pending and (force or self._hold is None):
            for event in self._endpointer.push((self._pending.popleft(),)):
                self._on_event(event)
            advanced = True
        if advanced and self._on_endpoint is not None:
            self._on_endpoint(Heard(self.position))
        self._check_utterance_end()
        self._trim()
        self._wake.set()

    def hold(self, until: asyncio.Future) -> None:
        """Endpoint no further frame until `until` is done (it must not be a frame's result)."""
        self._hold = until
        until.add_done_callback(self._release)

    def _release(self, until: asyncio.Future) -> None:
        if self._hold is until:
            self._hold = None
            self._advance()

    async def drain(self) -> None:
        """Endpoint every frame received, each hold honoured (a stream's end decides its
        last turns as if the audio had gone on arriving, not by how fast it was judged)."""
        while self._hold is not None or self._pending:
            hold = self._hold
            if hold is None:
                self._advance()
                continue
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.shield(hold)
            await asyncio.sleep(0)  # its release (a done callback) runs first
            if self._hold is hold:  # cancelled without releasing: nothing holds any more
                self._hold = None

    def audio(self, begin: int, end: int) -> np.ndarray:
        """The samples [begin, end) still held (see `retain_s`)."""
        return self._buffer.window(begin, end)

    def end_utterance(self, closing: bool = True) -> bool:
        """Make the open utterance final here: a turn judged over at this pause, or
        (`closing=False`) judged to go on, so the next pause decodes only what follows. In a
        pause already closed mid-turn, `closing` ends it with an empty final. False when there
        is nothing to close."""
        span = self._endpointer.end_utterance(closing)
        if span is None:
            return False
        self._queue(_Final(span))
        return True

    async def pause_words(self, window: Window) -> tuple[StreamWord, ...] | None:
        """The words the final of this pause would show (its decode started at the pause),
        once every earlier final is out; None when that decode was dropped."""
        speculation = self._speculation
        if speculation is None or speculation[0] != window:
            return None
        try:
            words = await asyncio.shield(speculation[1])
        except (asyncio.CancelledError, Exception):
            return None
        while self._finals and self._finals[0].span.end <= window[0]:
            self._final_sent.clear()
            await self._final_sent.wait()
        return self.transcript.preview(words, self.position)

    def _on_event(self, event: Event) -> None:
        match event:
            case Started(at):
                self.transcript.speech_resumed()
                if self.config.vad_events:
                    self._emit(SpeechStarted(self.index, at / SAMPLE_RATE))
            case Paused(window, _, silence):
                self._speculate(window, silence)
            case Resumed():
                self._drop_speculation()
            case Closed(span) | Cut(span):
                self._queue(_Final(span))
        if self._on_endpoint is not None and isinstance(event, Started | Paused | Quiet | Resumed):
            self._on_endpoint(event)

    def flush(self, from_finalize: bool) -> asyncio.Future:
        """Finalize / end of stream: everything received becomes final. Resolves once sent.

        An open utterance becomes a final of its own. With none open, the last final still
        pending (queued or decoding) takes a Finalize over, so a Finalize that arrives just
        after an endpoint marks that final `from_finalize` instead of adding an empty one;
        only when nothing at all is pending does Finalize get an empty final. The end of a
        stream over silence gets an empty final for that silence, as Deepgram sends one, so
        the finals reach the end of the audio (the Metadata's `duration`): a client that
        tracks `start + duration` as its transcript cursor sees the whole stream answered.
        Only when the finals already reach the end is nothing more sent.
        """
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        self._advance(force=True)  # everything received, whatever a hold awaits
        span = self._endpointer.flush(self.received)
        if span.window is not None:
            self._queue(_Final(span, from_finalize, done=[done]))
        elif self._finals and from_finalize:
            last = self._finals[-1]
            last.span = replace(last.span, end=span.end)
            last.from_finalize = True
            last.done.append(done)
        else:
            silent = not from_finalize and span.end <= span.start
            self._queue(_Final(span, from_finalize, silent=silent, done=[done]))
        return done

    def _queue(self, job: _Final) -> None:
        speculation, self._speculation = self._speculation, None
        if speculation is not None:
            window, task = speculation
            if window == job.span.window:
                job.task = task  # already decoding exactly this window
            else:
                self._discard(task)
        if self._speakers is not None and job.span.window is not None:
            job.speakers = self._start_speakers(job.span)
            job.speakers.add_done_callback(lambda _: self._labelled(job))
        self._finals.append(job)
        self._wake.set()

    def _speculate(self, window: Window, silence: int) -> None:
        """The speaker paused: decode the final's window now, while the endpoint's silence is
        still being confirmed; most such pauses are endpoints. It is due when the stream
        would first use it (`StreamConfig.due_in_s`), not at once."""
        if self._speculation is not None and self._speculation[0] == window:
            return  # the same pause, announced again as it grows
        self._drop_speculation()
        due_in_s = self.config.due_in_s(silence / SAMPLE_RATE)
        self._speculation = (window, self._start_final_decode(window, due_in_s))

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._discard(self._speculation[1])
            self._speculation = None

    def _discard(self, task: asyncio.Task) -> None:
        task.cancel()
        self._decoded_at.pop(task, None)

    # --- bookkeeping -------------------------------------------------------------------------
    def _trim(self) -> None:
        """Forget audio no decode can need again: bounded however long the stream."""
        needed = [self._endpointer.earliest_needed]
        needed += [j.span.window[0] for j in self._finals if j.task is None and j.span.window]
        keep = min(needed) - LEFT_CONTEXT
        if self._retain:
            keep = min(keep, self.position - self._retain)
        self._buffer.trim(keep)

    @property
    def backlog_s(self) -> float:
        """Audio received that pending finals have yet to decode, in seconds (the silence
        before a pending final's speech is no work, so it never holds the socket up)."""
        if not self._finals:
            return 0.0
        span = self._finals[0].span
        begin = span.end if span.speech_start is None else span.speech_start
        return max(0.0, (self.received - begin) / SAMPLE_RATE)

    def _check_utterance_end(self) -> None:
        if self.config.utterance_end_ms is None:
            return
        settled = not self._endpointer.in_speech and not any(j.span.window for j in self._finals)
        event = self.transcript.utterance_end(
            self.received / SAMPLE_RATE, self.config.utterance_end_ms / 1000, settled
        )
        if event is not None:
            self._emit(event)

    # --- the loop ----------------------------------------------------------------------------
    def _loop_ended(self, task: asyncio.Task) -> None:
        """The loop only ends by cancellation: anything else is a bug, and a channel whose loop
        is gone never sends another final, so the session must hear of it (and end the stream
        with an error) rather than wait for finals that will never come."""
        if task.cancelled() or (error := task.exception()) is None:
            return
        log.error("stream channel failed", exc_info=error, extra={"channel": self.index})
        self._on_failure(error)

    async def _run(self) -> None:
        while True:
            for job in itertools.islice(self._finals, FINALS_IN_FLIGHT):
                if job.task is None and job.span.window is not None:
                    job.task = self._start_final_decode(job.span.window)
            if self._finals and self._finals[0].ready:
                self._send_final(self._finals.popleft())
                continue
            if self._interim is None and self._interim_due():
                self._interim = asyncio.create_task(self._run_interim())
                self._interim.add_done_callback(self._interim_done)
            self._wake.clear()
            await self._wake.wait()

    def _send_final(self, job: _Final) -> None:
        words: list[StreamWord] = []
        if job.task is not None:
            if job.task.cancelled():
                log.error("final decode cancelled", extra={"channel": self.index})
            elif (error := job.task.exception()) is not None:
                log.error("final decode failed", exc_info=error, extra={"channel": self.index})
            else:
                words = job.task.result()
        result = self.transcript.final(job.span, words, job.from_finalize)
        if self._speakers is not None and job.speakers is not None:
            result = replace(result, words=self._speakers.label(result.words, job.speakers))
            # What diarize=true added to this final's latency: the wait past its decode.
            decoded_at = self._decoded_at.pop(job.task, job.labelled_at)
            metrics.SPEAKER_WAIT.observe(max(0.0, job.labelled_at - decoded_at))
        if not job.silent:
            if result.speech_final and result.words:
                last = int(result.words[-1].end * SAMPLE_RATE)
                metrics.ENDPOINT_LATENCY.observe(time.monotonic() - self._wall_at(last))
            self._emit(result)
        for future in job.done:
            if not future.done():
                future.set_result(None)
        self._final_sent.set()
        self._check_utterance_end()
        self._on_progress()

    # --- decoding ----------------------------------------------------------------------------
    def _decoded(self, task: asyncio.Task) -> None:
        if self._speakers is not None and not task.cancelled():
            self._decoded_at[task] = time.monotonic()
        self._wake.set()

    def _labelled(self, job: _Final) -> None:
        job.labelled_at = time.monotonic()
        self._wake.set()

    def _start_speakers(self, span: Span) -> asyncio.Task:
        """Label the speech this final adds (never audio past its end: the next final's)."""
        assert self._speakers is not None and span.speech_start is not None
        end = min(span.decode_end, span.end)
        begin = max(self._buffer.start, min(span.speech_start, end - MIN_SPEAKER_AUDIO))
        return self._speakers.start(self._buffer.window(begin, end), begin)

    def _start_final_decode(self, window: Window, due_in_s: float = 0.0) -> asyncio.Task:
        """Cut the window's audio now (with left context) and decode it in a task."""
        speech_start, end = window
        room = int(MAX_WINDOW_S * SAMPLE_RATE) - (end - speech_start)
        begin = max(0, speech_start - max(0, min(LEFT_CONTEXT, room)))
        audio = self._buffer.window(begin, end)
        task = asyncio.create_task(self._decode_final(audio, begin, due_in_s))
        task.add_done_callback(self._decoded)
        return task

    async def _decode_final(
        self, audio: np.ndarray, begin: int, due_in_s: float = 0.0
    ) -> list[StreamWord]:
        return on_stream_clock(await self._decoder.final(audio, self.config, due_in_s), begin)

    def _interim_due(self) -> bool:
        start = self._endpointer.open_start
        if start is None or not self.config.interim_results or self._endpointer.quiet:
            return False
        if self._final_decoding:  # its own final first: an interim beside it halves its cores
            return False
        newest = self.received - max(self._interim_from, start)
        step = self.config.interim_step_s * SAMPLE_RATE
        return newest >= step and time.monotonic() >= self._interim_rest_until

    @property
    def _final_decoding(self) -> bool:
        """Whether one of this channel's finals (or its speculation) is being decoded."""
        if self._speculation is not None and not self._speculation[1].done():
            return True
        return any(j.task is not None and not j.task.done() for j in self._finals)

    async def _run_interim(self) -> None:
        try:
            speech_start = self._endpointer.open_start
            assert speech_start is not None
            start, end = self._endpointer.boundary, self.received
            self._interim_from = end
            audio = self._buffer.window(speech_start, end)
            began = time.monotonic()
            try:
                words = await self._decoder.interim(audio, self.config)
            except (Overloaded, DeadlineExpired):
                return  # saturated, or too late to matter: the final still comes
            finally:
                took = time.monotonic() - began
                rest = max(0.0, took - self.config.interim_step_s / 2)
                self._interim_rest_until = time.monotonic() + rest
            if start < self.transcript.cursor:
                return  # the final that replaces it is out already: too late to show
            words = on_stream_clock(words, speech_start)
            result = self.transcript.interim(start, end, words)
            if result is not None:
                metrics.INTERIM_LATENCY.observe(time.monotonic() - self._wall_at(end))
                self._emit(result)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("interim decode failed", extra={"channel": self.index})

    def _interim_done(self, task: asyncio.Task) -> None:
        if self._interim is task:
            self._interim = None
        self._wake.set()

    async def close(self) -> None:
        self._drop_speculation()
        tasks = [j.task for j in self._finals if j.task is not None]
        tasks += [j.speakers for j in self._finals if j.speakers is not None]
        tasks += [t for t in (self._interim, self._loop_task) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def on_stream_clock(words: list[StreamWord], offset: int) -> list[StreamWord]:
    """Words timed from a window's first sample, moved onto the stream clock."""
    shift = offset / SAMPLE_RATE
    return [replace(w, start=w.start + shift, end=w.end + shift) for w in words]
