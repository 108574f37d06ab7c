"""Cut a stream of LLM text into speakable phrases as early as is natural.

A phrase ends at a sentence end followed by a space; a clause break (comma, semicolon, colon,
dash) also ends one once the phrase is long enough to sound natural on its own; a phrase that
grows past ``max_chars`` is cut at the last space. The first phrase of a reply may be cut at a
shorter length than later ones: it decides how soon the caller hears anything.
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"[.!?\u2026]+[\"')\]]*\s")
_CLAUSE = re.compile(r"[,;:]\s|\u2014\s?| - ")


class PhraseChunker:
    def __init__(self, first_min_chars: int = 12, min_chars: int = 40, max_chars: int = 220) -> None:
        self._first_min = first_min_chars
        self._min = min_chars
        self._max = max_chars
        self._buf = ""
        self._emitted = 0

    def feed(self, text: str) -> list[str]:
        self._buf += text
        phrases: list[str] = []
        while (cut := self._cut()) is not None:
            phrase, self._buf = self._buf[:cut].strip(), self._buf[cut:].lstrip()
            if phrase:
                phrases.append(phrase)
                self._emitted += 1
        return phrases

    def flush(self) -> str | None:
        phrase, self._buf = self._buf.strip(), ""
        if phrase:
            self._emitted += 1
            return phrase
        return None

    def _cut(self) -> int | None:
        """Where the next phrase ends: the earliest of the rules that applies (so that text fed
        token by token is cut exactly as the same text fed at once)."""
        buf = self._buf
        cuts = []
        if m := _SENTENCE.search(buf):
            cuts.append(m.end())
        min_chars = self._first_min if self._emitted == 0 else self._min
        if m := next((m for m in _CLAUSE.finditer(buf) if m.start() >= min_chars), None):
            cuts.append(m.end())
        if len(buf) > self._max:
            space = buf.rfind(" ", 0, self._max)
            cuts.append(space + 1 if space > 0 else self._max)
        return min(cuts) if cuts else None
