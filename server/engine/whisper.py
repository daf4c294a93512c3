"""Batched Whisper decoding of ≤30 s windows on one CTranslate2 model.

Pure functions over a loaded `WhisperModel`: the scheduler stacks windows from many clients
into one call. Unlike faster-whisper's `BatchedInferencePipeline`, every item keeps its own
fallback (re-generated only for the items that need it), and word timings are
computed per item from that item's encoder output with no state carried between items, so a
window's result equals decoding it alone (tests/test_engine_batching.py): batching changes
speed, not text. Nothing here mutates the shared model, so workers may call it concurrently.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import ctranslate2
import numpy as np
from threadpoolctl import threadpool_limits

from server.engine.fw import (
    Tokenizer,
    WhisperModel,
    add_word_timestamps,
    get_compression_ratio,
    pad_or_trim,
    split_segments_by_timestamps,
)

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class DecodeOptions:
    """Everything that shapes one window's decode. Items batch together when `batch_key` matches."""

    language: str = "en"
    task: str = "transcribe"
    beam_size: int = 5
    # The first decode's temperature (0: beam search), then sampling retries at the others.
    # Sampling draws from CTranslate2's per-thread random generator, which no request can
    # seed, so a sampled retry gives the same audio different words from one request to the
    # next: only a client that asks for a temperature (OpenAI's `temperature`) gets them.
    temperatures: tuple[float, ...] = (0.0,)
    # A first decode that fails the checks below is retried once, deterministically, by beam
    # search with no repeated n-gram of this many tokens (what the checks mostly catch is a
    # decode stuck in a loop); 0: no such retry.
    repair_ngram: int = 5
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    initial_prompt: str | None = None
    hotwords: str | None = None
    # Token ids Whisper may never emit (Deepgram's `keywords=word:-5`); see `suppress_ids`.
    suppress_tokens: tuple[int, ...] = ()
    word_timestamps: bool = True
    # One segment per window, words from alignment (as BatchedInferencePipeline does). With
    # timestamp tokens Whisper often ends a full window on `<|t|><|t|>` and leaves the last
    # words for a re-decode from that seek; a window decoded once would lose them.
    without_timestamps: bool = False

    @property
    def batch_key(self) -> tuple:
        return (
            self.language,
            self.task,
            self.beam_size,
            self.temperatures,
            self.repair_ngram,
            self.initial_prompt,
            self.hotwords,
            self.suppress_tokens,
            self.without_timestamps,
        )


@dataclass
class Word:
    text: str  # as Whisper wrote it, with its leading space and punctuation
    start: float
    end: float
    probability: float
    speaker: int | None = None  # set by diarization
    speaker_confidence: float | None = None


@dataclass
class Segment:
    start: float
    end: float
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    tokens: int
    words: list[Word] = field(default_factory=list)
    # Token ids and compression ratio of the decode (OpenAI's verbose_json reports both).
    token_ids: tuple[int, ...] = ()
    compression_ratio: float = 0.0


@dataclass
class _Decoded:
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


# Each model's feature extractor with its mel filters in float64 (see `features_for`).
_EXTRACTORS: weakref.WeakKeyDictionary[object, Callable[[np.ndarray], np.ndarray]] = (
    weakref.WeakKeyDictionary()
)


def _extractor(model: WhisperModel) -> Callable[[np.ndarray], np.ndarray]:
    extractor = _EXTRACTORS.get(model.feature_extractor)
    if extractor is None:
        extractor = copy.copy(model.feature_extractor)
        extractor.mel_filters = extractor.mel_filters.astype(np.float64)
        _EXTRACTORS[model.feature_extractor] = extractor
    return extractor


def one_blas_thread() -> None:
    """Every BLAS product in this process on one thread, from now on.

    A BLAS library splits a product over as many threads as the process may use cores (or as
    OMP_NUM_THREADS / OPENBLAS_NUM_THREADS say), and how it splits decides the order of the
    sums: the mel features' last bits, and now and then a word, followed `taskset`. One thread
    gives the same bits on any machine whatever its cores. Process-wide, not around each call:
    the limit is global to the library, so a scoped limit on one worker thread would be undone
    by another's leaving. Nothing else here leans on BLAS threads (the encoder is
    CTranslate2's, VAD and the speaker model onnxruntime's); the engine's workers already run
    decodes side by side, so a threaded product only oversubscribed the cores."""
    threadpool_limits(1, user_api="blas")


