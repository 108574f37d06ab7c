"""The seam between a call and whatever carries its audio."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ringline.engine.audio.formats import AudioFormat
from ringline.engine.errors import RinglineError


class TransferFailed(RinglineError):
    """The provider did not take the call over to the transfer destination."""


class SendDtmfFailed(RinglineError):
    """The transport could not press DTMF keys towards the far end."""


WARM_ON_SIP_ONLY = "a warm transfer needs both legs in Ringline's hands: native SIP calls only"

Briefing = Callable[[AudioFormat], Awaitable[bytes]]
"""What a warm transfer says to whoever answers before the caller joins, rendered in that leg's
audio format (the call's TTS speaks it)."""


class MediaTransport(Protocol):
    """Outbound half of a provider socket, RTP session or WebRTC track.

    Inbound events are pushed to the call by the adapter that owns the socket; the call only
    ever talks back through this interface. Sends never raise on a closed peer: a transport
    that has gone away drops what it is given (the adapter ends the call).
    """

    @property
    def format(self) -> AudioFormat:
        """Wire format of audio in both directions."""
        ...

    async def send_audio(self, payload: bytes) -> None: ...

    async def mark(self, name: str) -> None:
        """Ask to be told (``MarkPlayed``) when everything sent so far has been played."""
        ...

    async def clear(self) -> None:
        """Drop audio buffered at the provider that has not been played yet."""
        ...

    async def hangup(self) -> None:
        """End the media stream from our side."""
        ...

    @property
    def transfer_unavailable(self) -> str | None:
        """Why ``transfer`` cannot work on this call (None: it can)."""
        ...

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        """Hand the call over to ``destination`` (E.164 number or SIP URI) at the provider; the
        media stream then ends. With a ``briefing`` (a warm transfer), whoever answers hears it
        before the caller is connected: only where the transport carries both legs (native SIP).
        Raises ``TransferFailed`` if the provider refuses or a warm transfer cannot be done."""
        ...

    async def send_dtmf(self, keys: str) -> None:
        """Press ``keys`` (0-9, *, #, A-D; ``w`` pauses half a second) towards the far end, after
        the audio already sent: as signalling where the transport has it (RFC 4733 on RTP), else
        as in-band tones in the audio. Raises ``SendDtmfFailed`` if it cannot."""
        ...
