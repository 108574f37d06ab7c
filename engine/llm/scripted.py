r"""Scripted agent: a spoken dialog driven by configuration, with no model and no network.

Each caller turn is matched to an **intent** by word overlap with its example phrases. Words are
lowercased and stripped of punctuation, stop words ("a", "I'd", "please", ...) are dropped, and
each content word of an example earns 1 if the caller said it (or a word with the same stem,
"opening" ~ "open"), else its similarity to the closest word said if at least 0.8 (a small
recognition error, "tabel" ~ "table"), else 0. An example's score is its earned total over its
content words, and 0 unless one of them at least was heard as such (misheard words alone are
too weak: "think" ~ "thank"). The best example wins (ties: more words earned, then config
order). Below ``min_score`` the agent says ``fallback``.

An intent with **slots** asks each missing slot's ``question`` in order. A slot is filled by the
first match of its ``pattern`` (group 1 if it has one; case-insensitive) in the caller's words:
the slot just asked first, then any other missing one, each match taking its words away from the
next. So slots said up front are never asked for. An open-ended pattern (one that matches any
words, like the default ``.+``) fills its slot only when it is the one just asked. A turn that
answers nothing re-asks the question, unless it matches another intent: then that intent
replaces the unfinished one.

With every slot filled, an intent with a **tool** calls it with the slots as arguments; the next
round, once the result is in, speaks ``answer`` with ``{slot}`` and ``{result}`` filled in (a
result starting with ``error:`` is spoken as ``TOOL_FAILED``). A tool the agent does not have is
skipped with a warning, and sentences of ``answer`` naming a value that is missing are left out.
``end_call`` speaks the answer, then calls the built-in ``end_call`` tool in the same reply.

The dialog state is not kept here: every ``stream`` replays the caller's turns in the context to
find it (cheap: intent matches are memoised per text). A context that lost a message (a discarded
preemptive reply, a new instance) therefore still gets the right reply. Replies are instant:
word by word, yielding to the loop between words.

The agent's greeting is its ``first_message``. A restaurant line::

```toml
[agents.bistro]
name = "Ringline Bistro"
first_speaker = "agent"
first_message = "Thanks for calling Ringline Bistro, how can I help?"

[agents.bistro.llm]
provider = "scripted"
fallback = "Sorry, I can book a table or tell you our opening hours. Which would you like?"
min_score = 0.3

[[agents.bistro.llm.slots]]
name = "party_size"
question = "Sure. How many people is the table for?"
pattern = '''(?<!at )(?<!:)\b(\d+|one|two|three|four|five|six|seven|eight)\b(?! ?(?:[ap]\.?m|o'clock|:))'''

[[agents.bistro.llm.slots]]
name = "time"
question = "And for what time?"
pattern = '''\b((?:\d\d?(?::\d\d)?|one|two|three|four|five|six|seven|eight|nine|ten)(?: ?[ap]\.?m)?|noon)\b'''

[[agents.bistro.llm.intents]]
name = "book_table"
examples = ["I'd like to book a table", "can I make a reservation", "a table for two please"]
slots = ["party_size", "time"]
tool = "book_table"
answer = "You're booked for {party_size} at {time}. Your confirmation number is {result}. Anything else?"

[[agents.bistro.llm.intents]]
name = "opening_hours"
examples = ["what time do you open", "what are your opening hours", "are you open today"]
answer = "We're open from noon to ten every day, and the kitchen closes at nine thirty."

[[agents.bistro.llm.intents]]
name = "goodbye"
examples = ["goodbye", "bye", "that's all thank you", "no thanks bye"]
answer = "Thanks for calling Ringline Bistro. Goodbye!"
end_call = true
```
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from ringline.config.providers import Intent, ScriptedLlmConfig, Slot
from ringline.engine.audio.clock import Clock
from ringline.engine.errors import ConfigError
from ringline.engine.llm.base import Context, LlmEvent, Message, TextDelta, Tool, ToolCall

log = logging.getLogger(__name__)

END_CALL = "end_call"
TOOL_FAILED = "Sorry, I couldn't do that just now. Please try again in a moment."
"""Spoken instead of an intent's ``answer`` when its tool fails."""
FUZZY = 0.8
"""Similarity at which a word counts as a misrecognised example word."""

# fmt: off
STOP_WORDS = frozenset({
    "a", "an", "the", "i", "i'd", "i'm", "i'll", "i've", "me", "my", "we", "we'd", "we're", "we'll", "us", "our",
    "you", "you're", "your", "it", "it's", "is", "are", "am", "was", "be", "been", "do", "does", "did", "can",
    "could", "would", "will", "should", "may", "might", "to", "for", "of", "in", "on", "at", "by", "with", "and",
    "or", "but", "so", "just", "please", "like", "want", "wanna", "need", "um", "uh", "er", "oh", "hi", "hello",
    "hey", "there", "this", "that", "that's", "what", "what's", "when", "where", "how", "which", "who", "some",
    "any", "get", "have", "has",
})
# fmt: on
"""Words too common to tell intents apart."""
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_TOKEN = re.compile(r"\s*\S+")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_OPEN_PROBE = "any words at all"


