"""Batched Whisper decoding of ≤30 s windows on one CTranslate2 model.

Pure functions over a loaded `WhisperModel`: the scheduler stacks windows from many clients
into one call. Unlike faster-whisper's `BatchedInferencePipeline`, every item keeps its own
temperature fallback (re-generated only for the items that need it) and the word alignment
runs on the batch's shared encoder output, so batching changes speed, not text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import get_compression_ratio

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class DecodeOptions:
    """Everything that shapes one window's decode. Items batch together when `batch_key` matches."""

    language: str = "en"
    task: str = "transcribe"
    beam_size: int = 5
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    initial_prompt: str | None = None
    hotwords: str | None = None
    word_timestamps: bool = True

    @property
    def batch_key(self) -> tuple:
        return (self.language, self.task, self.beam_size, self.initial_prompt, self.hotwords)


@dataclass
class Word:
    text: str  # as Whisper wrote it, with its leading space and punctuation
    start: float
    end: float
    probability: float


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


@dataclass
class _Decoded:
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


def features_for(model: WhisperModel, window: np.ndarray) -> np.ndarray:
    """Log-mel features padded to the full 30 s frame, as the encoder expects."""
    return pad_or_trim(model.feature_extractor(window)[..., :-1])


def make_tokenizer(model: WhisperModel, options: DecodeOptions) -> Tokenizer:
    language = options.language if model.model.is_multilingual else "en"
    return Tokenizer(model.hf_tokenizer, model.model.is_multilingual, options.task, language)


def _generate(
    model: WhisperModel,
    encoder_output,
    prompt: list[int],
    tokenizer: Tokenizer,
    options: DecodeOptions,
    temperature: float,
) -> list[_Decoded]:
    count = encoder_output.shape[0]
    sampling = (
        {"beam_size": 1, "sampling_topk": 0, "sampling_temperature": temperature}
        if temperature > 0
        else {"beam_size": options.beam_size}
    )
    results = model.model.generate(
        encoder_output,
        [list(prompt) for _ in range(count)],
        max_length=model.max_length,
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=[-1],
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


def _needs_fallback(item: _Decoded, options: DecodeOptions) -> bool:
    if item.compression_ratio > options.compression_ratio_threshold:
        return True
    low_logprob = item.avg_logprob < options.log_prob_threshold
    silent = item.no_speech_prob > options.no_speech_threshold
    return low_logprob and not silent


def decode_batch(
    model: WhisperModel, windows: list[np.ndarray], options: DecodeOptions
) -> list[list[Segment]]:
    """Decode windows (each ≤30 s of 16 kHz audio) together; times are relative to each window."""
    if not windows:
        return []
    tokenizer = make_tokenizer(model, options)
    features = np.stack([features_for(model, w) for w in windows])
    encoder_output = model.encode(features)
    previous = (
        tokenizer.encode(" " + options.initial_prompt.strip()) if options.initial_prompt else []
    )
    prompt = model.get_prompt(tokenizer, previous, hotwords=options.hotwords)

    temperatures = list(options.temperatures) or [0.0]
    best = _generate(model, encoder_output, prompt, tokenizer, options, temperatures[0])
    pending = [i for i, item in enumerate(best) if _needs_fallback(item, options)]
    for temperature in temperatures[1:]:
        if not pending:
            break
        # Only the items that failed are re-run; re-encoding a few windows is cheaper than
        # copying a device-resident encoder output apart.
        sub_output = model.encode(features[pending])
        retry = _generate(model, sub_output, prompt, tokenizer, options, temperature)
        still = []
        for index, item in zip(pending, retry, strict=True):
            if _needs_fallback(item, options):
                if item.avg_logprob > best[index].avg_logprob and (
                    item.compression_ratio <= options.compression_ratio_threshold
                ):
                    best[index] = item
                still.append(index)
            else:
                best[index] = item
        pending = still

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
        subsegments, _, _ = model._split_segments_by_timestamps(
            tokenizer=tokenizer,
            tokens=item.tokens,
            time_offset=0.0,
            segment_size=size,
            segment_duration=duration,
            seek=0,
        )
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
        aligned = [i for i, segs in enumerate(segmented) if segs]
        if aligned:
            # Alignment needs the encoder output of exactly the items it aligns; re-encode
            # only in the rare batch where some windows turned out silent.
            output = (
                encoder_output if len(aligned) == len(windows) else model.encode(features[aligned])
            )
            model.add_word_timestamps(
                [segmented[i] for i in aligned],
                tokenizer,
                output,
                [sizes[i] for i in aligned],
                PREPEND_PUNCTUATIONS,
                APPEND_PUNCTUATIONS,
                0.0,
            )

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
                )
            )
        out.append(result)
    return out


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
