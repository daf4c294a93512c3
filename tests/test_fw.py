"""faster-whisper internals: one module, a tested version range, a clear failure outside it."""

from __future__ import annotations

import re

import pytest

from server.engine import fw
from server.settings import REPO_ROOT


def test_versions_outside_the_tested_range_fail_with_what_to_install() -> None:
    for version in ["1.1.1", "1.2.0", "1.3.0", "2.0"]:
        with pytest.raises(fw.IncompatibleFasterWhisper, match=re.escape(fw.REQUIREMENT)):
            fw.check_version(version)
    fw.check_version(fw.VERSION)  # the installed one is in range
    fw.check_signatures()


def test_pyproject_pins_the_range_the_module_accepts() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    assert f'"{fw.REQUIREMENT}"' in pyproject


def test_no_other_module_imports_faster_whisper() -> None:
    importers = [
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "server").rglob("*.py")
        if re.search(r"^\s*(from|import) faster_whisper", path.read_text(), re.M)
    ]
    assert importers == ["server/engine/fw.py"]