def content_words(text: str) -> tuple[str, ...]:
    """The words that carry meaning: lowercase, no punctuation, no stop words (all the words
    when every one is a stop word)."""
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return tuple(w for w in words if w not in STOP_WORDS) or tuple(words)


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def _credit(word: str, heard: Collection[str]) -> float:
    """1 if ``word`` (or its stem) was heard, else its best similarity to a heard word if that
    is at least ``FUZZY``, else 0."""
    stem = _stem(word)
    if any(other == word or _stem(other) == stem for other in heard):
        return 1.0
    return max((_similarity(word, other) for other in heard), default=0.0)


@functools.lru_cache(maxsize=4096)
def _similarity(word: str, other: str) -> float:
    """How alike two different words are (of them or their stems), if at least ``FUZZY``; else 0."""
    best = 0.0
    for a, b in dict.fromkeys(((word, other), (_stem(word), _stem(other)))):
        if max(len(a), len(b)) < 4 or 2 * min(len(a), len(b)) < FUZZY * (len(a) + len(b)):
            continue  # too short to tell a typo from another word, or too different in length
        matcher = SequenceMatcher(None, a, b)
        if matcher.quick_ratio() >= FUZZY and (ratio := matcher.ratio()) >= FUZZY:
            best = max(best, ratio)
    return best


def score(example: Sequence[str], heard: Collection[str]) -> tuple[float, float]:
    """(share of the example's content words heard, words earned); nothing unless one word at
    least was heard as such, so that misheard words alone ("think" ~ "thank") match nothing."""
    credits = [_credit(word, heard) for word in example]
    if max(credits, default=0.0) < 1.0:
        return 0.0, 0.0
    return sum(credits) / len(example), sum(credits)


@dataclass(frozen=True, slots=True)
class _SlotRule:
    slot: Slot
    regex: re.Pattern[str]
    open: bool
    """Matches any words: only filled when just asked."""


@dataclass(frozen=True, slots=True)
class _Filling:
    """An intent waiting for the caller to give slot ``asking``."""

    intent: Intent
    values: Mapping[str, str]
    asking: str


@dataclass(frozen=True, slots=True)
class _Done:
    """An intent with every slot filled: call its tool or answer."""

    intent: Intent
    values: Mapping[str, str]


_Action = str | _Done
"""What a caller turn gets: words to say (a question, the fallback), or a finished intent."""


class ScriptedLlm:
    def __init__(self, config: ScriptedLlmConfig, clock: Clock) -> None:
        del clock  # replies are instant: nothing to schedule
        self._config = config
        self._rules = _compile_slots(config)
        self._examples = [(intent, content_words(e)) for intent in config.intents for e in intent.examples]
        self._matches: dict[str, Intent | None] = {}
        """Memo of ``match`` per text: every ``stream`` replays the call's earlier turns."""

    async def stream(self, context: Context, tools: Sequence[Tool]) -> AsyncIterator[LlmEvent]:
        for i, event in enumerate(self.reply(context, {t.name for t in tools})):
            if i:
                await asyncio.sleep(0)
            yield event

    def reply(self, context: Context, tools: Collection[str]) -> list[LlmEvent]:
        """The reply to the context as it stands (the same context gets the same reply, but for
        fresh tool call ids)."""
        messages = context.messages
        turns = caller_turns(messages)
        if not turns:
            return _speak(self._config.fallback)
        state: _Filling | None = None
        for text, _ in turns[:-1]:
            state, _ = self.step(state, text)
        text, start = turns[-1]
        _, action = self.step(state, text)
        if isinstance(action, str):
            return _speak(action)
        return self._finish(action, messages[start:], tools)

    def match(self, text: str) -> Intent | None:
        """The intent whose example ``text`` matches best, if it scores at least ``min_score``."""
        if text in self._matches:
            return self._matches[text]
        heard = set(content_words(text))
        best: Intent | None = None
        best_key = (0.0, 0.0)
        for intent, example in self._examples:
            key = score(example, heard) if example else (0.0, 0.0)
            if key[1] > 0 and key[0] >= self._config.min_score and (best is None or key > best_key):
                best, best_key = intent, key
        self._matches[text] = best
        return best

    def step(self, state: _Filling | None, text: str) -> tuple[_Filling | None, _Action]:
        """One caller turn: the dialog state after it, and what the agent does."""
        if state is not None:
            values = self._fill(state.intent, state.values, text, asking=state.asking)
            if len(values) > len(state.values):
                return self._advance(state.intent, values)
            other = self.match(text)
            if other is None or other is state.intent:
                return state, self._rules[state.asking].slot.question
        intent = self.match(text)
        if intent is None:
            return None, self._config.fallback
        return self._advance(intent, self._fill(intent, {}, text, asking=None))

    def _advance(self, intent: Intent, values: Mapping[str, str]) -> tuple[_Filling | None, _Action]:
        missing = next((name for name in intent.slots if name not in values), None)
        if missing is None:
            return None, _Done(intent, values)
        return _Filling(intent, values, missing), self._rules[missing].slot.question

    def _fill(self, intent: Intent, known: Mapping[str, str], text: str, *, asking: str | None) -> dict[str, str]:
        values = dict(known)
        rest = text
        order = [asking] if asking else []
        order += [name for name in intent.slots if name not in values and name != asking]
        for name in order:
            rule = self._rules[name]
            if rule.open and name != asking:
                continue
            found = rule.regex.search(rest)
            if found is None:
                continue
            group = found.group(1) if rule.regex.groups else None
            value = (group if group is not None else found.group(0)).strip().strip(".,;:!?").strip()
            if value:
                values[name] = value
                rest = f"{rest[: found.start()]} {rest[found.end() :]}"
        return values

    def _finish(self, done: _Done, turn: Sequence[Message], tools: Collection[str]) -> list[LlmEvent]:
        intent, values = done.intent, dict(done.values)
        if intent.tool is not None:
            if intent.tool not in tools:
                log.warning("intent %s: tool %r is not available, answering without it", intent.name, intent.tool)
            else:
                result = _tool_result(turn, intent.tool, values)
                if result is None:
                    return [ToolCall(Context.new_call_id(), intent.tool, values)]
                if result.startswith("error:"):
                    log.warning("intent %s: tool %s failed: %s", intent.name, intent.tool, result)
                    return self._answer(intent, TOOL_FAILED, tools)
                if result:
                    values["result"] = result
        return self._answer(intent, fill_answer(intent.answer, values), tools)

    def _answer(self, intent: Intent, text: str, tools: Collection[str]) -> list[LlmEvent]:
        events = _speak(text)
        if intent.end_call:
            if END_CALL in tools:
                events.append(ToolCall(Context.new_call_id(), END_CALL, {"reason": intent.name}))
            else:
                log.warning("intent %s: cannot end the call, the %s tool is not available", intent.name, END_CALL)
        return events


