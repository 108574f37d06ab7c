"""How long a silence ends the caller's turn, given how their transcript ends."""

from __future__ import annotations

from ringline.config.settings import TurnConfig

_SENTENCE_END = (".", "?", "!")
_TRAILING = (",", "...", "\u2026", "-")


def required_silence(text: str, config: TurnConfig) -> float:
    """Seconds of silence after which a turn with this transcript is over.

    A finished sentence ends sooner; a trailing conjunction, filler or comma waits longer;
    anything else (including no punctuation at all) takes the plain ``silence_ms``.
    """
    text = text.rstrip()
    if not text:
        return config.silence_ms / 1000
    last_word = text.rsplit(None, 1)[-1].strip(".,?!;:\u2026-\"'").lower()
    if text.endswith(_TRAILING) or last_word in config.continuation_words:
        return config.continuation_silence_ms / 1000
    if text.endswith(_SENTENCE_END):
        return config.sentence_end_silence_ms / 1000
    return config.silence_ms / 1000
