"""Call recording: both sides on one timeline, as the caller heard them, written as a stereo WAV.

The caller's track advances one frame per inbound frame (media time). The agent's audio is sent
ahead of real time, so it is placed where the provider's buffer will play it: right after the
agent audio before it, or at the caller's current position if that buffer has run dry. A
``clear`` drops what the provider had not played yet, so it is cut from the agent's track too.

Tracks are kept as G.711 mu-law (8 kHz: 8 KB/s a side while a call records) and become 16-bit
PCM only when the WAV is written, off the event loop.
"""

from __future__ import annotations

import wave
from pathlib import Path

from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import decode, encode
from ringline.engine.transports.base import MediaTransport

_SILENCE = b"\xff"  # mu-law zero


class CallRecorder:
    """Both sides of a call as mu-law at the wire's sample rate (one byte a sample)."""

    def __init__(self, wire: AudioFormat) -> None:
        if wire.channels != 1:
            raise ValueError(f"cannot record {wire.channels}-channel audio")
        self._wire = wire
        self.rate = wire.sample_rate
        self.caller = bytearray()
        self.agent = bytearray()

    def _mulaw(self, payload: bytes) -> bytes:
        if self._wire.encoding is Encoding.MULAW:
            return payload
        pcm = payload if self._wire.encoding is Encoding.PCM16 else decode(payload, self._wire.encoding)
        return encode(pcm, Encoding.MULAW)

    def heard(self, payload: bytes) -> None:
        """One inbound frame (wire encoding)."""
        self.caller += self._mulaw(payload)

    def said(self, payload: bytes) -> None:
        """Agent audio handed to the provider (wire encoding)."""
        now = len(self.caller)
        if len(self.agent) < now:  # the provider's buffer ran dry: this plays from now
            self.agent += _SILENCE * (now - len(self.agent))
        self.agent += self._mulaw(payload)

    def cleared(self) -> None:
        """The provider dropped the agent audio it had not played."""
        del self.agent[len(self.caller) :]

    @property
    def seconds(self) -> float:
        return max(len(self.caller), len(self.agent)) / self.rate

    def write_wav(self, path: Path) -> None:
        """Stereo 16-bit WAV, caller left, agent right (blocking: run it in a thread)."""
        frames = max(len(self.caller), len(self.agent))
        left = decode(bytes(self.caller.ljust(frames, _SILENCE)), Encoding.MULAW)
        right = decode(bytes(self.agent.ljust(frames, _SILENCE)), Encoding.MULAW)
        interleaved = bytearray(4 * frames)
        interleaved[0::4], interleaved[1::4] = left[0::2], left[1::2]
        interleaved[2::4], interleaved[3::4] = right[0::2], right[1::2]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        with wave.open(str(partial), "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(self.rate)
            out.writeframes(interleaved)
        partial.replace(path)


class RecordedTransport:
    """A ``MediaTransport`` that tells a recorder what the agent said, then passes it on."""

    def __init__(self, inner: MediaTransport, recorder: CallRecorder) -> None:
        self._inner = inner
        self._recorder = recorder

    @property
    def format(self) -> AudioFormat:
        return self._inner.format

    async def send_audio(self, payload: bytes) -> None:
        self._recorder.said(payload)
        await self._inner.send_audio(payload)

    async def mark(self, name: str) -> None:
        await self._inner.mark(name)

    async def clear(self) -> None:
        self._recorder.cleared()
        await self._inner.clear()

    async def hangup(self) -> None:
        await self._inner.hangup()

    @property
    def transfer_unavailable(self) -> str | None:
        return self._inner.transfer_unavailable

    async def transfer(self, destination: str) -> None:
        await self._inner.transfer(destination)
