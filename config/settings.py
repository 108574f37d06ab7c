"""Typed, validated settings. Every option has one documented default, here.

A config file is TOML; values from the file are validated at load and a mistake is reported
with its path (``agents.default.turn.silence_ms: Input should be greater than or equal to 0``).
"""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from ringline.config.behaviours import AmbienceConfig, FillerConfig, SilenceConfig
from ringline.config.providers import (
    PROVIDER_TAGS,
    FakeLlmConfig,
    FakeSttConfig,
    FakeTtsConfig,
    LlmConfig,
    SttConfig,
    TtsConfig,
)
from ringline.config.sip import SipConfig
from ringline.engine.errors import ConfigError

Ms = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VadConfig(_Model):
    """Voice activity: a speech classifier per 20 ms frame with start/stop hysteresis."""

    engine: Literal["webrtc", "silero"] = "webrtc"
    """The classifier. ``webrtc``: webrtcvad (~2 us a frame). ``silero``: the Silero VAD neural
    network, ~80 us a 20 ms frame at 8 kHz (0.4 % of a core per call, so 200 calls would spend
    80 % of a core on it), which needs ``pip install --no-deps silero-vad`` (checked when the
    server starts) and takes 8 or 16 kHz audio."""
    aggressiveness: int = Field(3, ge=0, le=3)
    """webrtcvad mode: 0 (least aggressive about filtering out non-speech) to 3 (most). ``webrtc`` only."""
    silero_threshold: float = Field(0.5, gt=0, lt=1)
    """Speech probability from which a frame is voiced; it stays voiced until the probability
    falls below this minus 0.15 (at least 0.01; Silero's own hysteresis). ``silero`` only."""
    energy_floor_dbfs: float = Field(-50.0, le=0)
    """Frames quieter than this (RMS, dB full scale) are never speech, whatever the engine. Trims
    the 40-150 ms that webrtcvad and Silero go on calling speech after it ends, which would
    otherwise lengthen every turn's silence."""
    start_ms: Ms = 60
    """Voiced audio (within ``start_window_ms``) before speech counts as started."""
    start_window_ms: Ms = 100
    """Sliding window in which ``start_ms`` of voiced frames must fall."""
    stop_ms: Ms = 160
    """Unvoiced audio before speech counts as stopped."""


class TurnConfig(_Model):
    """End of the caller's turn: VAD silence + STT final + how the transcript ends."""

    silence_ms: Ms = 500
    """Silence after speech that ends a turn whose text ends neither a sentence nor mid-thought."""
    sentence_end_silence_ms: Ms = 300
    """Silence that ends a turn whose transcript ends a sentence (``.``, ``?``, ``!``)."""
    continuation_silence_ms: Ms = 1200
    """Silence that ends a turn whose transcript trails off (``and``, ``um``, a comma, ...)."""
    continuation_words: tuple[str, ...] = (
        "and",
        "but",
        "or",
        "so",
        "because",
        "um",
        "uh",
        "er",
        "hmm",
        "like",
        "the",
        "a",
        "to",
        "of",
    )
    """Trailing words that mean the caller is probably not done."""
    preemptive_generation: bool = True
    """Start the reply as soon as the caller's transcript is final and they are silent, while the
    end-of-turn silence still runs; its audio is held until the turn ends with the same text and
    thrown away if the caller goes on. Saves up to the end-of-turn silence in latency; costs an
    LLM request for each discarded start."""
    final_timeout_ms: Ms = 1500
    """How long to wait for the STT final once the silence is long enough; then use what is there."""


class InterruptionConfig(_Model):
    """Barge-in: the caller talking over the agent. ``min_speech_ms`` is the interruption
    sensitivity and ``min_words`` the minimum interrupt words of hosted platforms' settings."""

    enabled: bool = True
    """Whether the caller can interrupt the agent at all."""
    min_speech_ms: Ms = 100
    """Interruption sensitivity: caller speech this long (from its first voiced frame) stops the
    agent's audio. Lower stops it sooner; higher lets coughs and short sounds pass."""
    min_words: int = Field(0, ge=0, le=10)
    """Minimum interrupt words: also require this many transcribed words that are not
    ``backchannel_words`` before stopping the agent (0: speech alone). With 0 a backchannel
    ("mm-hm") pauses the agent's audio until its transcript shows it was only a backchannel, then
    the reply resumes where it stopped, nothing lost; with 1 or more the audio never stops for one,
    but every barge-in waits for the STT's first interim words."""
    backchannel_words: tuple[str, ...] = ("mm-hm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yep", "right", "okay", "ok")
    """Words that acknowledge rather than interrupt: speech made only of these is never a barge-in
    (the reply goes on, whole) and never a turn of its own."""
    false_interruption_timeout_ms: Ms = 1000
    """If the speech that stopped the agent yields no words within this time after it ends,
    it was noise: the agent resumes where the caller stopped hearing it."""


