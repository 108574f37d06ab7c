"""SIP load benchmark: sipp places calls with speech RTP on one Ringline process; a capture of the
loopback interface measures what Ringline sends back.

    python -m ringline.benchmarks.sip_load [--setup-calls 200 --setup-rate 50]
        [--calls 200 --rate 20 --hold-s 20] [--sip-option 'rtp_pacing = "loop"'] [--keep DIR]

Starts ``ringline serve`` with config/bench.toml plus ``[telephony.sip]`` on 127.0.0.1 (pinned to core 0),
then runs two phases with sipp (``sip-tester``) pinned to core 1, each under a dumpcap capture of
``lo`` (``tshark``; needs root or CAP_NET_RAW):

* setup: ``--setup-calls`` short calls (INVITE, 200, ACK, BYE after 0.5 s) offered at ``--setup-rate``
  a second: calls set up a second and INVITE-to-200 times, from the capture.
* hold: ``--calls`` calls offered at ``--rate`` a second, each playing three speech turns
  (``tests/sip/make_pcaps.py``) and held ``--hold-s``: peak concurrent calls, the intervals between
  Ringline's RTP packets of each call (p50/p99/max, share within 20 +- 2 ms), packets missing from each
  call's sequence, and reply latency: from the end of each caller turn to the first reply packet
  with sound.

Reply latency over the WebSocket path is ``benchmarks/concurrency.py``'s (README table), to compare
at the same number of calls. Only 127.0.0.1 is targeted; sipp, dumpcap and the server are bounded
and stopped at the end. ``read_pcap``/``rtp_streams`` here are also the SIP tests' capture reader.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psutil

from ringline.benchmarks.health import histograms, loop_health
from ringline.engine.audio.g711 import alaw_decode, ulaw_decode

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "tests" / "sip" / "scenarios"
HOST = "127.0.0.1"
TURNS = ("book_table.wav", "open_tomorrow.wav", "prices.wav")


# -- the capture -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UdpPacket:
    at: float
    """Capture time (kernel timestamp), seconds since the epoch."""
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


@dataclass(frozen=True, slots=True)
class RtpPacket:
    at: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload: bytes

    @classmethod
    def parse(cls, udp: UdpPacket) -> RtpPacket | None:
        """The RTP packet in ``udp``; None for anything else (RTCP, SIP, ...)."""
        data = udp.payload
        if len(data) < 12 or data[0] >> 6 != 2 or 72 <= (data[1] & 0x7F) <= 76:
            return None
        first, second, seq, timestamp, ssrc = struct.unpack_from("!BBHII", data)
        start = 12 + 4 * (first & 0x0F)
        if first & 0x10 and len(data) >= start + 4:  # header extension
            (words,) = struct.unpack_from("!H", data, start + 2)
            start += 4 + 4 * words
        end = len(data) - (data[-1] if first & 0x20 else 0)
        return cls(udp.at, udp.src, udp.dst, second & 0x7F, bool(second & 0x80), seq, timestamp, ssrc, data[start:end])


_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1e6), b"\xa1\xb2\xc3\xd4": (">", 1e6), b"\x4d\x3c\xb2\xa1": ("<", 1e9)}


def read_pcap(path: Path) -> list[UdpPacket]:
    """The IPv4 UDP packets of a classic pcap file (Ethernet or Linux cooked link layer)."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    if data[:4] not in _MAGIC:
        raise ValueError(f"{path} is not a pcap file (magic {data[:4].hex()})")
    e, units = _MAGIC[data[:4]]
    (link,) = struct.unpack_from(e + "I", data, 20)
    link_len = {1: 14, 113: 16}[link]
    packets, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(e + "IIII", data, pos)
        ip = data[pos + 16 + link_len : pos + 16 + incl]
        pos += 16 + incl
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport, length = struct.unpack_from("!HHH", ip, ihl)
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        packets.append(UdpPacket(sec + frac / units, (src, sport), (dst, dport), ip[ihl + 8 : ihl + length]))
    return packets


