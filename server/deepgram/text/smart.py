"""`smart_format`: phone numbers, spoken currency and percentages, addresses said aloud, in
their written forms; and Whisper's slips in writing times and years."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from server.deepgram.text.numbers import NUMBER_RE
from server.deepgram.text.tokens import Token, merge, split_edges

_DIGITS_ONLY = re.compile(r"^\d+$")


def _digit_run(tokens: Sequence[Token], i: int) -> int:
    """End of the run of bare-digit tokens starting at i (no sentence marks inside)."""
    j = i
    while j < len(tokens) and not tokens[j].atomic and _DIGITS_ONLY.match(tokens[j].text):
        j += 1
    if j < len(tokens) and j > i and not tokens[j].atomic:
        lead, core, _ = split_edges(tokens[j].text)
        if not lead and _DIGITS_ONLY.match(core):
            j += 1  # the last digits of the run carry the sentence's punctuation
    return j


def _phone(digits: str) -> str | None:
    if len(digits) == 10:
        return f"{digits[:3]}-{digits[3:6]}-{digits[6:]}"
    if len(digits) == 11 and digits.startswith("1"):
        return f"1-{digits[1:4]}-{digits[4:7]}-{digits[7:]}"
    if len(digits) == 7:
        return f"{digits[:3]}-{digits[3:]}"
    return None


_PHONE_WRITTEN = re.compile(r"^\(?\d{3}\)?[-. ]?\d{3}[-.,]?\d[\d,]{3,4}$|^\d{3}-\d[\d,]{3,4}$")
_SPELLED_DIGITS = re.compile(r"^\d(?:-\d)+$")
_DOTTED_TIME = re.compile(r"^([01]?\d|2[0-3])\.([0-5]\d)$")
_TIME_CONTEXT = {"at", "by", "until", "till", "from", "before", "after", "around"}
_MERIDIEM = {"am", "pm", "a.m", "p.m", "a.m.", "p.m."}


def _spelled_digits(tokens: Sequence[Token]) -> list[Token]:
    """Whisper writes digits said one by one as "4-1-1-1": as a written value, "4111"."""
    out = []
    for token in tokens:
        lead, core, trail = split_edges(token.text)
        if not token.atomic and _SPELLED_DIGITS.match(core):
            token = replace(token, text=lead + core.replace("-", "") + trail)
        out.append(token)
    return out


_SPLIT_YEAR = re.compile(r"^(19|20)00-(\d\d)$")


def dotted_times(tokens: Sequence[Token]) -> list[Token]:
    """Whisper's slips in writing what was said: a time after "at" as "10.30" ("10:30"), and
    "twenty twenty seven" as "2000-27" ("2027")."""
    out = []
    for i, token in enumerate(tokens):
        lead, core, trail = split_edges(token.text)
        if not token.atomic and (m := _SPLIT_YEAR.match(core)):
            token = replace(token, text=f"{lead}{m[1]}{m[2]}{trail}")
        elif not token.atomic and (m := _DOTTED_TIME.match(core)):
            before = tokens[i - 1].bare if i else ""
            after = tokens[i + 1].bare if i + 1 < len(tokens) else ""
            if before in _TIME_CONTEXT or after in _MERIDIEM:
                token = replace(token, text=f"{lead}{m[1]}:{m[2]}{trail}")
        out.append(token)
    return out


TOP_LEVEL_DOMAINS = {
    "com", "org", "net", "edu", "gov", "io", "co", "ai", "app", "dev", "info", "biz", "us",
    "uk", "de", "fr", "es", "it", "nl", "ca", "au", "in", "jp",
}  # fmt: skip


_NOT_ADDRESS = {"the", "a", "an", "my", "your", "our", "their", "his", "her", "this", "that",
                "me", "you", "him", "us", "them", "it", "i", "we", "they"}  # fmt: skip


def _spoken_address(tokens: Sequence[Token], i: int) -> tuple[int, str] | None:
    """ "john at example dot com" / "www dot example dot com" from position i: (end, written),
    or None. Only a run that ends on a known top-level domain counts."""
    parts: list[str] = []
    j = i
    at = False
    while j < len(tokens) and not tokens[j].atomic:
        word = tokens[j].bare
        if not re.fullmatch(r"[a-z0-9-]+", word):
            break
        parts.append(word)
        j += 1
        if j < len(tokens) and not split_edges(tokens[j - 1].text)[2]:
            joiner = tokens[j].bare
            if joiner == "dot" or (joiner == "at" and not at and len(parts) == 1):
                at = at or joiner == "at"
                parts.append("." if joiner == "dot" else "@")
                j += 1
                continue
        break
    if parts and parts[-1] in {".", "@"}:
        parts, j = parts[:-1], j - 1
    written = "".join(parts)
    if "." not in written or written.rsplit(".", 1)[1] not in TOP_LEVEL_DOMAINS:
        return None
    if any(p in _NOT_ADDRESS for p in parts[:-1]):
        return None  # "meet me at the dot com party" is speech, not an address
    return j, written


def smart(tokens: Sequence[Token]) -> list[Token]:
    """Written forms for values said in parts: phone numbers, "25 dollars and 50 cents",
    "50 percent", emails and web addresses said aloud."""
    tokens = _spelled_digits(tokens)
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        lead, core, trail = split_edges(token.text)
        address = _spoken_address(tokens, i)
        if address is not None:
            end, written = address
            trail = split_edges(tokens[end - 1].text)[2]
            out.append(merge(tokens[i:end], lead + written + trail))
            i = end
            continue
        if not token.atomic and _PHONE_WRITTEN.match(core) and "-" in core:
            phone = _phone(re.sub(r"\D", "", core))
            if phone:  # Whisper's "555-123-4,567"
                out.append(replace(token, text=lead + phone + trail))
                i += 1
                continue
        j = _digit_run(tokens, i)
        if j - i >= 2:
            run = tokens[i:j]
            trail = split_edges(run[-1].text)[2]
            groups = [split_edges(t.text)[1] for t in run]
            digits = "".join(groups)
            phone = _phone(digits)
            if phone and all(len(g) <= 4 for g in groups):
                out.append(merge(run, phone + trail))
            elif all(len(g) == 1 for g in groups) and len(groups) >= 4:
                out.append(merge(run, digits + trail))  # digits dictated one by one
            else:
                out.extend(run)
            i = j
            continue
        nxt = tokens[i + 1].bare if i + 1 < len(tokens) else ""
        lead, core, trail = split_edges(token.text)
        if (
            not token.atomic
            and NUMBER_RE.match(core)
            and not trail
            and nxt in {"dollars", "dollar", "bucks"}
        ):
            amount, used = f"${core}", 2
            after = [t.bare for t in tokens[i + 2 : i + 5]]
            if (
                len(after) == 3
                and after[0] == "and"
                and re.fullmatch(r"\d{1,2}", after[1])
                and after[2] in {"cents", "cent"}
            ):
                amount, used = f"${core}.{after[1].zfill(2)}", 5
            end_trail = split_edges(tokens[i + used - 1].text)[2]
            out.append(merge(tokens[i : i + used], lead + amount + end_trail))
            i += used
            continue
        if not token.atomic and NUMBER_RE.match(core) and not trail and nxt == "percent":
            end_trail = split_edges(tokens[i + 1].text)[2]
            out.append(merge(tokens[i : i + 2], lead + core + "%" + end_trail))
            i += 2
            continue
        out.append(token)
        i += 1
    return out