class PlayoutConfig(_Model):
    lead_ms: Ms = 200
    """How far ahead of real time audio is sent to the telephony provider's buffer."""
    frame_ms: int = Field(20, ge=10, le=200)
    """Audio per media message."""


WebhookEvent = Literal["assistant-request", "tool-calls", "status-update", "end-of-call-report"]
"""The kinds of webhook Ringline sends (see ``ringline.api.webhooks``)."""
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("assistant-request", "tool-calls", "status-update", "end-of-call-report")
_HTTP_URL = r"^https?://[^/?#\s]+(/[^#\s]*)?$"


class AgentWebhookConfig(_Model):
    """``[agents.NAME.webhook]``: where this agent's call events go, and which."""

    url: str | None = Field(None, pattern=_HTTP_URL)
    """Receives this agent's events instead of ``webhooks.default_url``. Default: the account's URL."""
    events: tuple[WebhookEvent, ...] = WEBHOOK_EVENTS
    """The events this agent sends (instead of ``webhooks.events``). Default: all."""


DEFAULT_SUMMARY_PROMPT = (
    "Summarize the call in two to four sentences: who called and why, what the agent did or agreed to, "
    "and how the call ended."
)
"""The summary instruction when neither the agent nor its analysis template gives one."""


class AnalysisField(_Model):
    """One value the post-call analysis extracts from the transcript (``structured_schema``)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    """The key in ``structured_data``: letters, digits and underscores."""
    type: Literal["string", "number", "bool"]
    """What the value must be; one of another type is recorded as that field's error."""
    description: str = Field(min_length=1, max_length=1000)
    """What the value is; the LLM reads this."""


class AnalysisPlan(_Model):
    """What a post-call analysis asks for. An analysis template is one of these with a name; a part an
    agent's ``analysis`` leaves unset comes from its template, else from the default given here."""

    summary: bool | None = None
    """Write a summary of the call. Default: on."""
    summary_prompt: str | None = Field(None, min_length=1, max_length=10_000)
    """How to summarize the call. Default: ``DEFAULT_SUMMARY_PROMPT`` (two to four sentences)."""
    structured_schema: tuple[AnalysisField, ...] | None = Field(None, max_length=50)
    """Values to extract from the call into ``structured_data``. Default: none."""
    success_rubric: str | None = Field(None, min_length=1, max_length=10_000)
    """What makes the call a success; judged pass or fail, with the reason. Default: none (not judged)."""
    sentiment: bool | None = None
    """Judge the caller's sentiment: ``positive``, ``neutral`` or ``negative``. Default: on."""

    @field_validator("structured_schema")
    @classmethod
    def _unique_names(cls, fields: tuple[AnalysisField, ...] | None) -> tuple[AnalysisField, ...] | None:
        names = [f.name for f in fields or ()]
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"field names must be unique; repeated: {', '.join(dupes)}")
        return fields


class AnalysisConfig(AnalysisPlan):
    """``[agents.NAME.analysis]``: analyse each call after it ends (see ``ringline.api.analysis``), in
    the background: never on the call's path."""

    template: str | None = Field(None, min_length=1, max_length=200)
    """Name or id of an analysis template (``/api/v1/analysis-templates``): the parts this table leaves
    unset come from it. A template missing when a call ends fails that call's analysis. Default: none."""
    llm: LlmConfig | None = None
    """The LLM that analyses. Default: the agent's ``llm``, given room for a long prompt and answer
    (an OpenAI-compatible one: ``timeout_s`` for the first token and in all, 1000 tokens, temperature 0)."""
    timeout_s: float = Field(60.0, gt=0)
    """Each attempt's whole time."""
    max_attempts: int = Field(3, ge=1, le=10)
    """Attempts before the analysis is recorded failed (a provider error that is not retryable fails at once)."""
    retry_backoff_s: float = Field(1.0, ge=0)
    """Wait before the second attempt; each later wait doubles (a provider's ``Retry-After`` wins)."""
    report_wait_s: float = Field(30.0, ge=0)
    """How long the end-of-call report waits for the analysis; then it goes with the analysis
    ``pending`` (the call's row gets the analysis when it is done)."""


