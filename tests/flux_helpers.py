"""Flux message logs: the ordering rules every `/v2/listen` stream must keep, as one checker."""

from __future__ import annotations

from typing import Any

EVENTS = {"StartOfTurn", "Update", "EagerEndOfTurn", "TurnResumed", "EndOfTurn"}
TRIGGERS = {"model", "timeout", "manual"}
TYPES = {"Connected", "TurnInfo", "Warning", "ConfigureSuccess", "ConfigureFailure", "Error"}


def check_order(messages: list[dict[str, Any]], closed_by_client: bool = True) -> list[dict]:
    """Assert Deepgram's Flux ordering over one stream's messages; returns its EndOfTurns.

    Connected first with sequence_id 0, every later message numbered one more; per turn
    StartOfTurn -> Update* -> [EagerEndOfTurn -> (TurnResumed | EndOfTurn)] -> EndOfTurn, turn
    indexes consecutive from 0; after an EagerEndOfTurn the transcript may only change after a
    TurnResumed (and EndOfTurn then carries the eager transcript); `trigger` on EndOfTurn
    only; words never null; windows on the stream clock and never backwards; an Error is last.
    """
    assert messages and messages[0]["type"] == "Connected", messages[:1]
    assert [m["sequence_id"] for m in messages] == list(range(len(messages)))
    ends: list[dict] = []
    turn, phase, eager = 0, "idle", None
    last_end = 0.0
    for i, m in enumerate(messages):
        assert m["type"] in TYPES, m
        if m["type"] == "Error":
            assert i == len(messages) - 1, "an Error is the stream's last message"
        if m["type"] != "TurnInfo":
            continue
        event = m["event"]
        assert event in EVENTS, m
        assert m["turn_index"] == turn, (m, turn)
        assert isinstance(m["words"], list) and isinstance(m["transcript"], str)
        for w in m["words"]:
            assert {"word", "confidence", "start", "end"} <= set(w) and w["start"] <= w["end"]
        assert 0.0 <= m["end_of_turn_confidence"] <= 1.0
        assert m["audio_window_start"] <= m["audio_window_end"], m
        assert m["audio_window_start"] >= last_end - 1e-6, (m, last_end)
        assert ("trigger" in m) == (event == "EndOfTurn"), m
        if event == "StartOfTurn":
            assert phase == "idle", (m, phase)
            phase = "open"
        else:
            assert phase != "idle", (m, "before StartOfTurn")
        if event == "EagerEndOfTurn":
            assert phase == "open", m
            phase, eager = "eager", m["transcript"]
        elif event == "TurnResumed":
            assert phase == "eager", m
            phase, eager = "open", None
        elif event == "Update" and phase == "eager":
            assert m["transcript"] == eager, "a changed transcript needs TurnResumed first"
        elif event == "EndOfTurn":
            assert m["trigger"] in TRIGGERS, m
            if phase == "eager":
                assert m["transcript"] == eager, "EndOfTurn after EagerEndOfTurn: same text"
            ends.append(m)
            turn, phase, eager = turn + 1, "idle", None
            last_end = m["audio_window_end"]
    return ends


def turn_words(messages: list[dict[str, Any]]) -> list[list[dict]]:
    """Each turn's final words: every EndOfTurn's, then the open turn's last Update's."""
    turns = [m["words"] for m in messages if m.get("event") == "EndOfTurn"]
    tail = [m for m in messages if m.get("type") == "TurnInfo"]
    if tail and tail[-1]["event"] != "EndOfTurn":
        turns.append(tail[-1]["words"])
    return turns


def assert_no_word_twice(turns: list[list[dict]]) -> None:
    """Words across turns run forward in time: none is reported by two turns."""
    last = -1.0
    for words in turns:
        for w in words:
            assert w["start"] >= last - 0.02, (w, last)
            last = max(last, w["end"])