def caller_turns(messages: Sequence[Message]) -> list[tuple[str, int]]:
    """What the caller said, turn by turn, with the index of each turn's first message: user
    messages the agent said nothing to in between (a turn cut by a pause, its reply abandoned
    unheard) read as one turn, as a model reads them."""
    turns: list[tuple[str, int]] = []
    joined = False
    for i, message in enumerate(messages):
        if message.role == "user":
            if joined:
                turns[-1] = (f"{turns[-1][0]} {message.content}", turns[-1][1])
            else:
                turns.append((message.content, i))
            joined = True
        elif message.role == "assistant" and message.content:
            joined = False
    return turns


def fill_answer(answer: str, values: Mapping[str, str]) -> str:
    """``answer`` with ``{name}`` replaced by its value; sentences naming a missing value are
    left out."""
    sentences = [
        _PLACEHOLDER.sub(lambda m: values[m.group(1)], sentence)
        for sentence in _SENTENCE_END.split(answer.strip())
        if all(name in values for name in _PLACEHOLDER.findall(sentence))
    ]
    return " ".join(s for s in sentences if s)


def _tool_result(turn: Sequence[Message], tool: str, arguments: Mapping[str, str]) -> str | None:
    """The result of this turn's call to ``tool`` with these ``arguments``: None if not called
    yet, "" if called but no result is in. (A turn split by a pause may already have made the
    call: it is not made twice.)"""
    ids = {call.id for m in turn for call in m.tool_calls if call.name == tool and call.arguments == arguments}
    if not ids:
        return None
    return next((m.content for m in turn if m.role == "tool" and m.tool_call_id in ids), "")


def _speak(text: str) -> list[LlmEvent]:
    """Word deltas, each with its leading space but the first."""
    return [TextDelta(token) for token in _TOKEN.findall(text.strip())]


def _compile_slots(config: ScriptedLlmConfig) -> dict[str, _SlotRule]:
    """The slots by name, patterns compiled; every mistake in the config, at once."""
    rules: dict[str, _SlotRule] = {}
    errors: list[str] = []
    for slot in config.slots:
        if slot.name in rules:
            errors.append(f"slot {slot.name!r} is defined twice")
            continue
        try:
            regex = re.compile(slot.pattern, re.IGNORECASE)
        except re.error as exc:
            errors.append(f"slot {slot.name!r}: bad pattern: {exc}")
            continue
        probe = regex.search(_OPEN_PROBE)
        rules[slot.name] = _SlotRule(slot, regex, open=probe is not None and probe.group(0) == _OPEN_PROBE)
    for intent in config.intents:
        unknown = [name for name in intent.slots if name not in {s.name for s in config.slots}]
        if unknown:
            errors.append(f"intent {intent.name!r}: unknown slots {unknown}")
        allowed = {*intent.slots, *(["result"] if intent.tool else [])}
        stray = sorted(set(_PLACEHOLDER.findall(intent.answer)) - allowed)
        if stray:
            errors.append(f"intent {intent.name!r}: answer names {stray}, which are not its slots or tool result")
    if errors:
        raise ConfigError("scripted LLM config is invalid: " + "; ".join(errors))
    return rules