VOICEMAIL_KEYWORDS: tuple[str, ...] = (
    "leave a message",
    "leave me a message",
    "leave your message",
    "leave a brief message",
    "leave your name",
    "after the beep",
    "after the tone",
    "at the beep",
    "at the tone",
    "not available",
    "unavailable",
    "can't take your call",
    "cannot take your call",
    "can't come to the phone",
    "cannot come to the phone",
    "away from the phone",
    "voicemail",
    "voice mail",
    "mailbox",
    "record your message",
    "get back to you",
    "return your call",
)


class VoicemailConfig(_Model):
    """``[agents.NAME.voicemail]``: answering-machine detection on outbound calls.

    In the callee's first seconds the call decides whether a person or a machine answered. The
    conversation is not held meanwhile: a person's "Hello?" is answered as on any call. On a
    machine the agent stops whatever it was saying, waits for the beep (or for the greeting to
    end) and leaves ``message``, or hangs up at once; the call ends with reason ``voicemail``.
    Each step is a ``voicemail`` event."""

    enabled: bool = False
    """Detect on outbound calls (inbound calls are never checked). Default: off."""
    detect_within_s: float = Field(5.0, gt=0)
    """The callee must start speaking within this many seconds of the call's start to be judged;
    nobody speaking by then is ``unknown`` and the call goes on as with a person. A first
    utterance under way at that point is judged to its end."""
    keywords: tuple[Annotated[str, Field(min_length=1)], ...] = VOICEMAIL_KEYWORDS
    """Phrases of a voicemail greeting: one of them in the first utterance's transcript means a
    machine (whole words; case, punctuation and apostrophes do not matter). Default:
    ``VOICEMAIL_KEYWORDS`` ("leave a message", "after the tone", "not available", ...)."""
    long_utterance_s: float = Field(3.5, gt=0)
    """A first utterance this long without a pause of ``utterance_gap_s`` means a machine: a
    person answers "Hello?" and waits, a greeting runs on."""
    utterance_gap_s: float = Field(1.2, gt=0)
    """A pause this long ends the first utterance; a shorter one without keywords is a person's."""
    beep: bool = True
    """Listen for the beep: one steady tone between 400 and 2000 Hz lasting at least 150 ms. Heard
    while undecided it means a machine; the message starts as soon as it ends."""
    greeting_end_silence_s: float = Field(2.0, gt=0)
    """Once a machine is detected, this much silence ends its greeting if no beep came first."""
    max_greeting_s: float = Field(30.0, gt=0)
    """Leave the message anyway this long after a machine was detected, whatever the greeting does."""
    action: Literal["leave_message", "hang_up"] = "hang_up"
    """What to do on a machine: speak ``message`` after the beep then hang up, or hang up at once."""
    message: str = Field("", max_length=2000)
    """The message left on a machine (required with ``leave_message``). ``{{placeholders}}`` are not
    filled in it (``config/templates.py`` renders the prompt and first message only)."""

    @model_validator(mode="after")
    def _message_to_leave(self) -> VoicemailConfig:
        if self.action == "leave_message" and not self.message.strip():
            raise ValueError("message is required when action is leave_message")
        return self


DtmfKey = Annotated[str, Field(pattern=r"^[0-9*#A-D]$")]
"""One keypad key."""


class DtmfCollectConfig(_Model):
    """How the caller's key presses are gathered into one entry."""

    digits: int = Field(0, ge=0, le=64)
    """Deliver the entry once this many keys are pressed (0: no count; the terminator or the
    timeout ends it)."""
    terminator: str = Field("#", pattern=r"^[0-9*#A-D]?$")
    """The key that ends an entry at once (kept in it); "" for none."""
    timeout_s: float = Field(2.0, gt=0)
    """An entry with no key pressed for this long is delivered as it is."""


