"""Where a live stream is cut into finals: VAD probabilities in, events out. Synchronous, no I/O.

Every decision here is a function of the audio alone (the per-frame Silero probabilities and
sample positions), never of when a decode happened to finish, so the same audio is cut into the
same finals on a fast machine or a slow one, alone or beside other streams.

An utterance *opens* at the first frame above the threshold (with a little pre-roll, because
Silero reacts late) and is *confirmed* once it holds enough speech frames (clicks and coughs
never get there; unconfirmed blips are forgotten). It *closes* after `endpoint` of silence
(hysteresis: threshold - 0.15). Speech that goes on too long without such a pause is *cut* at
the quietest moment of a stretch fixed by audio position, and the utterance goes on from there.
Each close or cut yields a `Span`: the stretch of stream clock one final covers (spans tile the
stream), plus the audio its decode reads, which runs past a cut so that a word straddling it
is decoded whole on both sides (which final gets the word is `policy.owned`'s business).
Long silence is closed too, into spans with nothing to decode (`silence_final_s`): Deepgram
answers silence with empty finals, and a client that watches `start + duration` advance, or
takes a quiet socket for a dead one, must see the stream move while nobody speaks.

Flux closes an utterance at a pause it judged mid-turn (`end_utterance(closing=False)`), so
each pause decodes only the phrase before it, not the whole turn so far; the pause goes on
being announced (`Quiet`) on the same grid while no utterance is open, so the turn's end is
still judged as the silence grows, and `end_utterance()` there closes the silence itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from server.vad import FRAME, SAMPLE_RATE

NEG_THRESHOLD_GAP = 0.15  # Silero's usual hysteresis: leave speech below threshold - 0.15
MIN_SPEECH_FRAMES = 6  # 192 ms of speech before an utterance counts (clicks never get there)
PRE_ROLL = int(0.3 * SAMPLE_RATE)  # audio kept before the detected speech start
# Audio decoded after the last speech frame of an endpointed utterance (as the REST path pads
# its speech regions): Whisper does best on speech with a short margin, and the rest of the
# endpoint's silence only invites a hallucinated word.
SPEECH_PAD = int(0.2 * SAMPLE_RATE)
# Silence after which the final's window is known (its speech pad has arrived): the driver may
# start decoding it while the rest of the endpoint silence is being confirmed.
PAUSE_FRAMES = -(-SPEECH_PAD // FRAME)
QUIET_FRAMES = 3  # ~100 ms of silence inside an utterance: nothing new for an interim to show
# Audio past a cut that the cut final's decode reads, so a word across the cut is heard whole.
CUT_CONTEXT = int(1.0 * SAMPLE_RATE)
CUT_CONTEXT_FRAMES = -(-CUT_CONTEXT // FRAME)
MAX_WINDOW_S = 28.0  # a final's decode never reads more than Whisper's 30 s window
SMOOTH_FRAMES = 3  # a cut looks for a dip that lasts, not a one-frame flicker inside a word


@dataclass(frozen=True)
class EndpointerConfig:
    threshold: float
    endpoint_ms: int  # silence that closes an utterance
    speech_final: bool  # whether an endpoint close claims `speech_final`
    max_utterance_s: float  # speech longer than this without an endpoint is cut
    silence_final_s: float = 0.0  # silence this long becomes an empty final (0: never)
    # Flux: after the first `Paused`, another every this many frames of the same silence, so a
    # turn's end is judged again as its pause grows (0: one `Paused` per pause, as v1 needs).
    pause_every_frames: int = 0

    @property
    def silence_frames(self) -> int:
        return max(1, round(self.endpoint_ms / 1000 * SAMPLE_RATE / FRAME))

    @property
    def max_frames(self) -> int:
        """Frames of speech before a cut: the setting, kept where a cut has room to look for
        a pause (at least 3x the right context) and its decode fits Whisper's window."""
        seconds = min(self.max_utterance_s, MAX_WINDOW_S - CUT_CONTEXT / SAMPLE_RATE)
        return max(3 * CUT_CONTEXT_FRAMES, int(seconds * SAMPLE_RATE) // FRAME)


@dataclass(frozen=True)
class Span:
    """What one final covers, and what its decode reads (all sample indexes, stream clock).

    `start`/`end` tile the stream: a span starts where the previous one ended. The decode reads
    `[speech_start, decode_end)` (plus left context the driver adds); `decode_end` may pass
    `end` (right context across a cut) or stop short of it (an endpoint's trailing silence).
    `speech_start` is None when there is nothing to decode (a flush over silence).
    """

    start: int
    end: int
    speech_start: int | None
    decode_end: int
    speech_final: bool = False

    @property
    def window(self) -> tuple[int, int] | None:
        if self.speech_start is None:
            return None
        return self.speech_start, self.decode_end


@dataclass(frozen=True)
class Started:
    """Speech confirmed (Deepgram's SpeechStarted); `at` is the first speech frame."""

    at: int


@dataclass(frozen=True)
class Paused:
    """The speaker paused long enough that the final's window is known, should this pause
    turn out to be the endpoint: `window` is exactly what that final would decode. `at` is
    where the pause stands now and `silence` how long it has lasted (samples, audio clock);
    with `pause_every_frames` the same pause is announced again as it grows."""

    window: tuple[int, int]
    at: int = 0
    silence: int = 0


@dataclass(frozen=True)
class Quiet:
    """The pause after an utterance closed mid-turn (`end_utterance(closing=False)`) goes on:
    no utterance is open. `window` is the one the pause's `Paused` announced (now final);
    `at` and `silence` as in `Paused`, on the same grid."""

    window: tuple[int, int]
    at: int
    silence: int


@dataclass(frozen=True)
class Resumed:
    """Speech went on after a `Paused`: the window it announced is void."""


@dataclass(frozen=True)
class Closed:
    """An endpoint: the utterance's final."""

    span: Span


@dataclass(frozen=True)
class Cut:
    """Long speech cut at a quiet moment; the utterance goes on after `span.end`."""

    span: Span


Event = Started | Paused | Quiet | Resumed | Closed | Cut


@dataclass
class _Utterance:
    speech_start: int  # where its decode window starts (moves to the cut after a cut)
    first_speech: int
    probs: list[float] = field(default_factory=list)  # one per frame since `speech_start`'s
    speech_frames: int = 0
    speech_end: int = 0  # just after the last speech frame
    silence_run: int = 0
    confirmed: bool = False
    paused: bool = False


@dataclass(frozen=True)
class _Gap:
    """A pause whose utterance was closed mid-turn: still judged while it lasts."""

    window: tuple[int, int]
    speech_end: int


class Endpointer:
    def __init__(self, config: EndpointerConfig) -> None:
        self.config = config
        self.frames = 0  # VAD frames seen
        self.boundary = 0  # where the next span starts: the end of the last one
        self._utt: _Utterance | None = None
        self._gap: _Gap | None = None

    # --- what the driver may ask -------------------------------------------------------------
    @property
    def open_start(self) -> int | None:
        """Where the open, confirmed utterance's audio starts (None when there is none)."""
        utt = self._utt
        return utt.speech_start if utt is not None and utt.confirmed else None

    @property
    def quiet(self) -> bool:
        """The open utterance is in a pause (no new words for an interim to show)."""
        return self._utt is not None and self._utt.silence_run >= QUIET_FRAMES

    @property
    def in_speech(self) -> bool:
        return self._utt is not None and self._utt.confirmed

    @property
    def earliest_needed(self) -> int:
        """The oldest sample a future span may still decode (before left context)."""
        if self._utt is not None:
            return self._utt.speech_start
        return max(self.boundary, self.frames * FRAME - PRE_ROLL)

    # --- input -------------------------------------------------------------------------------
    def push(self, probs: np.ndarray) -> list[Event]:
        """Advance over one probability per frame; return what happened, in order."""
        events: list[Event] = []
        for p in probs:
            self._step(float(p), events)
        return events

    def flush(self, at: int) -> Span:
        """Finalize / end of stream at sample `at`: everything before it becomes one span.

        An open utterance (confirmed or not: the client asked for everything) is decoded up
        to `at`; with none open, the span has nothing to decode.
        """
        at = max(at, self.boundary)
        utt, self._utt = self._utt, None
        self._gap = None
        span = Span(self.boundary, at, utt.speech_start if utt else None, at)
        self.boundary = at
        return span

    # --- the state machine -------------------------------------------------------------------
    def _step(self, p: float, events: list[Event]) -> None:
        cfg = self.config
        index = self.frames
        self.frames += 1
        frame_end = self.frames * FRAME
        utt = self._utt
        if self._blip_over(utt):
            utt = self._utt = None
        if utt is None:
            if p < cfg.threshold:
                self._close_silence(frame_end, events)
                self._quiet(frame_end, events)
                return
            start = max(index * FRAME - PRE_ROLL, self.boundary)
            utt = self._utt = _Utterance(start, index * FRAME)
            utt.probs = [0.0] * ((index * FRAME - start) // FRAME)
        utt.probs.append(p)
        if p >= cfg.threshold - NEG_THRESHOLD_GAP:
            utt.silence_run = 0
            utt.speech_frames += p >= cfg.threshold
            utt.speech_end = frame_end
            if utt.paused:
                utt.paused = False
                events.append(Resumed())
        else:
            utt.silence_run += 1
            if utt.confirmed and cfg.silence_frames > PAUSE_FRAMES and self._pause_due(utt):
                utt.paused = True
                window = (utt.speech_start, max(utt.speech_start, utt.speech_end + SPEECH_PAD))
                events.append(Paused(window, frame_end, frame_end - utt.speech_end))
        if not utt.confirmed and utt.speech_frames >= MIN_SPEECH_FRAMES:
            utt.confirmed = True
            self._gap = None
            events.append(Started(utt.first_speech))
        if utt.silence_run >= cfg.silence_frames:
            self._utt = None
            if utt.confirmed:
                end = frame_end
                decode_end = min(end, utt.speech_end + SPEECH_PAD)
                span = Span(self.boundary, end, utt.speech_start, decode_end, cfg.speech_final)
                self.boundary = end
                events.append(Closed(span))
            return
        if len(utt.probs) >= cfg.max_frames:
            if utt.confirmed:
                events.append(Cut(self._cut(utt)))
            else:  # a long murmur that never became speech: noise, forget it
                self._utt = None

    def _blip_over(self, utt: _Utterance | None) -> bool:
        """In a pause closed mid-turn, sound that fell silent again before it became speech is
        forgotten there, so the pause goes on being judged (not only after `endpoint_ms`)."""
        return (
            self._gap is not None
            and utt is not None
            and not utt.confirmed
            and utt.silence_run >= PAUSE_FRAMES
        )

    def _pause_due(self, utt: _Utterance) -> bool:
        return self._due(utt.silence_run)

    def _due(self, silent_frames: int) -> bool:
        past = silent_frames - PAUSE_FRAMES
        every = self.config.pause_every_frames
        return past == 0 or (every > 0 and past > 0 and past % every == 0)

    def _quiet(self, frame_end: int, events: list[Event]) -> None:
        """With no utterance open after a mid-turn close, announce the pause as it grows."""
        gap = self._gap
        if gap is not None and self._due((frame_end - gap.speech_end) // FRAME):
            events.append(Quiet(gap.window, frame_end, frame_end - gap.speech_end))

    def end_utterance(self, closing: bool = True) -> Span | None:
        """Close the open utterance here, as its endpoint would (Flux: the turn was judged
        over in this pause, or, `closing=False`, judged to go on: each phrase is then decoded
        on its own). Its decode window is the one its `Paused` announced, so a decode started
        then is the final's. In a pause an earlier call closed mid-turn, `closing` ends the
        silence since then instead: a span with nothing to decode that claims `speech_final`
        (it stops short of a blip still open, so no speech is lost). None when there is
        nothing to close."""
        utt = self._utt
        end = self.frames * FRAME
        if utt is None or not utt.confirmed:
            if not closing or self._gap is None:
                return None
            self._gap = None
            end = max(self.boundary, utt.speech_start if utt is not None else end)
            span = Span(self.boundary, end, None, end, True)
            self.boundary = end
            return span
        self._utt = None
        decode_end = max(utt.speech_start, min(end, utt.speech_end + SPEECH_PAD))
        span = Span(self.boundary, end, utt.speech_start, decode_end, closing)
        if not closing:
            self._gap = _Gap((utt.speech_start, decode_end), utt.speech_end)
        self.boundary = end
        return span

    def _close_silence(self, frame_end: int, events: list[Event]) -> None:
        """With no utterance open, close the silence since the last span once it is long
        enough, ending a pre-roll short of now so speech that starts next keeps its pre-roll."""
        seconds = self.config.silence_final_s
        end = frame_end - PRE_ROLL
        if seconds > 0 and end - self.boundary >= seconds * SAMPLE_RATE:
            events.append(Closed(Span(self.boundary, end, None, end)))
            self.boundary = end

    def _cut(self, utt: _Utterance) -> Span:
        """Cut at the quietest stretch between half the limit and the limit less the right
        context: positions fixed by the audio, so the cut is too."""
        probs = np.convolve(np.asarray(utt.probs), np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, "same")
        lo = len(probs) // 2
        stretch = probs[lo : len(probs) - CUT_CONTEXT_FRAMES]
        # The latest of equally quiet frames: pieces as long as the limit allows.
        quietest = lo + len(stretch) - 1 - int(np.argmin(stretch[::-1]))
        cut = utt.speech_start + quietest * FRAME + FRAME // 2
        span = Span(self.boundary, cut, utt.speech_start, cut + CUT_CONTEXT, False)
        self.boundary = cut
        dropped = (cut - utt.speech_start) // FRAME
        utt.probs = utt.probs[dropped:]
        utt.speech_start = utt.speech_start + dropped * FRAME
        utt.first_speech = max(utt.first_speech, utt.speech_start)
        utt.paused = False
        return span