def features_for(model: WhisperModel, window: np.ndarray) -> np.ndarray:
    """Log-mel features padded to the full 30 s frame, as the encoder expects.

    The mel filter product is the one step done by BLAS, and a float32 BLAS product rounds
    differently with the number of threads it splits over (which follows the cores a process
    may use): the last bits of the features, and then now and then a word, changed with the
    machine (tests/test_determinism.py). Done in float64 and rounded to float32 afterwards,
    the features are the same on any number of cores; one BLAS thread (`one_blas_thread`)
    makes them so by construction, and float64 keeps them close across CPU kernels too.
    """
    features = _extractor(model)(window)[..., :-1].astype(np.float32)
    return pad_or_trim(features)


def make_tokenizer(model: WhisperModel, options: DecodeOptions) -> Tokenizer:
    language = options.language if model.model.is_multilingual else "en"
    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, options.task, language)


class _Encoded:
    """The encoder output of one batch, and a way to take any subset of its rows.

    On the CPU the windows are encoded one at a time (bit-identical to a batched encode, and
    measured faster there: batching buys the CPU encoder nothing) into one numpy array, so any
    subset for fallback or alignment is a cheap slice. On GPUs the batch is encoded in one call
    (where batching pays) and stays where faster-whisper puts it (on the device, or on the host
    when several GPUs share the work, so any replica can read it); a subset is re-encoded, which
    is cheap there and rare (fallback retries, silent windows).
    """

    def __init__(self, model: WhisperModel, features: np.ndarray) -> None:
        self._model = model
        self._features = features
        self.on_cpu = model.model.device == "cpu"
        self._array: np.ndarray | None = None
        self._view: ctranslate2.StorageView | None = None
        if self.on_cpu:
            rows = [np.asarray(model.encode(features[i : i + 1])) for i in range(len(features))]
            self._array = np.ascontiguousarray(np.concatenate(rows))
        else:
            self._view = model.encode(features)

    def take(self, indices: list[int]) -> ctranslate2.StorageView:
        """Encoder output for these rows, in this order."""
        everyone = indices == list(range(len(self._features)))
        if self._array is not None:
            rows = self._array if everyone else self._array[indices]
            # The view shares the buffer and holds a reference to it (CTranslate2's data owner).
            return ctranslate2.StorageView.from_array(np.ascontiguousarray(rows))
        if everyone:
            assert self._view is not None
            return self._view
        return self._model.encode(self._features[indices])


