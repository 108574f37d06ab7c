"""Turn-taking state machine, driven frame by frame with explicit media times.

Frame ``k`` ends at media time ``k * 20 ms``; ``Floor.run(k)`` ticks every frame up to ``k`` and
returns the actions with the frame they came on, so each test pins the exact frame a decision
is taken. As the VAD does, speech edges are reported a little after the time they carry.
"""

from __future__ import annotations

import pytest

from ringline.config.settings import InterruptionConfig, TurnConfig, VadConfig
from ringline.engine.turns import (
    AbandonReply,
    Action,
    DropPrepared,
    Finalize,
    Prepare,
    Respond,
    ResumeAudio,
    StopAudio,
    TurnState,
    TurnTaker,
)
from ringline.engine.vad.activity import SpeechStarted, SpeechStopped, VoiceActivity

FRAME_S = 0.02

# Distinct values so a test can tell which one was used.
TURN = TurnConfig(
    silence_ms=500,
    sentence_end_silence_ms=300,
    continuation_silence_ms=1200,
    final_timeout_ms=1000,
    preemptive_generation=False,  # its own tests below
)
BARGE = InterruptionConfig(min_speech_ms=200, min_words=0, false_interruption_timeout_ms=800)


def at(k: int) -> float:
    """Media time at the end of frame ``k``."""
    return k * FRAME_S


class Floor:
    def __init__(self, turn: TurnConfig = TURN, barge: InterruptionConfig = BARGE) -> None:
        self.tt = TurnTaker(turn, barge)
        self.k = 0

    @property
    def state(self) -> TurnState:
        return self.tt.state

    def run(self, until: int) -> list[tuple[int, Action]]:
        """Tick frames ``k+1 .. until``; returns (frame, action) for every action."""
        out: list[tuple[int, Action]] = []
        while self.k < until:
            self.k += 1
            out += [(self.k, action) for action in self.tt.tick(at(self.k))]
        return out

    def states(self, until: int) -> list[TurnState]:
        seen = []
        while self.k < until:
            self.k += 1
            assert self.tt.tick(at(self.k)) == []
            seen.append(self.tt.state)
        return seen

    # Speech edges, reported when the VAD would: start 60 ms late, stop 160 ms late.

    def speech_started(self, k: int) -> list[Action]:
        actions = self.run(k + 3)
        assert actions == []
        return self.tt.speech_started(at(k))

    def speech_stopped(self, k: int) -> list[Action]:
        actions = self.run(k + 8)
        assert actions == []
        return self.tt.speech_stopped(at(k))

    def transcript(self, text: str, *, final: bool = True) -> list[Action]:
        return self.tt.transcript(text, final=final, now=at(self.k))


def thinking(after: str = "I need a table.") -> Floor:
    """A floor whose caller just finished a turn (state THINKING at frame 115)."""
    f = Floor()
    f.speech_started(50)
    assert f.speech_stopped(100) == [Finalize()]
    f.run(110)
    assert f.transcript(after) == []
    assert f.run(115) == [(115, Respond(after))]
    assert f.state is TurnState.THINKING
    return f


def agent_speaking(turn: TurnConfig = TURN, barge: InterruptionConfig = BARGE) -> Floor:
    f = Floor(turn, barge)
    assert f.tt.agent_speaks() == []
    assert f.tt.reply_audio_started() == []
    assert f.state is TurnState.AGENT_SPEAKING
    return f


def interrupted() -> Floor:
    """The caller barged in at frame 100 and stopped the agent at frame 110."""
    f = agent_speaking()
    f.speech_started(100)
    assert f.run(110) == [(110, StopAudio())]
    assert f.state is TurnState.INTERRUPTED
    return f


# -- the caller's turn --------------------------------------------------------------------------


def test_starts_listening_with_no_text() -> None:
    f = Floor()
    assert f.state is TurnState.LISTENING
    assert f.tt.text == ""
    assert f.run(200) == []


def test_speech_gives_the_caller_the_floor() -> None:
    f = Floor()
    assert f.speech_started(50) == []
    assert f.state is TurnState.USER_SPEAKING
    assert f.states(300) == [TurnState.USER_SPEAKING] * (300 - 53)


def test_speech_stopped_asks_for_a_final() -> None:
    f = Floor()
    f.speech_started(50)
    assert f.speech_stopped(100) == [Finalize()]
    assert f.state is TurnState.USER_SPEAKING