class DtmfActionConfig(_Model):
    """What a key does when pressed as the first key of an entry."""

    action: Literal["transfer", "hang_up"]
    destination: str | None = Field(None, pattern=r"^(\+[1-9][0-9]{6,14}|sips?:[^\s]+)$")
    """Where ``transfer`` hands the call: an E.164 number or a ``sip:`` URI."""
    message: str = Field("", max_length=2000)
    """Said first (the transfer's announcement, or the goodbye); "" for none."""

    @model_validator(mode="after")
    def _transfer_has_destination(self) -> DtmfActionConfig:
        if self.action == "transfer" and not self.destination:
            raise ValueError("destination is required when action is transfer")
        return self


class DtmfConfig(_Model):
    """``[agents.NAME.dtmf]``: the caller's key presses. Every key is a ``dtmf`` event; these rules
    say what else it does. A key listed in ``actions`` acts at once when it starts an entry;
    otherwise keys are collected (the first one stops the agent talking) and the entry reaches
    the conversation as a user message made from ``format``, which the agent answers."""

    enabled: bool = True
    """Deliver entries into the conversation (``actions`` work either way)."""
    collect: DtmfCollectConfig = DtmfCollectConfig()
    format: str = Field("[DTMF {digits}]", min_length=1, max_length=200)
    """The user message of an entry; ``{digits}`` is replaced by its keys."""
    actions: dict[DtmfKey, DtmfActionConfig] = {}
    """Keys mapped to actions, e.g. ``"0" = {action = "transfer", destination = "+14155550100"}``,
    ``"9" = {action = "hang_up", message = "Goodbye."}``. Default: none."""


