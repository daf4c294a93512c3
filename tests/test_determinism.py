"""The same audio reads the same whatever the cores the server may use.

A server pinned to one core and one free to use every core must return identical words and
word times. Before the mel features' BLAS product was done in float64, the telephone call
came back 17.2 % WER on two cores and 11.5 % on one: OpenBLAS splits a float32 product over as
many threads as the process has cores, and the rounding of the last bits followed.
"""

from __future__ import annotations

import os

import httpx
import pytest

from tests import corpus
from tests.conftest import start_server

FILES = ["en_multispeaker_pyannote_sample_telephone.wav", "en_jfk_inaugural_1961.flac"]


def _words(url: str, path) -> list[tuple[str, float, float]]:
    response = httpx.post(
        f"{url}/v1/listen?punctuate=true",
        content=path.read_bytes(),
        headers={"Content-Type": "application/octet-stream"},
        timeout=300,
    )
    response.raise_for_status()
    words = response.json()["results"]["channels"][0]["alternatives"][0]["words"]
    return [(w["punctuated_word"], w["start"], w["end"]) for w in words]


def test_one_core_and_every_core_read_the_same(tmp_path):
    cores = os.sched_getaffinity(0)
    if len(cores) < 2:
        pytest.skip("needs two cores to compare one with several (this process has one)")
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    clips = [corpus.by_name(name) for name in FILES]
    # Whatever BLAS is told (the server sets one thread itself), the text may not follow it.
    threads = str(len(cores))
    many = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    one = start_server(tmp_path, cpus={min(cores)})
    try:
        pinned = [_words(one.url, c.path) for c in clips]
    finally:
        one.stop()
    every = start_server(tmp_path, cpus=cores, env=many)
    try:
        free = [_words(every.url, c.path) for c in clips]
    finally:
        every.stop()
    for clip, a, b in zip(clips, pinned, free, strict=True):
        assert a, clip.path.name
        assert a == b, clip.path.name
