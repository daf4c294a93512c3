"""`openlisten serve | transcribe | models`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from server import subtitles
from server.settings import Settings
from server.subtitles import TimedWord, cues


def _serve(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from server.runner import serve

    return serve(Settings(**overrides))


def render(body: dict[str, Any], fmt: str) -> str:
    """Text renderings of a Deepgram body: the transcript, or SRT/WebVTT cues cut from the
    words by the subtitle rules (server/subtitles.py)."""
    if fmt == "json":
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    channels = body["results"]["channels"]
    if fmt == "txt":
        return "\n".join(c["alternatives"][0]["transcript"] for c in channels) + "\n"
    words = [
        TimedWord(w.get("punctuated_word") or w["word"], w["start"], w["end"], w.get("speaker"))
        for c in channels
        for w in c["alternatives"][0]["words"]
    ]
    words.sort(key=lambda w: w.start)
    items = cues(words)
    return subtitles.srt(items) if fmt == "srt" else subtitles.vtt(items)


@dataclass
class Input:
    """One thing to transcribe: a local file, an http(s) URL, or `-` for standard input."""

    spec: str
    stem: str

    @property
    def is_url(self) -> bool:
        return self.spec.startswith(("http://", "https://"))


def _inputs(specs: list[str]) -> list[Input]:
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        if spec == "-":
            stem = "stdin"
        elif spec.startswith(("http://", "https://")):
            stem = _url_stem(spec)
        else:
            stem = Path(spec).stem
        seen[stem] = seen.get(stem, 0) + 1
        out.append(Input(spec, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return out


def _url_stem(url: str) -> str:
    """The output name for a URL; a malformed one (`http://[::1`) is named too, so that its
    fetch can say what is wrong with it instead of a traceback ending the whole run."""
    try:
        parts = urlsplit(url)
        return Path(parts.path).stem or parts.hostname or "url"
    except ValueError:
        return "url"


async def _read(item: Input, settings: Settings) -> tuple[bytes | BinaryIO, str]:
    """The input's bytes and sha256; a URL is fetched under the server's URL limits."""
    from server.audio.fetch import fetch_url
    from server.outbound import AddressPolicy, Outbound

    if item.is_url:
        payload = await fetch_url(
            item.spec,
            # The operator's own machine asks, not a remote client: any address is fine.
            outbound=Outbound(AddressPolicy(allow_private=True)),
            timeout_s=settings.url_timeout_s,
            limit=settings.url_max_bytes,
        )
        return payload.file, payload.sha256
    data = sys.stdin.buffer.read() if item.spec == "-" else Path(item.spec).read_bytes()
    return data, hashlib.sha256(data).hexdigest()


def _query(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The parameters a client would send: the CLI goes through the REST route's service."""
    query = [("punctuate", "true"), ("smart_format", "true"), ("utterances", "true")]
    if args.language:
        query.append(("language", args.language))
    if args.detect_language:
        query.append(("detect_language", "true"))
    if args.diarize:
        query.append(("diarize", "true"))
    multilingual = args.detect_language or (args.language or "en").split("-")[0] != "en"
    if multilingual and not args.model:
        query.append(("model", "base"))  # the default tiny.en is English-only
    return query


