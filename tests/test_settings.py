"""Configuration: precedence (flags > env > file > defaults) on a real process, list-valued
environment variables, API keys (plain, hashed, from a file), CORS, and the docs table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server import settings_doc
from server.cli import _SETTING_FLAGS, build_parser
from server.settings import Settings
from tests.conftest import Server, free_port, start_server

PLAIN_KEY = "plain-key-0001-abcdef"
HASHED_KEY = "hashed-key-0002-abcdef"
FILE_KEY = "file-key-0003-abcdef"
ORIGIN = "http://app.example"


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _clear_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("OPENLISTEN_"):
            monkeypatch.delenv(name)


# --- docs ----------------------------------------------------------------------------------


def test_configuration_doc_table_matches_the_settings_model() -> None:
    table = settings_doc.current_table(settings_doc.DOC.read_text())
    assert table is not None, "docs/configuration.md lost its generated-table markers"
    assert table == settings_doc.render(), (
        "docs/configuration.md is out of date: run `python -m server.settings_doc --write`"
    )
    for name in Settings.model_fields:
        assert f"`OPENLISTEN_{name.upper()}`" in table


def test_every_serve_flag_reaches_the_settings() -> None:
    """A flag missing from the override list would be parsed and then silently ignored."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    serve_flags = {a.dest for a in sub.choices["serve"]._actions if a.option_strings} - {"help"}
    assert serve_flags <= _SETTING_FLAGS
    assert set(Settings.model_fields) >= _SETTING_FLAGS


# --- list-valued settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("api_key", "a,b", ["a", "b"]),
        ("api_key", " a , b ,", ["a", "b"]),
        ("api_key", "only", ["only"]),
        ("api_key", "12345", ["12345"]),  # looks like JSON, is still a key
        ("api_key", '["x,y", "z"]', ["x,y", "z"]),
        ("preload", "base", ["base"]),
        ("preload", "base,tiny.en", ["base", "tiny.en"]),
        ("cors_origins", "http://a.example,http://b.example", ["http://a.example", "http://b.example"]),
        ("device_index", "0,1", [0, 1]),
        ("device_index", "1", [1]),
        ("preload", "", []),
    ],
)  # fmt: skip
def test_list_env_vars_parse(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, expected: list
) -> None:
    _clear_env(monkeypatch)
    monkeypatch.setenv(f"OPENLISTEN_{name.upper()}", raw)
    assert getattr(Settings(), name) == expected


def test_toml_file_and_in_process_precedence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_env(monkeypatch)
    config = tmp_path / "openlisten.toml"
    config.write_text('batch_size = 3\nqueue_max = 7\nworkers = 2\npreload = ["base"]\n')
    monkeypatch.setenv("OPENLISTEN_CONFIG", str(config))
    monkeypatch.setenv("OPENLISTEN_QUEUE_MAX", "9")
    monkeypatch.setenv("OPENLISTEN_WORKERS", "4")
    settings = Settings(workers=5)
    assert settings.preload == ["base"]  # file > default
    assert settings.batch_size == 3  # file > default
    assert settings.queue_max == 9  # env > file
    assert settings.workers == 5  # flag (init kwarg) > env
    assert settings.beam_size == Settings.model_fields["beam_size"].default
    # --config as a flag names the file too.
    monkeypatch.delenv("OPENLISTEN_CONFIG")
    assert Settings(config=config).batch_size == 3


