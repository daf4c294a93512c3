"""Subtitle cues: the line, duration, pause and speaker rules, as pure functions."""

from __future__ import annotations

from server.subtitles import Cue, CueRules, TimedWord, cues, layout, srt, vtt


def split(text: str) -> list[str]:
    return text.split()


def words_at(text: str, start: float = 0.0, step: float = 0.3, speaker=None) -> list[TimedWord]:
    return [
        TimedWord(w, start + i * step, start + i * step + step * 0.8, speaker)
        for i, w in enumerate(text.split())
    ]


def test_long_monologue_is_cut_into_short_two_line_cues():
    # 75 words over 21.5 s used to make one cue.
    text = " ".join(["word"] * 30 + ["sentence."] + ["again"] * 44)
    out = cues(words_at(text, step=21.5 / 75))
    assert len(out) >= 4
    for cue in out:
        assert len(cue.lines) <= 2 and all(len(line) <= 42 for line in cue.lines)
        assert cue.end - cue.start <= 7.0
    assert " ".join(c.text for c in out) == text


def test_cut_at_pause_speaker_change_and_sentence_end():
    first = words_at("Hello there.", 0.0)
    second = words_at("How are you", 3.0)  # a 2.5 s pause
    assert [c.text for c in cues(first + second)] == ["Hello there.", "How are you"]
    a = words_at("yes I agree", 0.0, speaker=0)
    b = words_at("well I do not", 0.9, speaker=1)
    out = cues(a + b)
    assert [(c.text, c.speaker) for c in out] == [("yes I agree", 0), ("well I do not", 1)]
    long_sentence = words_at("This sentence is long enough to stand alone. And this one follows")
    assert cues(long_sentence)[0].text == "This sentence is long enough to stand alone."


def test_cues_never_overlap_and_keep_word_times():
    ws = [TimedWord("a", 0.0, 1.2), TimedWord("b", 1.0, 1.5)]
    out = cues(ws, CueRules(max_line_chars=1, max_lines=1))
    assert out[0].end <= out[1].start and out[0].start == 0.0 and out[1].end == 1.5


def test_layout_balances_two_lines_and_prefers_punctuation():
    lines = layout(split("one two three four five six seven eight nine ten eleven twelve"))
    assert len(lines) == 2 and all(len(line) <= 42 for line in lines)
    assert abs(len(lines[0]) - len(lines[1])) <= 8
    assert layout(split("short one")) == ("short one",)
    punctuated = layout(split("We came here early, and then we stayed on until the evening"))
    assert punctuated[0].endswith(",")


def test_srt_and_vtt_renderings():
    items = [Cue(0.5, 2.25, ("Hello",)), Cue(3661.0, 3662.5, ("two", "lines"), speaker=1)]
    assert srt(items) == (
        "1\n00:00:00,500 --> 00:00:02,250\nHello\n\n2\n01:01:01,000 --> 01:01:02,500\ntwo\nlines\n"
    )
    assert vtt(items) == (
        "WEBVTT\n\n00:00:00.500 --> 00:00:02.250\nHello\n\n"
        "01:01:01.000 --> 01:01:02.500\n<v Speaker 1>two\nlines\n"
    )
    assert srt([]) == "" and vtt([]) == "WEBVTT\n"
