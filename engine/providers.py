"""Build an agent's STT, LLM and TTS from its configuration.

Each provider name maps to a factory; adapters for cloud and embedded providers register here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ringline.config.settings import AgentConfig
from ringline.engine.audio.clock import Clock
from ringline.engine.errors import ConfigError
from ringline.engine.llm.base import Llm
from ringline.engine.llm.fake import FakeLlm
from ringline.engine.stt.base import Stt
from ringline.engine.stt.fake import FakeStt
from ringline.engine.tts.base import Tts
from ringline.engine.tts.fake import FakeTts


@dataclass(frozen=True, slots=True)
class Providers:
    stt: Stt
    llm: Llm
    tts: Tts


def build_providers(agent: AgentConfig, clock: Clock) -> Providers:
    """One call's providers (fresh instances: scripted fakes keep per-call state)."""
    stt: Stt
    llm: Llm
    tts: Tts
    match agent.stt.provider:
        case "fake":
            stt = FakeStt(agent.stt, clock)
        case other:
            raise ConfigError(f"unknown stt provider {other!r}")
    match agent.llm.provider:
        case "fake":
            llm = FakeLlm(agent.llm, clock)
        case other:
            raise ConfigError(f"unknown llm provider {other!r}")
    match agent.tts.provider:
        case "fake":
            tts = FakeTts(agent.tts, clock)
        case other:
            raise ConfigError(f"unknown tts provider {other!r}")
    return Providers(stt, llm, tts)
