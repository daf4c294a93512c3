"""Reading SRT/WebVTT back and checking the subtitle rules, for the API and CLI tests."""

from __future__ import annotations

import re

CUE_TIME = re.compile(r"^(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)$")


def parse_cues(text: str) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of each SRT or WebVTT cue."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line != "WEBVTT"]
        if lines and lines[0].isdigit():
            lines = lines[1:]
        if not lines:
            continue
        match = CUE_TIME.match(lines[0])
        assert match, block
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, match.groups())
        out.append(
            (
                h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                h2 * 3600 + m2 * 60 + s2 + ms2 / 1000,
                lines[1:],
            )
        )
    return out


def check_cue_rules(cues: list[tuple[float, float, list[str]]]) -> None:
    previous_end = 0.0
    for start, end, lines in cues:
        assert 1 <= len(lines) <= 2, lines
        for line in lines:
            assert len(line) <= 42 or " " not in line, line
        assert end - start <= 7.0 + 1e-6, (start, end, lines)
        assert start >= previous_end - 1e-6 and end >= start
        previous_end = end
