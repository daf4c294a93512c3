"""The operator's model tier through a live server: a CTranslate2 Whisper directory at a path
of the operator's choosing is served under its own name and under the Deepgram names the
operator points at it, on REST and on a stream, with real speech; a directory that is not a
Whisper model stops the server at start with what is missing."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from server.engine.catalog import Catalog
from server.settings import Settings
from tests import corpus
from tests.conftest import ROOT, Server, start_server
from tests.test_rest_support import transcript
from tests.ws_helpers import CLOSE, RAW16, chunks, pcm16, run_stream, samples16k

NAME = "house-en"
CLIPS = 4  # the first English clips: 26 s of speech between them


def _copy_of_the_embedded_model(target: Path, skip: tuple[str, ...] = ()) -> Path:
    """A real directory: the model's files copied (no link back to the package)."""
    source = Path(Catalog.for_settings(Settings()).materialize("tiny.en"))
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.name not in skip:
            shutil.copyfile(item, target / item.name)
    return target


@pytest.fixture(scope="module")
def operator_server(tmp_path_factory) -> Server:
    """tiny.en stays the default; the operator's copy is preloaded under its own name and
    answers nova-3 and flux-general-en (set through the environment, as an operator would)."""
    if not corpus.english():
        pytest.skip(corpus.MISSING)
    tmp = tmp_path_factory.mktemp("operator")
    directory = _copy_of_the_embedded_model(tmp / "models" / "whisper-house")
    srv = start_server(
        tmp,
        "--preload",
        f"{NAME}={directory}",
        env={"OPENLISTEN_ALIASES": f"nova-3={NAME},flux-general-en={NAME}"},
    )
    yield srv
    srv.stop()


def _model_name(body: dict) -> str:
    return next(iter(body["metadata"]["model_info"].values()))["name"]


def test_models_lists_the_operator_model_and_what_aliases_answer(operator_server):
    listing = httpx.get(f"{operator_server.url}/v1/models", timeout=10).json()
    models = {m["name"]: m for m in listing["models"]}
    assert models[NAME]["loaded"] and models[NAME]["source"] == "directory"
    assert models[NAME]["languages"] == ["en"]
    assert models["tiny.en"]["default"] and not models[NAME]["default"]
    aliases = listing["aliases"]
    assert aliases["nova-3"] == NAME and aliases["flux-general-en"] == NAME
    assert aliases["nova-2"] == "tiny.en" and aliases["whisper-base"] == "base"


@pytest.mark.parametrize("model", [NAME, "nova-3"])
def test_rest_by_name_and_by_alias(operator_server, model):
    clips = corpus.english()[:CLIPS]
    with httpx.Client(timeout=300) as client:
        bodies = [
            client.post(
                f"{operator_server.url}/v1/listen",
                params={"model": model},
                content=c.path.read_bytes(),
            )
            .raise_for_status()
            .json()
            for c in clips
        ]
    assert {_model_name(b) for b in bodies} == {NAME}
    assert not any(b["metadata"].get("warnings") for b in bodies)
    error = corpus.wer([c.reference for c in clips], [transcript(b) for b in bodies])
    assert error < 12, error


def test_a_stream_through_the_alias(operator_server):
    clip = corpus.by_name("en_librispeech_1272-128104-0000.wav")
    frames = [*chunks(pcm16(samples16k(clip.path)), 3200), CLOSE]
    url = f"{operator_server.ws_url}/v1/listen?model=flux-general-en&{RAW16}"
    result = asyncio.run(run_stream(url, frames, pace_s=0.1))  # real time
    assert result.close_code == 1000
    finals = result.finals
    assert finals and {m["metadata"]["model_info"]["name"] for m in finals} == {NAME}
    assert corpus.wer([clip.reference], [result.final_text()]) < 15


def test_a_directory_that_is_not_a_model_stops_the_server_with_what_is_missing(tmp_path):
    bad = _copy_of_the_embedded_model(tmp_path / "half", skip=("tokenizer.json", "config.json"))
    process = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0", "--model", f"mine={bad}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 2
    message = process.stderr.strip().splitlines()[-1]
    assert message.startswith("openlisten: error: model 'mine':")
    assert f"{bad} is not a CTranslate2 Whisper model directory" in message
    assert "missing config.json, tokenizer.json" in message
    assert "Traceback" not in process.stderr


def test_an_alias_to_an_unknown_model_stops_the_server(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "server", "serve", "--port", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENLISTEN_ALIASES": json.dumps({"nova-3": "large-v3"})},
    )
    assert process.returncode == 2
    assert "alias 'nova-3' maps to 'large-v3'" in process.stderr
