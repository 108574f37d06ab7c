"""OpenAI text to speech behind the ``Tts`` seam (``POST /v1/audio/speech``), through the ``openai``
SDK's streaming response. ``base_url`` points it at any server speaking that API.

One request per phrase, in order, ``response_format="pcm"``: OpenAI streams 24 kHz mono PCM16 as
it synthesizes, and every piece is handed on at once as ``SpeechAudio`` of that phrase in
``PCM16_24K`` (the call converts to its wire format). ``instructions`` go only to models that
take them (not ``tts-1``/``tts-1-hd``).

Failures are ``ProviderError``: HTTP 408/409/429 (``Retry-After`` in the message and in
``retry_after``), 5xx, connection errors, a body cut short and a server that stops answering (no
bytes for ``timeout_s``) are ``retryable=True``; 400/401/403/404/422 and other 4xx are not. The SDK does
not retry (``max_retries=0``): the caller decides. Messages never contain the API key, and errors
are raised ``from None`` so the SDK's exception is not chained into logged tracebacks.

Clients: given the process's ``HttpClients``, every call shares one ``AsyncOpenAI`` (and its warm
connections) per base URL, key and timeout, made by the LLM adapter's ``openai_client``; without,
each reply makes its own and closes it when it ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai

from ringline.config.providers import OpenAiTtsConfig
from ringline.engine.audio.clock import Clock, LoopClock
from ringline.engine.audio.formats import AudioChunk, AudioFormat, Encoding
from ringline.engine.clients import HttpClients, borrow
from ringline.engine.errors import ProviderError, parse_retry_after
from ringline.engine.llm.openai import openai_client, root_cause, timed_out
from ringline.engine.tts.base import SpeechAudio

OPENAI_URL = "https://api.openai.com/v1"
PCM16_24K = AudioFormat(Encoding.PCM16, 24000)
"""What ``response_format="pcm"`` is."""
NO_INSTRUCTIONS_PREFIX = "tts-1"
"""``tts-1``, ``tts-1-hd`` and their dated snapshots take no ``instructions``."""
RETRYABLE_STATUS = frozenset({408, 409, 429})
"""Plus every 5xx."""


class OpenAiTts:
    def __init__(
        self,
        config: OpenAiTtsConfig,
        clock: Clock,
        *,
        clients: HttpClients | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        self._config = config
        self._clock = clock
        self._secret = config.api_key.get_secret_value()
        self._clients = clients
        self._timeout_s = timeout_s

    def request(self, text: str) -> dict[str, Any]:
        """The arguments of ``audio.speech.create`` for one phrase."""
        cfg = self._config
        kwargs: dict[str, Any] = {
            "model": cfg.model,
            "voice": cfg.voice,
            "input": text,
            "response_format": "pcm",
            "speed": cfg.speed,
        }
        if cfg.instructions and not cfg.model.startswith(NO_INSTRUCTIONS_PREFIX):
            kwargs["instructions"] = cfg.instructions
        return kwargs

    async def stream(self, phrases: AsyncIterator[str], preferred: AudioFormat) -> AsyncIterator[SpeechAudio]:
        async with borrow(self._clients) as clients:
            client = self.sdk_client(clients)
            index = 0
            async for text in phrases:
                if text.strip():
                    carry = b""
                    try:
                        async with client.audio.speech.with_streaming_response.create(
                            **self.request(text.strip())
                        ) as response:
                            async for data in response.iter_bytes():
                                data = carry + data
                                whole = len(data) - len(data) % 2  # a piece may end mid-sample
                                data, carry = data[:whole], data[whole:]
                                if data:
                                    yield SpeechAudio(index, AudioChunk(data, PCM16_24K))
                    except openai.APIStatusError as exc:
                        retryable = _retryable(exc)
                        retry_after = parse_retry_after(exc.response.headers.get("retry-after")) if retryable else None
                        raise ProviderError(
                            self._redact(_describe(exc)), retryable=retryable, retry_after=retry_after
                        ) from None
                    except (openai.APIConnectionError, httpx2.HTTPError) as exc:
                        if timed_out(exc):
                            raise ProviderError(self._timed_out(), retryable=True) from None
                        raise ProviderError(self._redact(_connection_error(exc)), retryable=True) from None
                index += 1

    def sdk_client(self, clients: HttpClients) -> openai.AsyncOpenAI:
        base_url = self._config.base_url or OPENAI_URL
        return openai_client(clients, api_key=self._secret, base_url=base_url, timeout_s=self._timeout_s)

    def _timed_out(self) -> str:
        return f"openai tts: no answer within {self._timeout_s:g} s"

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if len(self._secret) >= 4 else text


def _retryable(exc: openai.APIStatusError) -> bool:
    return exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500


def _describe(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else exc.message
    code = exc.code or exc.type
    text = f"openai tts: HTTP {exc.status_code}" + (f" {code}" if code else "") + f": {message}"
    if retry_after := exc.response.headers.get("retry-after"):
        text += f" (retry after {retry_after} s)"
    return text[:300]


def _connection_error(exc: Exception) -> str:
    cause = root_cause(exc)
    return f"openai tts: connection failed ({type(cause).__name__}: {cause})"


async def warm_up(config: OpenAiTtsConfig, clients: HttpClients) -> None:
    """Make the shared client (and the TLS context) at start-up. Sends nothing."""
    OpenAiTts(config, LoopClock(), clients=clients).sdk_client(clients)
