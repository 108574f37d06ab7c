"""Build an agent's STT, LLM and TTS from its configuration.

Vendor SDKs are imported only inside their adapters, and adapters only when an agent uses them,
so a deployment on fakes or embedded models never imports a cloud SDK.

Cloud adapters take the process's ``HttpClients`` (owned by the app, see ``ringline.engine.clients``)
and share its SDK clients with every other call; fakes and embedded providers ignore it. Without
one, each cloud adapter makes private clients and closes them itself (tests, benchmarks).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ringline.config.providers import (
    DeepgramSttConfig,
    ElevenLabsTtsConfig,
    EspeakTtsConfig,
    FakeLlmConfig,
    FakeSttConfig,
    FakeTtsConfig,
    LlmConfig,
    MoonshineSttConfig,
    OpenAiLlmConfig,
    OpenAiTtsConfig,
    PiperTtsConfig,
    ScriptedLlmConfig,
    SttConfig,
    TtsConfig,
    WhisperSttConfig,
)
from ringline.config.settings import AgentConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.clients import HttpClients
from ringline.engine.llm.base import Llm
from ringline.engine.stt.base import Stt
from ringline.engine.tts.base import Tts


@dataclass(frozen=True, slots=True)
class Providers:
    stt: Stt
    llm: Llm
    tts: Tts
    llm_fallback: Llm | None = None
    tts_fallbacks: tuple[Tts, ...] = ()


def build_providers(agent: AgentConfig, clock: Clock, clients: HttpClients | None = None) -> Providers:
    """One call's providers (fresh instances: scripted fakes keep per-call state), the cloud ones
    on the shared ``clients``."""
    return Providers(
        stt=build_stt(agent.stt, clock, clients),
        llm=build_llm(agent.llm, clock, clients),
        tts=build_tts(agent.tts, clock, clients),
        llm_fallback=None if agent.llm_fallback is None else build_llm(agent.llm_fallback, clock, clients),
        tts_fallbacks=tuple(build_tts(c, clock, clients) for c in agent.tts_fallbacks),
    )


def build_stt(config: SttConfig, clock: Clock, clients: HttpClients | None = None) -> Stt:
    match config:
        case FakeSttConfig():
            from ringline.engine.stt.fake import FakeStt

            return FakeStt(config, clock)
        case DeepgramSttConfig():
            from ringline.engine.stt.deepgram import DeepgramStt

            return DeepgramStt(config, clock, clients=clients)
        case WhisperSttConfig():
            from ringline.engine.stt.whisper import WhisperStt

            return WhisperStt(config, clock)
        case MoonshineSttConfig():
            from ringline.engine.stt.moonshine import MoonshineStt

            return MoonshineStt(config, clock)
    raise AssertionError(f"no adapter for {config!r}")  # the config union and this match disagree


def build_llm(config: LlmConfig, clock: Clock, clients: HttpClients | None = None) -> Llm:
    match config:
        case FakeLlmConfig():
            from ringline.engine.llm.fake import FakeLlm

            return FakeLlm(config, clock)
        case OpenAiLlmConfig():
            from ringline.engine.llm.openai import OpenAiLlm

            return OpenAiLlm(config, clock, clients=clients)
        case ScriptedLlmConfig():
            from ringline.engine.llm.scripted import ScriptedLlm

            return ScriptedLlm(config, clock)
    raise AssertionError(f"no adapter for {config!r}")


def build_tts(config: TtsConfig, clock: Clock, clients: HttpClients | None = None) -> Tts:
    match config:
        case FakeTtsConfig():
            from ringline.engine.tts.fake import FakeTts

            return FakeTts(config, clock)
        case ElevenLabsTtsConfig():
            from ringline.engine.tts.elevenlabs import ElevenLabsTts

            return ElevenLabsTts(config, clock, clients=clients)
        case OpenAiTtsConfig():
            from ringline.engine.tts.openai import OpenAiTts

            return OpenAiTts(config, clock, clients=clients)
        case PiperTtsConfig():
            from ringline.engine.tts.piper import PiperTts

            return PiperTts(config, clock)
        case EspeakTtsConfig():
            from ringline.engine.tts.espeak import EspeakTts

            return EspeakTts(config, clock)
    raise AssertionError(f"no adapter for {config!r}")


_EMBEDDED = {
    WhisperSttConfig: "ringline.engine.stt.whisper",
    MoonshineSttConfig: "ringline.engine.stt.moonshine",
    PiperTtsConfig: "ringline.engine.tts.piper",
    EspeakTtsConfig: "ringline.engine.tts.espeak",
}
"""Providers whose models load into this process: warmed up before the first call."""


_CLOUD = {
    DeepgramSttConfig: "ringline.engine.stt.deepgram",
    OpenAiLlmConfig: "ringline.engine.llm.openai",
    ElevenLabsTtsConfig: "ringline.engine.tts.elevenlabs",
    OpenAiTtsConfig: "ringline.engine.tts.openai",
}
"""Adapters whose SDK import takes up to ~1.5 s: imported at start-up, not on the first call; their
``warm_up(config, clients)`` makes the shared SDK client then too."""


async def warm_up(
    agents: Iterable[AgentConfig], progress: Callable[[str], None], clients: HttpClients | None = None
) -> None:
    """Import the cloud SDKs (and, given the shared ``clients``, make their SDK clients and the
    TLS context), and load and exercise every embedded model the agents use (once per distinct
    config), so the first caller does not wait. Reports each step to ``progress``."""
    agents = list(agents)
    for module in {_CLOUD[type(c)] for a in agents for c in _configs(a) if type(c) in _CLOUD}:
        importlib.import_module(module)
    if clients is not None:
        for config in {c for a in agents for c in _configs(a) if type(c) in _CLOUD}:
            await importlib.import_module(_CLOUD[type(config)]).warm_up(config, clients)
    seen: set[object] = set()
    for agent in agents:
        for config in _configs(agent):
            module = _EMBEDDED.get(type(config))
            if module is None or config in seen:
                continue
            seen.add(config)
            progress(f"loading {config.provider} ...")
            started = time.perf_counter()
            await importlib.import_module(module).warm_up(config)
            progress(f"{config.provider} ready in {time.perf_counter() - started:.1f} s")
    if any(agent.vad.engine == "silero" for agent in agents):
        from ringline.engine.vad import silero  # onnxruntime only when an agent uses it

        progress("loading silero vad ...")
        started = time.perf_counter()
        await silero.warm_up()
        progress(f"silero vad ready in {time.perf_counter() - started:.1f} s")


def _configs(agent: AgentConfig) -> list[object]:
    return [agent.stt, agent.llm, agent.llm_fallback, agent.tts, *agent.tts_fallbacks]
