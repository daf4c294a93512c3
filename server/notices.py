"""Warnings for the client (`metadata.warnings`): deduplicated and capped.

Anything may add one (parameter parsing, model fallback, a truncated upload); the list the
client sees never repeats a (parameter, type) pair and never grows past `MAX_NOTICES` entries,
so 7,000 unknown parameters cost one short list, not a 690 KB body.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_NOTICES = 20


@dataclass(frozen=True)
class Notice:
    parameter: str
    type: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"parameter": self.parameter, "type": self.type, "message": self.message}


@dataclass
class Notices:
    """An ordered, deduplicated, capped collection of `Notice`s; iterating yields what to send."""

    limit: int = MAX_NOTICES
    _items: list[Notice] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)
    dropped: int = 0

    def add(self, parameter: str, message: str, kind: str = "unsupported_parameter") -> None:
        key = (parameter[:64], kind)
        if key in self._seen:
            return
        self._seen.add(key)
        if len(self._items) >= self.limit:
            self.dropped += 1
            return
        self._items.append(Notice(parameter[:64], kind, message))

    def extend(self, other: Notices) -> None:
        for notice in other._items:
            self.add(notice.parameter, notice.message, notice.type)
        self.dropped += other.dropped

    def __iter__(self) -> Iterator[Notice]:
        yield from self._items
        if self.dropped:
            yield Notice("*", "warnings_truncated", f"{self.dropped} more warnings were left out")

    def __len__(self) -> int:
        return len(self._items) + (1 if self.dropped else 0)

    def as_dicts(self) -> list[dict[str, str]]:
        return [notice.as_dict() for notice in self]
