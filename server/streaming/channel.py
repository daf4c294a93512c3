"""One audio channel of a live stream: VAD-driven utterances, decodes, and the results they yield.

Audio arrives on the 16 kHz clock. Every 32 ms frame gets a Silero probability (state carried
across calls); a small hysteresis state machine opens an utterance when speech starts and closes
it after `endpoint` ms of silence. Closed utterances queue as *final jobs*; a single decode loop
per channel runs them in order (finals first), and in the gaps re-decodes the open utterance for
interim results and for the piecewise commits of long monologues (see `policy`). One loop means
at most one decode in flight per channel, so a stream that falls behind coalesces its interim
work onto the newest audio instead of queueing stale windows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from server import metrics
from server.deepgram import live
from server.engine import (
    DeadlineExpired,
    DecodeOptions,
    Engine,
    ModelInfo,
    Overloaded,
    Priority,
    Segment,
    Word,
)
from server.prerecorded import to_file_clock, vad_options
from server.streaming import policy
from server.streaming.policy import TimedWord
from server.vad import FRAME, SAMPLE_RATE, StreamingVad, plan_speech

log = logging.getLogger(__name__)

NEG_THRESHOLD_GAP = 0.15  # Silero's usual hysteresis: leave speech below threshold - 0.15
MIN_SPEECH_FRAMES = 6  # 192 ms of speech before an utterance counts (clicks never get there)
PRE_ROLL_S = 0.3  # audio kept before the detected speech start (Silero reacts a little late)
SPEECH_PAD_S = 0.2  # audio kept after the last speech frame in an endpointed utterance
HARD_WINDOW_S = 28.0  # never hand Whisper more than its 30 s window
# Already-final audio decoded again in front of each window. The encoder always reads a full
# 30 s mel window, so this context costs almost nothing there, and it gives the decoder the
# acoustic and linguistic lead-in that a phrase cut at a pause lacks (its words are dropped
# again by the commit policy).
LEFT_CONTEXT_S = 4.0
QUIET_FRAMES = 3  # ~100 ms of silence inside an utterance: hold interim decodes
# Silence after which the final decode starts before the endpoint fires: just enough for the
# final's own speech pad, so the speculative window is exactly the final window.
SPECULATE_FRAMES = -(-int(SPEECH_PAD_S * SAMPLE_RATE) // FRAME)


@dataclass
class ChannelConfig:
    """What a channel needs to know from the session; fixed for the stream's life."""

    index: int
    count: int
    model: str
    model_info: ModelInfo
    request_id: str
    interim_results: bool
    punctuate: bool
    endpoint_ms: int
    speech_final: bool  # False when the client disabled endpointing
    utterance_end_ms: int | None
    vad_events: bool
    vad_threshold: float
    interim_step_s: float
    max_utterance_s: float
    final_options: DecodeOptions
    interim_options: DecodeOptions


@dataclass
class FinalJob:
    """A span of audio whose text must become final, in order, exactly once."""

    start: int  # sample index where the decoded audio starts
    end: int  # sample index where this final's window ends
    speech_final: bool
    from_finalize: bool
    decode: bool = True  # False: only emit (an empty result for Finalize over silence)
    done: asyncio.Future | None = None
    audio_end: int | None = None  # where the decoded audio stops (default: `end`)
    early: asyncio.Task | None = None  # a speculative decode of exactly this utterance


@dataclass
class _Speculation:
    """A final decode started when the speaker paused, before the endpoint is certain."""

    audio_start: int
    speech_end: int
    task: asyncio.Task


@dataclass
class _Utterance:
    first_speech: int  # sample index of the first speech frame
    audio_start: int  # sample index the decode window starts at (moves on piecewise commits)
    speech_frames: int = 0
    speech_end: int = 0  # sample index just after the last speech frame
    silence_run: int = 0
    confirmed: bool = False
    probs: list[float] = field(default_factory=list)  # per frame, from `audio_start`'s frame


