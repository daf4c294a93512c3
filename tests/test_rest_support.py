"""Helpers shared by the REST tests: audio made with PyAV at test time, and small local HTTP
servers (a file host that can 404 or stall, and a callback receiver). No test lives here."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

# container format -> (PyAV format name, codec, sample rate); every one must be sniffed.
FORMATS: dict[str, tuple[str, str, int]] = {
    "wav": ("wav", "pcm_s16le", 16000),
    "mp3": ("mp3", "libmp3lame", 16000),
    "flac": ("flac", "flac", 16000),
    "ogg-opus": ("ogg", "libopus", 48000),
    "webm": ("webm", "libopus", 48000),
    "m4a": ("ipod", "aac", 16000),
    "mp4": ("mp4", "aac", 16000),
    "aac": ("adts", "aac", 16000),
    "aiff": ("aiff", "pcm_s16be", 16000),
}


def load_pcm(path: Path, rate: int = 16000, layout: str = "mono") -> np.ndarray:
    """Decode a corpus file to interleaved int16 at `rate` (independent of the server)."""
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        chunks = [
            out.to_ndarray().reshape(-1)
            for frame in container.decode(audio=0)
            for out in resampler.resample(frame)
        ]
        chunks += [out.to_ndarray().reshape(-1) for out in resampler.resample(None)]
    return np.concatenate(chunks).astype(np.int16)


def encode(path: Path, fmt: str) -> bytes:
    """Re-encode a corpus file into `fmt` in memory; audio is never committed to git."""
    container_name, codec, rate = FORMATS[fmt]
    pcm = load_pcm(path, rate)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_name) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        if codec in {"libmp3lame", "aac", "libopus"}:
            stream.bit_rate = 64000
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(pcm), frame_size):
            piece = pcm[start : start + frame_size]
            frame = av.AudioFrame.from_ndarray(piece[None, :], format="s16", layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def g711(pcm: np.ndarray, law: str) -> bytes:
    """Headerless mu-law / A-law bytes from int16 PCM, through PyAV's own encoders."""
    codec = "pcm_mulaw" if law == "mulaw" else "pcm_alaw"
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=law) as out:
        stream = out.add_stream(codec, rate=8000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(pcm[None, :], format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


def api_transcripts(server, clips, **params: str) -> list[dict[str, Any]]:
    """Each clip posted to the server's `/v1/listen` with `params`: the JSON bodies, in order."""
    with httpx.Client(timeout=300) as client:
        return [
            client.post(f"{server.url}/v1/listen", params=params, content=c.path.read_bytes())
            .raise_for_status()
            .json()
            for c in clips
        ]


def transcript(body: dict[str, Any], channel: int = 0) -> str:
    return body["results"]["channels"][channel]["alternatives"][0]["transcript"]


def assert_deepgram_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """A Deepgram-shaped error: the status, err_code/err_msg/request_id, and the id header."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) >= {"err_code", "err_msg", "request_id"}, body
    assert body["err_msg"].strip(), body
    assert body["request_id"] == response.headers["dg-request-id"]
    return body


@dataclass
class LocalHost:
    """A throwaway HTTP server on 127.0.0.1: serves `files`, records requests, can stall."""

    files: dict[str, bytes] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0  # answer this many callback requests with 500 before accepting
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location (302)
    fetched: list[str] = field(default_factory=list)  # every GET path, in order
    url: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)

    def wait_for(self, count: int, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


@contextmanager
def local_host(
    files: dict[str, bytes] | None = None,
    fail_first: int = 0,
    *,
    bind: str = "127.0.0.1",
    port: int = 0,
    redirects: dict[str, str] | None = None,
) -> Iterator[LocalHost]:
    host = LocalHost(
        files=dict(files or {}), fail_first=fail_first, redirects=dict(redirects or {})
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            host.fetched.append(self.path)
            if self.path in host.redirects:
                self.send_response(302)
                self.send_header("Location", host.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith("/stall"):
                host._stop.wait(60)  # accept, then never answer
                return
            data = host.files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if host.fail_first > 0:
                host.fail_first -= 1
                host.received.append({"method": self.command, "failed": True})
                self.send_error(500)
                return
            host.received.append(
                {"method": self.command, "path": self.path, "body": json.loads(raw or b"null")}
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = _record
        do_PUT = _record

    httpd = ThreadingHTTPServer((bind, port), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    host.url = f"http://{bind}:{httpd.server_address[1]}"
    try:
        yield host
    finally:
        host._stop.set()
        httpd.shutdown()
        httpd.server_close()
