"""Pre-recorded transcription: decoded audio -> VAD windows -> engine -> words on the file clock.

Shared by `POST /v1/listen` and `openlisten transcribe`, so the CLI gives the API's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from server.audio.decode import DecodedAudio
from server.diarize import Diarization, SpeakerHints
from server.engine import DecodeOptions, Engine, Priority, Segment, Word
from server.engine.fw import VadOptions
from server.notices import Notices
from server.vad import SpeechPlan, plan_speech


@dataclass
class TranscribeRequest:
    model: str
    language: str | None = "en"  # a Whisper code (server.language decides), or None: detect
    keyterms: list[str] = field(default_factory=list)
    suppress_tokens: tuple[int, ...] = ()
    multichannel: bool = False
    diarize: bool = False
    speakers: SpeakerHints = field(default_factory=SpeakerHints)
    task: str = "transcribe"  # or "translate" (into English; multilingual models only)
    prompt: str | None = None  # Whisper's initial prompt: spelling and style to follow
    temperatures: tuple[float, ...] | None = None  # None: the decoder's fallback ladder


@dataclass
class ChannelTranscript:
    segments: list[Segment]
    language: str
    language_confidence: float | None = None

    @property
    def words(self) -> list[Word]:
        return [word for segment in self.segments for word in segment.words]


@dataclass
class Transcript:
    """What the pipeline hands back: one entry per transcribed channel, on the file clock."""

    channels: list[ChannelTranscript]
    duration: float  # seconds of audio decoded
    audio_channels: int  # channels in the input, whether or not they were mixed down
    notices: Notices = field(default_factory=Notices)


def vad_options(engine: Engine) -> VadOptions:
    s = engine.settings
    return VadOptions(
        threshold=s.vad_threshold,
        min_silence_duration_ms=s.vad_min_silence_ms,
        speech_pad_ms=s.vad_speech_pad_ms,
    )


def label_words(segments: list[Segment], diarization: Diarization) -> list[Segment]:
    """Each word gets the speaker who covers most of it (the nearest turn's when none does)."""
    out = []
    for seg in segments:
        words = []
        for w in seg.words:
            found = diarization.speaker_at(w.start, w.end)
            speaker, confidence = found if found is not None else (0, 0.0)
            words.append(replace(w, speaker=speaker, speaker_confidence=confidence))
        out.append(replace(seg, words=words))
    return out


def to_file_clock(plan: SpeechPlan, offset: float, segments: list[Segment]) -> list[Segment]:
    """Shift a window's segments onto the concatenated-speech clock, then onto the file clock."""
    out = []
    for seg in segments:
        words = []
        for w in seg.words:
            start, end = plan.to_file_time(w.start + offset, w.end + offset)
            words.append(Word(w.text, round(start, 3), round(max(start, end), 3), w.probability))
        if words:
            start, end = words[0].start, words[-1].end
        else:
            start, end = plan.to_file_time(seg.start + offset, seg.end + offset)
        out.append(replace(seg, start=start, end=end, words=words))
    return out


async def transcribe(
    engine: Engine,
    audio: DecodedAudio,
    request: TranscribeRequest,
    on_segments: Callable[[int, list[Segment]], None] | None = None,
) -> Transcript:
    """Transcribe every channel (or the mono mix) of decoded audio.

    `on_segments(channel, segments)` hears each window's segments on the file clock, in order,
    as they are decoded.
    """
    loaded = await engine.model(request.model)
    if request.diarize:
        await asyncio.to_thread(engine.diarizer.load)  # no model: refuse before any work
    # Refuse before spending CPU on VAD when even one more window would not be admitted.
    engine.scheduler.check_admission(1, request.model)
    tracks = list(audio.samples) if request.multichannel else [audio.mono()]
    options_vad = vad_options(engine)
    plans: list[SpeechPlan] = await asyncio.gather(
        *[
            asyncio.to_thread(
                plan_speech, np.ascontiguousarray(t), options_vad, engine.settings.chunk_max_s
            )
            for t in tracks
        ]
    )

    detect = loaded.multilingual and request.language is None
    results: list[ChannelTranscript] = []
    decode_jobs = []
    for plan in plans:
        lang, confidence = (request.language or "en"), None
        if detect and plan.windows:
            lang, confidence = await engine.detect_language(request.model, plan.windows[0].audio)
        results.append(ChannelTranscript([], lang, confidence))
        options = DecodeOptions(
            language=lang,
            task=request.task,
            beam_size=engine.settings.beam_size,
            initial_prompt=request.prompt,
            hotwords=" ".join(request.keyterms) or None,
            suppress_tokens=request.suppress_tokens,
            # Each window is decoded once, so no words may wait for a later seek.
            without_timestamps=True,
        )
        if request.temperatures:
            options = replace(options, temperatures=request.temperatures)
        decode_jobs.append((plan, options))

    # Admission covers the whole request at once (checked and queued under one lock): it is
    # either accepted whole or refused.
    decoding = [(c, plan) for c, (plan, _) in enumerate(decode_jobs) if plan.windows]
    on_window = None
    if on_segments is not None:
        callback = on_segments

        def on_window(group: int, index: int, segments: list[Segment]) -> None:
            channel, plan = decoding[group]
            callback(channel, to_file_clock(plan, plan.windows[index].offset, segments))

    # Diarization needs only the audio and its speech regions, so it runs beside decoding.
    diarizing = [
        asyncio.ensure_future(
            engine.diarize(np.ascontiguousarray(track), plan.regions, request.speakers)
        )
        for track, plan in zip(tracks, plans, strict=True)
        if request.diarize
    ]
    try:
        decoded = await engine.decode_groups(
            request.model,
            [
                ([w.audio for w in plan.windows], options)
                for plan, options in decode_jobs
                if plan.windows
            ],
            Priority.BULK,
            on_window=on_window,
        )
        speakers = list(await asyncio.gather(*diarizing))
    except BaseException:
        for job in diarizing:
            job.cancel()
        raise
    it = iter(decoded)
    for index, (result, (plan, _)) in enumerate(zip(results, decode_jobs, strict=True)):
        if not plan.windows:
            continue
        for window, segments in zip(plan.windows, next(it), strict=True):
            result.segments.extend(to_file_clock(plan, window.offset, segments))
        if speakers:
            result.segments = label_words(result.segments, speakers[index])
    transcript = Transcript(results, audio.duration, audio.channels)
    if audio.truncated:
        transcript.notices.add(
            "audio",
            f"the audio ends early: its header declares {audio.declared_duration:.2f} s but only "
            f"{audio.duration:.2f} s could be decoded (truncated upload?); "
            "transcribed what arrived",
            "truncated_audio",
        )
    return transcript
