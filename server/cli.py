"""`openlisten serve | transcribe | models`."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from server.settings import Settings


def _serve(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from server.runner import serve

    return serve(Settings(**overrides))


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render(body: dict[str, Any], fmt: str) -> str:
    """Text renderings of a Deepgram body: plain transcript, SRT or WebVTT cues per utterance."""
    if fmt == "json":
        return json.dumps(body, indent=2, ensure_ascii=False) + "\n"
    channels = body["results"]["channels"]
    if fmt == "txt":
        return "\n".join(c["alternatives"][0]["transcript"] for c in channels) + "\n"
    cues = body["results"].get("utterances", [])
    sep = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for index, cue in enumerate(cues, 1):
        if fmt == "srt":
            lines.append(str(index))
        lines.append(f"{_timestamp(cue['start'], sep)} --> {_timestamp(cue['end'], sep)}")
        lines.extend([cue["transcript"], ""])
    return "\n".join(lines)


async def _transcribe_files(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from server.api.errors import ApiError, new_request_id
    from server.api.params import parse
    from server.engine import Engine, ModelUnavailable
    from server.service import transcribe_source

    missing = [path for path in args.files if not Path(path).is_file()]
    if missing:
        print(f"openlisten: error: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    engine = Engine(settings)
    try:
        await engine.start()
    except ModelUnavailable as exc:
        print(f"openlisten: error: {exc}", file=sys.stderr)
        return 2
    # The same parameters a client would send, through the same service as the REST route.
    query = [("punctuate", "true"), ("smart_format", "true"), ("utterances", "true")]
    if args.language:
        query.append(("language", args.language))
    if args.detect_language:
        query.append(("detect_language", "true"))
    failures = 0
    try:
        for path in tqdm(args.files, unit="file", disable=args.quiet, file=sys.stderr):
            data = Path(path).read_bytes()
            try:
                body = await transcribe_source(
                    engine, data, hashlib.sha256(data).hexdigest(), parse(query), new_request_id()
                )
            except ApiError as exc:
                print(f"{path}: {exc.err_msg}", file=sys.stderr)
                failures += 1
                continue
            text = render(body, args.format)
            if args.output:
                out = Path(args.output) / (Path(path).stem + f".{args.format}")
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
            else:
                sys.stdout.write(text)
    finally:
        engine.stop()
    return 1 if failures else 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openlisten", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (also OPENLISTEN_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the Deepgram-compatible API")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--model", help="default model: catalog name, CTranslate2 dir, or repo id")
    serve.add_argument("--preload", action="append", help="also load this model (repeatable)")
    serve.add_argument("--device", choices=["auto", "cpu", "cuda"])
    serve.add_argument("--compute-type")
    serve.add_argument("--cpu-threads", type=int)
    serve.add_argument("--workers", type=int)
    serve.add_argument("--batch-size", type=int)
    serve.add_argument("--batch-window-ms", type=float)
    serve.add_argument("--queue-max", type=int)
    serve.add_argument("--queue-max-wait-s", type=float)
    serve.add_argument("--api-key", action="append", help="accepted API key (repeatable)")
    serve.add_argument("--api-keys-file")
    serve.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--log-format", choices=["json", "text"])
    serve.set_defaults(run=_serve)

    tr = sub.add_parser("transcribe", help="transcribe local files offline")
    tr.add_argument("files", nargs="+")
    tr.add_argument("--model")
    tr.add_argument("--language")
    tr.add_argument("--detect-language", action="store_true")
    tr.add_argument("--format", choices=["json", "txt", "srt", "vtt"], default="json")
    tr.add_argument("--output", help="write one file per input into this directory")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"])
    tr.add_argument("--compute-type")
    tr.add_argument("--quiet", action="store_true")
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