def rtp_streams(packets: Iterable[UdpPacket]) -> dict[tuple[int, int], list[RtpPacket]]:
    """RTP packets by (source port, destination port), in capture order."""
    streams: dict[tuple[int, int], list[RtpPacket]] = defaultdict(list)
    for udp in packets:
        if (rtp := RtpPacket.parse(udp)) is not None:
            streams[(udp.src[1], udp.dst[1])].append(rtp)
    return dict(streams)


_DECODE = {0: ulaw_decode, 8: alaw_decode}


def g711_pcm(packets: Iterable[RtpPacket]) -> np.ndarray:
    """The PCM16 samples of a stream's PCMU (0) and PCMA (8) packets, in order, as int16."""
    pcm = b"".join(_DECODE[p.payload_type](p.payload) for p in packets if p.payload_type in _DECODE)
    return np.frombuffer(pcm, dtype="<i2")


def loud(packet: RtpPacket, *, threshold: float = 500.0) -> bool:
    """Whether a G.711 packet holds sound (RMS above ``threshold``), not silence or comfort noise."""
    samples = g711_pcm([packet]).astype(np.float64)
    return bool(samples.size) and float(np.sqrt(np.mean(samples * samples))) > threshold


@contextlib.contextmanager
def capturing(filter: str, path: Path, *, prefix: list[str] | None = None) -> Iterator[Path]:
    """dumpcap on ``lo`` with ``filter`` into ``path`` while the block runs (a 64 MB kernel buffer)."""
    if shutil.which("dumpcap") is None:
        raise SystemExit("dumpcap is missing: apt-get install tshark")
    cmd = [*(prefix or []), "dumpcap", "-i", "lo", "-P", "-q", "-B", "64", "-f", filter, "-w", str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    said = b""
    deadline = time.monotonic() + 10
    while b"File: " not in said and time.monotonic() < deadline and proc.poll() is None:
        said += proc.stderr.readline()
    if b"File: " not in said:
        proc.kill()
        raise SystemExit(f"dumpcap did not start: {said.decode(errors='replace')}")
    try:
        yield path
    finally:
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            rest = proc.communicate(timeout=10)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            rest = proc.communicate()[1]
        if dropped := re.search(rb"dropped on interface[^:]*:\s*(\d+)|Packets dropped:\s*(\d+)", rest):
            count = int(next(g for g in dropped.groups() if g))
            if count:
                print(f"warning: dumpcap dropped {count} packets: loss figures include them", file=sys.stderr)


# -- sipp ------------------------------------------------------------------------------------------


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_sip_load_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def render(name: str, workdir: Path, **values: object) -> Path:
    text = (SCENARIOS / name).read_text()
    path = workdir / name
    path.write_text(re.sub(r"\{\{(\w+)\}\}", lambda m: str(values[m.group(1)]), text))
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def run_sipp(
    scenario: Path, sip_port: int, *, calls: int, rate: float, timeout_s: float, prefix: list[str]
) -> dict[str, str]:
    """sipp placing ``calls`` calls at ``rate`` a second, all at once at most; its last statistics row."""
    stats = scenario.with_suffix(".csv")
    cmd = [
        *prefix, "sipp", f"{HOST}:{sip_port}", "-sf", str(scenario), "-s", "ringline",
        "-i", HOST, "-p", str(free_port()), "-mi", HOST, "-mp", str(free_port() & ~1), "-cp", str(free_port()),
        "-m", str(calls), "-l", str(calls), "-r", f"{rate:g}", "-timeout", f"{timeout_s:g}s", "-timeout_error",
        "-nostdin", "-trace_err", "-error_file", str(scenario.with_suffix(".errors")),
        "-trace_stat", "-stf", str(stats), "-fd", "1",
    ]  # fmt: skip
    try:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, timeout=timeout_s + 10, check=False)
    except subprocess.TimeoutExpired:
        print("warning: sipp outlived its own timeout and was killed", file=sys.stderr)
    rows = [line.split(";") for line in stats.read_text().splitlines()] if stats.exists() else []
    return dict(zip(rows[0], rows[-1], strict=False)) if len(rows) >= 2 else {}


