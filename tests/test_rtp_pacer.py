"""RtpPacer: its thread sends each lane's packets at their slots, from the call's own socket, in
order, never early; late packets at the next slot; descriptors closed; and RtpEndpoints on a
ticker with a pacer talk as they do without one."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator

import pytest

from ringline.engine.transports.events import AudioReceived
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.endpoint import RtpEndpoint
from ringline.engine.transports.rtp.pacer import RtpPacer, sockaddr
from ringline.engine.transports.rtp.session import RtpSession

pytestmark = [
    pytest.mark.skipif(not RtpPacer.available(), reason="the pacer needs Linux's libc"),
    pytest.mark.timeout(30),
]

HOST = "127.0.0.1"
INTERVAL = 0.02


@pytest.fixture
def udp() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver) UDP sockets on 127.0.0.1; the receiver blocks up to 3 s."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((HOST, 0))
    receiver.bind((HOST, 0))
    receiver.settimeout(3.0)
    yield sender, receiver
    sender.close()
    receiver.close()


def test_sockaddr_is_the_kernels_layout_for_both_families() -> None:
    v4 = sockaddr("127.0.0.1", 4000)
    assert v4 is not None and len(v4) == 16
    assert struct.unpack("=H", v4[:2])[0] == socket.AF_INET
    assert v4[2:8] == struct.pack("!H", 4000) + socket.inet_aton("127.0.0.1")
    v6 = sockaddr("::1", 4000)
    assert v6 is not None and len(v6) == 28
    assert struct.unpack("=H", v6[:2])[0] == socket.AF_INET6
    assert v6[2:4] == struct.pack("!H", 4000) and v6[8:24] == socket.inet_pton(socket.AF_INET6, "::1")
    assert sockaddr("pbx.example.com", 4000) is None


def test_packets_leave_from_the_calls_port_in_order_and_never_before_their_slot(udp) -> None:
    sender, receiver = udp
    pacer = RtpPacer(interval=INTERVAL, lead=0.005)
    lane = pacer.lane(sender)
    target = receiver.getsockname()
    for tick in range(5):
        assert lane.push(tick, b"packet %d" % tick, target)
    origin = time.monotonic()
    pacer.start(origin)
    try:
        for tick in range(5):
            data, source = receiver.recvfrom(100)
            arrived = time.monotonic()
            assert data == b"packet %d" % tick
            assert source == sender.getsockname()  # the call's own socket: symmetric RTP holds
            assert arrived >= origin + tick * INTERVAL + 0.005  # received after it was sent, sent at its slot
    finally:
        pacer.stop()
    assert (lane.sent, lane.late, lane.dropped) == (5, 0, 0)
    assert pacer.stats.count >= 5


def test_a_packet_built_after_its_slot_goes_out_with_the_next_ones_and_counts_late(udp) -> None:
    sender, receiver = udp
    pacer = RtpPacer(interval=INTERVAL, lead=0.0)
    lane = pacer.lane(sender)
    target = receiver.getsockname()
    pacer.start(time.monotonic() - 10 * INTERVAL)  # slots 0-9 are past
    try:
        lane.push(0, b"late", target)
        lane.push(1 << 30, b"far future", target)  # not due for years: stays queued
        data, _ = receiver.recvfrom(100)
        assert data == b"late"
        assert lane.late == 1  # counted before the send
    finally:
        pacer.stop()  # sends what is still queued
    assert receiver.recvfrom(100)[0] == b"far future"
    assert lane.late == 1


def test_the_pacer_closes_its_duplicate_descriptors_not_the_calls_socket(udp) -> None:
    sender, receiver = udp
    pacer = RtpPacer(interval=INTERVAL)
    open_lane, closed_lane = pacer.lane(sender), pacer.lane(sender)
    duplicates = (open_lane._fd, closed_lane._fd)
    assert sender.fileno() not in duplicates
    closed_lane.close()
    assert not closed_lane.push(0, b"x", ("pbx.example.com", 4000))  # a name, not an address: the caller sends
    pacer.start(time.monotonic())
    pacer.stop()
    for fd in duplicates:
        with pytest.raises(OSError):
            os.fstat(fd)
    sender.sendto(b"still mine", receiver.getsockname())
    assert receiver.recvfrom(100)[0] == b"still mine"
    assert len(pacer) == 0


def test_the_switch_interval_is_lowered_while_running_and_restored(udp) -> None:
    before = sys.getswitchinterval()
    pacer = RtpPacer(interval=INTERVAL, switch_interval=before / 2)
    pacer.start(time.monotonic())
    try:
        assert pacer.running
        assert sys.getswitchinterval() == pytest.approx(before / 2)
        with pytest.raises(RuntimeError, match="already running"):
            pacer.start(time.monotonic())
    finally:
        pacer.stop()
    assert not pacer.running
    assert sys.getswitchinterval() == pytest.approx(before)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="lead"):
        RtpPacer(interval=0.02, lead=0.02)
    with pytest.raises(ValueError, match="interval"):
        RtpTicker(interval=0.01, pacer=RtpPacer(interval=0.02))


async def test_endpoints_on_a_paced_ticker_talk_and_close_their_lanes() -> None:
    pacer = RtpPacer()
    async with RtpTicker(pacer=pacer) as ticker:
        bob = await RtpEndpoint.open(RtpSession(comfort=False), ticker, host=HOST)
        alice = await RtpEndpoint.open(RtpSession(remote=(HOST, bob.local_port)), ticker, host=HOST)
        try:
            assert pacer.running
            alice.send_audio(bytes([5]) * 160 * 10)
            async with asyncio.timeout(3):
                async for event in bob:
                    if isinstance(event, AudioReceived) and event.payload == bytes([5]) * 160:
                        break
            assert alice._lane is not None and alice._lane.sent >= 1
        finally:
            await alice.aclose()
            await bob.aclose()
        assert alice._lane.closed and bob._lane is not None and bob._lane.closed
    assert not pacer.running  # stopped with its ticker
