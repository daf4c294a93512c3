"""Incremental audio decoding for live streams: bytes in any chunk size -> 16 kHz float32.

Two shapes of input, one interface (`feed`, `finish`, `close`, and an `on_audio` callback that
receives `(channels, n)` float32 arrays on the event loop):

* Headerless audio (`encoding` + `sample_rate` + `channels`): linear16, linear32 (float) and G.711
  mu-law/A-law are converted with numpy (a lookup table for G.711) as each chunk arrives, keeping
  any partial sample for the next chunk, then resampled per channel with `av.AudioResampler`.
* Containers and codecs that travel in one (browser WebM/Opus, Ogg/Opus, FLAC, MP3 radio, WAV
  with a header): the bytes go into a blocking pipe that a PyAV demuxer reads on its own thread,
  so the demuxer sees an ordinary non-seekable file that simply arrives slowly. Probing is kept
  small so the first audio comes out after a few KiB, not after FFmpeg's default 5 MB probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

import av
import numpy as np

from server.audio.decode import (
    AudioError,
    DecodeLimits,
    RawFormat,
    audio_stream,
    finite,
    planar,
    resampler_for,
)

SAMPLE_RATE = 16000
PROBE_BYTES = 32768

AudioSink = Callable[[np.ndarray], None]
ErrorSink = Callable[[AudioError], None]


def _g711_tables() -> dict[str, np.ndarray]:
    """ITU-T G.711 expansion tables (256 code words -> float in [-1, 1])."""
    codes = np.arange(256, dtype=np.int32)
    # mu-law
    u = ~codes & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    mulaw = np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84)
    # A-law
    a = codes ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    alaw = np.where(sign != 0, magnitude, -magnitude)
    return {
        "mulaw": (mulaw / 32768.0).astype(np.float32),
        "alaw": (alaw / 32768.0).astype(np.float32),
    }


_G711 = _g711_tables()
_PCM = {  # encoding -> (numpy dtype, scale to [-1, 1])
    "linear16": (np.dtype("<i2"), 1 / 32768.0),
    "pcm": (np.dtype("<i2"), 1 / 32768.0),
    "linear32": (np.dtype("<f4"), 1.0),  # Deepgram: 32-bit float PCM
    "float32": (np.dtype("<f4"), 1.0),
}


def raw_to_float(data: bytes, encoding: str) -> np.ndarray:
    """Whole samples of a headerless encoding -> interleaved float32 (pure)."""
    if encoding in _G711:
        return _G711[encoding][np.frombuffer(data, np.uint8)]
    dtype, scale = _PCM[encoding]
    with np.errstate(invalid="ignore", over="ignore"):
        return finite(np.frombuffer(data, dtype).astype(np.float32) * np.float32(scale))


def sample_width(encoding: str) -> int:
    return 1 if encoding in _G711 else _PCM[encoding][0].itemsize


class _MonoResampler:
    """One channel from any rate to 16 kHz; a thin stateful wrapper over FFmpeg's swresample."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler = (
            None
            if rate == SAMPLE_RATE
            else av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        )

    def push(self, samples: np.ndarray | None) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, np.float32) if samples is None else samples
        if samples is None:
            frames = self._resampler.resample(None)
        else:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples, np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate = self.rate
            frames = self._resampler.resample(frame)
        parts = [f.to_ndarray().reshape(-1) for f in frames]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class RawStreamDecoder:
    """Headerless audio: synchronous, so `on_audio` runs inside `feed`."""

    def __init__(self, raw: RawFormat, on_audio: AudioSink) -> None:
        self.raw = raw
        self.channels = raw.channels
        self._on_audio = on_audio
        self._width = sample_width(raw.encoding) * raw.channels
        self._carry = b""
        self._resamplers = [_MonoResampler(raw.sample_rate) for _ in range(raw.channels)]

    def feed(self, data: bytes) -> None:
        data = self._carry + data
        usable = len(data) - len(data) % self._width
        self._carry = data[usable:]
        if usable:
            interleaved = raw_to_float(data[:usable], self.raw.encoding)
            self._emit(interleaved.reshape(-1, self.channels).T)

    def _emit(self, tracks: np.ndarray | None) -> None:
        if tracks is None:
            outs = [r.push(None) for r in self._resamplers]
        else:
            outs = [r.push(tracks[i]) for i, r in enumerate(self._resamplers)]
        n = min(len(o) for o in outs)
        if n:
            self._on_audio(np.stack([o[:n] for o in outs]).astype(np.float32, copy=False))

    async def settle(self) -> None:
        """Everything fed so far has reached `on_audio` already."""

    async def finish(self) -> None:
        self._emit(None)

    def close(self) -> None:
        self._carry = b""