class Channel:
    def __init__(
        self,
        config: ChannelConfig,
        engine: Engine,
        emit: Callable[[dict[str, Any]], None],
        wall_at: Callable[[int], float],
    ) -> None:
        self.cfg = config
        self.engine = engine
        self._emit = emit
        self._wall_at = wall_at
        self.vad = StreamingVad()
        self.received = 0  # samples received on this channel
        self._audio = np.zeros(0, np.float32)
        self._base = 0  # sample index of self._audio[0]
        self._frames = 0  # VAD frames processed
        self._utt: _Utterance | None = None
        self._gen = 0  # bumps whenever the open utterance's window changes or closes
        self._finals: deque[FinalJob] = deque()
        self._wake = asyncio.Event()
        self._hyp: list[TimedWord] = []  # the last decode of the open utterance (uncommitted)
        self._last_decode_end = 0  # sample index the last decode of the open utterance reached
        self._interim_task: asyncio.Task | None = None
        # After an interim that took longer than half a step, the channel rests about as long
        # as it took: under load a stream's interims then use about half of a worker, not all
        # of it, and finals (which queue behind whatever is running) wait less. Idle, the
        # step alone paces interims.
        self._interim_rest_until = 0.0
        self._spec: _Speculation | None = None
        self.cursor = 0  # sample index where the last final's window ended
        self._queued_until = 0  # sample index where the last queued final's window ends
        self.decoded_until = 0  # sample index covered by decodes (for the lag measure)
        self._last_word_end: float | None = None  # pending UtteranceEnd
        self._language: str | None = config.final_options.language or None
        self._loop_task = asyncio.create_task(self._run())

    # --- audio in ----------------------------------------------------------------------------
    def feed(self, samples: np.ndarray) -> None:
        """Take new 16 kHz samples; run the VAD and the endpointing state machine."""
        self._audio = np.concatenate([self._audio, samples])
        self.received += len(samples)
        probs = self.vad.feed(samples)
        on = self.cfg.vad_threshold
        off = on - NEG_THRESHOLD_GAP
        silence_frames = max(1, round(self.cfg.endpoint_ms / 1000 * SAMPLE_RATE / FRAME))
        for p in probs:
            index = self._frames
            self._frames += 1
            frame_end = (index + 1) * FRAME
            utt = self._utt
            if utt is None:
                if p < on:
                    continue
                start = max(index * FRAME - int(PRE_ROLL_S * SAMPLE_RATE), self._queued_until)
                utt = self._utt = _Utterance(first_speech=index * FRAME, audio_start=start)
                utt.probs = [0.0] * ((index * FRAME - start) // FRAME)
                self._gen += 1
            utt.probs.append(float(p))
            if p >= off:
                utt.silence_run = 0
                utt.speech_frames += p >= on
                utt.speech_end = frame_end
                self._drop_speculation()  # the speaker went on
            else:
                utt.silence_run += 1
                if (
                    utt.confirmed
                    and utt.silence_run == SPECULATE_FRAMES
                    and silence_frames > SPECULATE_FRAMES
                ):
                    self._speculate(utt)
            if not utt.confirmed and utt.speech_frames >= MIN_SPEECH_FRAMES:
                utt.confirmed = True
                self._last_word_end = None  # speech resumed: no UtteranceEnd for the old gap
                if self.cfg.vad_events:
                    self._emit(
                        live.speech_started(
                            self.cfg.index, self.cfg.count, utt.first_speech / SAMPLE_RATE
                        )
                    )
            if utt.silence_run >= silence_frames:
                if utt.confirmed:
                    self._close_utterance(frame_end, self.cfg.speech_final, False)
                else:  # a blip of noise: forget it
                    self._utt = None
                    self._gen += 1
            elif utt.confirmed and frame_end - utt.audio_start >= HARD_WINDOW_S * SAMPLE_RATE:
                self._cut_at_pause()
        self._check_utterance_end()
        self._trim()
        self._wake.set()

    def _close_utterance(self, end: int, speech_final: bool, from_finalize: bool) -> FinalJob:
        utt = self._utt
        assert utt is not None
        self._utt = None
        self._gen += 1
        job = FinalJob(utt.audio_start, end, speech_final, from_finalize)
        spec, self._spec = self._spec, None
        if not from_finalize:
            # Whisper does best on speech with a short margin, as the REST path cuts it; the
            # rest of the hangover is silence that only invites a hallucinated word.
            job.audio_end = min(end, utt.speech_end + int(SPEECH_PAD_S * SAMPLE_RATE))
            if spec and (spec.audio_start, spec.speech_end) == (utt.audio_start, utt.speech_end):
                job.early, spec = spec.task, None  # already decoding exactly this: reuse it
        if spec is not None:
            spec.task.cancel()
        self._queue_final(job)
        return job

    def _speculate(self, utt: _Utterance) -> None:
        """The speaker paused: start the final decode now, while the endpoint's silence is
        still being confirmed. Most pauses this long are endpoints, so the final is often ready
        by the time the endpoint fires; if speech resumes, the decode is dropped."""
        self._drop_speculation()
        if self._interim_task is not None and not self._interim_task.done():
            self._interim_task.cancel()  # no new words since the pause: it is stale
        audio_end = utt.speech_end + int(SPEECH_PAD_S * SAMPLE_RATE)
        audio, begin = self._window(utt.audio_start, audio_end)
        task = asyncio.create_task(self._decode_final(audio, begin))
        self._spec = _Speculation(utt.audio_start, utt.speech_end, task)

    def _drop_speculation(self) -> None:
        if self._spec is not None:
            self._spec.task.cancel()
            self._spec = None

    def _cut_at_pause(self) -> None:
        """Safety net when agreement has not shortened the window in time: cut at the quietest
        frame of the window's second half and finalise the part before it."""
        utt = self._utt
        assert utt is not None
        probs = np.asarray(utt.probs)
        half = len(probs) // 2
        tail = max(half + 1, len(probs) - int(1.0 * SAMPLE_RATE / FRAME))
        cut_frame = half + int(np.argmin(probs[half:tail]))
        cut = utt.audio_start + (cut_frame + 1) * FRAME
        self._drop_speculation()
        self._queue_final(FinalJob(utt.audio_start, cut, False, False))
        utt.probs = utt.probs[cut_frame + 1 :]
        utt.audio_start = cut
        self._gen += 1
        self._hyp = []

    def _queue_final(self, job: FinalJob) -> None:
        self._finals.append(job)
        self._queued_until = max(self._queued_until, job.end)
        if self._interim_task is not None and not self._interim_task.done():
            self._interim_task.cancel()  # stale now; the final must not wait behind it
        self._wake.set()

    def flush(self, from_finalize: bool) -> asyncio.Future:
        """Finalize/CloseStream: everything received so far becomes final. Resolves when sent."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()
        if self._utt is not None:
            job = self._close_utterance(self.received, False, from_finalize)
            job.done = done
        else:
            # Nothing open: Finalize still answers (an empty final), CloseStream only waits.
            self._queue_final(
                FinalJob(self.cursor, self.received, False, from_finalize, False, done)
            )
        return done

    # --- bookkeeping -------------------------------------------------------------------------
    def _trim(self) -> None:
        """Forget audio nothing can need again: bounded however long a stream (or its silence)."""
        context = int(LEFT_CONTEXT_S * SAMPLE_RATE)
        keep = self.received - int(PRE_ROLL_S * SAMPLE_RATE) - context
        if self._utt is not None:
            keep = min(keep, self._utt.audio_start - context)
        for job in self._finals:
            keep = min(keep, job.start - context)
        if keep - self._base > 10 * SAMPLE_RATE:
            self._audio = self._audio[keep - self._base :]
            self._base = keep

    def _window(
        self, start: int, end: int, context_s: float = LEFT_CONTEXT_S
    ) -> tuple[np.ndarray, int]:
        """The audio to decode for [start, end), with left context; and where it begins."""
        room = int(HARD_WINDOW_S * SAMPLE_RATE) - (end - start)
        context = max(0, min(int(context_s * SAMPLE_RATE), room))
        begin = max(self._base, start - context)
        return self._audio[begin - self._base : max(0, end - self._base)], begin

    @property
    def lag_s(self) -> float:
        """Audio received but not yet decoded (or judged silent), in seconds."""
        if self._utt is None and not self._finals:
            return 0.0
        pending = [j.start for j in self._finals]
        if self._utt is not None:
            pending.append(max(self._utt.audio_start, self.decoded_until))
        return max(0.0, (self.received - min(pending)) / SAMPLE_RATE)

    def _check_utterance_end(self) -> None:
        if self.cfg.utterance_end_ms is None or self._last_word_end is None:
            return
        if self._utt is not None and self._utt.confirmed:
            return
        gap = self.received / SAMPLE_RATE - self._last_word_end
        # Finals still to come may add words; the one being emitted now (first) already has.
        waiting = any(job.decode for job in list(self._finals)[1:])
        if gap >= self.cfg.utterance_end_ms / 1000 and not waiting:
            self._emit(live.utterance_end(self.cfg.index, self.cfg.count, self._last_word_end))
            self._last_word_end = None

    # --- decoding ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if self._finals:
                await self._run_final(self._finals[0])
                self._finals.popleft()
                continue
            if self._interim_due():
                await self._run_interim()
                continue
            self._wake.clear()
            await self._wake.wait()

    def _interim_due(self) -> bool:
        utt = self._utt
        if utt is None or not utt.confirmed:
            return False
        long = (self.received - utt.audio_start) / SAMPLE_RATE >= self.cfg.max_utterance_s
        if not (self.cfg.interim_results or long):
            return False
        if utt.silence_run >= QUIET_FRAMES and not long:
            return False  # speech paused: no new words to show, and an endpoint may be near
        step = self.cfg.interim_step_s if not long else max(self.cfg.interim_step_s, 1.0)
        newest = self.received - max(self._last_decode_end, utt.audio_start)
        return newest >= step * SAMPLE_RATE and time.monotonic() >= self._interim_rest_until

    async def _decode(
        self, audio: np.ndarray, options: DecodeOptions, priority: Priority, admit: bool
    ) -> list[Segment]:
        if options.language == "" and self._language is None:
            self._language, _ = await self.engine.detect_language(self.cfg.model, audio)
        if options.language == "":
            options = DecodeOptions(**{**options.__dict__, "language": self._language})
        # Plain interims may be dropped by the scheduler once stale (a newer one will come);
        # long-mode decodes can commit finals, so they are never dropped.
        (segments,) = await self.engine.decode(
            self.cfg.model,
            [audio],
            options,
            priority,
            admit=admit,
            droppable=priority is Priority.STREAM_INTERIM,
        )
        return segments

    async def _decode_final(self, audio: np.ndarray, begin: int) -> list[TimedWord]:
        """A final decode cuts its window exactly as the REST path cuts a file (offline VAD,
        speech regions joined, padded), so a streamed phrase reads as the same file would."""
        plan = await asyncio.to_thread(plan_speech, audio, vad_options(self.engine), 30.0)
        if not plan.windows:
            return []
        options = self.cfg.final_options
        if options.language == "":
            if self._language is None:
                self._language, _ = await self.engine.detect_language(
                    self.cfg.model, plan.windows[0].audio
                )
            options = replace(options, language=self._language)
        decoded = await self.engine.decode(
            self.cfg.model,
            [w.audio for w in plan.windows],
            options,
            Priority.STREAM_FINAL,
            admit=False,
        )
        words: list[TimedWord] = []
        for window, segments in zip(plan.windows, decoded, strict=True):
            words += self._timed(to_file_clock(plan, window.offset, segments), begin)
        return words

    def _timed(self, segments: list[Segment], offset: int) -> list[TimedWord]:
        shift = offset / SAMPLE_RATE
        return [
            TimedWord(
                Word(w.text, w.start + shift, max(w.end, w.start) + shift, w.probability),
                s.avg_logprob,
                s.tokens,
            )
            for s in segments
            for w in s.words
        ]

    async def _run_final(self, job: FinalJob) -> None:
        words: list[TimedWord] = []
        audio_end = job.audio_end or job.end
        early = await self._early_words(job)
        if early is not None:
            words = policy.after(early, self.cursor / SAMPLE_RATE)
        elif job.decode and audio_end > job.start:
            audio, begin = self._window(job.start, audio_end)
            try:
                words = policy.after(
                    await self._decode_final(audio, begin), self.cursor / SAMPLE_RATE
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed decode loses this span's text, never the stream
                log.exception("final decode failed", extra={"request_id": self.cfg.request_id})
        start, end = self.cursor, max(job.end, self.cursor)
        if job.decode or job.from_finalize:
            self._send_results(words, start, end, True, job.speech_final, job.from_finalize)
        self.cursor = end
        self.decoded_until = max(self.decoded_until, end)
        self._hyp = []
        if words:
            self._last_word_end = words[-1].end
            if job.speech_final:
                metrics.ENDPOINT_LATENCY.observe(
                    time.monotonic() - self._wall_at(int(words[-1].end * SAMPLE_RATE))
                )
        if job.done is not None and not job.done.done():
            job.done.set_result(None)
        self._check_utterance_end()

    @staticmethod
    async def _early_words(job: FinalJob) -> list[TimedWord] | None:
        """The speculative decode's words, or None when there is none or it failed."""
        if job.early is None:
            return None
        await asyncio.wait({job.early})
        if job.early.cancelled() or job.early.exception() is not None:
            return None
        return job.early.result()

    async def _run_interim(self) -> None:
        utt = self._utt
        assert utt is not None
        gen, start, end = self._gen, utt.audio_start, self.received
        long = (end - start) / SAMPLE_RATE >= self.cfg.max_utterance_s
        options = self.cfg.final_options if long else self.cfg.interim_options
        priority = Priority.STREAM_FINAL if long else Priority.STREAM_INTERIM
        self._last_decode_end = end
        # Interims are throw-away: no context (each context word costs decoder time), except
        # in long mode where this decode may commit finals.
        audio, begin = self._window(start, end, LEFT_CONTEXT_S if long else 0.0)
        task = asyncio.create_task(self._decode(audio, options, priority, admit=not long))
        self._interim_task = task
        started = time.monotonic()
        await asyncio.wait({task})
        self._interim_task = None
        took = time.monotonic() - started
        self._interim_rest_until = time.monotonic() + max(0.0, took - self.cfg.interim_step_s / 2)
        if task.cancelled():
            return
        try:
            segments = task.result()
        except (Overloaded, DeadlineExpired):
            return  # saturated, or too late to matter: skip this interim, the final still comes
        except Exception:
            log.exception("interim decode failed", extra={"request_id": self.cfg.request_id})
            return
        if gen != self._gen or self._utt is not utt:
            return  # the utterance closed or moved while decoding: this result is stale
        self.decoded_until = max(self.decoded_until, end)
        words = policy.after(self._timed(segments, begin), self.cursor / SAMPLE_RATE)
        if long:
            words = self._commit_agreed(words, end)
        self._hyp = words
        if self.cfg.interim_results and words:
            self._send_results(words, self.cursor, end, False, False, False)
            metrics.INTERIM_LATENCY.observe(time.monotonic() - self._wall_at(end))

    def _commit_agreed(self, words: list[TimedWord], end: int) -> list[TimedWord]:
        """Long utterance: finalise the prefix two decodes agree on; return the rest."""
        commit = policy.stable_commit(self._hyp, words, end / SAMPLE_RATE)
        utt = self._utt
        assert utt is not None
        if not commit and (end - utt.audio_start) / SAMPLE_RATE >= 2 * self.cfg.max_utterance_s:
            commit = policy.forced_commit(words, end / SAMPLE_RATE)
        if not commit:
            return words
        rest = words[len(commit) :]
        cut_s = policy.cut_point(commit, rest)
        cut = min(int(cut_s * SAMPLE_RATE), end)
        self._send_results(commit, self.cursor, cut, True, False, False)
        self.cursor = cut
        self._queued_until = max(self._queued_until, cut)
        self._last_word_end = commit[-1].end
        dropped = (cut - utt.audio_start) // FRAME
        utt.probs = utt.probs[dropped:]
        utt.audio_start = cut
        self._gen += 1
        return rest

    def _send_results(
        self,
        words: list[TimedWord],
        start: int,
        end: int,
        is_final: bool,
        speech_final: bool,
        from_finalize: bool,
    ) -> None:
        segments = [
            Segment(w.start, w.end, w.word.text, w.avg_logprob, 0.0, 0.0, w.tokens, [w.word])
            for w in words
        ]
        self._emit(
            live.results(
                segments=segments,
                channel=self.cfg.index,
                channels=self.cfg.count,
                start=start / SAMPLE_RATE,
                end=end / SAMPLE_RATE,
                is_final=is_final,
                speech_final=speech_final,
                from_finalize=from_finalize,
                punctuate=self.cfg.punctuate,
                request_id=self.cfg.request_id,
                model=self.cfg.model_info,
            )
        )

    async def close(self) -> None:
        self._drop_speculation()
        for job in self._finals:
            if job.early is not None:
                job.early.cancel()
        self._loop_task.cancel()
        if self._interim_task is not None:
            self._interim_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._loop_task