def test_respond_on_the_frame_the_sentence_end_silence_is_reached() -> None:
    f = Floor()
    f.speech_started(50)
    assert f.transcript("I'd like", final=False) == []
    assert f.tt.text == "I'd like"
    f.speech_stopped(100)
    f.run(110)
    assert f.transcript("I'd like a table.") == []
    assert f.tt.text == "I'd like a table."
    assert f.run(200) == [(115, Respond("I'd like a table."))]  # 300 ms after the last voiced frame
    assert f.state is TurnState.THINKING
    assert f.tt.text == ""


def test_plain_text_waits_the_plain_silence() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(110)
    assert f.transcript("book a table for two") == []
    assert f.run(200) == [(125, Respond("book a table for two"))]


def test_trailing_conjunction_waits_the_continuation_silence() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(110)
    assert f.transcript("a table for two and") == []
    assert f.run(300) == [(160, Respond("a table for two and"))]


def test_final_after_the_silence_is_long_enough_responds_at_once() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    assert f.run(130) == []  # 600 ms of silence, but no final yet
    assert f.state is TurnState.USER_SPEAKING
    assert f.transcript("Book it.") == [Respond("Book it.")]
    assert f.state is TurnState.THINKING


def test_silence_without_the_final_waits_for_it() -> None:
    f = Floor()
    f.speech_started(50)
    f.transcript("book a table", final=False)
    f.speech_stopped(100)
    assert f.run(170) == []  # past the plain silence, still inside the final timeout
    assert f.transcript("Book a table.") == [Respond("Book a table.")]


def test_missing_final_responds_with_the_interim_after_the_timeout() -> None:
    f = Floor()
    f.speech_started(50)
    f.run(80)
    assert f.transcript("I need a table", final=False) == []
    f.speech_stopped(100)
    # plain silence 500 ms + final timeout 1000 ms after the last voiced frame (frame 100)
    assert f.run(400) == [(175, Respond("I need a table"))]
    assert f.state is TurnState.THINKING


def test_latest_interim_replaces_the_earlier_one() -> None:
    f = Floor()
    f.speech_started(50)
    f.transcript("I", final=False)
    f.transcript("I need", final=False)
    f.transcript("I need a table", final=False)
    assert f.tt.text == "I need a table"


def test_resumed_speech_cancels_the_end_of_turn_and_text_accumulates() -> None:
    f = Floor()
    f.speech_started(50)
    assert f.speech_stopped(100) == [Finalize()]
    f.run(105)
    assert f.transcript("I need a table") == []
    assert f.speech_started(120) == []  # 400 ms into the 500 ms silence
    assert f.run(400) == []  # the pending end of turn is gone while they talk
    assert f.state is TurnState.USER_SPEAKING
    assert f.transcript("for", final=False) == []
    assert f.tt.text == "I need a table for"
    assert f.speech_stopped(400) == [Finalize()]
    f.run(410)
    assert f.transcript("for two.") == []
    assert f.tt.text == "I need a table for two."
    assert f.run(500) == [(415, Respond("I need a table for two."))]


def test_speech_with_an_empty_final_is_noise() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(105)
    assert f.transcript("") == []
    # frames 109..125: the plain silence (no words, so no sentence end) ends at frame 125
    assert f.states(125) == [TurnState.USER_SPEAKING] * 16 + [TurnState.LISTENING]
    assert f.run(300) == []
    # The next turn starts clean.
    f.speech_started(350)
    f.speech_stopped(400)
    f.run(405)
    assert f.transcript("Hello there.") == []
    assert f.run(500) == [(415, Respond("Hello there."))]


def test_whitespace_only_final_is_noise() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(105)
    assert f.transcript("  \n") == []
    assert f.run(300) == []
    assert f.state is TurnState.LISTENING


def test_transcripts_are_stripped() -> None:
    f = Floor()
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(110)
    f.transcript("  Book it.  ")
    assert f.run(200) == [(115, Respond("Book it."))]


# -- while the agent thinks -----------------------------------------------------------------------


def test_agent_speaks_first_from_listening() -> None:
    f = Floor()
    assert f.tt.agent_speaks() == []
    assert f.state is TurnState.THINKING


