"""RTP captures for sipp's ``play_pcap_audio``: the benchmark speech clips as PCMU or PCMA, and RFC 4733
key presses, each one RTP stream of 20 ms packets in a pcap file (Ethernet, IPv4, UDP).

sipp rewrites the addresses and ports of every packet as it sends it (from its media port to the
port the peer's SDP names) and keeps the RTP header as captured, so each stream here has one SSRC,
consecutive sequence numbers and timestamps, and the payload type the scenario's SDP offers
(0 PCMU, 8 PCMA, 101 telephone-event).

    python -m tests.sip.make_pcaps OUT_DIR    # writes every capture the SIP tests use

The tests build the same files in a temporary directory (``write_all``); it takes ~10 ms.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ringline.benchmarks.clips import load_clip
from ringline.engine.audio.g711 import ALAW_SILENCE, MULAW_SILENCE, alaw_encode, ulaw_decode, ulaw_encode

RATE = 8000
PTIME = 0.020
SAMPLES = 160  # 20 ms at 8 kHz
PCMU, PCMA, TELEPHONE_EVENT = 0, 8, 101
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}

_PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # LINKTYPE_ETHERNET
_ETHERNET = bytes(6) + bytes(6) + b"\x08\x00"  # zero MACs, IPv4


@dataclass(frozen=True, slots=True)
class Rtp:
    """One RTP packet to capture: when it leaves (seconds from the first) and its header fields."""

    at: float
    payload_type: int
    seq: int
    timestamp: int
    payload: bytes
    marker: bool = False
    ssrc: int = 0x52494E47

    def __bytes__(self) -> bytes:
        second = (0x80 if self.marker else 0) | self.payload_type
        header = struct.pack("!BBHII", 0x80, second, self.seq & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc)
        return header + self.payload


def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(payload: bytes, src_port: int, dst_port: int) -> bytes:
    src, dst = bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    udp_len = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, udp_len)
    udp = struct.pack("!HHHH", src_port, dst_port, udp_len, 0) + payload
    udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return _ETHERNET + ip + udp


def pcap(packets: Iterable[Rtp], *, src_port: int = 6000, dst_port: int = 7000) -> bytes:
    """A pcap file of ``packets`` as UDP from ``src_port`` to ``dst_port`` on 127.0.0.1."""
    out = [_PCAP_HEADER]
    for packet in packets:
        frame = _frame(bytes(packet), src_port, dst_port)
        micros = round(packet.at * 1e6)
        out.append(
            struct.pack("<IIII", 1_700_000_000 + micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    return b"".join(out)


def audio_packets(payload: bytes, payload_type: int, *, seq: int = 1, timestamp: int = 0, at: float = 0.0) -> list[Rtp]:
    """20 ms packets of G.711 ``payload`` (whole frames; a last partial frame is dropped)."""
    return [
        Rtp(at + i * PTIME, payload_type, seq + i, timestamp + i * SAMPLES, payload[off : off + SAMPLES], marker=i == 0)
        for i, off in enumerate(range(0, len(payload) - SAMPLES + 1, SAMPLES))
    ]


def encode_clip(name: str, payload_type: int) -> bytes:
    """A benchmark clip (8 kHz mu-law WAV) as PCMU or PCMA bytes."""
    ulaw = load_clip(name)
    if payload_type == PCMU:
        return ulaw
    if payload_type == PCMA:
        return alaw_encode(ulaw_decode(ulaw))
    raise ValueError(f"no G.711 payload type {payload_type}")


def silence(seconds: float, payload_type: int) -> bytes:
    code = MULAW_SILENCE if payload_type == PCMU else ALAW_SILENCE
    return bytes([code]) * (round(seconds * RATE) // SAMPLES * SAMPLES)


def speech(clips: Iterable[str], payload_type: int, *, lead_s: float = 0.2, gap_s: float = 2.5) -> list[Rtp]:
    """``lead_s`` of silence, then each clip followed by ``gap_s`` of silence (time for the turn to end
    and the reply to come back while the caller's stream goes on), as one continuous stream."""
    audio = silence(lead_s, payload_type)
    for name in clips:
        clip = encode_clip(name, payload_type)
        audio += clip[: len(clip) // SAMPLES * SAMPLES] + silence(gap_s, payload_type)
    return audio_packets(audio, payload_type)


def speech_ends(clips: Iterable[str], *, lead_s: float = 0.2, gap_s: float = 2.5) -> list[float]:
    """When each clip's speech ends in ``speech(clips, ...)``, in seconds from its first packet."""
    ends, at = [], round(lead_s * RATE) // SAMPLES * PTIME
    for name in clips:
        at += len(load_clip(name)) // SAMPLES * PTIME
        ends.append(at)
        at += round(gap_s * RATE) // SAMPLES * PTIME
    return ends


def key_press(key: str, *, seq: int, timestamp: int, at: float, duration_ms: int = 100) -> Iterator[Rtp]:
    """One RFC 4733 event: a marked first packet, one every 20 ms with the growing duration, and three
    end packets (same timestamp and duration, as RFC 4733 2.5.1.4 recommends)."""
    event = EVENTS[key]
    steps = duration_ms // 20
    for i in range(steps):
        duration = (i + 1) * SAMPLES
        end = i == steps - 1
        body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
        for repeat in range(3 if end else 1):
            yield Rtp(at + i * PTIME, TELEPHONE_EVENT, seq + i + repeat, timestamp, body, marker=i == 0)


def keys(digits: str, *, lead_s: float = 0.4, gap_s: float = 0.2, tail_s: float = 2.5) -> list[Rtp]:
    """PCMU silence with ``digits`` pressed in it (100 ms each, ``gap_s`` apart), then ``tail_s`` of silence:
    one stream whose sequence numbers and timestamps run on through the key presses."""
    packets = audio_packets(silence(lead_s, PCMU), PCMU)
    for key in digits:
        last = packets[-1]
        at, seq, ts = last.at + PTIME, last.seq + 1, last.timestamp + SAMPLES
        press = list(key_press(key, seq=seq, timestamp=ts, at=at))
        packets += press
        after = press[-1]
        packets += audio_packets(
            silence(gap_s, PCMU), PCMU, seq=after.seq + 1, timestamp=ts + 100 * 8, at=after.at + PTIME
        )
    last = packets[-1]
    packets += audio_packets(
        silence(tail_s, PCMU), PCMU, seq=last.seq + 1, timestamp=last.timestamp + SAMPLES, at=last.at + PTIME
    )
    return packets


def tone(seconds: float, payload_type: int, *, hz: float = 440.0) -> bytes:
    """A sine tone at half scale, as G.711 ``payload_type``."""
    t = np.arange(round(seconds * RATE) // SAMPLES * SAMPLES) / RATE
    pcm = (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()
    return ulaw_encode(pcm) if payload_type == PCMU else alaw_encode(pcm)


def reply(payload_type: int, *, after_s: float, seconds: float = 1.0, tail_s: float = 1.0) -> list[Rtp]:
    """What the bench agent answers, for the harness's own check against a stand-in: ``after_s`` of
    silence, a ``seconds`` tone, ``tail_s`` of silence."""
    audio = silence(after_s, payload_type) + tone(seconds, payload_type) + silence(tail_s, payload_type)
    return audio_packets(audio, payload_type)


SPEECH_CLIPS = ("book_table.wav",)
CAPTURES = {
    "speech_pcmu.pcap": lambda: speech(SPEECH_CLIPS, PCMU),
    "speech_pcma.pcap": lambda: speech(SPEECH_CLIPS, PCMA),
    "keys_42#.pcap": lambda: keys("42#"),
    "reply_pcmu.pcap": lambda: reply(PCMU, after_s=speech_ends(SPEECH_CLIPS)[0] + 0.4),
}


def write_all(directory: Path) -> dict[str, Path]:
    """Every capture in ``CAPTURES`` written to ``directory``; their paths by name."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, make in CAPTURES.items():
        paths[name] = directory / name
        paths[name].write_bytes(pcap(make()))
    return paths


if __name__ == "__main__":
    for path in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else ".")).values():
        print(path)
