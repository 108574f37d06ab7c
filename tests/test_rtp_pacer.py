"""RtpPacer and its sending process: each lane's packets leave from the call's own socket, in
order, never before their slot; late ones at once; lanes closed; a dead process sends the calls
back to the loop; and RtpEndpoints on a paced ticker talk as they do without one."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from ringline.engine.transports.events import AudioReceived
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.endpoint import RtpEndpoint
from ringline.engine.transports.rtp.pacer import RtpPacer, sockaddr
from ringline.engine.transports.rtp.session import RtpSession

pytestmark = [
    pytest.mark.skipif(not RtpPacer.available(), reason="the pacer needs Linux"),
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


@pytest.fixture
def pacer() -> Iterator[RtpPacer]:
    pacer = RtpPacer(interval=INTERVAL, lead=0.005)
    yield pacer
    pacer.stop()


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


def test_packets_leave_from_the_calls_port_in_order_and_never_before_their_slot(udp, pacer) -> None:
    sender, receiver = udp
    lane = pacer.lane(sender)  # before the start: handed over at the start
    pacer.start()
    assert pacer.running and pacer.priority in ("fifo", "nice -10", "normal")
    origin = time.monotonic() + 0.05
    pacer.begin(origin)
    target = receiver.getsockname()
    for tick in range(5):
        assert lane.push(tick, b"packet %d" % tick, target)
        pacer.flush()
    for tick in range(5):
        data, source = receiver.recvfrom(100)
        arrived = time.monotonic()
        assert data == b"packet %d" % tick
        assert source == sender.getsockname()  # the call's own socket: symmetric RTP holds
        assert arrived >= origin + tick * INTERVAL + 0.005  # received after it was sent, sent at its slot
    pacer.stop()
    assert pacer.report["sent"] == 5 and pacer.report["late"] == 0 and pacer.report["dropped"] == 0
    assert not pacer.running


def test_a_packet_built_after_its_slot_goes_out_at_once_and_counts_late(udp, pacer) -> None:
    sender, receiver = udp
    pacer.start()
    pacer.begin(time.monotonic() - 10 * INTERVAL)  # slots 0-9 are past
    lane = pacer.lane(sender)
    lane.push(0, b"late", receiver.getsockname())
    pacer.flush()
    assert receiver.recvfrom(100)[0] == b"late"
    pacer.stop()
    assert pacer.report["late"] == 1


def test_a_closed_lane_sends_nothing_and_the_calls_socket_stays_its_own(udp, pacer) -> None:
    sender, receiver = udp
    pacer.start()
    pacer.begin(time.monotonic())
    target = receiver.getsockname()
    closed, kept = pacer.lane(sender), pacer.lane(sender)
    closed.close()
    assert not closed.push(10, b"after close", target)
    assert not kept.push(10, b"to a name", ("pbx.example.com", 4000))  # not an address: the caller sends it
    kept.push(10, b"kept", target)
    pacer.flush()
    assert receiver.recvfrom(100)[0] == b"kept"
    pacer.stop()
    assert pacer.report["sent"] == 1
    sender.sendto(b"still mine", target)  # the process closed its copies, not the call's socket
    assert receiver.recvfrom(100)[0] == b"still mine"


def test_when_the_process_dies_the_calls_send_for_themselves(udp, pacer, caplog) -> None:
    sender, receiver = udp
    pacer.start()
    pacer.begin(time.monotonic())
    lane = pacer.lane(sender)
    assert pacer._process is not None
    pacer._process.kill()
    pacer._process.wait()
    target = receiver.getsockname()
    assert lane.push(0, b"x", target)  # queued: the death is not known yet
    pacer.flush()  # the socket pair is broken: noticed here
    assert not pacer.running
    assert not lane.push(1, b"x", target)
    assert "the sending process is gone" in caplog.text


def test_without_realtime_the_process_runs_at_normal_priority(udp) -> None:
    sender, receiver = udp
    pacer = RtpPacer(interval=INTERVAL, realtime=False)
    lane = pacer.lane(sender)
    pacer.start()
    try:
        assert pacer.priority == "normal"
        pacer.begin(time.monotonic())
        lane.push(0, b"still paced", receiver.getsockname())
        pacer.flush()
        assert receiver.recvfrom(100)[0] == b"still paced"
    finally:
        pacer.stop()


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
        finally:
            await alice.aclose()
            await bob.aclose()
        assert alice._lane is not None and alice._lane.closed and bob._lane is not None and bob._lane.closed
    assert not pacer.running  # stopped with its ticker
    assert pacer.report["sent"] >= 1