def test_agent_speaks_only_from_listening() -> None:
    f = Floor()
    f.speech_started(50)
    assert f.tt.agent_speaks() == []
    assert f.state is TurnState.USER_SPEAKING


def test_caller_speech_while_thinking_abandons_the_reply() -> None:
    f = thinking()
    assert f.speech_started(150) == []
    assert f.state is TurnState.THINKING
    assert f.run(400) == [(160, AbandonReply())]  # 200 ms after the first voiced frame
    assert f.state is TurnState.USER_SPEAKING
    f.speech_stopped(400)
    f.run(410)
    f.transcript("Actually, for three.")
    assert f.run(500) == [(415, Respond("Actually, for three."))]


def test_short_sound_while_thinking_keeps_the_reply() -> None:
    f = thinking()
    f.speech_started(150)
    assert f.run(158) == []  # 160 ms of sound: under min_speech_ms
    f.tt.speech_stopped(at(158))
    assert [a for _, a in f.run(400) if isinstance(a, AbandonReply | Respond)] == []
    assert f.state is TurnState.THINKING


def test_first_reply_audio_makes_the_agent_speak() -> None:
    f = thinking()
    assert f.tt.reply_audio_started() == []
    assert f.state is TurnState.AGENT_SPEAKING


@pytest.mark.parametrize("setup", ["listening", "user_speaking"])
def test_reply_audio_started_outside_thinking_changes_nothing(setup: str) -> None:
    f = Floor()
    if setup == "user_speaking":
        f.speech_started(50)
    before = f.state
    assert f.tt.reply_audio_started() == []
    assert f.state is before


@pytest.mark.parametrize("audio_started", [True, False])
def test_reply_finished_returns_to_listening(audio_started: bool) -> None:
    f = thinking()
    if audio_started:
        f.tt.reply_audio_started()
    assert f.tt.reply_finished() == []
    assert f.state is TurnState.LISTENING
    assert f.run(400) == []


def test_reply_finished_while_the_caller_talks_gives_them_the_floor() -> None:
    f = agent_speaking()
    f.speech_started(100)
    f.run(105)  # 100 ms: not an interruption yet
    assert f.tt.reply_finished() == []
    assert f.state is TurnState.USER_SPEAKING
    assert f.speech_stopped(150) == [Finalize()]
    f.run(160)
    f.transcript("Thanks.")
    assert f.run(200) == [(165, Respond("Thanks."))]


# -- barge-in --------------------------------------------------------------------------------------


def test_barge_in_stops_the_audio_after_min_speech() -> None:
    f = agent_speaking()
    f.run(100)
    assert f.speech_started(100) == []
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.run(300) == [(110, StopAudio())]  # 200 ms after the first voiced frame, once
    assert f.state is TurnState.INTERRUPTED


def test_speech_shorter_than_min_speech_does_not_interrupt() -> None:
    f = agent_speaking()
    f.speech_started(100)
    assert f.run(109) == []
    assert f.tt.speech_stopped(at(109)) == []  # not even a Finalize: not a turn
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.run(300) == []


def test_short_sound_transcript_is_ignored() -> None:
    f = agent_speaking()
    f.speech_started(100)
    assert f.transcript("mm", final=False) == []
    f.run(109)
    f.tt.speech_stopped(at(109))
    assert f.tt.text == ""
    f.run(130)
    assert f.transcript("Mm-hm.") == []  # its final arrives after the sound ended
    assert f.tt.text == ""
    assert f.state is TurnState.AGENT_SPEAKING
    f.tt.reply_finished()
    f.speech_started(400)
    f.speech_stopped(450)
    f.run(460)
    f.transcript("What time?")
    assert f.run(500) == [(465, Respond("What time?"))]


def test_interim_words_after_barge_in_take_the_floor() -> None:
    f = interrupted()
    f.run(115)
    assert f.transcript("wait", final=False) == [AbandonReply()]
    assert f.state is TurnState.USER_SPEAKING
    f.speech_stopped(150)
    f.run(160)
    assert f.transcript("Wait, I meant Friday") == []
    assert f.run(300) == [(175, Respond("Wait, I meant Friday"))]