# -- measures --------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def setup_report(packets: list[UdpPacket], sip_port: int) -> dict[str, Any]:
    """Calls set up a second and INVITE-to-200 times, from the SIP messages captured."""
    invites: dict[bytes, float] = {}
    answers: dict[bytes, float] = {}
    for p in packets:
        call_id = re.search(rb"\r\nCall-ID: *(\S+)", p.payload, re.I)
        if call_id is None:
            continue
        if p.dst[1] == sip_port and p.payload.startswith(b"INVITE "):
            invites.setdefault(call_id.group(1), p.at)
        elif (
            p.src[1] == sip_port
            and p.payload.startswith(b"SIP/2.0 200")
            and re.search(rb"CSeq: *\d+ INVITE", p.payload)
        ):
            answers.setdefault(call_id.group(1), p.at)
    times = [(answers[c] - invites[c]) * 1000 for c in invites if c in answers]
    span = max(answers.values()) - min(invites.values()) if answers else 0.0
    return {
        "offered": len(invites),
        "answered": len(times),
        "calls_per_s": len(times) / span if span > 0 else None,
        "setup_p50_ms": _pct(times, 50),
        "setup_p99_ms": _pct(times, 99),
    }


def hold_report(packets: list[UdpPacket], rtp_min: int, rtp_max: int, turn_ends: list[float]) -> dict[str, Any]:
    """Peak concurrency, RTP pacing and loss of Ringline's streams, and reply latency per caller turn."""
    streams = rtp_streams(packets)
    ours = {k: s for k, s in streams.items() if rtp_min <= k[0] <= rtp_max and len(s) > 1}
    theirs = {k[1]: s for k, s in streams.items() if rtp_min <= k[1] <= rtp_max}
    intervals: list[float] = []
    lost = sent = 0
    spans = []
    latencies: list[float] = []
    for (port, _), stream in ours.items():
        at = np.array([p.at for p in stream])
        intervals.extend(np.diff(at) * 1000)
        spans.append((at[0], at[-1]))
        seqs = np.array([p.seq for p in stream], dtype=np.int64)
        unwrapped = seqs + 65536 * np.cumsum(np.concatenate(([0], np.diff(seqs) < -32768)))
        expected = int(unwrapped.max() - unwrapped.min() + 1)
        sent += expected
        lost += expected - len(set(unwrapped.tolist()))
        caller = theirs.get(port)
        if caller:
            sounding = [p.at for p in stream if loud(p)]
            for end in (caller[0].at + t for t in turn_ends):
                after = [t for t in sounding if t > end]
                if after and after[0] - end < 5.0:
                    latencies.append((after[0] - end) * 1000)
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = level = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    within = sum(18.0 <= i <= 22.0 for i in intervals)
    return {
        "calls_with_rtp": len(ours),
        "peak_concurrent": peak,
        "interval_p50_ms": _pct(intervals, 50),
        "interval_p99_ms": _pct(intervals, 99),
        "interval_p1_ms": _pct(intervals, 1),
        "interval_max_ms": max(intervals) if intervals else None,
        "within_2ms_pct": 100 * within / len(intervals) if intervals else None,
        "packets_expected": sent,
        "packets_missing": lost,
        "replies": len(latencies),
        "turns": len(ours) * len(turn_ends),
        "reply_p50_ms": _pct(latencies, 50),
        "reply_p95_ms": _pct(latencies, 95),
    }


