"""A stream's settings: one frozen value, so `Configure` replaces it whole and every decode
sees one consistent set (never half an update). How results read (text shaping) is the
protocol adapter's business, not the stream's."""

from __future__ import annotations

from dataclasses import dataclass

from server.engine import DecodeOptions
from server.streaming.endpointer import EndpointerConfig


@dataclass(frozen=True)
class StreamConfig:
    model: str  # the engine's name for the served model
    interim_results: bool
    endpoint_ms: int  # silence that closes an utterance (after the floor)
    speech_final: bool  # False when the client disabled endpointing
    utterance_end_ms: int | None
    vad_events: bool
    vad_threshold: float
    interim_step_s: float  # new audio between interim decodes
    max_utterance_s: float  # speech without a pause this long is cut into finals
    final_options: DecodeOptions
    interim_options: DecodeOptions
    silence_final_s: float = 0.0  # silence this long gets an empty final (0: never)
    pause_every_frames: int = 0  # Flux: announce a growing pause again (see `Paused`)
    # Silence after which a pause's final is first needed: when Flux first judges the pause.
    # None: at the endpoint (`endpoint_ms`), as v1's `speech_final` needs it.
    decide_after_s: float | None = None

    def due_in_s(self, silence_s: float) -> float:
        """How long after a pause of `silence_s` its final is first needed (the scheduler's
        deadline for the final decoded speculatively at that pause starts then)."""
        after = self.endpoint_ms / 1000 if self.decide_after_s is None else self.decide_after_s
        return max(0.0, after - silence_s)

    @property
    def endpointer(self) -> EndpointerConfig:
        return EndpointerConfig(
            threshold=self.vad_threshold,
            endpoint_ms=self.endpoint_ms,
            speech_final=self.speech_final,
            max_utterance_s=self.max_utterance_s,
            silence_final_s=self.silence_final_s,
            pause_every_frames=self.pause_every_frames,
        )