def test_key_digests_accept_plain_hashed_and_file_keys(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# team keys\n{FILE_KEY}\n\nsha256:{_sha('other').upper()}\n")
    settings = Settings(api_key=[PLAIN_KEY, f"sha256:{_sha(HASHED_KEY)}"], api_keys_file=keys_file)
    assert settings.key_digests == {
        _sha(PLAIN_KEY),
        _sha(HASHED_KEY),
        _sha(FILE_KEY),
        _sha("other"),
    }
    assert settings.auth_enabled
    assert not Settings(api_key=[]).auth_enabled


# --- a real process ------------------------------------------------------------------------


def test_precedence_flags_env_file_defaults_on_a_real_server(tmp_path: Path) -> None:
    """One `openlisten serve`: each setting is given at two levels and the higher must win."""
    file_port, env_port = free_port(), free_port()
    config = tmp_path / "openlisten.toml"
    config.write_text(
        f'port = {file_port}\nlog_format = "text"\nmetrics_open = true\n'
        f'api_key = ["file-level-key-1234"]\n'
    )
    env = {
        "OPENLISTEN_CONFIG": str(config),
        "OPENLISTEN_PORT": str(env_port),
        "OPENLISTEN_LOG_FORMAT": "json",
        "OPENLISTEN_API_KEY": "env-level-key-1234",
    }
    # start_server passes `--port <free port>`: it only gets ready if the flag wins.
    server = start_server(tmp_path, "--api-key", "flag-level-key-1234", env=env, ready_timeout=90)
    try:
        for port in (file_port, env_port):
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)

        def models(key: str) -> int:
            return httpx.get(
                f"{server.url}/v1/models", headers={"Authorization": f"Token {key}"}, timeout=10
            ).status_code

        assert models("flag-level-key-1234") == 200  # flag
        assert models("env-level-key-1234") == 401  # env lost to the flag
        assert models("file-level-key-1234") == 401  # file lost to both
        # file > default: metrics_open comes only from the file, and it opens /metrics.
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
    finally:
        server.stop()
    # env > file: the file asks for text logs, the environment for JSON lines.
    lines = [line for line in server.logs().splitlines() if line.startswith("{")]
    assert lines and all(json.loads(line)["level"] for line in lines)
    assert not any(" INFO " in line for line in server.logs().splitlines())


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Keys from the environment (one plain, one hashed) and from a file; CORS for one origin."""
    tmp = tmp_path_factory.mktemp("auth")
    keys_file = tmp / "keys.txt"
    keys_file.write_text(f"# comment line\n{FILE_KEY}\n")
    env = {
        "OPENLISTEN_API_KEY": f"{PLAIN_KEY},sha256:{_sha(HASHED_KEY)}",
        "OPENLISTEN_API_KEYS_FILE": str(keys_file),
        "OPENLISTEN_CORS_ORIGINS": f"{ORIGIN},http://other.example",
    }
    server = start_server(tmp, env=env, ready_timeout=90)
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (PLAIN_KEY, 200),
        (HASHED_KEY, 200),
        (FILE_KEY, 200),
        (f"sha256:{_sha(HASHED_KEY)}", 401),  # the stored digest is not itself a key
        ("wrong-key", 401),
        ("comment line", 401),
        (None, 401),
    ],
)
def test_api_keys_from_env_hash_and_file(auth_server: Server, key: str | None, status: int) -> None:
    headers = {"Authorization": f"Token {key}"} if key else {}
    reply = httpx.get(f"{auth_server.url}/v1/models", headers=headers, timeout=10)
    assert reply.status_code == status
    metrics = httpx.get(f"{auth_server.url}/metrics", headers=headers, timeout=10)
    assert metrics.status_code == status  # /metrics is guarded like the API
    if status == 200:
        assert "openlisten_requests_total" in metrics.text


def test_health_needs_no_key(auth_server: Server) -> None:
    assert httpx.get(f"{auth_server.url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{auth_server.url}/readyz", timeout=10).status_code == 200


def test_cors_preflight_and_exposed_headers(auth_server: Server) -> None:
    preflight = httpx.options(
        f"{auth_server.url}/v1/listen",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
        timeout=10,
    )
    assert preflight.status_code == 200  # answered before auth: preflights carry no key
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    refused = httpx.options(
        f"{auth_server.url}/v1/listen",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers

    # A real cross-origin request: the browser may read the error and the request id.
    reply = httpx.post(
        f"{auth_server.url}/v1/listen",
        headers={"Origin": ORIGIN, "Authorization": "Token wrong"},
        content=b"x",
        timeout=10,
    )
    assert reply.status_code == 401
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    exposed = reply.headers["access-control-expose-headers"].lower()
    assert "dg-request-id" in exposed and "dg-error" in exposed
