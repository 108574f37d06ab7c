"""Two SIP legs joined: the caller and whoever the call was transferred to hear each other.

A bridge takes over two legs whose calls are done with them (the agent's call ended
``transferred``): each tick, the frame one leg received goes out on the other (translated between
mu-law and A-law when the legs differ), and RFC 4733 digits are pressed through. When either side
hangs up, the other gets a BYE; both legs' ports are freed. Ringline stays in the media path (the
legs are ours), which is what lets it work with peers that do not take REFER.
"""

from __future__ import annotations

import asyncio
import logging

from ringline.engine.audio.resample import AudioConverter
from ringline.engine.record import EndReason
from ringline.engine.transports.events import AudioReceived, DtmfReceived
from ringline.engine.transports.sip.leg import LegState, SipLeg

log = logging.getLogger(__name__)


class Bridge:
    def __init__(self, a: SipLeg, b: SipLeg) -> None:
        self.a, self.b = a, b
        self.extra = {"call_id": a.id}

    async def run(self) -> None:
        """Relay both ways until one side hangs up, then hang up the other."""
        log.info("sip bridge: %s <-> %s", self.a.id, self.b.id, extra=self.extra)
        relays = [
            asyncio.create_task(self._relay(self.a, self.b), name=f"bridge-{self.a.id}"),
            asyncio.create_task(self._relay(self.b, self.a), name=f"bridge-{self.b.id}"),
        ]
        try:
            done, _ = await asyncio.wait(relays, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for relay in relays:
                relay.cancel()
            await asyncio.gather(*relays, return_exceptions=True)
            for leg in (self.a, self.b):
                if leg.state is not LegState.ENDED:
                    leg.end(EndReason.TRANSFERRED, "the other side of the bridge hung up")
                await leg.hang_up_and_release()
        log.info("sip bridge ended", extra=self.extra)

    @staticmethod
    async def _relay(source: SipLeg, sink: SipLeg) -> None:
        convert = AudioConverter(source.format, sink.format)
        out = sink.endpoint
        async for event in source.endpoint:
            if isinstance(event, AudioReceived):
                out.send_audio(convert.convert(event.payload))
            elif isinstance(event, DtmfReceived) and sink.media.dtmf_payload_type is not None:
                out.send_dtmf(event.digit)
