"""When a turn is over: the smart-turn score, the turn's text and the pause, in; a verdict out.

Pure and synchronous, so the Flux state machine calls it on every tick of a pause and the rule
is tested without a model or a socket. The model alone is not enough (on real speech it scores
>= 0.68 at most mid-turn pauses), so its score is shifted, on the logit scale, by what Whisper's
own text of the turn says (a trailing "to", "the", "and", "um" or comma means the speaker is not
done; a full stop, question or exclamation mark means they may be), and the bar relaxes as the
pause grows: a real turn end that the model doubts still ends a little later, long before the
timeout. The shifted probability is the `end_of_turn_confidence` Flux reports, so the client's
`eot_threshold` / `eager_eot_threshold` compare against exactly what it sees.

Who owns what: the caller (the turn state machine) measures `silence_s` on the audio clock from
the end of the turn's last speech, scores the turn's audio with `TurnModel` ONCE when the pause
reaches `SCORE_AFTER_S` (and again only when speech resumes and pauses anew: the model reads
trailing silence as finality; re-scoring as the pause grew ended 22 % of the bench's mid-turn
pauses against 18 % scored once, same rule, for a model call per tick), and calls `judge`
every `JUDGE_EVERY_S` of silence and whenever a newer transcript arrives. `judge` owns the
timeout: `eot_timeout_ms` of silence is always END with `timed_out=True` (the wire's
`trigger: "timeout"`), whatever the score.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

# Silence (s) after the last speech before the model is asked: the endpointer's speech pad has
# arrived by then, and smart-turn was trained on turns cut about this long after speech.
SCORE_AFTER_S = 0.2
# How often (s of audio) the state machine re-judges a pause: the rule is cheap, the model is
# not re-run (see above).
JUDGE_EVERY_S = 0.1

# Words after which an English sentence is not over: conjunctions, prepositions, articles,
# determiners, subject pronouns, fillers; only those that (almost) never end one ("I did it.",
# "Go on.", "I'd like that." do). Whisper punctuates a cut sentence ("a flight to.") as if
# finished, so the word wins over the full stop.
CONTINUATION_WORDS = frozenset(
    (
        *("a", "an", "the", "my", "your", "our", "their", "every"),
        *("and", "but", "or", "nor", "because", "although", "unless", "whereas"),
        *("if", "than", "to", "of", "for", "with", "from", "into", "onto", "at", "toward"),
        *("towards", "upon", "between", "among", "during", "via", "per"),
        *("i", "we", "they", "he", "she"),
        *("um", "uh", "er", "erm", "uhm"),
    )
)
_WORD = re.compile(r"[\w']+")
_TERMINAL = (".", "?", "!")
_DANGLING = (",", ";", ":", "-", "—", "–", "...", "…")


@dataclass(frozen=True)
class Rule:
    """How the score, the text and the pause combine: chosen by measurement in bench/turns.py
    (the grid's pick: fewest mid-turn pauses ended among rules whose end-of-turn latency stays
    within p50 400 ms, half of v1's endpointing=800, and p90 2 s). A parameter so the bench
    can compare rules, never a client setting."""

    bias: float = -3.0  # logit always added: the model alone must be very sure at once
    complete_shift: float = 2.0  # ... when the text ends in . ? ! after a word that can end one
    incomplete_shift: float = -4.0  # ... when it ends in a continuation word, comma or dash
    relax_per_s: float = 4.0  # ... per second of silence past SCORE_AFTER_S


RULE = Rule()


@dataclass(frozen=True)
class Thresholds:
    """The client's knobs, from the Flux query string or a `Configure` message."""

    eot_threshold: float = 0.7
    eager_eot_threshold: float | None = None  # None: no EagerEndOfTurn events
    eot_timeout_ms: int = 5000


class Verdict(enum.Enum):
    WAIT = "wait"  # keep listening; judge again as the silence grows
    EAGER = "eager"  # EagerEndOfTurn: the client may start its reply speculatively
    END = "end"  # EndOfTurn


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    confidence: float  # the `end_of_turn_confidence` Flux reports
    timed_out: bool = False  # END because `eot_timeout_ms` of silence passed (trigger=timeout)


class Cue(enum.Enum):
    COMPLETE = "complete"
    NEUTRAL = "neutral"
    INCOMPLETE = "incomplete"


def text_cue(transcript: str) -> Cue:
    """What the end of the turn's text says about whether the speaker is done."""
    text = transcript.strip()
    words = _WORD.findall(text.lower())
    if not words:
        return Cue.NEUTRAL
    if words[-1] in CONTINUATION_WORDS or text.endswith(_DANGLING):
        return Cue.INCOMPLETE
    if text.endswith(_TERMINAL):
        return Cue.COMPLETE
    return Cue.NEUTRAL


def confidence(score: float, silence_s: float, transcript: str, rule: Rule = RULE) -> float:
    """The model's probability, moved on the logit scale by the text and the pause."""
    p = min(max(score, 1e-6), 1 - 1e-6)
    z = math.log(p / (1 - p)) + rule.bias
    cue = text_cue(transcript)
    if cue is Cue.COMPLETE:
        z += rule.complete_shift
    elif cue is Cue.INCOMPLETE:
        z += rule.incomplete_shift
    z += rule.relax_per_s * max(0.0, silence_s - SCORE_AFTER_S)
    return 1.0 / (1.0 + math.exp(-z))


def judge(
    score: float, silence_s: float, transcript: str, thresholds: Thresholds, rule: Rule = RULE
) -> Judgement:
    """The verdict after `silence_s` of silence following the turn's last speech, given the
    model's `score` of the turn's audio and the turn's latest text."""
    c = confidence(score, silence_s, transcript, rule)
    if silence_s * 1000 >= thresholds.eot_timeout_ms:
        return Judgement(Verdict.END, c, timed_out=True)
    if silence_s < SCORE_AFTER_S:
        return Judgement(Verdict.WAIT, c)
    if c >= thresholds.eot_threshold:
        return Judgement(Verdict.END, c)
    eager = thresholds.eager_eot_threshold
    if eager is not None and c >= eager:
        return Judgement(Verdict.EAGER, c)
    return Judgement(Verdict.WAIT, c)
