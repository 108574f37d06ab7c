"""One browser call over WebRTC (aiortc): answer its offer, then run the call to its end.

``WebRtcSession.answer`` negotiates (Opus or G.711, the configured host candidates) and makes
the ``WebRtcTransport`` the call talks through. ``WebRtcSession.run`` is the task boundary of the
call: it starts the call once the connection is up, feeds it the browser's audio, and whatever way
the connection ends (the browser hangs up, ICE or DTLS fails, the call ends itself, the server
shuts down), the call ends with a recorded reason and the peer connection is closed.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ringline.engine.audio.clock import Clock
from ringline.engine.audio.formats import AudioFormat, Encoding
from ringline.engine.audio.g711 import encode
from ringline.engine.call import Call
from ringline.engine.dtmf import tones
from ringline.engine.record import EndReason
from ringline.engine.transports.base import Briefing, SendDtmfFailed, TransferFailed
from ringline.engine.transports.webrtc.ice import keep_candidates
from ringline.engine.transports.webrtc.media import InboundAudio, ReplyTrack
from ringline.engine.transports.webrtc.sdp import SdpError, answer_format, codec_preferences, parse_offer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WebRtcOptions:
    host_addresses: tuple[str, ...] = ("127.0.0.1",)
    """Host candidates offered (empty: every interface but loopback); see ``sdp.use_host_addresses``."""
    ice_servers: tuple[str, ...] = ()
    """STUN/TURN URLs (``stun:host:port``) for reflexive candidates; none on loopback."""
    codecs: tuple[str, ...] = ("opus", "PCMU", "PCMA")
    """Accepted codecs, most preferred first."""
    connect_timeout_s: float = 15.0
    """An answered offer whose connection is not up this soon is given up (``transport_closed``)."""


class WebRtcTransport:
    """``MediaTransport`` over the reply track. Sends after the connection closed are dropped."""

    def __init__(self, track: ReplyTrack, session: WebRtcSession) -> None:
        self.track = track
        self._session = session

    @property
    def format(self) -> AudioFormat:
        return self.track.queue.format

    async def send_audio(self, payload: bytes) -> None:
        if self.track.readyState == "live":
            self.track.queue.push(payload)

    async def mark(self, name: str) -> None:
        self.track.queue.mark(name)

    async def clear(self) -> None:
        self.track.queue.clear()

    async def hangup(self) -> None:
        await self._session.close()

    @property
    def transfer_unavailable(self) -> str | None:
        return "a WebRTC call has no phone line to hand over: transfer works on phone calls only"

    async def transfer(self, destination: str, briefing: Briefing | None = None) -> None:
        raise TransferFailed(self.transfer_unavailable or "")

    async def send_dtmf(self, keys: str) -> None:
        """In-band tones after the audio already queued (the browser has no DTMF to receive)."""
        fmt = self.format
        try:
            pcm = tones(keys, fmt.sample_rate)
        except ValueError as exc:
            raise SendDtmfFailed(str(exc)) from None
        await self.send_audio(pcm if fmt.encoding is Encoding.PCM16 else encode(pcm, fmt.encoding))


class SessionState(enum.Enum):
    NEW = "new"
    ANSWERED = "answered"
    RUNNING = "running"
    CLOSED = "closed"


class _Ended(Exception):
    def __init__(self, reason: EndReason, detail: str) -> None:
        self.reason, self.detail = reason, detail


class WebRtcSession:
    """A peer connection and the call it carries. ``answer`` once, then ``run`` once."""

    def __init__(self, options: WebRtcOptions, clock: Clock, *, call_id: str = "-") -> None:
        self._options = options
        self._clock = clock
        self._extra = {"call_id": call_id}
        servers = [RTCIceServer(urls=url) for url in options.ice_servers]
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.state = SessionState.NEW
        self.codec = ""
        self.transport: WebRtcTransport | None = None
        self._inbound: InboundAudio | None = None
        self._remote: MediaStreamTrack | None = None
        self._connection: asyncio.Queue[str] = asyncio.Queue()
        self.pc.on("connectionstatechange", lambda: self._connection.put_nowait(self.pc.connectionState))

    def _set_state(self, new: SessionState) -> None:
        log.debug("webrtc session %s -> %s", self.state.value, new.value, extra=self._extra)
        self.state = new

    async def answer(self, offer: str) -> str:
        """The answer SDP (with its candidates) to the browser's ``offer``. Raises ``SdpError``."""
        if self.state is not SessionState.NEW:
            raise RuntimeError(f"answer in state {self.state.value}")
        parse_offer(offer)
        offer = keep_candidates(offer, self._options.host_addresses)
        transceiver = self.pc.addTransceiver("audio", direction="sendrecv")
        transceiver.setCodecPreferences(codec_preferences(self._options.codecs))
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except (ValueError, InternalError, InvalidAccessError, InvalidStateError, OperationError) as exc:
            raise SdpError(f"cannot answer the offer: {exc}") from None
        answer = self.pc.localDescription.sdp
        self.codec, fmt = answer_format(answer)
        track = ReplyTrack(fmt, self._clock)
        transceiver.sender.replaceTrack(track)
        self.transport = WebRtcTransport(track, self)
        self._inbound = InboundAudio(fmt)
        self._remote = transceiver.receiver.track
        self._set_state(SessionState.ANSWERED)
        log.info("answered a WebRTC offer: %s, %s Hz", self.codec, fmt.sample_rate, extra=self._extra)
        return answer

    async def close(self) -> None:
        """Close the peer connection (idempotent)."""
        if self.state is SessionState.CLOSED:
            return
        self._set_state(SessionState.CLOSED)
        if self.transport is not None:
            self.transport.track.stop()
        await self.pc.close()

    async def run(self, call: Call) -> None:
        """Run ``call`` (made with ``transport``, not started) until the connection or the call ends."""
        assert self.transport is not None and self.state is SessionState.ANSWERED, "answer first"
        self.transport.track.on_mark = call.on_mark
        self._extra = {"call_id": call.call_id}
        reason, detail = EndReason.TRANSPORT_CLOSED, ""
        tasks: list[asyncio.Task[object]] = []
        try:
            async with asyncio.timeout(self._options.connect_timeout_s):
                await self._until_connected()
            self._set_state(SessionState.RUNNING)
            await call.start()
            tasks = [
                asyncio.create_task(self._pump(call), name=f"webrtc-in-{call.call_id}"),
                asyncio.create_task(self._until_disconnected(), name=f"webrtc-state-{call.call_id}"),
                asyncio.create_task(call.wait_ended(), name=f"webrtc-call-{call.call_id}"),
            ]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises _Ended, or a bug
        except _Ended as end:
            reason, detail = end.reason, end.detail
        except TimeoutError:
            detail = f"no connection within {self._options.connect_timeout_s:g} s of the answer"
            log.warning("%s", detail, extra=self._extra)
        except asyncio.CancelledError:
            reason, detail = EndReason.SERVER_SHUTDOWN, "session cancelled"
            raise
        except Exception as exc:
            log.exception("WebRTC session failed", extra=self._extra)
            reason, detail = EndReason.ERROR, f"{type(exc).__name__}: {exc}"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await call.end(reason, detail)
            await self.close()

    async def _until_connected(self) -> None:
        while (state := await self._connection.get()) != "connected":
            if state in ("failed", "closed"):
                raise _Ended(EndReason.TRANSPORT_CLOSED, f"connection {state} before it was established")

    async def _until_disconnected(self) -> None:
        while True:
            state = await self._connection.get()
            if state == "failed":
                raise _Ended(EndReason.TRANSPORT_CLOSED, "connection failed (ICE consent or DTLS lost)")
            if state == "closed":
                raise _Ended(EndReason.CALLER_HANGUP, "the browser closed the connection")

    async def _pump(self, call: Call) -> None:
        """The browser's audio into the call, 20 ms at a time."""
        remote, inbound = self._remote, self._inbound
        assert remote is not None and inbound is not None
        while True:
            try:
                frame = await remote.recv()
            except MediaStreamError:
                raise _Ended(EndReason.CALLER_HANGUP, "the browser's audio track ended") from None
            for chunk in inbound.feed(frame):  # type: ignore[arg-type]
                await call.on_audio(chunk)
