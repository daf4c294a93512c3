"""Callback jobs on disk: one SQLite table plus each job's audio, in the state directory.

A job is written (audio first, fsynced, then its row, committed with `synchronous=FULL`) before
the client gets its 200, so `kill -9` right after the answer loses nothing. States:

* `transcribe`: the audio waits in `audio/<id>`; after a restart it is transcribed again
  (transcription has no side effects, so running it twice is harmless);
* `deliver`: the body (transcript or Deepgram error) is stored; the audio is gone;
* `dead`: delivery gave up after the configured retries; kept (capped) for inspection.

Delivered jobs are deleted. The directory is locked (`flock`) by one server process at a time:
two servers sharing it would deliver each other's jobs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    state TEXT NOT NULL,
    callback TEXT NOT NULL,
    method TEXT NOT NULL,
    query TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    body TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_at);
"""
PENDING = ("transcribe", "deliver")
KEEP_DEAD = 1000


class StateDirBusy(RuntimeError):
    """Another server process holds the state directory."""


@dataclass(frozen=True)
class Job:
    id: str
    state: str
    callback: str
    method: str
    query: list[tuple[str, str]]
    sha256: str
    body: str | None
    attempts: int
    next_at: float


class JobStore:
    """Blocking methods (call them through `asyncio.to_thread`); safe from several threads."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.audio_dir = directory / "audio"
        self.audio_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            directory.chmod(0o700)  # transcripts and audio of other people's requests
        self._lock_file = (directory / "lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise StateDirBusy(f"{directory} is in use by another openlisten process") from exc
        self._db = sqlite3.connect(
            directory / "callbacks.sqlite3", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._mutex = threading.Lock()

    def close(self) -> None:
        with self._mutex:
            self._db.close()
        self._lock_file.close()

    def _audio(self, job_id: str) -> Path:
        return self.audio_dir / job_id

    # --- writes --------------------------------------------------------------------------------
    def add(
        self,
        job_id: str,
        source: BinaryIO,
        *,
        callback: str,
        method: str,
        query: list[tuple[str, str]],
        sha256: str,
    ) -> None:
        """Store the audio durably, then the row; only then may the client hear 200."""
        final = self._audio(job_id)
        partial = final.with_suffix(".part")
        with partial.open("wb") as out:
            shutil.copyfileobj(source, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        partial.rename(final)
        _fsync_dir(self.audio_dir)
        with self._mutex:
            self._db.execute(
                "INSERT INTO jobs (id, created, state, callback, method, query, sha256, next_at) "
                "VALUES (?, ?, 'transcribe', ?, ?, ?, ?, ?)",
                (job_id, time.time(), callback, method, json.dumps(query), sha256, time.time()),
            )

    def set_body(self, job_id: str, body: dict[str, Any]) -> None:
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET state = 'deliver', body = ?, next_at = ? WHERE id = ?",
                (json.dumps(body), time.time(), job_id),
            )
        self._audio(job_id).unlink(missing_ok=True)

    def postpone(
        self, job_id: str, at: float, *, attempts: int | None = None, error: str = ""
    ) -> None:
        with self._mutex:
            if attempts is None:
                self._db.execute("UPDATE jobs SET next_at = ? WHERE id = ?", (at, job_id))
            else:
                self._db.execute(
                    "UPDATE jobs SET next_at = ?, attempts = ?, error = ? WHERE id = ?",
                    (at, attempts, error, job_id),
                )

    def due_now(self, now: float) -> None:
        """At start: every pending job is due (clears leases and backoffs a crash left)."""
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET next_at = ? WHERE state IN ('transcribe', 'deliver')", (now,)
            )

    def bury(self, job_id: str, attempts: int, error: str) -> None:
        """Delivery gave up: keep the job as a dead letter (the newest `KEEP_DEAD` of them)."""
        with self._mutex:
            self._db.execute(
                "UPDATE jobs SET state = 'dead', attempts = ?, error = ? WHERE id = ?",
                (attempts, error, job_id),
            )
            self._db.execute(
                "DELETE FROM jobs WHERE state = 'dead' AND id NOT IN "
                "(SELECT id FROM jobs WHERE state = 'dead' ORDER BY created DESC LIMIT ?)",
                (KEEP_DEAD,),
            )

    def delete(self, job_id: str) -> None:
        with self._mutex:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        self._audio(job_id).unlink(missing_ok=True)

    # --- reads ---------------------------------------------------------------------------------
    def open_audio(self, job_id: str) -> BinaryIO:
        return self._audio(job_id).open("rb")

    def due(self, now: float, limit: int) -> list[Job]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT id, state, callback, method, query, sha256, body, attempts, next_at "
                "FROM jobs WHERE state IN ('transcribe', 'deliver') AND next_at <= ? "
                "ORDER BY next_at LIMIT ?",
                (now, limit),
            ).fetchall()
        return [_job(row) for row in rows]

    def next_due(self) -> float | None:
        with self._mutex:
            (at,) = self._db.execute(
                "SELECT MIN(next_at) FROM jobs WHERE state IN ('transcribe', 'deliver')"
            ).fetchone()
        return at

    def counts(self) -> dict[str, int]:
        with self._mutex:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {state: count for state, count in rows}

    def pending(self) -> int:
        counts = self.counts()
        return sum(counts.get(state, 0) for state in PENDING)

    def remove_orphans(self) -> int:
        """Audio with no job row (a crash between the two writes) or half-written: deleted."""
        with self._mutex:
            known = {
                row[0] for row in self._db.execute("SELECT id FROM jobs WHERE state = 'transcribe'")
            }
        removed = 0
        for path in self.audio_dir.iterdir():
            if path.name not in known:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _job(row: tuple) -> Job:
    job_id, state, callback, method, query, sha256, body, attempts, next_at = row
    return Job(
        job_id,
        state,
        callback,
        method,
        [tuple(item) for item in json.loads(query)],  # type: ignore[misc]
        sha256,
        body,
        attempts,
        next_at,
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
