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

SAMPLE_RATE = 16000

# Deepgram `encoding` -> FFmpeg raw demuxer. Encodings that always travel in a container
# (flac, opus, ogg-opus, and the aliases Aldea-style clients send) are sniffed instead.
RAW_DEMUXERS = {
    "linear16": "s16le",
    "pcm": "s16le",
    "linear32": "s32le",
    "float32": "f32le",
    "mulaw": "mulaw",
    "alaw": "alaw",
}
CONTAINER_ENCODINGS = {"flac", "opus", "ogg-opus", "mp3", "aac", "wav", "ogg", "webm", "m4a"}
UNSUPPORTED_ENCODINGS = {"amr-nb", "amr-wb", "speex", "g729"}


class AudioError(ValueError):
    """Input that cannot be decoded as audio; the message is safe to show to the client."""


class AudioTooLong(AudioError):
    """Decoded audio exceeds the configured duration limit."""


@dataclass(frozen=True)
class RawFormat:
    """A headerless stream's layout, as the client declared it."""

    encoding: str
    sample_rate: int
    channels: int = 1

    @property
    def demuxer(self) -> str | None:
        return RAW_DEMUXERS.get(self.encoding)


@dataclass(frozen=True)
class DecodedAudio:
    """Audio on the 16 kHz clock: `samples` has shape (channels, n)."""

    samples: np.ndarray
    # What the container's header promised, when it says; more than what decoded = truncated.
    declared_duration: float | None = None

    @property
    def truncated(self) -> bool:
        """True when the header promised clearly more audio than the bytes held (cut upload)."""
        if not self.declared_duration:
            return False
        return self.duration < self.declared_duration - max(0.5, 0.02 * self.declared_duration)

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / SAMPLE_RATE

    def mono(self) -> np.ndarray:
        """Deepgram mixes channels down unless `multichannel` is set."""
        return self.samples[0] if self.channels == 1 else self.samples.mean(axis=0)


def check_encoding(encoding: str | None, sample_rate: int | None) -> RawFormat | None:
    """Validate the client's declared format; None means 'sniff the container'."""
    if not encoding:
        return None
    enc = encoding.lower()
    if enc in UNSUPPORTED_ENCODINGS:
        raise AudioError(f"encoding '{encoding}' is not supported by this server")
    if enc in CONTAINER_ENCODINGS:
        return None
    if enc not in RAW_DEMUXERS:
        raise AudioError(f"unknown encoding '{encoding}'")
    if not sample_rate:
        raise AudioError(f"encoding '{encoding}' needs a sample_rate")
    return RawFormat(enc, sample_rate)


def open_container(source: BinaryIO, raw: RawFormat | None) -> av.container.InputContainer:
    """Open a PyAV container from a file object, sniffing unless a raw layout is declared."""
    try:
        if raw is not None and raw.demuxer is not None:
            layout = "mono" if raw.channels == 1 else "stereo" if raw.channels == 2 else None
            options = {"sample_rate": str(raw.sample_rate)}
            options.update({"ch_layout": layout} if layout else {"channels": str(raw.channels)})
            return av.open(source, mode="r", format=raw.demuxer, options=options)
        return av.open(source, mode="r", options={"probesize": "5000000"})
    except av.error.FFmpegError as exc:
        raise AudioError("failed to process audio: corrupt or unsupported data") from exc


def resampler_for(stream: av.audio.stream.AudioStream) -> av.AudioResampler:
    """Any channel count to packed float32 at 16 kHz.

    Packed, not planar: PyAV's `to_ndarray` on a planar frame of 8 or more channels counts one
    plane too many and reads past the frame's buffers, which kills the process (a segfault on a
    25 KB file). A packed frame is one buffer, which `planar` reshapes.
    """
    return av.AudioResampler(format="flt", layout=stream.layout, rate=SAMPLE_RATE)


def planar(frame: av.AudioFrame) -> np.ndarray:
    """A packed float32 frame as a (channels, n) array."""
    channels = frame.layout.nb_channels
    return frame.to_ndarray().reshape(-1, channels).T


def _declared_duration(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """The duration the header states (stream first, then container); None when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def decode(
    data: bytes | BinaryIO,
    raw: RawFormat | None = None,
    *,
    max_duration_s: float | None = None,
) -> DecodedAudio:
    """Decode a whole input to 16 kHz float32, keeping channels apart."""
    source = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    container = open_container(source, raw)
    try:
        if not container.streams.audio:
            raise AudioError("failed to process audio: no audio stream found")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or (raw.channels if raw else 1)
        resampler = resampler_for(stream)
        limit = int(max_duration_s * SAMPLE_RATE) if max_duration_s else None
        pieces: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pieces.append(planar(out))
                    total += pieces[-1].shape[1]
                if limit is not None and total > limit:
                    raise AudioTooLong(
                        f"audio is longer than the limit of {max_duration_s:g} seconds"
                    )
            for out in resampler.resample(None):
                pieces.append(planar(out))
        except av.error.FFmpegError as exc:
            if not pieces:
                raise AudioError("failed to process audio: corrupt or unsupported data") from exc
            # A truncated file decodes up to the damage, like ffmpeg does; keep what we have.
        if not pieces or sum(p.shape[1] for p in pieces) == 0:
            raise AudioError("failed to process audio: no audio samples could be decoded")
        samples = np.concatenate(pieces, axis=1).astype(np.float32, copy=False)
        if samples.shape[0] != channels and channels:
            samples = samples[:channels]
        return DecodedAudio(np.ascontiguousarray(samples), _declared_duration(container, stream))
    finally:
        container.close()
