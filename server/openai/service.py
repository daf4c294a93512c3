"""An OpenAI audio request through the shared pipeline (decode, VAD, engine), to a `Result`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import BinaryIO

from server.engine import Engine, Segment
from server.errors import InvalidParameter
from server.language import choose_language
from server.openai.params import AudioParams
from server.openai.response import Result
from server.prerecorded import TranscribeRequest
from server.prerecorded import transcribe as run_pipeline
from server.service import account, decode_input


async def choose_model(engine: Engine, params: AudioParams) -> str:
    """The served model for this request. OpenAI names (`whisper-1`) map to the default; a
    translation or a non-English `language` needs a multilingual model, so an English-only
    choice moves to one that is served or installed (`base`), or the request is refused."""
    name = engine.resolve_model(params.model).name
    needs_multilingual = params.task == "translate" or params.language not in (None, "en")
    if not needs_multilingual or (await engine.model(name)).multilingual:
        return name
    served = [n for n in sorted(engine.pool.served) if engine.pool.get(n).multilingual]  # type: ignore[union-attr]
    catalog = engine.catalog
    installed = [
        n
        for n, entry in catalog.entries.items()
        if entry.get("languages") == "multilingual" and catalog.installed(n)
    ]
    if served or installed:
        return [*served, *installed][0]
    what = "translation" if params.task == "translate" else f"language '{params.language}'"
    raise InvalidParameter(
        f"{what} needs a multilingual model and none is installed (pip install 'openlisten[base]')",
        param="model",
    )


async def transcribe(
    engine: Engine,
    source: bytes | BinaryIO,
    params: AudioParams,
    on_segments: Callable[[list[Segment]], None] | None = None,
) -> Result:
    started = time.monotonic()
    model = await choose_model(engine, params)
    audio = await decode_input(engine, source)
    loaded = await engine.model(model)
    # OpenAI detects unless told: no `language` means detect.
    language = choose_language(
        params.language,
        params.language is None,
        model=model,
        multilingual=loaded.multilingual,
    )
    request = TranscribeRequest(
        model=model,
        language=language,
        keyterms=params.keywords,
        task=params.task,
        prompt=params.prompt,
        temperatures=params.temperatures,
        diarize=params.diarize,
    )
    callback = None
    if on_segments is not None:
        hear = on_segments

        def callback(_channel: int, segments: list[Segment]) -> None:
            hear(segments)

    (channel,) = (await run_pipeline(engine, audio, request, callback)).channels
    account("openai", model, audio, started)
    return Result(params.task, channel.language, audio.duration, channel.segments)
