"""Answering-machine detection: the beep detector, the verdict on real speech clips, a whole
outbound call in memory (greeting, beep, message), and one over a real Twilio media socket."""

from __future__ import annotations

import numpy as np
import pytest

from ringline.benchmarks.caller import CallerScript, Utterance, run_call
from ringline.benchmarks.clips import CLIP_TEXTS, CLIPS, load_clip
from ringline.config.settings import AgentConfig, Settings, VoicemailConfig, load_settings
from ringline.engine.audio.g711 import ulaw_decode, ulaw_encode
from ringline.engine.call import Call, CallStatus
from ringline.engine.events import CallEvent, EventType
from ringline.engine.providers import build_providers
from ringline.engine.record import EndReason
from ringline.engine.turns import TurnState
from ringline.engine.vad.activity import VoiceActivity, make_classifier
from ringline.engine.voicemail import AmdState, Beep, BeepDetector, GreetingEnded, Verdict, VoicemailDetector
from tests.api_fixtures import running
from tests.helpers import CallDriver
from tests.test_api_calls import ended
from tests.test_call import agent

RATE = 8000
SILENCE = b"\xff"


def tone(hz: float, seconds: float, amplitude: float = 8000.0) -> bytes:
    """PCM16 sine."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * hz * t) * amplitude).astype("<i2").tobytes()


def pcm_frames(pcm: bytes) -> list[bytes]:
    return [pcm[i : i + 320].ljust(320, b"\0") for i in range(0, len(pcm), 320)]


def beeps(pcm: bytes) -> list[Beep]:
    """Every beep ``BeepDetector`` finds in ``pcm`` (followed by 100 ms of silence)."""
    detector = BeepDetector(RATE)
    found = []
    for k, frame in enumerate(pcm_frames(pcm + bytes(1600))):
        if (beep := detector.feed(frame, k * 0.02, (k + 1) * 0.02)) is not None:
            found.append(beep)
    return found


# -- the beep ------------------------------------------------------------------------------------


@pytest.mark.parametrize("hz", [440.0, 1000.0, 1400.0, 2000.0])
def test_a_steady_tone_of_150_ms_or_more_in_the_band_is_a_beep(hz: float) -> None:
    for seconds in (0.16, 0.5, 1.2):
        (beep,) = beeps(bytes(800) + tone(hz, seconds))  # 50 ms of silence first
        assert beep.hz == pytest.approx(hz, abs=5)
        assert beep.start == pytest.approx(0.04, abs=0.021)  # the frame the tone starts in
        assert beep.end == pytest.approx(0.05 + seconds, abs=0.021)


def test_short_tones_out_of_band_tones_and_dual_tones_are_not_beeps() -> None:
    assert beeps(tone(1000, 0.14)) == []  # under 150 ms
    assert beeps(tone(300, 0.5)) == [] and beeps(tone(2400, 0.5)) == []
    t = np.arange(4000) / RATE
    dtmf_five = ((np.sin(2 * np.pi * 770 * t) + np.sin(2 * np.pi * 1336 * t)) * 6000).astype("<i2").tobytes()
    assert beeps(dtmf_five) == []
    sweep = (np.sin(2 * np.pi * (500 * t + 1500 * t * t)) * 8000).astype("<i2").tobytes()  # 500 -> 3500 Hz
    assert beeps(sweep) == []


def test_a_beep_under_noise_and_two_beeps_in_a_row_are_each_found() -> None:
    rng = np.random.default_rng(7)
    noisy = np.frombuffer(tone(1000, 0.4), dtype="<i2") + rng.normal(0, 560, 3200)  # 20 dB SNR
    (beep,) = beeps(noisy.astype("<i2").tobytes())
    assert beep.hz == pytest.approx(1000, abs=5)
    two = beeps(tone(850, 0.3) + tone(1400, 0.3))  # a frequency jump starts a new beep
    assert [b.hz for b in two] == pytest.approx([850, 1400], abs=5)


@pytest.mark.parametrize("name", list(CLIPS))
def test_speech_is_never_a_beep(name: str) -> None:
    assert beeps(ulaw_decode(load_clip(name))) == []


# -- the verdict on real audio through the real VAD ------------------------------------------------


def run_detector(
    config: VoicemailConfig, audio: bytes, transcripts: dict[int, str] | None = None
) -> tuple[VoicemailDetector, list[Verdict | GreetingEnded]]:
    """Feed mu-law ``audio`` frame by frame through webrtcvad and the detector; ``transcripts``
    are finals delivered after the frame of that index (as the STT would)."""
    vad_config = AgentConfig().vad
    vad = VoiceActivity(vad_config, make_classifier(vad_config, RATE))
    detector = VoicemailDetector(config, RATE)
    out: list[Verdict | GreetingEnded] = []
    pcm = ulaw_decode(audio)
    for k, frame in enumerate(pcm_frames(pcm)):
        edge = vad.feed(frame)
        out += detector.feed(frame, vad.now, edge)
        if transcripts and k in transcripts:
            out += detector.transcript(transcripts[k], final=True, now=vad.now)
    return detector, out


@pytest.mark.parametrize("name", [n for n, spec in CLIPS.items()])
def test_a_person_answering_with_any_clip_is_never_taken_for_a_machine(name: str) -> None:
    clip = load_clip(name)
    frames = len(clip) // 160
    detector, out = run_detector(
        VoicemailConfig(enabled=True),
        SILENCE * 4000 + clip + SILENCE * 8000 * 4,  # half a second to pick up, the words, then quiet
        {25 + frames + 10: CLIP_TEXTS[name]},  # its final 200 ms after the words
    )
    (verdict,) = [e for e in out if isinstance(e, Verdict)]
    assert verdict.result == "human", verdict
    assert detector.state is AmdState.HUMAN and not detector.active
    # decided once the pause after the words reached utterance_gap_s (1.2 s), give or take the VAD
    assert 0.5 + len(clip) / RATE + 1.2 - 0.05 <= verdict.at <= 0.5 + len(clip) / RATE + 1.2 + 0.3


def greeting(*names: str, gap_s: float = 0.1) -> bytes:
    gap = SILENCE * round(gap_s * RATE)
    return gap.join(load_clip(n) for n in names)


GREETING = greeting("book_table.wav", "speak_person.wav", "reschedule.wav")  # ~6.3 s, no pause over 0.1 s


def test_a_long_first_utterance_is_a_machine_and_its_greeting_ends_at_the_beep() -> None:
    beep_at = 0.3 + len(GREETING) / RATE + 0.5
    audio = SILENCE * 2400 + GREETING + SILENCE * 4000 + ulaw_encode(tone(1000, 0.5)) + SILENCE * 8000
    _, out = run_detector(VoicemailConfig(enabled=True), audio)
    verdict, ended = out
    assert isinstance(verdict, Verdict) and verdict.result == "machine"
    assert verdict.reason == "first utterance over 3.5 s"
    assert verdict.at == pytest.approx(0.3 + 3.5, abs=0.1)  # as soon as the speech has run 3.5 s
    assert ended == GreetingEnded("beep", pytest.approx(beep_at + 0.5, abs=0.021))


def test_a_beep_alone_is_a_machine_whose_greeting_is_over() -> None:
    _, out = run_detector(VoicemailConfig(enabled=True), SILENCE * 4000 + ulaw_encode(tone(1400, 0.4)) + SILENCE * 800)
    assert [type(e) for e in out] == [Verdict, GreetingEnded]
    assert out[0].result == "machine" and out[0].reason == "beep at 1400 Hz"
    assert out[1].how == "beep" and out[1].at == pytest.approx(0.9, abs=0.021)


def test_a_greeting_keyword_makes_a_short_utterance_a_machine_and_silence_ends_the_greeting() -> None:
    clip = load_clip("open_tomorrow.wav")  # 1.6 s: a person's length
    frames = len(clip) // 160
    transcripts = {frames + 10: "Hi, this is Sam. I can't take your call right now."}
    detector, out = run_detector(VoicemailConfig(enabled=True), clip + SILENCE * 8000 * 4, transcripts)
    verdict, ended = out
    assert (verdict.result, verdict.reason) == ("machine", 'keyword "can\'t take your call"')
    assert verdict.at == pytest.approx((frames + 11) * 0.02)
    assert ended.how == "silence" and ended.at == pytest.approx(verdict.at + 2.0, abs=0.03)  # greeting_end_silence_s
    assert detector.state is AmdState.DONE and not detector.active


def test_keywords_ignore_case_punctuation_and_apostrophes_but_need_whole_words() -> None:
    def judged(text: str) -> str | None:
        detector = VoicemailDetector(
            VoicemailConfig(enabled=True, keywords=("can't come to the phone", "mailbox")), RATE
        )
        out = detector.transcript(text, final=True, now=1.0)
        return out[0].reason if out else None

    assert judged("Sorry, I CANT come to the... phone right now") == 'keyword "can\'t come to the phone"'
    assert judged("Sorry, I can\u2019t come to the phone right now") == 'keyword "can\'t come to the phone"'
    assert judged("You have reached the mailbox of Sam") == "keyword 'mailbox'"
    assert judged("my mailboxes are full") is None
    assert judged("Hello? Who is this?") is None


def test_nobody_speaking_within_the_window_is_unknown_and_a_late_final_still_counts() -> None:
    _, out = run_detector(VoicemailConfig(enabled=True, detect_within_s=3.0), SILENCE * 8000 * 4)
    assert out == [Verdict("unknown", "no speech within 3 s", pytest.approx(3.0))]
    # The pause reached utterance_gap_s but the final had not come: wait for it (up to 1.5 s more).
    clip = load_clip("thanks.wav")
    frames = len(clip) // 160
    late = {frames + 8 + 90: "please leave a message"}  # 1.8 s after the words: after the gap
    _, out = run_detector(VoicemailConfig(enabled=True), clip + SILENCE * 8000 * 4, late)
    assert out[0].result == "machine"


def test_config_needs_a_message_to_leave() -> None:
    with pytest.raises(ValueError, match="message is required when action is leave_message"):
        VoicemailConfig(enabled=True, action="leave_message")


# -- a whole outbound call in memory --------------------------------------------------------------


def outbound_agent(**voicemail: object) -> AgentConfig:
    config = {
        "enabled": True,
        "action": "leave_message",
        "message": "This is Ringline calling about your order.",
    } | voicemail
    return agent(voicemail=config)


def voicemail_events(d: CallDriver) -> list[tuple[str, str]]:
    return [(e.data["stage"], e.data["reason"]) for e in d.seen if e.type is EventType.VOICEMAIL]


class Seen:
    def __init__(self) -> None:
        self.events: list[CallEvent] = []

    def on_event(self, event: CallEvent) -> None:
        self.events.append(event)


def driver(config: AgentConfig, *, outbound: bool = True) -> CallDriver:
    d = CallDriver(config)
    if outbound:  # what api/app.py passes for a call whose stream says direction=outbound
        d.call = Call("CA-test", "default", config, d.phone, build_providers(config, d.clock), d.clock, outbound=True)
        d.phone.call = d.call
    seen = Seen()
    d.call.events.observe(seen)
    d.seen = seen.events  # type: ignore[attr-defined]
    return d


async def test_the_message_is_left_after_the_beep_and_the_call_ends_as_voicemail() -> None:
    d = driver(outbound_agent())
    await d.start()
    await d.wait(0.3)
    await d.say(GREETING)
    await d.wait(0.5)
    await d.say(ulaw_encode(tone(1000, 0.5)))
    beep_end = d.clock.now()
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=5)
    assert d.phone.media_times, "the message was spoken"
    assert min(d.phone.media_times) >= beep_end  # nothing before the beep had ended...
    assert min(d.phone.media_times) - beep_end < 0.1  # ...and the message right after it
    assert d.phone.heard_seconds() == pytest.approx(1.0, abs=0.03)  # the whole 1 s message was heard
    assert d.call.record.end_reason is EndReason.VOICEMAIL
    assert d.call.record.end_detail == "machine (first utterance over 3.5 s): message left after beep"
    assert voicemail_events(d) == [("machine", "first utterance over 3.5 s"), ("greeting_ended", "beep")]
    stage_at = {e.data["stage"]: e.data["at_s"] for e in d.seen if e.type is EventType.VOICEMAIL}
    assert stage_at["greeting_ended"] == pytest.approx(beep_end - 1000.0, abs=0.03)
    assert d.call.transcript()[-1] == {"role": "assistant", "content": "This is Ringline calling about your order."}
    assert d.phone.hung_up


async def test_a_reply_already_playing_is_cut_at_the_verdict_and_the_greeting_gets_no_answer() -> None:
    # The greeting pauses long enough for the agent to answer its first sentence.
    d = driver(outbound_agent(long_utterance_s=3.0))
    await d.start()
    await d.say(load_clip("book_table.wav"))
    await d.until(lambda: d.call.turn_state is TurnState.AGENT_SPEAKING)
    await d.say(GREETING)  # talks over the reply, then on past 3 s: a machine
    assert d.call.turn_state is TurnState.CLOSING
    assert d.phone.clears, "the reply was cut"
    cut = d.phone.clears[-1]
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=5)  # the greeting ends in silence
    assert voicemail_events(d) == [("machine", "first utterance over 3 s"), ("greeting_ended", "silence")]
    (greeting_ended,) = [e.data["at_s"] + 1000.0 for e in d.seen if e.data.get("stage") == "greeting_ended"]
    assert not [
        t for t in d.phone.media_times if cut < t < greeting_ended - 0.03
    ]  # silent while it went on (media time: +1 frame)
    assert [t for t in d.phone.media_times if t >= greeting_ended], "then the message"
    assert d.call.record.end_reason is EndReason.VOICEMAIL
    roles = [m["role"] for m in d.call.transcript()]
    assert roles[-1] == "assistant" and roles.count("assistant") == 2  # the cut reply and the message


async def test_hang_up_action_ends_the_call_at_the_verdict_without_a_word() -> None:
    d = driver(outbound_agent(action="hang_up", message=""))
    await d.start()
    await d.say(GREETING)
    await d.until(lambda: d.call.status is CallStatus.ENDED, limit=2)
    assert d.phone.media_times == [] and d.phone.hung_up
    assert (d.call.record.end_reason, d.call.record.end_detail) == (
        EndReason.VOICEMAIL,
        "machine (first utterance over 3.5 s): hung up",
    )


async def test_a_person_answering_briefly_gets_the_conversation_at_once() -> None:
    d = driver(outbound_agent())
    await d.start()
    last = await d.say(load_clip("demo_thanks.wav"))
    first = await d.until(lambda: d.phone.media_times)
    assert first - last < 0.3  # answered as on any call: detection holds nothing back
    await d.until(lambda: d.call.turn_state is TurnState.LISTENING)
    await d.wait(1.5)
    assert voicemail_events(d) == [("human", "first utterance of 1.10 s")]
    assert d.call.status is CallStatus.ACTIVE
    await d.call.end(EndReason.CALLER_HANGUP)


async def test_inbound_calls_are_never_judged() -> None:
    d = driver(outbound_agent(), outbound=False)
    await d.start()
    await d.say(GREETING + SILENCE * 4000 + ulaw_encode(tone(1000, 0.5)))
    await d.wait(3)
    assert voicemail_events(d) == [] and d.call.status is CallStatus.ACTIVE
    await d.call.end(EndReason.CALLER_HANGUP)


# -- over a real Twilio media socket ---------------------------------------------------------------


async def test_an_outbound_call_to_a_machine_over_the_media_socket() -> None:
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"]["voicemail"] = {
        "enabled": True,
        "action": "leave_message",
        "message": "This is Ringline calling about your order.",
    }
    words = greeting("book_table.wav", "speak_person.wav")  # 4.2 s: over long_utterance_s
    greeting_s = len(words) / RATE
    audio = words + SILENCE * 4000 + ulaw_encode(tone(1000, 0.5))  # the beep ends 1 s after the words
    script = CallerScript(
        (Utterance(audio, "voicemail greeting"),),
        custom_parameters={"direction": "outbound", "from": "+14155550100", "to": "+14155550199"},
        hangup_after_last_reply=False,
        reply_timeout_s=5.0,
        max_call_s=30.0,
    )
    async with running(Settings.model_validate(data)) as server:
        result = await run_call(f"{server.ws_url}/media/twilio", script)
        assert result.error is None
        (turn,) = result.turns
        beep_end = turn.speech_start + greeting_s + 1.0
        assert turn.reply.first_at is not None and turn.reply.first_at >= beep_end - 0.02
        assert turn.reply.first_at - beep_end < 0.5
        assert turn.reply.audio_s == pytest.approx(1.0, abs=0.05)
        assert result.ended_by is not None and result.ended_by.value == "server_closed"  # hung up after it
        row = await ended(server, result.call_sid)
        assert row.end_reason == "voicemail" and row.direction.value == "outbound"
        events = [e for e in await server.store.list_events(result.call_sid) if e.type == "voicemail"]
        assert [(e.payload["stage"], e.payload["reason"]) for e in events] == [
            ("machine", "first utterance over 3.5 s"),
            ("greeting_ended", "beep"),
        ]
