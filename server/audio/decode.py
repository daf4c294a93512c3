"""Whole-file decoding to 16 kHz float32, in-process through PyAV (no ffmpeg binary).

The container is sniffed from the bytes, never taken from Content-Type: Deepgram SDKs send
`application/octet-stream` or `deepgram/audio+video` for everything. Headerless audio needs the
client's `encoding` + `sample_rate` (+ `channels`), which map onto FFmpeg's raw demuxers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO

import av
import numpy as np

from server.errors import InvalidRequest, PayloadTooLarge

SAMPLE_RATE = 16000

# Deepgram `encoding` -> FFmpeg raw demuxer. Deepgram defines linear32 as 32-bit float PCM.
# Encodings that always travel in a container (flac, opus, ogg-opus, speex in Ogg, and the
# aliases Aldea-style clients send) are sniffed instead.
RAW_DEMUXERS = {
    "linear16": "s16le",
    "pcm": "s16le",
    "linear32": "f32le",
    "float32": "f32le",
    "mulaw": "mulaw",
    "alaw": "alaw",
}
# Headerless codec streams FFmpeg frames itself: AMR storage format (with or without the
# "#!AMR" magic) and G.729 (10-byte frames at 8 kbit/s). Their sample rate is fixed.
CODEC_DEMUXERS = {"amr-nb": "amrnb", "amr-wb": "amrwb", "g729": "g729"}
CODEC_MAGIC = {"amr-nb": (b"#!AMR\n", "amr"), "amr-wb": (b"#!AMR-WB\n", "amr")}
CONTAINER_ENCODINGS = {
    "flac",
    "opus",
    "ogg-opus",
    "speex",
    "mp3",
    "aac",
    "wav",
    "ogg",
    "webm",
    "m4a",
}


class AudioError(InvalidRequest):
    """Input that cannot be decoded as audio; the message is safe to show to the client."""


class AudioTooLong(AudioError, PayloadTooLarge):
    """The audio exceeds a configured limit (duration, channels)."""


@dataclass(frozen=True)
class RawFormat:
    """A headerless stream's layout, as the client declared it."""

    encoding: str
    sample_rate: int
    channels: int = 1

    @property
    def demuxer(self) -> str | None:
        return RAW_DEMUXERS.get(self.encoding) or CODEC_DEMUXERS.get(self.encoding)

    @property
    def pcm(self) -> bool:
        """Sample bytes numpy can convert (as opposed to a codec FFmpeg must decode)."""
        return self.encoding in RAW_DEMUXERS

    def demuxer_for(self, head: bytes) -> str | None:
        """The demuxer for input starting with `head` (AMR files may carry their magic)."""
        magic = CODEC_MAGIC.get(self.encoding)
        if magic and head.startswith(magic[0]):
            return magic[1]
        return self.demuxer


@dataclass(frozen=True)
class DecodedAudio:
    """Audio on the 16 kHz clock: `samples` has shape (channels, n)."""

    samples: np.ndarray
    # What the container's header promised, when it says; more than what decoded = truncated.
    declared_duration: float | None = None
    # Channels in the input; more than `samples` has when they were mixed down while decoding.
    source_channels: int = 0

    @property
    def truncated(self) -> bool:
        """True when the header promised clearly more audio than the bytes held (cut upload)."""
        if not self.declared_duration:
            return False
        return self.duration < self.declared_duration - max(0.5, 0.02 * self.declared_duration)

    @property
    def channels(self) -> int:
        return self.source_channels or int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE

    def mono(self) -> np.ndarray:
        """Deepgram mixes channels down unless `multichannel` is set."""
        return self.samples[0] if self.samples.shape[0] == 1 else self.samples.mean(axis=0)


@dataclass(frozen=True)
class DecodeLimits:
    """What one input may cost: checked from the header, then while decoding, never after."""

    max_duration_s: float | None = None
    max_channels: int = 64
    min_sample_rate: int = 1000
    max_sample_rate: int = 768000


