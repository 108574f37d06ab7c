"""RFC 4733 telephone-events: what a key press sends, and digits heard exactly once."""

from __future__ import annotations

import struct

import pytest

from ringline.engine.transports.rtp.dtmf import DIGITS, DtmfReceiver, event_code, tone_payloads
from ringline.engine.transports.rtp.packet import RtpError


def fields(payload: bytes) -> tuple[int, bool, int, int]:
    event, flags, duration = struct.unpack("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


def test_key_press_packets() -> None:
    payloads = tone_payloads("5", 100)
    assert [fields(p) for p in payloads] == [
        (5, False, 10, 160),
        (5, False, 10, 320),
        (5, False, 10, 480),
        (5, False, 10, 640),
        (5, True, 10, 800),
        (5, True, 10, 800),
        (5, True, 10, 800),
    ]
    assert payloads[0] == bytes.fromhex("050a00a0")


def test_codes_volume_and_short_tones() -> None:
    assert [event_code(d) for d in DIGITS] == list(range(16))
    assert event_code("a") == 12
    assert [fields(p) for p in tone_payloads("#", 10, volume=0)] == [(11, True, 0, 160)] * 3


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: tone_payloads("x"), "not a DTMF digit: 'x'"),
        (lambda: tone_payloads("12"), "not a DTMF digit: '12'"),
        (lambda: tone_payloads("1", volume=64), "volume must be 0-63 (-dBm0), got 64"),
        (lambda: tone_payloads("1", 9000), "a tone of 9000 ms does not fit the 16-bit duration field"),
    ],
)
def test_invalid_requests(call, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


def test_each_press_is_heard_once() -> None:
    rx = DtmfReceiver()
    heard = [rx.feed(1000, p) for p in tone_payloads("7")]
    assert heard == ["7", None, None, None, None, None, None]
    assert rx.digits == 1


def test_lost_start_packet_still_heard() -> None:
    rx = DtmfReceiver()
    payloads = tone_payloads("9")
    assert [rx.feed(500, p) for p in payloads[2:]] == ["9", None, None, None, None]


def test_only_end_packets_still_heard() -> None:
    rx = DtmfReceiver()
    assert [rx.feed(500, p) for p in tone_payloads("*")[-3:]] == ["*", None, None]


def test_same_key_twice_is_two_presses() -> None:
    rx = DtmfReceiver()
    first = [rx.feed(1000, p) for p in tone_payloads("1")]
    second = [rx.feed(2600, p) for p in tone_payloads("1")]
    assert [d for d in first + second if d] == ["1", "1"]


def test_straggler_of_an_earlier_press_is_ignored() -> None:
    rx = DtmfReceiver()
    one, two = tone_payloads("1"), tone_payloads("2")
    assert rx.feed(1000, one[0]) == "1"
    assert rx.feed(2600, two[0]) == "2"
    assert rx.feed(1000, one[-1]) is None  # a late retransmitted end of "1"


def test_timestamp_wraparound() -> None:
    rx = DtmfReceiver()
    assert rx.feed(0xFFFFFF00, tone_payloads("3")[0]) == "3"
    assert rx.feed(0x00000100, tone_payloads("4")[0]) == "4"  # later, across the wrap
    assert rx.feed(0xFFFFFF00, tone_payloads("3")[-1]) is None


def test_events_that_are_not_keys_are_ignored() -> None:
    rx = DtmfReceiver()
    assert rx.feed(10, bytes([16, 0x8A, 0, 160])) is None  # hook flash
    assert rx.ignored == 1
    assert rx.feed(20, tone_payloads("0")[0]) == "0"


def test_short_payload_is_an_error() -> None:
    with pytest.raises(RtpError) as info:
        DtmfReceiver().feed(1, b"\x01\x02\x03")
    assert str(info.value) == "telephone-event payload of 3 bytes, expected 4"
