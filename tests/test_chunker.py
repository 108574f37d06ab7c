"""Phrase chunking of streamed LLM text: where phrases end, and that the cut does not depend on
how the text was split into deltas."""

from __future__ import annotations

import re

import pytest

from ringline.engine.chunker import PhraseChunker


def words(text: str) -> list[str]:
    """LLM-like deltas: each word with its leading space."""
    return re.findall(r"\s*\S+", text)


def stream(text: str, deltas: list[str] | None = None, **kwargs: int) -> list[str]:
    chunker = PhraseChunker(**kwargs)
    phrases = [p for d in (deltas if deltas is not None else words(text)) for p in chunker.feed(d)]
    if tail := chunker.flush():
        phrases.append(tail)
    return phrases


def at_once(text: str, **kwargs: int) -> list[str]:
    chunker = PhraseChunker(**kwargs)
    phrases = chunker.feed(text)
    if tail := chunker.flush():
        phrases.append(tail)
    return phrases


# -- sentence ends --------------------------------------------------------------------------------


def test_sentence_end_followed_by_space_ends_a_phrase() -> None:
    chunker = PhraseChunker()
    assert chunker.feed("Hello there. How are you? Fine! ") == ["Hello there.", "How are you?", "Fine!"]
    assert chunker.flush() is None


def test_sentence_end_waits_for_the_following_space() -> None:
    chunker = PhraseChunker()
    assert chunker.feed("Hello there.") == []
    assert chunker.feed(" How") == ["Hello there."]
    assert chunker.flush() == "How"


def test_decimal_point_is_not_a_sentence_end() -> None:
    assert at_once("It costs 3.50 dollars. Thanks") == ["It costs 3.50 dollars.", "Thanks"]


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ('He said "stop." Then left', 'He said "stop."'),
        ("(See the menu.) Then order", "(See the menu.)"),
        ("Wait... what", "Wait..."),
        ("Well\u2026 maybe", "Well\u2026"),
        ("Really?! Yes", "Really?!"),
        ("Done.\nNext", "Done."),
    ],
)
def test_sentence_end_variants(text: str, first: str) -> None:
    assert at_once(text)[0] == first


def test_sentence_end_cuts_even_a_short_phrase() -> None:
    assert at_once("Hi. Ok. Sure.") == ["Hi.", "Ok.", "Sure."]


# -- clause breaks --------------------------------------------------------------------------------


def test_first_phrase_cut_at_a_clause_break_after_first_min_chars() -> None:
    chunker = PhraseChunker(first_min_chars=12, min_chars=40)
    # "Sure," breaks at 4 < 12: kept; "Sure, I can do that," breaks at 19 >= 12: cut.
    assert chunker.feed("Sure, I can do that, ") == ["Sure, I can do that,"]


def test_clause_break_before_first_min_chars_is_not_a_cut() -> None:
    chunker = PhraseChunker(first_min_chars=12, min_chars=40)
    assert chunker.feed("Yes, sir, ") == []
    assert chunker.flush() == "Yes, sir,"


def test_later_phrases_need_min_chars_before_a_clause_break() -> None:
    chunker = PhraseChunker(first_min_chars=12, min_chars=40)
    assert chunker.feed("We open at nine. ") == ["We open at nine."]
    # Same 19-character clause as above: long enough for a first phrase, not for a later one.
    assert chunker.feed("Sure, I can do that, ") == []
    later = "and we close at eleven in the evening on weekdays, "
    assert chunker.feed(later) == ["Sure, I can do that, and we close at eleven in the evening on weekdays,"]


def test_clause_break_exactly_at_min_chars_cuts() -> None:
    chunker = PhraseChunker(first_min_chars=5, min_chars=40)
    assert chunker.feed("abcd, efg, ") == ["abcd, efg,"]  # break at 4: no; break at 9: yes
    chunker = PhraseChunker(first_min_chars=4, min_chars=40)
    assert chunker.feed("abcd, efg, ") == ["abcd,"]  # break at 4: yes; then "efg," is under 40
    assert chunker.flush() == "efg,"


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Let me check the schedule; one moment", "Let me check the schedule;"),
        ("Here is what I found: two tables", "Here is what I found:"),
        ("That table is taken \u2014 another one", "That table is taken \u2014"),
        ("That table is taken - another one", "That table is taken -"),
    ],
)
def test_clause_markers(text: str, first: str) -> None:
    assert at_once(text)[0] == first


