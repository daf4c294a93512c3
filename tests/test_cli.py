"""`openlisten transcribe` runs the API's own path offline: same JSON, text renderings, and a
clean error (no stack trace) when a model cannot be had."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import httpx
import pytest

from tests import corpus

CLIP = "en_jfk_inaugural_1961.flac"


def openlisten(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def clip() -> corpus.Clip:
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    return corpus.by_name(CLIP)


def test_transcribe_json_equals_the_api(server, clip):
    run = openlisten("transcribe", "--format", "json", str(clip.path))
    assert run.returncode == 0, run.stderr
    offline = json.loads(run.stdout)
    api = httpx.post(
        f"{server.url}/v1/listen",
        params={"punctuate": "true", "smart_format": "true", "utterances": "true"},
        content=clip.path.read_bytes(),
        timeout=120,
    ).json()
    for key in ["sha256", "duration", "channels", "models", "model_info"]:
        assert offline["metadata"][key] == api["metadata"][key], key
    off_alt = offline["results"]["channels"][0]["alternatives"][0]
    api_alt = api["results"]["channels"][0]["alternatives"][0]
    assert off_alt["transcript"] == api_alt["transcript"]
    assert off_alt["words"] == api_alt["words"]
    assert off_alt["paragraphs"] == api_alt["paragraphs"]
    assert [u["transcript"] for u in offline["results"]["utterances"]] == [
        u["transcript"] for u in api["results"]["utterances"]
    ]
    assert corpus.wer([clip.reference], [off_alt["transcript"]]) < 15


@pytest.mark.parametrize("fmt", ["txt", "srt", "vtt"])
def test_transcribe_text_formats_to_a_directory(clip, tmp_path, fmt):
    timit = corpus.by_name("en_timit_LDC93S1.wav")
    run = openlisten(
        "transcribe", "--format", fmt, "--output", str(tmp_path), str(clip.path), str(timit.path)
    )
    assert run.returncode == 0, run.stderr
    assert "2/2" in run.stderr  # the progress bar ran to the end
    jfk_text = (tmp_path / f"{clip.path.stem}.{fmt}").read_text()
    timit_text = (tmp_path / f"{timit.path.stem}.{fmt}").read_text()
    assert corpus.wer([clip.reference], [jfk_text if fmt == "txt" else _cue_text(jfk_text)]) < 15
    assert (
        corpus.wer([timit.reference], [timit_text if fmt == "txt" else _cue_text(timit_text)]) < 30
    )
    if fmt == "srt":
        assert jfk_text.startswith("1\n00:00:0") and " --> " in jfk_text
    if fmt == "vtt":
        assert jfk_text.startswith("WEBVTT\n\n00:00:0") and "." in jfk_text.split(" --> ")[0]


def _cue_text(text: str) -> str:
    return " ".join(
        line
        for line in text.splitlines()
        if line and "-->" not in line and not line.isdigit() and line != "WEBVTT"
    )


@pytest.mark.parametrize(
    "model,says",
    [("some-org/no-such-whisper-repo", "Hugging Face Hub"), ("/no/such/dir", "no such directory")],
)
def test_unavailable_model_fails_cleanly(clip, model, says):
    run = openlisten("transcribe", "--model", model, str(clip.path), env={"HF_HUB_OFFLINE": "1"})
    assert run.returncode == 2
    assert says in run.stderr and "Traceback" not in run.stderr


def test_missing_file_fails_cleanly(tmp_path):
    run = openlisten("transcribe", str(tmp_path / "nope.wav"))
    assert run.returncode == 2 and "no such file" in run.stderr and "Traceback" not in run.stderr


def test_serve_help_lists_the_options():
    run = openlisten("serve", "--help")
    for option in ["--host", "--port", "--model", "--device", "--compute-type", "--api-key"]:
        assert option in run.stdout


def test_url_stdin_and_file_in_parallel_with_subtitle_rules(clip, tmp_path):
    """A URL, stdin and a file in one run, under one progress bar; the 21 s phone call (one
    75-word cue before) comes out as short cues within the rules."""
    from tests.subtitle_check import check_cue_rules, parse_cues
    from tests.test_rest_support import local_host

    call = corpus.by_name("en_multispeaker_pyannote_sample_telephone.wav")
    timit = corpus.by_name("en_timit_LDC93S1.wav")
    with local_host({"/calls/call.wav": call.path.read_bytes()}) as host:
        run = subprocess.run(
            [sys.executable, "-m", "server", "transcribe", "--format", "srt",
             "--output", str(tmp_path), f"{host.url}/calls/call.wav", "-", str(clip.path)],
            input=timit.path.read_bytes(), capture_output=True, timeout=300,
        )  # fmt: skip
    stderr = run.stderr.decode(errors="replace")
    assert run.returncode == 0, stderr
    assert "3/3" in stderr
    outputs = {"call": call, "stdin": timit, clip.path.stem: clip}
    for stem, source in outputs.items():
        cues = parse_cues((tmp_path / f"{stem}.srt").read_text())
        check_cue_rules(cues)
        spoken = " ".join(" ".join(lines) for _, _, lines in cues)
        assert corpus.wer([source.reference], [spoken]) < 35, (stem, spoken)
    assert len(parse_cues((tmp_path / "call.srt").read_text())) >= 4


def test_every_serve_flag_shows_help_and_default():
    from server.cli import SERVE_FLAGS

    run = openlisten("serve", "--help")
    text = " ".join(run.stdout.split())
    for flag in SERVE_FLAGS:
        env = "OPENLISTEN_" + flag.removeprefix("--").replace("-", "_").upper()
        after = text[text.index(f" {flag} ") :]
        assert f"env {env})" in after[:400] and "(default: " in after[:400], flag


def test_diarize_labels_the_two_speakers_of_a_conversation(tmp_path):
    """A held-out assembled conversation (tests/conversations.py), one turn following another
    with no pause: two voices in the WebVTT."""
    from tests.conversations import held_out_no_pause_pairs

    corpus.by_name("en_multispeaker_pyannote_sample_telephone.wav")  # skips without the corpus
    call = tmp_path / "conversation.wav"
    call.write_bytes(held_out_no_pause_pairs(1)[0].wav())
    run = openlisten("transcribe", "--quiet", "--diarize", "--format", "vtt", str(call))
    assert run.returncode == 0, run.stderr
    assert "warning" not in run.stderr, run.stderr
    voices = set(re.findall(r"<v (Speaker \d+)>", run.stdout))
    assert voices == {"Speaker 0", "Speaker 1"}, run.stdout


def test_malformed_url_fails_cleanly(clip):
    """`http://[::1` once ended the whole run with urlsplit's traceback before any input was
    read; now it is one failed input among others, said in one line."""
    run = openlisten("transcribe", "--quiet", "--format", "txt", "http://[::1", str(clip.path))
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "http://[::1: Invalid url" in run.stderr
    assert "fellow americans" in run.stdout.lower()