def test_final_words_after_the_interrupting_speech_stopped_take_the_floor() -> None:
    f = interrupted()
    assert f.speech_stopped(150) == [Finalize()]
    assert f.state is TurnState.INTERRUPTED
    f.run(165)
    assert f.transcript("Sorry, say that again") == [AbandonReply()]
    assert f.state is TurnState.USER_SPEAKING
    assert f.run(300) == [(175, Respond("Sorry, say that again"))]


def test_final_words_long_after_the_speech_take_the_floor_and_respond_at_once() -> None:
    f = interrupted()
    f.speech_stopped(150)
    f.run(185)  # 700 ms: past the 500 ms plain silence, inside the 800 ms false-interruption wait
    assert f.transcript("Stop please") == [AbandonReply(), Respond("Stop please")]
    assert f.state is TurnState.THINKING


def test_interruption_with_an_empty_final_resumes() -> None:
    f = interrupted()
    assert f.speech_stopped(150) == [Finalize()]
    f.run(160)
    assert f.transcript("") == [ResumeAudio()]
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.run(400) == []


def test_interruption_with_no_final_resumes_after_the_false_interruption_timeout() -> None:
    f = interrupted()
    f.speech_stopped(150)
    assert f.run(400) == [(190, ResumeAudio())]  # 800 ms after the last voiced frame
    assert f.state is TurnState.AGENT_SPEAKING


def test_interruption_waits_while_the_caller_keeps_talking() -> None:
    f = interrupted()
    assert f.run(500) == []  # no words yet and still talking: stay interrupted
    assert f.state is TurnState.INTERRUPTED


def test_speech_resuming_during_an_interruption_postpones_the_resume() -> None:
    f = interrupted()
    f.speech_stopped(150)
    f.speech_started(170)  # before the 800 ms wait ends
    assert f.run(300) == []
    assert f.state is TurnState.INTERRUPTED
    f.speech_stopped(300)
    f.run(310)
    assert f.transcript("") == []  # one Finalize per pause: the resume waits for both finals
    assert f.transcript("") == [ResumeAudio()]


def test_resumed_agent_can_be_interrupted_again() -> None:
    f = interrupted()
    f.speech_stopped(150)
    f.run(160)
    assert f.transcript("") == [ResumeAudio()]
    f.speech_started(200)
    assert f.run(300) == [(210, StopAudio())]


@pytest.mark.parametrize("ack", ["Mm-hm.", "yeah", "Okay, okay.", "uh-huh right", "MHM"])
def test_backchannel_only_interruption_resumes(ack: str) -> None:
    f = interrupted()
    assert f.transcript(ack.split()[0], final=False) == []  # an acknowledgement, not a bid for the floor
    assert f.state is TurnState.INTERRUPTED
    assert f.speech_stopped(150) == [Finalize()]
    f.run(160)
    assert f.transcript(ack) == [ResumeAudio()]
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.tt.text == ""


def test_backchannel_followed_by_words_takes_the_floor() -> None:
    f = interrupted()
    assert f.transcript("yeah", final=False) == []
    assert f.transcript("yeah but wait", final=False) == [AbandonReply()]
    assert f.state is TurnState.USER_SPEAKING


def test_backchannel_words_come_from_config() -> None:
    barge = InterruptionConfig(min_speech_ms=200, false_interruption_timeout_ms=800, backchannel_words=("sure",))
    f = agent_speaking(barge=barge)
    f.speech_started(100)
    assert f.run(110) == [(110, StopAudio())]
    assert f.transcript("sure", final=False) == []
    assert f.transcript("yeah", final=False) == [AbandonReply()]


def test_min_words_does_not_count_backchannels() -> None:
    f = agent_speaking(barge=InterruptionConfig(min_speech_ms=200, min_words=1, false_interruption_timeout_ms=800))
    f.speech_started(100)
    assert f.transcript("mm-hm yeah", final=False) == []
    assert f.run(150) == []
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.transcript("mm-hm yeah, stop", final=False) == [StopAudio()]


def test_min_words_needs_words_before_stopping_the_audio() -> None:
    f = agent_speaking(barge=InterruptionConfig(min_speech_ms=200, min_words=2, false_interruption_timeout_ms=800))
    f.speech_started(100)
    assert f.run(150) == []  # long enough, but no words
    assert f.transcript("stop", final=False) == []  # one word
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.transcript("stop please", final=False) == [StopAudio()]
    assert f.state is TurnState.INTERRUPTED
    assert f.run(151) == [(151, AbandonReply())]
    assert f.state is TurnState.USER_SPEAKING


