"""Deepgram's `search` over a transcript's tokens."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from server.deepgram.text.tokens import Token, bare, word_of

SEARCH_MIN_CONFIDENCE = 0.6
SEARCH_MAX_HITS = 20


def search(tokens: Sequence[Token], queries: Sequence[str]) -> list[dict[str, object]]:
    """Deepgram's `search` on the words: each query against every run of as many words,
    scored by string similarity (Deepgram matches sounds; a transcript is what we have)."""
    words = [word_of(t) for t in tokens]
    results = []
    for query in queries:
        target = " ".join(bare(w) for w in query.split())
        n = max(1, len(query.split()))
        hits = []
        for i in range(0, max(0, len(words) - n + 1)):
            text = " ".join(words[i : i + n])
            score = difflib.SequenceMatcher(None, target, text).ratio()
            if score >= SEARCH_MIN_CONFIDENCE:
                hits.append(
                    {
                        "confidence": round(score, 4),
                        "start": tokens[i].start,
                        "end": tokens[i + n - 1].end,
                        "snippet": text,
                    }
                )
        hits.sort(key=lambda h: (-h["confidence"], h["start"]))
        results.append({"query": query, "hits": hits[:SEARCH_MAX_HITS]})
    return results
