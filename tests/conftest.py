"""Live servers on 127.0.0.1 running the real models, shared by the whole suite."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests import corpus
from tests.test_rest_support import api_transcripts

ROOT = Path(__file__).resolve().parents[1]


def _cpu_list(text: str) -> set[int]:
    """`taskset -c` syntax: `0`, `0,2`, `0-1`."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


# OPENLISTEN_TEST_TASKSET=0 (any `taskset -c` list) pins the suite to those cores, and with it
# every server, CLI and browser it starts: the suite must pass on a machine with one core.
if TASKSET := os.environ.get("OPENLISTEN_TEST_TASKSET", "").strip():
    os.sched_setaffinity(0, _cpu_list(TASKSET))


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen
    log: Path
    key: str | None = None  # the API key it accepts, when auth is on
    max_body_bytes: int | None = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int | None = None, timeout: float = 30) -> int:
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    tmp: Path,
    *args: str,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180,
    cpus: set[int] | None = None,
) -> Server:
    """Start `openlisten serve` as a real process and wait for /readyz (on `cpus` only, if
    given, as `taskset` would).

    Each server gets its own state directory (callback jobs), and may fetch from and call back
    to loopback, where the tests' file hosts and callback receivers listen; tests of the SSRF
    defaults override `OPENLISTEN_OUTBOUND_ALLOW_NETWORKS`.
    """
    port = free_port()
    log = tmp / f"server-{port}.log"
    full_env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "OPENLISTEN_STATE_DIR": str(tmp / f"state-{port}"),
        "OPENLISTEN_OUTBOUND_ALLOW_NETWORKS": "127.0.0.0/8",
        **(env or {}),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *args,
        ],
        cwd=ROOT,
        env=full_env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    server = Server(f"http://127.0.0.1:{port}", port, process, log)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.logs()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    server.stop()
    raise RuntimeError(f"server not ready in {ready_timeout}s:\n{server.logs()[-4000:]}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server: tiny.en by default, multilingual base preloaded, no auth."""
    srv = start_server(tmp_path_factory.mktemp("server"), "--preload", "base")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Start extra servers with their own settings (auth, small limits...); stopped at the end."""
    started: list[Server] = []

    def make(*args: str, env: dict[str, str] | None = None) -> Server:
        srv = start_server(tmp_path_factory.mktemp("server"), *args, env=env)
        started.append(srv)
        return srv

    yield make
    for srv in started:  # signal them all first: they drain side by side
        if srv.process.poll() is None:
            srv.process.terminate()
    for srv in started:
        srv.stop()


@pytest.fixture(scope="session")
def keyed_server(server_factory) -> Server:
    """One server with auth on (and a small body limit) shared by the suites that need a key."""
    key, limit = "openlisten-test-key", 8_000_000
    srv = server_factory("--api-key", key, env={"OPENLISTEN_MAX_BODY_BYTES": str(limit)})
    srv.key, srv.max_body_bytes = key, limit
    return srv


@pytest.fixture(scope="session")
def english_clips() -> list[corpus.Clip]:
    clips = corpus.english()
    if not clips:
        pytest.skip(corpus.MISSING)
    return clips


@pytest.fixture(scope="session")
def english_rest(server, english_clips) -> list[dict]:
    """The default server's REST answer (`punctuate=true`) for every English clip, in order:
    transcribed once for every check that reads them (WER, word times, live against REST)."""
    return api_transcripts(server, english_clips, punctuate="true")


def need_corpus() -> None:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