def test_min_words_still_needs_min_speech() -> None:
    f = agent_speaking(barge=InterruptionConfig(min_speech_ms=200, min_words=1, false_interruption_timeout_ms=800))
    f.speech_started(100)
    f.run(104)
    assert f.transcript("no", final=False) == []
    assert f.run(200)[0] == (110, StopAudio())


def test_interruption_disabled_never_interrupts() -> None:
    f = agent_speaking(barge=InterruptionConfig(enabled=False, min_speech_ms=200, false_interruption_timeout_ms=800))
    f.speech_started(100)
    assert f.transcript("stop stop stop", final=False) == []
    assert f.run(400) == []
    assert f.state is TurnState.AGENT_SPEAKING
    assert f.tt.speech_stopped(at(400)) == []
    assert f.run(500) == []
    assert f.tt.reply_finished() == []
    assert f.state is TurnState.LISTENING


# -- exact timing through the real VAD ------------------------------------------------------------


def test_end_of_turn_fires_on_the_exact_frame_wherever_the_silence_starts() -> None:
    """The sentence-end silence is 15 frames; the turn must end on the 15th silent frame."""
    late = []
    for stop in range(100, 200):
        f = Floor()
        f.speech_started(stop - 50)
        f.speech_stopped(stop)
        f.run(stop + 10)
        f.transcript("Book it.")
        fired = f.run(stop + 30)
        if fired != [(stop + 15, Respond("Book it."))]:
            late.append((stop, fired[0][0] - stop if fired else None))
    assert late == []


class Script:
    """A classifier: ``lead`` unvoiced frames, ``voiced`` voiced ones, then unvoiced for ever."""

    def __init__(self, lead: int, voiced: int) -> None:
        self.lead, self.voiced = lead, voiced

    def is_speech(self, frame: bytes) -> bool:
        if self.lead:
            self.lead -= 1
            return False
        self.voiced -= 1
        return self.voiced >= 0


def call_path(tt: TurnTaker, script: Script, frames: int, final: str | None) -> list[tuple[int, Action]]:
    """Frames through the VAD into the turn-taker as ``Call._on_frame`` does; ``final`` is what
    an instant STT answers to the Finalize. Returns (frame number from 1, action)."""
    vad = VoiceActivity(VadConfig(), script)
    out: list[tuple[int, Action]] = []
    for k in range(1, frames + 1):
        edge = vad.feed(b"")
        actions: list[Action] = []
        if isinstance(edge, SpeechStarted):
            actions += tt.speech_started(edge.at)
        elif isinstance(edge, SpeechStopped):
            actions += tt.speech_stopped(edge.at)
        actions += tt.tick(vad.now, vad.last_voiced_end)
        if Finalize() in actions and final is not None:
            actions += tt.transcript(final, final=True, now=vad.now)
        out += [(k, a) for a in actions]
    return out


def test_call_path_ends_the_turn_exactly_the_silence_after_the_last_voiced_frame() -> None:
    """Speech of a few lengths at many points of a call: Respond comes on the frame that completes
    300 ms of silence after the last voiced frame (VAD stop after 160 ms, instant final)."""
    late = []
    for lead in range(0, 400, 7):
        for voiced in (10, 23, 50):
            actions = call_path(TurnTaker(TURN, BARGE), Script(lead, voiced), lead + voiced + 40, "Book it.")
            responded = [k for k, a in actions if isinstance(a, Respond)]
            if responded != [lead + voiced + 15]:
                late.append((lead, voiced, [k - lead - voiced for k in responded]))
    assert late == []


def test_call_path_sound_shorter_than_min_speech_does_not_interrupt() -> None:
    """A 100 ms cough while the agent speaks, with min_speech_ms 200: no barge-in. (The VAD only
    reports the stop 160 ms after the cough, so time since its start is not its length.)"""
    tt = TurnTaker(TURN, BARGE)
    tt.agent_speaks()
    tt.reply_audio_started()
    actions = call_path(tt, Script(50, 5), 100, "")
    assert [a for _, a in actions if not isinstance(a, Finalize)] == []
    assert tt.state is TurnState.AGENT_SPEAKING