# -- the server ------------------------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """CPU seconds of the server and its children so far (the RTP pacer is a child process)."""
    server = psutil.Process(pid)
    total = 0.0
    for process in [server, *server.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def sip_config(sip_port: int, rtp_min: int, rtp_max: int, options: Iterable[str] = ()) -> str:
    """config/bench.toml with ``[telephony.sip]`` on ``HOST``; ``options`` are more of that table's
    lines (``key = value`` in TOML)."""
    bench = (REPO / "config" / "bench.toml").read_text()
    return bench + (
        f'\n[telephony.sip]\nlisten_host = "{HOST}"\nlisten_port = {sip_port}\npublic_host = "{HOST}"\n'
        f'rtp_port_min = {rtp_min}\nrtp_port_max = {rtp_max}\nallowed_addresses = ["{HOST}/32"]\n'
        "requests_per_second = 100000.0\n" + "".join(f"{line}\n" for line in options)
    )


@contextlib.contextmanager
def sip_server(
    workdir: Path, sip_port: int, rtp_min: int, rtp_max: int, core: int | None, options: Iterable[str] = ()
) -> Iterator[tuple[int, str]]:
    """Yield the server's (pid, HTTP base URL)."""
    from ringline.benchmarks.concurrency import _ringline, pin, stop_process, wait_healthy
    from ringline.benchmarks.concurrency import free_port as free_tcp_port

    config = workdir / "sip.toml"
    config.write_text(sip_config(sip_port, rtp_min, rtp_max, options))
    port = free_tcp_port()
    cmd = pin(core) + [_ringline(), "serve", "--config", str(config), "--port", str(port)]
    log = (workdir / "server.log").open("wb")
    env = os.environ | {"RINGLINE_DATA_DIR": str(workdir / "data")}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    ok = False
    try:
        wait_healthy(f"http://{HOST}:{port}", proc)
        yield proc.pid, f"http://{HOST}:{port}"
        ok = True
    finally:
        stop_process(proc, log, keep_log=not ok, what="server")


# -- main ------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from ringline.benchmarks.concurrency import pin

    make_pcaps = _module(REPO / "tests" / "sip" / "make_pcaps.py")
    speech = workdir / "turns.pcap"
    speech.write_bytes(make_pcaps.pcap(make_pcaps.speech(TURNS, make_pcaps.PCMU)))
    turn_ends = make_pcaps.speech_ends(TURNS)
    speech_s = turn_ends[-1] + 2.5
    sipp_core = pin(args.caller_core)
    sip_port = free_port()
    rtp_min = 30000
    rtp_max = rtp_min + 2 * max(args.calls, args.setup_calls) + 99
    report: dict[str, Any] = {"calls": args.calls, "setup_calls": args.setup_calls}
    with sip_server(workdir, sip_port, rtp_min, rtp_max, args.server_core, args.sip_option) as (pid, base):
        if args.setup_calls:
            scenario = render(
                "uac_call.xml", workdir, codec=0, codec_name="PCMU", sdp_port="[media_port]",
                pcap=short_pcap(workdir, make_pcaps), pause_ms=500,
            )  # fmt: skip
            with capturing(f"udp port {sip_port}", workdir / "setup.pcap", prefix=sipp_core) as path:
                timeout = args.setup_calls / args.setup_rate + 30
                stats = run_sipp(scenario, sip_port, calls=args.setup_calls, rate=args.setup_rate,
                                 timeout_s=timeout, prefix=sipp_core)  # fmt: skip
            report["setup"] = setup_report(read_pcap(path), sip_port) | {
                "sipp_successful": int(stats.get("SuccessfulCall(C)", 0) or 0),
                "sipp_failed": int(stats.get("FailedCall(C)", 0) or 0),
            }
            time.sleep(2.0)
        if args.calls:
            hold = workdir / "hold"
            hold.mkdir()
            scenario = render(
                "uac_call.xml", hold, codec=0, codec_name="PCMU", sdp_port="[media_port]", pcap=speech,
                pause_ms=round(max(args.hold_s, speech_s + 1) * 1000),
            )  # fmt: skip
            cpu0, wall0, before = _cpu_seconds(pid), time.monotonic(), histograms(base)
            rtp = f"udp portrange {rtp_min}-{rtp_max}"
            with capturing(rtp, workdir / "hold.pcap", prefix=sipp_core) as path:
                timeout = args.calls / args.rate + args.hold_s + 30
                stats = run_sipp(scenario, sip_port, calls=args.calls, rate=args.rate, timeout_s=timeout,
                                 prefix=sipp_core)  # fmt: skip
            cpu = (_cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0) * 100
            report["hold"] = hold_report(read_pcap(path), rtp_min, rtp_max, turn_ends) | {
                "server_cpu_pct": cpu,
                "sipp_successful": int(stats.get("SuccessfulCall(C)", 0) or 0),
                "sipp_failed": int(stats.get("FailedCall(C)", 0) or 0),
                "server_health": loop_health(before, histograms(base)),
            }
    return report


def short_pcap(workdir: Path, make_pcaps: ModuleType) -> Path:
    """A short PCMU stream for the setup phase's calls (sipp needs a capture to play; 0.4 s of silence)."""
    path = workdir / "short.pcap"
    path.write_bytes(make_pcaps.pcap(make_pcaps.audio_packets(make_pcaps.silence(0.4, 0), 0)))
    return path


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec) if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if setup := report.get("setup"):
        lines += [
            "| calls offered | answered | calls/s set up | INVITE-200 p50 ms | p99 ms | sipp failed |",
            "|---|---|---|---|---|---|",
            f"| {setup['offered']} | {setup['answered']} | {_fmt(setup['calls_per_s'])} | "
            f"{_fmt(setup['setup_p50_ms'])} | {_fmt(setup['setup_p99_ms'])} | {setup['sipp_failed']} |",
            "",
        ]
    if hold := report.get("hold"):
        lines += [
            "| calls | peak held | RTP interval p50/p99/max ms | within 20+-2 ms | missing packets | "
            "reply p50/p95 ms | replies | server CPU % | sipp failed |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {report['calls']} | {hold['peak_concurrent']} | {_fmt(hold['interval_p50_ms'])}/"
            f"{_fmt(hold['interval_p99_ms'])}/{_fmt(hold['interval_max_ms'])} | "
            f"{_fmt(hold['within_2ms_pct'], '.2f')} % | "
            f"{hold['packets_missing']}/{hold['packets_expected']} | {_fmt(hold['reply_p50_ms'], '.0f')}/"
            f"{_fmt(hold['reply_p95_ms'], '.0f')} | {hold['replies']}/{hold['turns']} | "
            f"{_fmt(hold['server_cpu_pct'], '.0f')} | {hold['sipp_failed']} |",
            "",
            "server during the hold: " + ", ".join(f"{k} {v}" for k, v in hold["server_health"].items()),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.sip_load", description=__doc__.split("\n")[0])
    p.add_argument("--setup-calls", type=int, default=200, help="short calls for the set-up rate (0: skip)")
    p.add_argument("--setup-rate", type=float, default=50.0, help="calls offered a second in the set-up phase")
    p.add_argument("--calls", type=int, default=200, help="calls held at once in the hold phase (0: skip)")
    p.add_argument("--rate", type=float, default=20.0, help="calls offered a second in the hold phase")
    p.add_argument("--hold-s", type=float, default=20.0, help="how long each held call lasts")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    p.add_argument(
        "--sip-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another [telephony.sip] line, in TOML (e.g. 'rtp_pacing = \"loop\"'); repeatable",
    )
    p.add_argument("--keep", type=Path, default=None, help="keep captures, scenarios and logs here")
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    args = p.parse_args(argv)
    if not 0 <= args.calls <= 1000 or not 0 <= args.setup_calls <= 5000:
        p.error("--calls: 0..1000, --setup-calls: 0..5000")
    for tool in ("sipp", "dumpcap"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install sip-tester tshark")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="ringline-sip-load-") as tmp:
            report = run(args, Path(tmp))
    print(markdown(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    hold, setup = report.get("hold", {}), report.get("setup", {})
    return 0 if not hold.get("sipp_failed") and not setup.get("sipp_failed") else 1


if __name__ == "__main__":
    sys.exit(main())