def _generate(
    model: WhisperModel,
    encoder_output: ctranslate2.StorageView,
    prompt: list[int],
    tokenizer: Tokenizer,
    options: DecodeOptions,
    temperature: float,
    no_repeat_ngram_size: int = 0,
) -> list[_Decoded]:
    count = encoder_output.shape[0]
    sampling = (
        {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        if temperature > 0
        else {"beam_size": options.beam_size, "no_repeat_ngram_size": no_repeat_ngram_size}
    )
    results = model.model.generate(
        encoder_output,
        [list(prompt) for _ in range(count)],
        max_length=model.max_length,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=[-1, *options.suppress_tokens],
        max_initial_timestamp_index=50,
        **sampling,
    )
    decoded = []
    for result in results:
        tokens = result.sequences_ids[0]
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        text = tokenizer.decode(tokens).strip()
        decoded.append(
            _Decoded(
                tokens, avg_logprob, result.no_speech_prob, temperature, get_compression_ratio(text)
            )
        )
    return decoded


def needs_fallback(
    avg_logprob: float, no_speech_prob: float, compression_ratio: float, options: DecodeOptions
) -> bool:
    """faster-whisper's rule: retry when too repetitive or unsure, unless the window is silence."""
    low_logprob = avg_logprob < options.log_prob_threshold
    if no_speech_prob > options.no_speech_threshold and low_logprob:
        return False
    return compression_ratio > options.compression_ratio_threshold or low_logprob


def _needs_fallback(item: _Decoded, options: DecodeOptions) -> bool:
    return needs_fallback(item.avg_logprob, item.no_speech_prob, item.compression_ratio, options)


def _pick(attempts: list[_Decoded], options: DecodeOptions) -> _Decoded:
    """When every attempt failed: the most likely attempt that is not repetitive, if any."""
    readable = [a for a in attempts if a.compression_ratio <= options.compression_ratio_threshold]
    best = max(readable or attempts, key=lambda a: a.avg_logprob)
    return _Decoded(
        best.tokens,
        best.avg_logprob,
        best.no_speech_prob,
        attempts[-1].temperature,
        best.compression_ratio,
    )


def _decode_with_fallback(
    model: WhisperModel,
    encoded: _Encoded,
    count: int,
    prompt: list[int],
    tokenizer: Tokenizer,
    options: DecodeOptions,
) -> list[_Decoded]:
    """Per-item fallback: each retry re-runs only the items that still fail. The first
    retry is deterministic (beam search, repeated n-grams blocked); sampled ones follow only
    when `options.temperatures` asks for them."""
    temperatures = list(options.temperatures) or [0.0]
    everyone = list(range(count))
    first = _generate(model, encoded.take(everyone), prompt, tokenizer, options, temperatures[0])
    attempts: list[list[_Decoded]] = [[item] for item in first]
    best: list[_Decoded | None] = [None if _needs_fallback(d, options) else d for d in first]
    steps: list[tuple[float, int]] = [(t, 0) for t in temperatures[1:]]
    if options.repair_ngram and temperatures[0] == 0:
        steps.insert(0, (0.0, options.repair_ngram))
    for temperature, ngram in steps:
        pending = [i for i in everyone if best[i] is None]
        if not pending:
            break
        retry = _generate(
            model, encoded.take(pending), prompt, tokenizer, options, temperature, ngram
        )
        for index, item in zip(pending, retry, strict=True):
            attempts[index].append(item)
            if not _needs_fallback(item, options):
                best[index] = item
    return [b if b is not None else _pick(attempts[i], options) for i, b in enumerate(best)]


class _Alignments:
    """Stands in for the model inside `WhisperModel.add_word_timestamps` for one item.

    faster-whisper's word-timing heuristics carry `last_speech_timestamp` from one item of a
    batch into the next, which would let one client's window shift another's word times. Here
    the (batched) alignment is computed once, then the heuristics run per item from 0.0, exactly
    as a one-window decode does.
    """

    def __init__(self, model: WhisperModel, alignment: list[dict]) -> None:
        self.frames_per_second = model.frames_per_second
        self._alignment = alignment

    def find_alignment(self, *_args: object, **_kwargs: object) -> list[list[dict]]:
        return [self._alignment]


def _add_words(
    model: WhisperModel,
    encoded: _Encoded,
    segmented: list[list[dict]],
    sizes: list[int],
    tokenizer: Tokenizer,
) -> None:
    """Attach word timings to every non-empty item, in place."""
    aligned = [i for i, segs in enumerate(segmented) if segs]
    if not aligned:
        return
    text_tokens = [
        [t for seg in segmented[i] for t in seg["tokens"] if t < tokenizer.eot] for i in aligned
    ]
    if encoded.on_cpu:
        # One item per align call: measured faster on CPU than a padded batch.
        alignments = [
            model.find_alignment(tokenizer, [tokens], encoded.take([i]), [sizes[i]])[0]
            for i, tokens in zip(aligned, text_tokens, strict=True)
        ]
    else:
        alignments = model.find_alignment(
            tokenizer, text_tokens, encoded.take(aligned), [sizes[i] for i in aligned]
        )
    for index, alignment in zip(aligned, alignments, strict=True):
        add_word_timestamps(
            _Alignments(model, alignment),  # type: ignore[arg-type]
            [segmented[index]],
            tokenizer,
            None,
            [sizes[index]],
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
            0.0,
        )


def decode_batch(
    model: WhisperModel, windows: list[np.ndarray], options: DecodeOptions
) -> list[list[Segment]]:
    """Decode windows (each ≤30 s of 16 kHz audio) together; times are relative to each window.

    The result for each window equals decoding that window alone (tested): the batch shares
    the decoder passes (where batching pays on CPU) and nothing else.
    """
    if not windows:
        return []
    tokenizer = make_tokenizer(model, options)
    features = np.stack([features_for(model, w) for w in windows])
    encoded = _Encoded(model, features)
    previous = (
        tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
    )
    prompt = model.get_prompt(
        tokenizer,
        previous,
        without_timestamps=options.without_timestamps,
        hotwords=options.hotwords,
    )
    best = _decode_with_fallback(model, encoded, len(windows), prompt, tokenizer, options)

    segmented: list[list[dict]] = []
    sizes: list[int] = []
    for window, item in zip(windows, best, strict=True):
        duration = len(window) / SAMPLE_RATE
        size = int(np.ceil(duration) * model.frames_per_second)
        sizes.append(size)
        if item.no_speech_prob > options.no_speech_threshold and (
            item.avg_logprob < options.log_prob_threshold
        ):
            segmented.append([])  # Whisper's own silence rule: no text from non-speech
            continue
        subsegments = split_segments_by_timestamps(model, tokenizer, item.tokens, size, duration)
        segmented.append(
            [
                {
                    "tokens": s["tokens"],
                    "start": s["start"],
                    "end": min(s["end"], duration),
                    "seek": 0,
                }
                for s in subsegments
                if tokenizer.decode(s["tokens"]).strip()
            ]
        )

    if options.word_timestamps:
        _add_words(model, encoded, segmented, sizes, tokenizer)

    out: list[list[Segment]] = []
    for window, item, segs in zip(windows, best, segmented, strict=True):
        duration = len(window) / SAMPLE_RATE
        result = []
        for seg in segs:
            words = [
                Word(
                    w["word"],
                    float(min(w["start"], duration)),
                    float(min(w["end"], duration)),
                    float(w["probability"]),
                )
                for w in seg.get("words", [])
            ]
            result.append(
                Segment(
                    start=float(seg["start"]),
                    end=float(seg["end"]),
                    text=tokenizer.decode(seg["tokens"]),
                    avg_logprob=float(item.avg_logprob),
                    no_speech_prob=float(item.no_speech_prob),
                    temperature=item.temperature,
                    tokens=len(seg["tokens"]),
                    words=words,
                    token_ids=tuple(seg["tokens"]),
                    compression_ratio=float(item.compression_ratio),
                )
            )
        out.append(result)
    return out


def suppress_ids(model: WhisperModel, words: list[str]) -> tuple[tuple[int, ...], list[str]]:
    """The token ids that spell each word as one token (with and without a leading space, lower
    case and capitalised): suppressing them keeps Whisper from writing the word. Returns the ids
    and the words that no single token spells, which cannot be suppressed without suppressing
    every word that shares their first token."""
    tokenizer = model.hf_tokenizer
    ids: set[int] = set()
    unsupported = []
    for word in words:
        found = set()
        for form in {word, word.lower(), word.capitalize()}:
            for variant in (form, " " + form):
                encoded = tokenizer.encode(variant, add_special_tokens=False).ids
                if len(encoded) == 1:
                    found.add(encoded[0])
        if found:
            ids |= found
        else:
            unsupported.append(word)
    return tuple(sorted(ids)), unsupported


def detect_language(model: WhisperModel, window: np.ndarray) -> tuple[str, float]:
    """Most likely language of a window, with its probability; English-only models say 'en'."""
    if not model.model.is_multilingual:
        return "en", 1.0
    encoder_output = model.encode(features_for(model, window)[None])
    ranked = model.model.detect_language(encoder_output)[0]
    token, probability = ranked[0]
    return token[2:-2], float(probability)


def warm_up(model: WhisperModel) -> None:
    """One tiny decode so the first client doesn't pay for lazy allocations."""
    rng = np.random.default_rng(0)
    decode_batch(
        model,
        [rng.normal(0, 0.01, SAMPLE_RATE).astype(np.float32)],
        DecodeOptions(beam_size=1, temperatures=(0.0,)),
    )
