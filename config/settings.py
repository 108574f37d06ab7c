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

from ringline.config.providers import (
    PROVIDER_TAGS,
    FakeLlmConfig,
    FakeSttConfig,
    FakeTtsConfig,
    LlmConfig,
    SttConfig,
    TtsConfig,
)
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
    """Barge-in: the caller talking over the agent."""

    enabled: bool = True
    min_speech_ms: Ms = 100
    """Caller speech this long (from its first voiced frame) stops the agent's audio."""
    min_words: int = Field(0, ge=0)
    """Also require this many transcribed words before stopping the agent (0: speech alone)."""
    backchannel_words: tuple[str, ...] = ("mm-hm", "mhm", "mm", "hmm", "uh-huh", "yeah", "yep", "right", "okay", "ok")
    """Words that acknowledge rather than interrupt: speech made only of these is not a barge-in."""
    false_interruption_timeout_ms: Ms = 1000
    """If the speech that stopped the agent yields no words within this time after it ends,
    it was noise: the agent resumes where the caller stopped hearing it."""


class PlayoutConfig(_Model):
    lead_ms: Ms = 200
    """How far ahead of real time audio is sent to the telephony provider's buffer."""
    frame_ms: int = Field(20, ge=10, le=200)
    """Audio per media message."""


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
    """Record the call as a stereo WAV (caller left, agent right), served by the API."""
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

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (want an IANA name like 'Europe/Paris')") from None
        return value

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
        if isinstance(data, dict):
            for field, env in (("account_sid", "TWILIO_ACCOUNT_SID"), ("auth_token", "TWILIO_AUTH_TOKEN")):
                if not data.get(field):
                    if not (value := os.environ.get(env)):
                        raise ValueError(f"{field} is missing: set it here or in the environment as {env}")
                    data = {**data, field: value}
        return data


class TelephonyConfig(_Model):
    """How Ringline reaches the telephony providers, and how they reach it."""

    public_url: str | None = Field(None, pattern=r"^(https?|wss?)://[^/?#\s]+(/[^?#\s]*)?$")
    """The base URL the providers reach this server at (``https://voice.example.com``); media
    stream URLs are made from it (``wss://voice.example.com/media/twilio``). Needed to place
    outbound calls. Default: none."""
    twilio: TwilioConfig | None = None
    """``[telephony.twilio]``: Twilio's REST API. Default: not configured (no outbound calls or
    transfers on Twilio)."""

    @field_validator("public_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value is not None else None


class Settings(_Model):
    server: ServerConfig = ServerConfig()
    api: ApiConfig = Field(default_factory=ApiConfig)
    telephony: TelephonyConfig = Field(default_factory=TelephonyConfig)
    default_agent: str = "default"
    agents: dict[str, AgentConfig] = Field(default_factory=lambda: {"default": AgentConfig()})

    @model_validator(mode="after")
    def _check_default(self) -> Settings:
        if self.default_agent not in self.agents:
            raise ValueError(f"default_agent {self.default_agent!r} is not among agents {sorted(self.agents)}")
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
