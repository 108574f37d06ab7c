"""A flood from one source is dropped past its budget; other sources and a patient peer get through."""

from __future__ import annotations

import asyncio
import socket

from ringline.engine.transports.sip.ratelimit import SourceLimiter
from tests.sip_fixtures import sip_server


def test_a_source_gets_its_burst_then_its_rate_and_others_are_not_affected() -> None:
    limiter = SourceLimiter(10.0, burst=20.0)
    allowed = [limiter.allow("192.0.2.1", 0.0) for _ in range(30)]
    assert allowed == [True] * 20 + [False] * 10 and limiter.dropped == 10
    assert limiter.allow("192.0.2.2", 0.0)  # another source has its own bucket
    assert not limiter.allow("192.0.2.1", 0.05)  # half a token back: not yet
    assert limiter.allow("192.0.2.1", 0.1)  # one token back after 1/rate


OPTIONS = (
    "OPTIONS sip:ringline@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-flood-{i}\r\n"
    "From: <sip:flood@127.0.0.1>;tag={i}\r\nTo: <sip:ringline@127.0.0.1>\r\n"
    "Call-ID: flood-{i}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


async def test_the_user_agent_answers_a_flood_only_up_to_its_budget() -> None:
    async with sip_server(requests_per_second=5.0) as server:  # bursts of 10
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.1", 0))
            peer.setblocking(False)
            port = peer.getsockname()[1]
            for i in range(50):
                peer.sendto(OPTIONS.format(port=port, i=i).encode(), server.sip)
            loop = asyncio.get_running_loop()
            answers: list[bytes] = []
            try:
                async with asyncio.timeout(1.0):  # what was answered arrives within a second
                    while True:
                        answers.append(await loop.sock_recv(peer, 65535))
            except TimeoutError:
                pass
    assert all(a.startswith(b"SIP/2.0 200 OK") for a in answers)
    assert 10 <= len(answers) <= 16  # the burst, and the few tokens earned while the flood arrived