class _Pipe:
    """A blocking, non-seekable byte pipe: the event loop writes, the demuxer thread reads."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._cond = threading.Condition()
        self._eof = False
        self.waiting = False  # the reader is blocked on an empty pipe

    def write(self, data: bytes) -> None:
        with self._cond:
            self._buffer += data
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def read(self, size: int = -1) -> bytes:
        with self._cond:
            while not self._buffer and not self._eof:
                self.waiting = True
                self._cond.wait()
            self.waiting = False
            size = len(self._buffer) if size is None or size < 0 else size
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data

    @property
    def drained(self) -> bool:
        with self._cond:
            return not self._buffer and (self.waiting or self._eof)


class ContainerStreamDecoder:
    """Containerised audio: a PyAV demuxer+decoder on a thread reading from a pipe."""

    def __init__(
        self,
        on_audio: AudioSink,
        on_error: ErrorSink,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        fmt: str | None = None,
    ) -> None:
        self.channels = 0
        self._on_audio = on_audio
        self._on_error = on_error
        self._loop = loop or asyncio.get_running_loop()
        self._pipe = _Pipe()
        self._format = fmt
        self._stopped = False
        self._done = asyncio.Event()
        # Deliveries posted by the thread vs run on the loop; each counter has one writer.
        self._posted = 0
        self._delivered = 0
        self._thread = threading.Thread(target=self._run, name="stream-decode", daemon=True)
        self._started = False

    def feed(self, data: bytes) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
        self._pipe.write(data)

    def _deliver(self, samples: np.ndarray) -> None:
        self._delivered += 1
        if not self._stopped:
            self._on_audio(samples)

    def _post(self, samples: np.ndarray) -> None:
        self._posted += 1
        self._loop.call_soon_threadsafe(self._deliver, samples)

    def _fail(self, error: AudioError) -> None:
        if not self._stopped:
            self._on_error(error)

    def _run(self) -> None:
        try:
            self._decode()
        except AudioError as exc:
            self._loop.call_soon_threadsafe(self._fail, exc)
        except Exception as exc:  # FFmpeg raises many types; all mean bad data
            self._loop.call_soon_threadsafe(
                self._fail, AudioError(f"failed to process audio: {type(exc).__name__}")
            )
        finally:
            self._loop.call_soon_threadsafe(self._done.set)

    def _decode(self) -> None:
        try:
            container = av.open(
                self._pipe,
                mode="r",
                format=self._format,
                options={"probesize": str(PROBE_BYTES), "analyzeduration": "0"},
            )
        except av.error.FFmpegError as exc:
            if self._stopped:
                return
            raise AudioError("failed to process audio: corrupt or unsupported data") from exc
        try:
            # The same sanity checks as whole files (channel count, sample rate), before any
            # frame is decoded.
            stream, self.channels = audio_stream(container, None, DecodeLimits())
            resampler = resampler_for(stream)
            decoded_any = False
            try:
                for frame in container.decode(stream):
                    if self._stopped:
                        return
                    for out in resampler.resample(frame):
                        decoded_any = True
                        self._post(planar(out)[: self.channels].astype(np.float32))
            except av.error.FFmpegError as exc:
                if not decoded_any:
                    raise AudioError(
                        "failed to process audio: corrupt or unsupported data"
                    ) from exc
                # A damaged tail after good audio: keep what decoded, as ffmpeg does.
            for out in resampler.resample(None):
                self._post(planar(out)[: self.channels].astype(np.float32))
        finally:
            container.close()

    async def settle(self, timeout: float = 1.0) -> None:
        """Wait (briefly) until every byte fed so far has been decoded and delivered."""
        if not self._started:
            return
        deadline = self._loop.time() + timeout
        while self._loop.time() < deadline and not self._done.is_set():
            if self._pipe.drained and self._posted == self._delivered:
                await asyncio.sleep(0.02)  # a frame being resampled right now
                if self._pipe.drained and self._posted == self._delivered:
                    return
            await asyncio.sleep(0.01)

    async def finish(self, timeout: float = 10.0) -> None:
        """End of input: decode what is left and deliver it."""
        if not self._started:
            return
        self._pipe.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._done.wait(), timeout)
        await asyncio.sleep(0)  # let already-scheduled deliveries run

    def close(self) -> None:
        self._stopped = True
        self._pipe.close()


StreamDecoder = RawStreamDecoder | ContainerStreamDecoder


def make_decoder(raw: RawFormat | None, on_audio: AudioSink, on_error: ErrorSink) -> StreamDecoder:
    """Pick the decoder for a stream's declared format (None: sniff the container)."""
    if raw is not None and raw.pcm:
        return RawStreamDecoder(raw, on_audio)
    if raw is not None and raw.demuxer is not None:  # AMR, G.729: FFmpeg frames the codec
        return ContainerStreamDecoder(on_audio, on_error, fmt=raw.demuxer)
    return ContainerStreamDecoder(on_audio, on_error)