async def _transcribe_files(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from server.api.errors import new_request_id
    from server.deepgram.params import parse
    from server.engine import Engine, ModelUnavailable
    from server.errors import ServiceError, Unavailable
    from server.service import transcribe_source

    items = _inputs(args.files)
    missing = [
        i.spec for i in items if i.spec != "-" and not i.is_url and not Path(i.spec).is_file()
    ]
    if missing:
        print(f"openlisten: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    if sum(i.spec == "-" for i in items) > 1:
        print("openlisten: error: '-' (stdin) may be given once", file=sys.stderr)
        return 2
    try:
        engine = Engine(settings)
        await engine.start()
    except ModelUnavailable as exc:
        print(f"openlisten: error: {exc}", file=sys.stderr)
        return 2
    query = _query(args)
    slots = asyncio.Semaphore(max(1, args.jobs))
    bar = tqdm(total=len(items), unit="file", disable=args.quiet, file=sys.stderr)

    async def one(item: Input) -> str | None:
        async with slots:
            try:
                source, sha256 = await _read(item, settings)
                for attempt in range(5):
                    try:
                        body = await transcribe_source(
                            engine, source, sha256, parse(query), new_request_id()
                        )
                        break
                    except Unavailable as exc:  # the engine is full: wait as a client would
                        if attempt == 4:
                            raise
                        if not isinstance(source, bytes):
                            source.seek(0)
                        await asyncio.sleep(exc.retry_after)
            except ServiceError as exc:
                bar.write(f"{item.spec}: {exc}", file=sys.stderr)
                return None
            finally:
                bar.update()
        for warning in body["metadata"].get("warnings", []):
            bar.write(f"{item.spec}: warning: {warning['message']}", file=sys.stderr)
        text = render(body, args.format)
        if args.output:
            out = Path(args.output) / f"{item.stem}.{args.format}"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        return text

    try:
        # All inputs go to the engine at once (bounded by --jobs): their windows share batches.
        results = await asyncio.gather(*(one(item) for item in items))
    finally:
        bar.close()
        engine.stop()
    if not args.output:
        sys.stdout.write("".join(text for text in results if text is not None))
    return 1 if any(text is None for text in results) else 0


def _transcribe(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from server import logs

    settings = Settings(**overrides)
    logs.configure("warning", "text")
    return asyncio.run(_transcribe_files(args, settings))


def _models(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from server.engine.catalog import Catalog

    settings = Settings(**overrides)
    catalog = Catalog.load(settings.models_dir)
    for name, entry in catalog.entries.items():
        state = "installed" if catalog.installed(name) else f"not installed ({entry['install']})"
        print(f"{name:10s} {state}")
    if args.prepare:
        for name in args.prepare:
            print(f"{name}: {catalog.materialize(name)}")
    return 0


# `serve` flags: each maps to the setting of the same name; its help, default and variable come
# from the settings model (server/settings_doc.py), so `--help` and docs/configuration.md agree.
SERVE_FLAGS: dict[str, Any] = {
    "--host": str,
    "--port": int,
    "--model": str,
    "--preload": str,
    "--device": ["auto", "cpu", "cuda"],
    "--compute-type": str,
    "--cpu-threads": int,
    "--workers": int,
    "--batch-size": int,
    "--batch-window-ms": float,
    "--queue-max": int,
    "--pack": ["auto", "interims", "all", "off"],
    "--queue-max-wait-s": float,
    "--api-key": str,
    "--api-keys-file": str,
    "--log-level": ["debug", "info", "warning", "error"],
    "--log-format": ["json", "text"],
}


def build_parser() -> argparse.ArgumentParser:
    from server.settings_doc import describe

    parser = argparse.ArgumentParser(prog="openlisten", description=__doc__)
    parser.add_argument("--config", help=describe("config"))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="serve the Deepgram- and OpenAI-compatible API",
        description="Serve /v1/listen (REST + WebSocket), /v1/audio/*, and the page at /. "
        "Flags win over OPENLISTEN_* variables, which win over the --config file.",
    )
    for flag, kind in SERVE_FLAGS.items():
        dest = flag.removeprefix("--").replace("-", "_")
        extra: dict[str, Any] = {"choices": kind} if isinstance(kind, list) else {"type": kind}
        if dest in {"preload", "api_key"}:
            extra["action"] = "append"
        serve.add_argument(flag, help=describe(dest), **extra)
    serve.set_defaults(run=_serve)

    tr = sub.add_parser(
        "transcribe",
        help="transcribe files, URLs or stdin offline",
        description="Transcribe through the server's own pipeline, in-process. Inputs run in "
        "parallel through one engine (their windows share batches).",
    )
    tr.add_argument("files", nargs="+", metavar="INPUT", help="audio file, http(s) URL, or -")
    tr.add_argument("--model", help="catalog name, CTranslate2 dir or repo id (default: tiny.en)")
    tr.add_argument("--language", help="spoken language (BCP-47, e.g. en, de, pt-BR)")
    tr.add_argument("--detect-language", action="store_true", help="detect the language")
    tr.add_argument("--diarize", action="store_true", help="label speakers (diarize=true)")
    tr.add_argument(
        "--format", choices=["json", "txt", "srt", "vtt"], default="json",
        help="output: Deepgram JSON, plain text, or subtitles (default: json)",
    )  # fmt: skip
    tr.add_argument("--output", help="write INPUT-stem.FORMAT files here instead of stdout")
    tr.add_argument("--jobs", type=int, default=4, help="inputs in flight at once (default: 4)")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    tr.add_argument("--compute-type", help="CTranslate2 compute type (default: int8 on CPU)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    tr.set_defaults(run=_transcribe)

    models = sub.add_parser("models", help="list catalog models; --prepare joins split weights")
    models.add_argument("--prepare", action="append", metavar="NAME")
    models.set_defaults(run=_models)
    return parser


_SETTING_FLAGS = {
    "host",
    "port",
    "model",
    "preload",
    "device",
    "compute_type",
    "cpu_threads",
    "workers",
    "batch_size",
    "batch_window_ms",
    "queue_max",
    "queue_max_wait_s",
    "pack",
    "api_key",
    "api_keys_file",
    "log_level",
    "log_format",
    "config",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key, value in vars(args).items()
        if key in _SETTING_FLAGS and value is not None
    }
    return args.run(args, overrides)


if __name__ == "__main__":
    sys.exit(main())
