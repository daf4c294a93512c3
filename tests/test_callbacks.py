"""Durable callbacks: stored before the 200, delivered across SIGTERM and kill -9, failures
delivered as Deepgram errors, dead letters counted, pending jobs bounded."""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from tests import corpus
from tests.conftest import start_server
from tests.test_metrics import scrape, value
from tests.test_rest_support import assert_deepgram_error, local_host, transcript

TIMIT = "en_timit_LDC93S1.wav"
FAST_RETRIES = {
    "OPENLISTEN_CALLBACK_RETRY_DELAY_S": "0.2",
    "OPENLISTEN_CALLBACK_RETRY_MAX_DELAY_S": "0.5",
}


@pytest.fixture(scope="module")
def clip():
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return corpus.by_name(TIMIT)


def _submit(url: str, hook: str, audio: bytes) -> str:
    reply = httpx.post(f"{url}/v1/listen", params={"callback": hook}, content=audio, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()["request_id"]


def test_jobs_survive_kill_9_and_sigterm(tmp_path, clip):
    """Job 1 is transcribed while its callback host is down; job 2 is accepted and the server
    is killed at once (kill -9). The next start delivers both. Then a job whose host is down
    is pending at SIGTERM: the server says so, and leaves it on disk for the next start."""
    env = {**FAST_RETRIES, "OPENLISTEN_STATE_DIR": str(tmp_path / "state")}
    audio = clip.path.read_bytes()
    with local_host(fail_first=10**6) as hook, local_host(fail_first=10**6) as down:
        first = start_server(tmp_path, env=env)
        job1 = _submit(first.url, f"{hook.url}/hook", audio)
        assert hook.wait_for(1, timeout=120), "job 1 never reached a delivery attempt"
        job2 = _submit(first.url, f"{hook.url}/hook", audio)
        first.process.kill()  # kill -9 right after the 200: nothing may be lost
        first.process.wait()

        hook.fail_first = 0
        attempts = len(hook.received)
        second = start_server(tmp_path, env=env)
        try:
            delivered: dict[str, dict] = {}
            deadline = time.monotonic() + 180
            while len(delivered) < 2 and time.monotonic() < deadline:
                for entry in hook.received[attempts:]:
                    if not entry.get("failed"):
                        delivered[entry["body"]["metadata"]["request_id"]] = entry["body"]
                time.sleep(0.1)
            assert set(delivered) == {job1, job2}, hook.received[attempts:]
            for body in delivered.values():
                assert corpus.wer([clip.reference], [transcript(body)]) < 30
            assert "callback jobs recovered" in second.logs()

            _submit(second.url, f"{down.url}/hook", audio)
            assert down.wait_for(1, timeout=120)
        finally:
            assert second.stop(signal.SIGTERM) == 0
    pending = [line for line in second.logs().splitlines() if "still pending at shutdown" in line]
    assert pending and '"pending": 1' in pending[0], second.logs()[-2000:]


@pytest.fixture(scope="module")
def strict(server_factory, clip):
    """One retry, and room for one pending job."""
    return server_factory(
        env={
            **FAST_RETRIES,
            "OPENLISTEN_CALLBACK_RETRIES": "1",
            "OPENLISTEN_CALLBACK_MAX_PENDING": "1",
        }
    )


def test_undecodable_audio_is_delivered_as_a_deepgram_error(strict):
    with local_host() as hook:
        job = _submit(strict.url, f"{hook.url}/hook", b"this is not audio at all" * 100)
        (received,) = hook.wait_for(1, timeout=60)
    body = received["body"]
    assert body["err_code"] == "Bad Request" and body["request_id"] == job
    assert "corrupt" in body["err_msg"]


def test_dead_letters_are_counted_and_logged(strict, clip):
    before = value(scrape(strict), "openlisten_callback_dead_letters_total")
    with local_host(fail_first=10**6) as hook:
        job = _submit(strict.url, f"{hook.url}/hook", clip.path.read_bytes())
        hook.wait_for(2, timeout=120)  # the first try and its one retry
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            after = value(scrape(strict), "openlisten_callback_dead_letters_total")
            if after > before:
                break
            time.sleep(0.2)
    assert after == before + 1
    assert len(hook.received) == 2
    dead = [line for line in strict.logs().splitlines() if "dead letter" in line]
    assert dead and job in dead[-1] and "/hook" not in dead[-1]


def test_pending_jobs_are_bounded(strict, clip):
    """Job A is still being transcribed when job B arrives: with room for one, B gets 503."""
    audio = clip.path.read_bytes()
    with local_host() as hook:
        _submit(strict.url, f"{hook.url}/hook", audio)
        refused = httpx.post(
            f"{strict.url}/v1/listen",
            params={"callback": f"{hook.url}/hook"},
            content=audio,
            timeout=60,
        )
        body = assert_deepgram_error(refused, 503)
        assert body["err_code"] == "TOO_MANY_REQUESTS" and "callback" in body["err_msg"]
        assert int(refused.headers["Retry-After"]) >= 1
        assert hook.wait_for(1, timeout=120)


def test_an_unexpected_delivery_failure_is_a_counted_attempt(tmp_path):
    """A delivery that fails in a way nobody foresaw (here the outbound layer itself raises)
    is reported as a failed attempt, so it backs off and ends as a dead letter, instead of
    escaping to the job loop's catch-all, which retries every 5 s without counting."""
    import asyncio
    from contextlib import asynccontextmanager

    from server.callbacks.runner import CallbackJobs
    from server.callbacks.store import Job
    from server.outbound import Outbound
    from server.settings import Settings

    class Broken(Outbound):
        @asynccontextmanager
        async def stream(self, *_args, **_kwargs):
            raise RuntimeError("a bug below the delivery")
            yield

    jobs = CallbackJobs(Settings(state_dir=tmp_path), engine=None, outbound=Broken())  # type: ignore[arg-type]
    job = Job("id", "deliver", "http://192.0.2.1/hook", "POST", [], "", "{}", 0, 0.0)
    assert asyncio.run(jobs._post(job)) == "unexpected RuntimeError"