def test_call_path_speech_of_min_speech_interrupts() -> None:
    tt = TurnTaker(TURN, BARGE)
    tt.agent_speaks()
    tt.reply_audio_started()
    actions = call_path(tt, Script(50, 30), 100, None)
    assert actions[0] == (60, StopAudio())  # frame 60 ends 200 ms after the first voiced frame (51)


def test_barge_in_fires_on_the_exact_frame_wherever_the_speech_starts() -> None:
    late = []
    for start in range(100, 200):
        f = agent_speaking()
        f.speech_started(start)
        fired = f.run(start + 20)
        if fired != [(start + 10, StopAudio())]:
            late.append((start, fired[0][0] - start if fired else None))
    assert late == []


# -- transcripts that belong to no pending turn ------------------------------------------------------


def test_final_arriving_after_the_timeout_does_not_leak_into_the_next_turn() -> None:
    f = Floor()
    f.speech_started(50)
    f.transcript("I need a table", final=False)
    f.speech_stopped(100)
    assert f.run(200) == [(175, Respond("I need a table"))]  # gave up waiting for the final
    assert f.transcript("I need a table for two.") == []  # ... which comes late
    f.tt.reply_audio_started()
    f.run(300)
    f.tt.reply_finished()
    f.speech_started(400)
    f.speech_stopped(450)
    f.run(460)
    f.transcript("Thanks.")
    assert f.run(600) == [(465, Respond("Thanks."))]


def test_words_of_a_short_sound_while_thinking_do_not_leak_into_the_next_turn() -> None:
    f = thinking()
    f.speech_started(150)
    assert f.run(158) == []  # under min_speech_ms: the reply goes on
    assert f.tt.speech_stopped(at(158)) == []  # too short to take the floor: no turn to finalize
    f.run(170)
    assert f.transcript("Yes.") == []
    f.tt.reply_audio_started()
    f.run(300)
    f.tt.reply_finished()
    assert f.state is TurnState.LISTENING
    f.speech_started(400)
    f.speech_stopped(450)
    f.run(460)
    f.transcript("Book it.")
    assert f.run(600) == [(465, Respond("Book it."))]


def test_turn_waits_for_the_final_of_every_finalize() -> None:
    """Two pauses before the first final came back: the turn must wait for both finals."""
    f = Floor()
    f.speech_started(50)
    assert f.speech_stopped(100) == [Finalize()]
    f.speech_started(105)  # the caller goes on before the first final is back
    assert f.speech_stopped(130) == [Finalize()]
    f.run(140)
    assert f.transcript("I need a table") == []  # the first final
    assert [(k, a) for k, a in f.run(200) if isinstance(a, Respond)] == []  # the second is still due
    assert f.transcript("for two.") == [Respond("I need a table for two.")]


# -- preemptive generation -----------------------------------------------------------------------

PREEMPT = TURN.model_copy(update={"preemptive_generation": True})


def test_prepare_as_soon_as_the_final_is_in_and_respond_with_the_same_text_at_the_end_of_the_silence():
    f = Floor(PREEMPT)
    f.speech_started(50)
    assert f.speech_stopped(100) == [Finalize()]
    f.run(110)
    assert f.transcript("Book a table.") == [Prepare("Book a table.")]
    assert f.run(200) == [(115, Respond("Book a table."))]  # 300 ms after frame 100


def test_caller_going_on_drops_the_prepared_reply():
    f = Floor(PREEMPT)
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(110)
    assert f.transcript("Book a table") == [Prepare("Book a table")]
    assert f.speech_started(112) == [DropPrepared()]
    f.speech_stopped(150)
    f.run(160)
    assert f.transcript("for two.") == [Prepare("Book a table for two.")]
    assert f.run(300) == [(165, Respond("Book a table for two."))]


def test_a_second_final_changing_the_text_replaces_the_prepared_reply():
    f = Floor(PREEMPT)
    f.speech_started(50)
    f.speech_stopped(100)
    f.run(110)
    assert f.transcript("Book") == [Prepare("Book")]
    assert f.transcript("it.", final=True) == [DropPrepared(), Prepare("Book it.")]


def test_no_preparing_while_a_final_is_still_due_or_for_noise():
    f = Floor(PREEMPT)
    f.speech_started(50)
    f.speech_stopped(100)
    assert f.run(110) == []  # silent, but the final is not in
    assert f.transcript("") == []  # no words: nothing to answer