def check_encoding(encoding: str | None, sample_rate: int | None) -> RawFormat | None:
    """Validate the client's declared format; None means 'sniff the container'."""
    if not encoding:
        return None
    enc = encoding.lower()
    if enc in CONTAINER_ENCODINGS:
        return None
    if enc in CODEC_DEMUXERS:
        return RawFormat(enc, sample_rate or 0)  # the codec fixes the rate
    if enc not in RAW_DEMUXERS:
        known = sorted({*RAW_DEMUXERS, *CODEC_DEMUXERS, *CONTAINER_ENCODINGS})
        raise AudioError(f"unknown encoding '{encoding}'; supported: {', '.join(known)}")
    if not sample_rate:
        raise AudioError(f"encoding '{encoding}' needs a sample_rate")
    return RawFormat(enc, sample_rate)


def open_container(source: BinaryIO, raw: RawFormat | None) -> av.container.InputContainer:
    """Open a PyAV container from a file object, sniffing unless a raw layout is declared."""
    try:
        if raw is not None and not raw.pcm:
            head = source.read(16)
            source.seek(0)
            return av.open(source, mode="r", format=raw.demuxer_for(head))
        if raw is not None and raw.demuxer is not None:
            # "Nc" is FFmpeg's layout of N unnamed channels: 3+ channels stay apart (the old
            # `channels` option is gone from FFmpeg 7, which then read them as mono).
            layout = {1: "mono", 2: "stereo"}.get(raw.channels, f"{raw.channels}c")
            options = {"sample_rate": str(raw.sample_rate), "ch_layout": layout}
            return av.open(source, mode="r", format=raw.demuxer, options=options)
        return av.open(source, mode="r", options={"probesize": "5000000"})
    except Exception as exc:  # FFmpegError, or PyAV's own errors on a hostile header
        raise AudioError("failed to process audio: corrupt or unsupported data") from exc


def resampler_for(stream: av.audio.stream.AudioStream) -> av.AudioResampler:
    """Any channel count to packed float32 at 16 kHz.

    Packed, not planar: PyAV's `to_ndarray` on a planar frame of 8 or more channels counts one
    plane too many and reads past the frame's buffers, which kills the process (a segfault on a
    25 KB file). A packed frame is one buffer, which `planar` reshapes.
    """
    return av.AudioResampler(format="flt", layout=stream.layout, rate=SAMPLE_RATE)


def finite(samples: np.ndarray) -> np.ndarray:
    """Float PCM from a client is any 4 bytes: NaN, infinities and 1e38 would poison the VAD
    and Whisper (and overflow the resampler), so NaN becomes silence and the rest is clipped to
    full scale, in place."""
    if not np.isfinite(samples).all():
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(samples, -1.0, 1.0, out=samples)


def planar(frame: av.AudioFrame) -> np.ndarray:
    """A packed float32 frame as a (channels, n) array, every sample finite."""
    channels = frame.layout.nb_channels
    return finite(frame.to_ndarray().reshape(-1, channels).T)


