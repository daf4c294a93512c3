"""A small raw-WebSocket client for the streaming tests: send audio, collect every message."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
import websockets

from server.audio.decode import decode

KNOWN_TYPES = {
    "Results",
    "Metadata",
    "SpeechStarted",
    "UtteranceEnd",
    "Error",
    "ConfigureSuccess",
    "ConfigureFailure",
}


def samples16k(path: Path) -> np.ndarray:
    """A corpus file as 16 kHz mono float32."""
    return decode(path.read_bytes()).mono()


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def encode(samples: np.ndarray, fmt: str, codec: str, rate: int, sample_fmt: str = "s16") -> bytes:
    """Encode 16 kHz mono float audio into a container with PyAV (tests never commit audio)."""
    buf = io.BytesIO()
    out = av.open(buf, "w", format=fmt)
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "mono"
    resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(pcm16_array(samples)[None], format="s16", layout="mono")
    frame.sample_rate = 16000
    for chunk in resampler.resample(frame):
        for packet in stream.encode(chunk):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return buf.getvalue()


def webm_opus(samples: np.ndarray) -> bytes:
    """Audio the way a browser's MediaRecorder sends it: Opus in WebM."""
    return encode(samples, "webm", "libopus", 48000)


def pcm16_array(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@dataclass
class Stream:
    messages: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    subprotocol: str | None = None

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    @property
    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.of("Results") if m["is_final"]]

    @property
    def interims(self) -> list[dict[str, Any]]:
        return [m for m in self.of("Results") if not m["is_final"]]

    def final_text(self, channel: int = 0) -> str:
        return " ".join(
            t
            for m in self.finals
            if m["channel_index"][0] == channel
            and (t := m["channel"]["alternatives"][0]["transcript"])
        )

    def final_words(self, channel: int = 0) -> list[dict[str, Any]]:
        return [
            w
            for m in self.finals
            if m["channel_index"][0] == channel
            for w in m["channel"]["alternatives"][0]["words"]
        ]


async def run_stream(
    url: str,
    frames: Sequence[bytes | str | float],
    *,
    headers: dict[str, str] | None = None,
    subprotocols: list[str] | None = None,
    pace_s: float = 0.0,
    timeout: float = 120.0,
) -> Stream:
    """Send frames in order (bytes = audio, str = text frame, float = pause in seconds), the
    n-th audio frame at `n * pace_s` after the first (a steady clock: sending takes no time off
    the pace), while collecting every message until the server closes."""
    result = Stream()
    async with websockets.connect(
        url,
        additional_headers=headers,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        max_size=None,
        open_timeout=30,
    ) as ws:
        result.headers = {k.lower(): v for k, v in ws.response.headers.items()}
        result.subprotocol = ws.subprotocol

        async def send() -> None:
            loop = asyncio.get_running_loop()
            due = loop.time()
            for frame in frames:
                if isinstance(frame, float):
                    await asyncio.sleep(frame)
                    due = loop.time()
                    continue
                if isinstance(frame, bytes) and pace_s:
                    await asyncio.sleep(max(0.0, due - loop.time()))
                    due += pace_s
                try:
                    await ws.send(frame)
                except websockets.ConnectionClosed:
                    return

        async def receive() -> None:
            try:
                async for message in ws:
                    result.messages.append(json.loads(message))
            except websockets.ConnectionClosed:
                pass

        sender = asyncio.create_task(send())
        await asyncio.wait_for(receive(), timeout)
        sender.cancel()
        result.close_code = ws.close_code
        result.close_reason = ws.close_reason or ""
    return result


def stream(url: str, frames: Sequence[bytes | str | float], **kwargs: Any) -> Stream:
    return asyncio.run(run_stream(url, frames, **kwargs))


def audio_frames(
    samples: np.ndarray, chunk_s: float = 0.1, close: bool = True
) -> list[bytes | str | float]:
    """linear16 16 kHz frames of `chunk_s` seconds, then CloseStream."""
    frames: list[bytes | str | float] = list(chunks(pcm16(samples), int(chunk_s * 32000)))
    if close:
        frames.append(json.dumps({"type": "CloseStream"}))
    return frames


RAW16 = "encoding=linear16&sample_rate=16000"
CLOSE = json.dumps({"type": "CloseStream"})