class AgentConfig(_Model):
    name: str = Field("Ringline agent", min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    system_prompt: str = Field("You are a helpful, concise phone agent.", max_length=100_000)
    """``{{name}}`` placeholders are filled from the call's variables (over ``variables``)."""
    first_message: str = Field("", max_length=2000)
    """Spoken when the call starts if ``first_speaker`` is ``agent``; takes placeholders too."""
    first_speaker: Literal["agent", "caller"] = "agent"
    language: str = Field("en-US", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
    """BCP 47 tag of the conversation's language (passed to providers that take one)."""
    timezone: str = "UTC"
    """IANA time zone the agent lives in (``{{now}}`` is rendered in it)."""
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = {}
    """Default values of ``{{placeholders}}``; a call's own variables override them."""
    recording: bool = False
    """Record the call as a stereo WAV (caller left, agent right), served by the API. It is
    streamed to disk as the call goes (about a second buffered); see ``engine/recording.py``."""
    voicemail: VoicemailConfig = VoicemailConfig()
    """Answering-machine detection on outbound calls. Default: off."""
    dtmf: DtmfConfig = DtmfConfig()
    """What the caller's key presses do. Default: entries ending with ``#`` or a 2 s pause reach the
    conversation as ``[DTMF 123#]``; no key actions."""
    stt: SttConfig = FakeSttConfig()
    llm: LlmConfig = FakeLlmConfig()
    llm_fallback: LlmConfig | None = None
    """Used when ``llm`` fails before its first token twice in a row."""
    tts: TtsConfig = FakeTtsConfig()
    tts_fallbacks: tuple[TtsConfig, ...] = ()
    """Tried in order when ``tts`` fails."""
    apology: str = "Sorry, I'm having trouble right now. Could you say that again?"
    """Spoken (through the first TTS that works) when no LLM answers."""
    stt_failure_message: str = "Sorry, I can't hear you right now. Please call back in a moment. Goodbye."
    """Spoken before hanging up when speech recognition fails for good."""
    vad: VadConfig = VadConfig()
    turn: TurnConfig = TurnConfig()
    interruption: InterruptionConfig = InterruptionConfig()
    playout: PlayoutConfig = PlayoutConfig()
    max_tool_rounds: int = Field(4, ge=1)
    """LLM calls per reply when tools are called (a tool result feeds the next call)."""
    silence: SilenceConfig = SilenceConfig()
    """Re-engage a caller who has gone quiet, then hang up (``silence_timeout``). Default: on,
    after 10 s of silence, twice, then the goodbye."""
    max_duration_s: float | None = Field(None, gt=0, le=86_400)
    """Longest a call may last, from the moment its media starts: at the limit the agent takes the
    floor, says ``duration_goodbye`` (which the caller cannot talk over) and hangs up (end reason
    ``max_duration``). Default: no limit."""
    duration_warning_s: float = Field(30.0, ge=0)
    """How long before ``max_duration_s`` the agent says ``duration_warning``: once, at the first
    moment nobody is talking after that (skipped if none comes while at least half of this time is
    left). 0: no warning."""
    duration_warning: str = Field(
        "Just so you know, we're almost out of time for this call.", min_length=1, max_length=500
    )
    duration_goodbye: str = Field(
        "We've reached the time limit for this call. Thank you for calling, goodbye.", min_length=1, max_length=500
    )
    fillers: FillerConfig = FillerConfig()
    """A short phrase ("One moment.") when a reply is slow to start. Default: off."""
    ambience: AmbienceConfig = AmbienceConfig()
    """A background sound under the agent's audio. Default: off."""
    transfer_failed_message: str = Field("Sorry, I couldn't transfer you.", min_length=1, max_length=500)
    """Said when the provider refuses a transfer; the call then goes on (status back to in progress)."""
    tools: tuple[Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")], ...] = Field((), max_length=64)
    """Names of tool templates (``/api/v1/tools``) this agent's LLM may call, besides the built-in
    ``end_call``; loaded from the store when a call starts (a missing one is a ``fault``). Default: none."""
    webhook: AgentWebhookConfig | None = None
    """This agent's webhook URL and event filter. Default: the account's (``[webhooks]``)."""
    analysis: AnalysisConfig | None = None
    """Post-call analysis: summary, structured data, success evaluation, sentiment. Default: none
    (an ``[agents.NAME.analysis]`` table, even empty, turns it on)."""

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (want an IANA name like 'Europe/Paris')") from None
        return value

    @model_validator(mode="after")
    def _check_duration(self) -> AgentConfig:
        limit = self.max_duration_s
        if limit is not None and self.duration_warning_s >= limit:
            raise ValueError(
                f"duration_warning_s ({self.duration_warning_s:g}) must be less than max_duration_s ({limit:g})"
            )
        return self

    @model_validator(mode="after")
    def _check_silences(self) -> AgentConfig:
        for name in ("silence_ms", "sentence_end_silence_ms", "continuation_silence_ms"):
            value = getattr(self.turn, name)
            if value < self.vad.stop_ms:
                raise ValueError(f"turn.{name} ({value:g} ms) must be at least vad.stop_ms ({self.vad.stop_ms:g} ms)")
        return self


class ServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_message_bytes: int = Field(64 * 1024, gt=0)
    """Largest WebSocket message accepted from a media socket; larger closes it (1009)."""
    max_protocol_errors: int = Field(50, ge=1)
    """Malformed messages a media socket may send before its call is ended."""
    media_idle_timeout_s: float = Field(30.0, gt=0)
    """A media socket silent this long (no message at all, or no ``start``) is considered dead;
    its call ends with reason ``transport_closed``."""
    close_timeout_s: float = Field(2.0, gt=0)
    """How long to wait for the peer to answer our WebSocket close."""
    shutdown_timeout_s: float = Field(5.0, gt=0)
    """On SIGTERM/SIGINT, how long live calls get to end cleanly."""
    debug_records: bool = False
    """Serve each call's engine record (stage timings, preemptive counts) at ``GET /calls/{id}``,
    WITHOUT authentication: for the benchmarks only; never turn it on where callers' transcripts matter."""


class ApiConfig(_Model):
    """The control API under ``/api/v1`` and where it keeps its data."""

    data_dir: Path = Field(default_factory=lambda: Path(os.environ.get("RINGLINE_DATA_DIR", "data")))
    """Where the default SQLite database (``ringline.db``) and call recordings live; created at start.
    Default: ``$RINGLINE_DATA_DIR``, else ``data`` in the working directory."""
    database_url: str | None = None
    """``postgresql://user:pass@host/db`` for production, ``sqlite:///path``; default: SQLite in ``data_dir``."""
    event_token_secret: SecretStr | None = None
    """Signs the short-lived tokens browsers use for the live-events socket. Default: random per
    process (tokens then do not survive a restart or work across processes behind one address)."""
    requests_per_key: int = Field(1000, ge=1)
    """Requests each API key may make per minute."""
    requests_per_address: int = Field(100, ge=1)
    """Requests without a valid key, per client address per minute."""
    commands_per_call: int = Field(10, ge=1)
    """Control commands (say, inject-context, transfer, end-call) each call accepts per minute."""
    docs: bool = True
    """Serve ``/openapi.json`` and the Swagger UI at ``/docs``."""
    max_concurrent_requests: int = Field(4, ge=1)
    """API requests handled at once; the rest wait. The API shares the event loop with live calls:
    this keeps a burst of API traffic from crowding out their audio."""

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ringline.db'}"


def _from_environment(data: Any, variables: dict[str, str], required: tuple[str, ...]) -> Any:
    """``data`` with each field of ``variables`` it lacks taken from that environment variable; a
    ``required`` one in neither is an error."""
    if not isinstance(data, dict):
        return data
    for field, env in variables.items():
        if not data.get(field):
            if value := os.environ.get(env):
                data = {**data, field: value}
            elif field in required:
                raise ValueError(f"{field} is missing: set it here or in the environment as {env}")
    return data


class TwilioConfig(_Model):
    """Twilio's REST API, for outbound calls and transfers (media streams need no credentials).
    ``account_sid`` and ``auth_token`` come from here or, when absent, from the environment as
    ``TWILIO_ACCOUNT_SID`` and ``TWILIO_AUTH_TOKEN``; one in neither is an error at load."""

    account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
    auth_token: SecretStr
    api_base_url: str = Field("https://api.twilio.com", pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    """Base URL of the REST API (``/2010-04-01/...`` is appended); a local fake's in tests."""
    timeout_s: float = Field(10.0, gt=0)
    """Each REST request's whole time, connecting included."""

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_environment(cls, data: Any) -> Any:
        names = {"account_sid": "TWILIO_ACCOUNT_SID", "auth_token": "TWILIO_AUTH_TOKEN"}
        return _from_environment(data, names, tuple(names))


class TelnyxConfig(_Model):
    """Telnyx Call Control (``[telephony.telnyx]``): outbound calls, hang-up, transfers, and the
    inbound ``call.initiated`` webhook answered with a media stream. ``api_key``, ``connection_id``
    and ``public_key`` come from here or from ``TELNYX_API_KEY``, ``TELNYX_CONNECTION_ID`` and
    ``TELNYX_PUBLIC_KEY``; the API key is required."""

    api_key: SecretStr
    connection_id: str | None = Field(None, min_length=1)
    """The Call Control application (connection) outbound calls are placed through. Default: none
    (no outbound calls on Telnyx)."""
    public_key: str | None = Field(None, pattern=r"^[A-Za-z0-9+/]{43}=$")
    """The account's webhook signing key (base64 Ed25519, Mission Control > Keys & Credentials):
    webhooks are accepted only with a valid ``telnyx-signature-ed25519``. Default: none (every
    webhook is refused). Its ``telnyx-timestamp`` must be within 5 minutes of now (the SDK's window)."""
    api_base_url: str = Field("https://api.telnyx.com/v2", pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    """Base URL of the v2 API (``/calls`` is appended); a local fake's in tests."""
    timeout_s: float = Field(10.0, gt=0)
    """Each REST request's whole time."""

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_environment(cls, data: Any) -> Any:
        names = {
            "api_key": "TELNYX_API_KEY",
            "connection_id": "TELNYX_CONNECTION_ID",
            "public_key": "TELNYX_PUBLIC_KEY",
        }
        return _from_environment(data, names, ("api_key",))


class PlivoConfig(_Model):
    """Plivo's Voice API (``[telephony.plivo]``). ``auth_id`` and ``auth_token`` come from here or
    from ``PLIVO_AUTH_ID`` and ``PLIVO_AUTH_TOKEN``; the token also checks webhooks'
    ``X-Plivo-Signature-V3``."""

    auth_id: str = Field(pattern=r"^[A-Z0-9]{20}$")
    auth_token: SecretStr
    api_base_url: str = Field("https://api.plivo.com", pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    """Base URL of the REST API (``/v1/Account/...`` is appended); a local fake's in tests."""
    timeout_s: float = Field(10.0, gt=0)
    """Each REST request's whole time."""

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_environment(cls, data: Any) -> Any:
        names = {"auth_id": "PLIVO_AUTH_ID", "auth_token": "PLIVO_AUTH_TOKEN"}
        return _from_environment(data, names, ("auth_id", "auth_token"))


class VonageConfig(_Model):
    """Vonage's Voice API (``[telephony.vonage]``), as a Vonage application. ``application_id``,
    ``private_key`` (PEM) and ``signature_secret`` come from here or from
    ``VONAGE_APPLICATION_ID``, ``VONAGE_PRIVATE_KEY`` and ``VONAGE_SIGNATURE_SECRET``;
    ``private_key_path`` may name a PEM file instead."""

    application_id: str = Field(pattern=r"^[0-9a-fA-F-]{36}$")
    private_key: SecretStr | None = None
    """The application's private key, PEM (signs the REST API's JWTs)."""
    private_key_path: Path | None = None
    """A file holding it, read at load."""
    signature_secret: SecretStr | None = None
    """The account's signature secret (HS256): webhooks are accepted only with a valid signed JWT
    in ``Authorization: Bearer``. Default: none (every webhook is refused)."""
    api_base_url: str = Field("https://api.nexmo.com", pattern=r"^https?://[^/?#\s]+(/[^?#\s]*)?$")
    """Base URL of the Voice API (``/v1/calls`` is appended); a local fake's in tests."""
    timeout_s: float = Field(10.0, gt=0)
    """Each REST request's whole time."""
    webhook_tolerance_s: float = Field(300.0, gt=0)
    """A signed webhook whose JWT was issued further than this from now is refused (replays)."""

    @field_validator("api_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="before")
    @classmethod
    def _credentials_from_environment(cls, data: Any) -> Any:
        names = {
            "application_id": "VONAGE_APPLICATION_ID",
            "private_key": "VONAGE_PRIVATE_KEY",
            "signature_secret": "VONAGE_SIGNATURE_SECRET",
        }
        data = _from_environment(data, names, ("application_id",))
        if isinstance(data, dict) and not data.get("private_key") and (path := data.get("private_key_path")):
            try:
                data = {**data, "private_key": Path(path).read_text()}
            except OSError as exc:
                raise ValueError(f"cannot read private_key_path {path}: {exc.strerror}") from None
        if isinstance(data, dict) and not data.get("private_key"):
            raise ValueError("private_key is missing: set it, or private_key_path, here or VONAGE_PRIVATE_KEY")
        return data


class TelephonyConfig(_Model):
    """How Ringline reaches the telephony providers, and how they reach it."""

    public_url: str | None = Field(None, pattern=r"^(https?|wss?)://[^/?#\s]+(/[^?#\s]*)?$")
    """The base URL the providers reach this server at (``https://voice.example.com``); media
    stream URLs are made from it (``wss://voice.example.com/media/twilio``). Needed to place
    outbound calls. Default: none."""
    sip: SipConfig | None = None
    """``[telephony.sip]``: the native SIP user agent. Default: off."""
    twilio: TwilioConfig | None = None
    """``[telephony.twilio]``: Twilio's REST API. Default: not configured (no outbound calls or
    transfers on Twilio)."""
    telnyx: TelnyxConfig | None = None
    """``[telephony.telnyx]``: Telnyx Call Control. Default: not configured."""
    plivo: PlivoConfig | None = None
    """``[telephony.plivo]``: Plivo's Voice API. Default: not configured."""
    vonage: VonageConfig | None = None
    """``[telephony.vonage]``: Vonage's Voice API. Default: not configured."""

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None


class WebhookConfig(_Model):
    """``[webhooks]``: signed POSTs of call events, sent from a durable outbox and retried until
    delivered or ``max_age_h`` old (see ``ringline.api.webhooks``). ``secret`` comes from here or,
    when absent, from the environment as ``RINGLINE_WEBHOOK_SECRET``; events are only sent signed."""

    default_url: str | None = Field(None, pattern=_HTTP_URL)
    """The account's receiver, for agents without their own. Default: none (no webhooks)."""
    secret: SecretStr | None = None
    """Signs every webhook (HMAC-SHA256); required once any URL is set. Default: ``$RINGLINE_WEBHOOK_SECRET``."""
    events: tuple[WebhookEvent, ...] = tuple(e for e in WEBHOOK_EVENTS if e != "assistant-request")
    """The events sent for agents with no ``webhook.events`` of their own. Default: all but
    ``assistant-request``, which must be asked for: every inbound call that names no agent then waits
    (up to ``assistant_request_timeout_s``) for the receiver's answer."""
    max_age_h: float = Field(24.0, gt=0)
    """An event not delivered this long after it was queued is given up on (``failed``)."""
    timeout_s: float = Field(10.0, gt=0)
    """Each delivery attempt's whole time, connecting included."""
    backoff_base_s: float = Field(1.0, gt=0)
    """The first retry waits up to this long; each next one up to twice as long (full jitter)."""
    backoff_cap_s: float = Field(600.0, gt=0)
    """The longest wait between two attempts."""
    max_in_flight: int = Field(16, ge=1)
    """Deliveries in flight at once, all receivers together."""
    max_in_flight_per_url: int = Field(4, ge=1)
    """Deliveries in flight at once to one receiver URL (a slow one cannot hold up the others)."""
    poll_s: float = Field(1.0, gt=0)
    """How often the outbox is checked for due events when nothing new was queued by this process."""
    assistant_request_timeout_s: float = Field(5.0, gt=0, le=30)
    """How long an inbound call waits for the ``assistant-request`` answer (the caller hears nothing
    meanwhile); then the number's stored agent answers."""

    @model_validator(mode="before")
    @classmethod
    def _secret_from_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("secret") and (value := os.environ.get("RINGLINE_WEBHOOK_SECRET")):
            data = {**data, "secret": value}
        return data


class WebRtcConfig(_Model):
    """``[webrtc]``: browser calls (``POST /api/v1/webrtc/offer``, API key with ``calls:write`` and
    ``calls:read``) and the playground page."""

    playground: bool = True
    """Serve the playground page at ``/playground`` (static; it holds no secret: calls need a key)."""
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    """Local addresses offered as ICE host candidates. Default: loopback, for browsers on this
    machine (remote candidates that are not loopback are then ignored). Empty: every interface."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs (``stun:stun.example.com:3478``) for callers behind NAT."""
    codecs: tuple[Literal["opus", "PCMU", "PCMA"], ...] = Field(("opus", "PCMU", "PCMA"), min_length=1)
    """Codecs accepted, most preferred first."""
    connect_timeout_s: float = Field(15.0, gt=0)
    """An answered offer whose connection is not up this soon is given up."""


class Settings(_Model):
    server: ServerConfig = ServerConfig()
    api: ApiConfig = Field(default_factory=ApiConfig)
    telephony: TelephonyConfig = Field(default_factory=TelephonyConfig)
    webhooks: WebhookConfig = Field(default_factory=WebhookConfig)
    webrtc: WebRtcConfig = Field(default_factory=WebRtcConfig)
    default_agent: str = "default"
    agents: dict[str, AgentConfig] = Field(default_factory=lambda: {"default": AgentConfig()})

    @model_validator(mode="after")
    def _check_default(self) -> Settings:
        if self.default_agent not in self.agents:
            raise ValueError(f"default_agent {self.default_agent!r} is not among agents {sorted(self.agents)}")
        return self

    @model_validator(mode="after")
    def _check_webhook_secret(self) -> Settings:
        urls = [self.webhooks.default_url] + [a.webhook.url for a in self.agents.values() if a.webhook]
        if self.webhooks.secret is None and any(urls):
            raise ValueError("webhooks.secret is missing: set it here or in the environment as RINGLINE_WEBHOOK_SECRET")
        return self

    def agent(self, name: str | None) -> AgentConfig:
        """The named agent, or the default one when ``name`` is None or empty."""
        key = name or self.default_agent
        try:
            return self.agents[key]
        except KeyError:
            raise ConfigError(f"unknown agent {key!r}") from None


BUNDLED = Path(__file__).parent


def load_settings(path: str | Path | None = None, data: dict[str, Any] | None = None) -> Settings:
    """Load and validate settings from a TOML file (or a dict); defaults where nothing is given."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config {path} is not valid TOML: {exc}") from exc
    try:
        return Settings.model_validate(data or {})
    except ValidationError as exc:
        lines = [f"{_path(err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()]
        where = f"config {path}" if path is not None else "config"
        raise ConfigError(f"{where} is invalid:\n  " + "\n  ".join(lines)) from exc


_PROVIDER_FIELDS = {"stt", "llm", "llm_fallback", "tts", "tts_fallbacks"}


def _path(loc: tuple[str | int, ...]) -> str:
    """A field's dotted path, without the provider tags pydantic puts in for tagged unions
    (``agents.a.tts.ttfb_ms``, not ``agents.a.tts.fake.ttfb_ms``)."""
    return ".".join(
        str(part)
        for i, part in enumerate(loc)
        if not (i and part in PROVIDER_TAGS and (loc[i - 1] in _PROVIDER_FIELDS or isinstance(loc[i - 1], int)))
    )