def _declared_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """The duration the header states (stream first, then container); None when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def audio_stream(
    container: av.container.InputContainer, raw: RawFormat | None, limits: DecodeLimits
) -> tuple[av.audio.stream.AudioStream, int]:
    """The first audio stream and its channel count, refused early when it is not sane audio."""
    if not container.streams.audio:
        raise AudioError("failed to process audio: no audio stream found")
    stream = container.streams.audio[0]
    context = stream.codec_context
    if context is None or stream.layout is None:
        raise AudioError("failed to process audio: corrupt or unsupported data")
    channels = context.channels or (raw.channels if raw else 0)
    if channels < 1:
        raise AudioError("failed to process audio: the audio declares no channels")
    if channels > limits.max_channels:
        raise AudioTooLong(
            f"audio has {channels} channels; this server accepts at most {limits.max_channels}"
        )
    rate = context.sample_rate or 0
    if not limits.min_sample_rate <= rate <= limits.max_sample_rate:
        raise AudioError(
            f"failed to process audio: a sample rate of {rate} Hz is outside "
            f"{limits.min_sample_rate}-{limits.max_sample_rate} Hz"
        )
    return stream, channels


class _Collector:
    """Decoded 16 kHz frames gathered into one buffer, refused the moment they pass the limit.

    Sized from the header when it states a duration (one allocation, no final copy), grown
    geometrically otherwise; channels are mixed down as they arrive when the caller wants mono,
    so memory is bounded by `limit x kept channels`, whatever the input claims.
    """

    def __init__(self, channels: int, limit: int | None, hint: int) -> None:
        self.channels = channels
        self.limit = limit
        capacity = max(hint, SAMPLE_RATE)
        if limit is not None:
            capacity = min(capacity, limit + SAMPLE_RATE)
        self._buffer = np.empty((channels, capacity), np.float32)
        self.size = 0

    def add(self, chunk: np.ndarray) -> None:
        if self.channels == 1 and chunk.shape[0] > 1:
            chunk = chunk.mean(axis=0, keepdims=True)
        end = self.size + chunk.shape[1]
        if self.limit is not None and end > self.limit:
            raise AudioTooLong(
                f"audio is longer than the limit of {self.limit / SAMPLE_RATE:g} seconds"
            )
        if end > self._buffer.shape[1]:
            grown = max(end, int(self._buffer.shape[1] * 1.5))
            if self.limit is not None:
                grown = min(grown, self.limit + SAMPLE_RATE)
            bigger = np.empty((self.channels, grown), np.float32)
            bigger[:, : self.size] = self._buffer[:, : self.size]
            self._buffer = bigger
        self._buffer[:, self.size : end] = chunk[: self.channels]
        self.size = end

    def result(self) -> np.ndarray:
        return np.ascontiguousarray(self._buffer[:, : self.size])


def decode(
    data: bytes | BinaryIO,
    raw: RawFormat | None = None,
    *,
    limits: DecodeLimits | None = None,
    mono: bool = False,
) -> DecodedAudio:
    """Decode a whole input to 16 kHz float32 (channels apart, or mixed down when `mono`).

    The duration limit is checked three times: against the header before anything is decoded,
    against the input clock before each frame is resampled (so one frame at an absurd rate
    cannot balloon), and against the output, resampler tail included.
    """
    limits = limits or DecodeLimits()
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    container = open_container(source, raw)
    try:
        try:
            stream, channels = audio_stream(container, raw, limits)
            declared = _declared_duration(container, stream)
        except AudioError:
            raise
        except Exception as exc:  # PyAV raises assorted types on hostile headers
            raise AudioError("failed to process audio: corrupt or unsupported data") from exc
        max_s = limits.max_duration_s
        if max_s and declared and declared > max_s + 1:
            raise AudioTooLong(
                f"audio is longer than the limit of {max_s:g} seconds "
                f"(its header declares {declared:.0f} s)"
            )
        limit = int(max_s * SAMPLE_RATE) if max_s else None
        hint = int((declared or 60) * 1.02 * SAMPLE_RATE)
        out = _Collector(1 if mono else channels, limit, hint)
        _decode_into(container, stream, out, max_s)
        if out.size == 0:
            raise AudioError("failed to process audio: no audio samples could be decoded")
        return DecodedAudio(out.result(), declared, channels)
    finally:
        container.close()


def _decode_into(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    out: _Collector,
    max_s: float | None,
) -> None:
    resampler = resampler_for(stream)
    seconds_in = 0.0
    try:
        for frame in container.decode(stream):
            seconds_in += frame.samples / (frame.sample_rate or stream.codec_context.sample_rate)
            if max_s and seconds_in > max_s:
                raise AudioTooLong(f"audio is longer than the limit of {max_s:g} seconds")
            for chunk in resampler.resample(frame):
                out.add(planar(chunk))
        for chunk in resampler.resample(None):
            out.add(planar(chunk))
    except AudioError:
        raise
    except Exception as exc:  # FFmpegError, and PyAV's odd ValueError/TypeError on bad frames
        if out.size == 0:
            raise AudioError("failed to process audio: corrupt or unsupported data") from exc
        # A truncated file decodes up to the damage, like ffmpeg does; keep what we have.
