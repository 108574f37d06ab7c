"""RtpEndpoint over real UDP on 127.0.0.1, driven by a real RtpTicker."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Callable

import pytest

from ringline.engine.transports.events import AudioReceived, DtmfReceived, InboundEvent
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.endpoint import PortRange, PortsExhausted, RtpEndpoint
from ringline.engine.transports.rtp.rtcp import Bye, parse_rtcp
from ringline.engine.transports.rtp.session import RtpSession

HOST = "127.0.0.1"
TIMEOUT = 3.0


def frame(n: int) -> bytes:
    return bytes([n]) * 160


async def wait_for(endpoint: RtpEndpoint, match: Callable[[InboundEvent], bool]) -> InboundEvent:
    async with asyncio.timeout(TIMEOUT):
        async for event in endpoint:
            if match(event):
                return event
    raise AssertionError("endpoint closed")


def heard(n: int) -> Callable[[InboundEvent], bool]:
    return lambda e: isinstance(e, AudioReceived) and e.payload == frame(n)


async def test_two_endpoints_talk_and_the_answerer_latches() -> None:
    async with RtpTicker() as ticker:
        bob = await RtpEndpoint.open(RtpSession(comfort=False, call_id="bob"), ticker, host=HOST)
        alice = await RtpEndpoint.open(RtpSession(remote=(HOST, bob.local_port)), ticker, host=HOST)
        try:
            assert bob.session.remote is None  # bob knows nothing yet: he sends nothing
            alice.send_audio(frame(1) * 10)
            await wait_for(bob, heard(1))
            assert bob.session.remote == (HOST, alice.local_port)  # latched on alice's packets
            bob.send_audio(frame(2) * 10)
            await wait_for(alice, heard(2))
            alice.send_dtmf("4#")
            digits = []
            while len(digits) < 2:
                event = await wait_for(bob, lambda e: isinstance(e, DtmfReceived))
                digits.append(event.digit)  # type: ignore[attr-defined]
            assert digits == ["4", "#"]
            assert bob.malformed == 0
            assert bob.session.foreign == 1  # alice's first packet: latching behind NAT takes two
        finally:
            await alice.aclose()
            await bob.aclose()
        assert len(ticker) == 0


async def test_iteration_ends_after_close() -> None:
    async with RtpTicker() as ticker:
        endpoint = await RtpEndpoint.open(RtpSession(), ticker, host=HOST)
        await endpoint.aclose()
        await endpoint.aclose()  # idempotent
        async with asyncio.timeout(TIMEOUT):
            events = [e async for e in endpoint]
        assert all(isinstance(e, AudioReceived) for e in events)
        assert endpoint.closed


async def test_garbage_is_dropped_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(3)
    async with RtpTicker() as ticker:
        bob = await RtpEndpoint.open(RtpSession(comfort=False), ticker, host=HOST)
        alice = await RtpEndpoint.open(RtpSession(remote=(HOST, bob.local_port)), ticker, host=HOST)
        junk = [b"", b"\x00", b"GET / HTTP/1.1\r\n\r\n", b"\x80\x00\x00", b"\x9f" + bytes(20), b"\x81\xc8\x00\xff"]
        junk += [rng.randbytes(rng.randint(1, 1400)) for _ in range(50)]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker, caplog.at_level(logging.WARNING):
            for data in junk:
                attacker.sendto(data, (HOST, bob.local_port))
                attacker.sendto(data, (HOST, bob.rtcp_port))
            alice.send_audio(frame(7) * 5)
            await wait_for(bob, heard(7))
        try:
            assert bob.malformed >= 10  # random bytes that happen to parse are ignored as foreign instead
            assert bob.session.remote == (HOST, alice.local_port)  # garbage did not latch
            warnings = [r for r in caplog.records if "dropped malformed datagram" in r.getMessage()]
            assert len(warnings) == 1
        finally:
            await alice.aclose()
            await bob.aclose()


def bound_pair() -> tuple[socket.socket, socket.socket]:
    """Two UDP sockets on a free even port and the odd one above it (a far end's RTP and RTCP)."""
    for port in PortRange(40000, 60000).candidates():
        rtp, rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            rtp.bind((HOST, port))
            rtcp.bind((HOST, port + 1))
        except OSError:
            rtp.close()
            rtcp.close()
            continue
        return rtp, rtcp
    raise AssertionError("no free port pair")


async def test_close_sends_rtcp_bye_to_the_rtcp_port() -> None:
    rtp, rtcp = bound_pair()
    with rtp, rtcp:
        rtcp.setblocking(False)
        async with RtpTicker() as ticker:
            alice = await RtpEndpoint.open(RtpSession(remote=rtp.getsockname()), ticker, host=HOST)
            await alice.aclose("bye now")
        async with asyncio.timeout(TIMEOUT):
            data = await asyncio.get_running_loop().sock_recv(rtcp, 2048)
        assert parse_rtcp(data)[-1] == Bye((alice.session.ssrc,), "bye now")


async def test_port_range_allocation() -> None:
    async with RtpTicker() as ticker:
        for attempt in range(20):  # find a small range nobody else is using
            base = random.Random(attempt).randrange(42000, 58000, 2)
            ports = PortRange(base, base + 5)  # three pairs
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
                try:
                    squatter.bind((HOST, base + 2))  # someone else holds the second pair
                except OSError:
                    continue
                opened = []
                try:
                    a = await RtpEndpoint.open(RtpSession(), ticker, host=HOST, ports=ports)
                    opened.append(a)
                    b = await RtpEndpoint.open(RtpSession(), ticker, host=HOST, ports=ports)
                    opened.append(b)
                except OSError:
                    for endpoint in opened:
                        await endpoint.aclose()
                    continue
                assert (a.local_port, a.rtcp_port) == (base, base + 1)
                assert (b.local_port, b.rtcp_port) == (base + 4, base + 5)
                with pytest.raises(PortsExhausted, match=f"no free RTP port pair in {base}-{base + 5}"):
                    await RtpEndpoint.open(RtpSession(), ticker, host=HOST, ports=ports)
                await a.aclose()
                assert ports.candidates() == [base, base + 2]  # the cursor wrapped: the released pair is next
                await b.aclose()
                return
    pytest.fail("no free port range found")


def test_port_range_validation() -> None:
    with pytest.raises(ValueError, match="RTP port range 80-90 must be within 1024-65535, start below end"):
        PortRange(80, 90)
    with pytest.raises(ValueError, match="RTP port range 2001-2001 must be within"):
        PortRange(2001, 2001)
    with pytest.raises(ValueError, match="RTP port range 2002-2002 holds no even/odd pair"):
        PortRange(2001, 2002)
    odd = PortRange(2001, 2005)
    assert odd.candidates() == [2002, 2004] and odd.pairs == 2