def test_hyphen_inside_a_word_is_not_a_clause_break() -> None:
    assert at_once("A well-known twenty-four-hour place") == ["A well-known twenty-four-hour place"]


# -- max_chars ------------------------------------------------------------------------------------


def test_long_run_without_punctuation_is_cut_at_a_space_before_max_chars() -> None:
    text = " ".join(f"word{i:02d}" for i in range(30))  # 6-character words
    phrases = stream(text, max_chars=40)
    assert all(len(p) <= 40 for p in phrases)
    assert " ".join(phrases) == text  # cut only between words
    assert len(phrases) > 4


def test_max_chars_cut_keeps_the_most_that_fits() -> None:
    chunker = PhraseChunker(max_chars=20)
    assert chunker.feed("aaaa bbbb cccc dddd eeee") == ["aaaa bbbb cccc dddd"]
    assert chunker.flush() == "eeee"


def test_word_longer_than_max_chars_is_cut_at_max_chars() -> None:
    chunker = PhraseChunker(max_chars=10)
    assert chunker.feed("x" * 25) == ["x" * 10, "x" * 10]
    assert chunker.flush() == "x" * 5


def test_text_of_exactly_max_chars_is_not_cut() -> None:
    chunker = PhraseChunker(max_chars=10)
    assert chunker.feed("aaaa bbbbb") == []
    assert chunker.flush() == "aaaa bbbbb"


def test_long_sentence_fed_at_once_respects_max_chars() -> None:
    sentence = " ".join(["word"] * 60) + ". "  # 300 characters, one sentence
    phrases = at_once(sentence)
    assert all(len(p) <= 220 for p in phrases), [len(p) for p in phrases]


# -- flush ----------------------------------------------------------------------------------------


def test_flush_returns_the_rest_stripped_and_resets() -> None:
    chunker = PhraseChunker()
    chunker.feed("  see you")
    assert chunker.flush() == "see you"
    assert chunker.flush() is None
    assert chunker.feed("Bye. ") == ["Bye."]


@pytest.mark.parametrize("text", ["", " ", "\n\t "])
def test_flush_of_nothing_is_none(text: str) -> None:
    chunker = PhraseChunker()
    assert chunker.feed(text) == []
    assert chunker.flush() is None


def test_flush_counts_as_the_first_phrase() -> None:
    chunker = PhraseChunker(first_min_chars=12, min_chars=40)
    chunker.feed("Okay")
    assert chunker.flush() == "Okay"
    assert chunker.feed("Sure, I can do that, ") == []  # no longer the first phrase


# -- streaming -------------------------------------------------------------------------------------

TEXTS = [
    "Sure! I can book a table for two at seven. Would you like a window seat?",
    "Let me check the schedule; we open at nine, and we close at eleven in the evening on weekdays.",
    "One moment... I found it: the Friday slot is free - shall I take it?",
    " ".join(["blah"] * 80),
    "Okay, okay, okay, okay, okay, okay, okay, okay, okay, okay, okay, okay.",
    "Well, I think that you are right about this, really. Yes, indeed it is.",
    "We have three options, the garden room, the terrace, or the bar. Which one do you prefer?",
]


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_word_by_word_gives_the_same_phrases_as_all_at_once(text: str) -> None:
    assert stream(text) == at_once(text)


@pytest.mark.parametrize("text", TEXTS)
def test_streaming_character_by_character_gives_the_same_phrases_as_word_by_word(text: str) -> None:
    assert stream(text, list(text)) == stream(text)


@pytest.mark.parametrize("text", TEXTS)
def test_phrases_keep_every_word_in_order(text: str) -> None:
    assert " ".join(stream(text)).split() == text.split()
    assert " ".join(at_once(text)).split() == text.split()


@pytest.mark.parametrize(
    "deltas",
    [
        [". ", ". ", "... ", "  "],
        [",", " ", ",", " ", ";", " "],
        ["Hi", ".", " ", " ", ".", " "],
        [" - ", " - ", "\u2014 "],
        ["", "", " "],
    ],
)
def test_no_empty_or_padded_phrases(deltas: list[str]) -> None:
    chunker = PhraseChunker(first_min_chars=0, min_chars=0)
    phrases = [p for d in deltas for p in chunker.feed(d)]
    if tail := chunker.flush():
        phrases.append(tail)
    assert all(p and p == p.strip() for p in phrases)
