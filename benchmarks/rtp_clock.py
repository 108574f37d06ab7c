"""RTP send pacing: N calls on one ``RtpTicker``, real UDP on 127.0.0.1.

    python -m ringline.benchmarks.rtp_clock [--calls 200] [--seconds 10] [--loop uvloop|asyncio]
        [--no-duplex] [--pin] [--pacing process|loop] [--lead-ms 15]

Opens N ``RtpEndpoint``s (each its own socket pair, as a SIP call has) on one ticker, all sending
20 ms G.711 mu-law packets (a tone, topped up by a feeder task the way playout runs ahead) to one
receiver socket in a separate process. The receiver takes kernel receive timestamps
(``SO_TIMESTAMPNS``), so what it measures is when packets left, not when some loop got round to
reading them, and with ``--duplex`` (the default) echoes every packet back, so each call also
receives 50 packets a second through its session and jitter buffer and a task per call consumes
the 20 ms inbound frames, as a call would.

Prints, per packet, the deviation of the interval since the same call's previous packet from
20 ms (p50/p99/max of its absolute value), the loss at the receiver (packets sent by the
sessions less packets received), the ticker's own lateness (p50/p99/max), the process's CPU use,
and the cost of the hot-path operations in ns (parse, serialize, a session's tick and receive).

``--pacing process`` (the default where available) sends through an ``RtpPacer`` (its process
sends each tick's packets ``--lead-ms`` after the loop built them); ``--pacing loop`` sends from
the loop's ticker itself, as without a pacer.

The goal (the SIP issue): 200 calls at 20 ms +- 2 ms (p99) with no loss.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import resource
import socket
import struct
import time
import timeit
from multiprocessing.connection import Connection

from ringline.engine.audio.g711 import ulaw_encode
from ringline.engine.transports.rtp.clock import RtpTicker
from ringline.engine.transports.rtp.endpoint import RtpEndpoint
from ringline.engine.transports.rtp.pacer import LEAD_S, RtpPacer
from ringline.engine.transports.rtp.packet import RtpPacket, pack_rtp
from ringline.engine.transports.rtp.session import RtpSession

HOST = "127.0.0.1"
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; also the control message type
STOP = b"STOP"
INTERVAL_NS = 20_000_000


def tone_frame() -> bytes:
    pcm = struct.pack("<160h", *(int(8000 * math.sin(2 * math.pi * 440 * i / 8000)) for i in range(160)))
    return ulaw_encode(pcm)


# -- receiver (a separate process) --------------------------------------------------------------


def receiver(conn: Connection, duplex: bool, cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind((HOST, 0))
    conn.send(sock.getsockname()[1])
    arrivals: dict[int, list[tuple[int, int]]] = {}
    rtcp = 0
    ancillary = socket.CMSG_SPACE(16)
    while True:
        data, cmsgs, _, addr = sock.recvmsg(2048, ancillary)
        if data == STOP:
            break
        if len(data) >= 2 and 192 <= data[1] <= 223:
            rtcp += 1
            continue
        stamp = time.time_ns()
        for level, kind, value in cmsgs:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec * 1_000_000_000 + nsec
        seq, ssrc = struct.unpack_from("!H", data, 2)[0], struct.unpack_from("!I", data, 8)[0]
        arrivals.setdefault(ssrc, []).append((seq, stamp))
        if duplex:
            sock.sendto(data, addr)
    deviations: list[int] = []
    received = 0
    for packets in arrivals.values():
        received += len(packets)
        for (seq_a, t_a), (seq_b, t_b) in zip(packets, packets[1:], strict=False):
            if (seq_b - seq_a) & 0xFFFF == 1:
                deviations.append(abs(t_b - t_a - INTERVAL_NS))
    deviations.sort()
    conn.send({"received": received, "streams": len(arrivals), "rtcp": rtcp, "deviations": deviations})


def pct(ordered: list, q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


# -- hot path micro-benchmarks ---------------------------------------------------------------------


def micro() -> dict[str, float]:
    frame = tone_frame()
    data = pack_rtp(0, 1234, 5678, 0xDEADBEEF, frame, True)
    packet = RtpPacket.parse(data)
    sender = RtpSession(remote=(HOST, 9))
    sender.send_audio(frame * 1000)
    receiver_session = RtpSession(remote=(HOST, 9))
    ticks = iter(range(1 << 30))
    seqs = iter(range(1 << 30))

    def receive() -> None:
        n = next(seqs)
        receiver_session.receive(pack_rtp(0, n & 0xFFFF, n * 160 & 0xFFFFFFFF, 7, frame), (HOST, 9), n * 0.02)
        receiver_session.jitter.pop(n * 0.02)

    cases = {
        "RtpPacket.parse": lambda: RtpPacket.parse(data),
        "bytes(RtpPacket)": lambda: bytes(packet),
        "pack_rtp": lambda: pack_rtp(0, 1234, 5678, 0xDEADBEEF, frame, True),
        "RtpSession.outgoing + incoming": lambda: sender.poll(next(ticks), 0.0),
        "RtpSession.receive + jitter pop": receive,
    }
    number = 20000
    return {name: min(timeit.repeat(fn, number=number, repeat=3)) / number * 1e9 for name, fn in cases.items()}


# -- the benchmark -------------------------------------------------------------------------------


async def feed(endpoints: list[RtpEndpoint], frame: bytes) -> None:
    """Keep every call's queue 3-5 frames ahead, like playout's lead."""
    while True:
        for endpoint in endpoints:
            if endpoint.session.queued < 3:
                endpoint.send_audio(frame * 2)
        await asyncio.sleep(0.04)


async def consume(endpoint: RtpEndpoint, counts: list[int]) -> None:
    async for _event in endpoint:
        counts[0] += 1


async def run(calls: int, seconds: float, duplex: bool, port: int, pacer: RtpPacer | None) -> dict:
    frame = tone_frame()
    ticker = RtpTicker(pacer=pacer)
    endpoints = [
        await RtpEndpoint.open(RtpSession(remote=(HOST, port), call_id=f"bench-{i}"), ticker, host=HOST, rtcp_mux=True)
        for i in range(calls)
    ]
    counts = [0]
    tasks = [asyncio.create_task(feed(endpoints, frame))]
    tasks += [asyncio.create_task(consume(e, counts)) for e in endpoints] if duplex else []
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await ticker.start()
    await asyncio.sleep(seconds)
    await ticker.aclose()
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    for endpoint in endpoints:
        await endpoint.aclose()
    await asyncio.gather(*tasks[1:])
    tasks[0].cancel()
    await asyncio.gather(tasks[0], return_exceptions=True)
    return {
        "sent": sum(e.session.packets_sent for e in endpoints),
        "inbound_frames": counts[0],
        "jitter_lost": sum(e.session.jitter.counters.lost for e in endpoints),
        "malformed": sum(e.malformed for e in endpoints),
        "cpu": (after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime) / elapsed,
        "ticks": ticker.stats,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.rtp_clock", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--no-duplex", dest="duplex", action="store_false", help="do not echo packets back to the calls")
    p.add_argument("--pin", action="store_true", help="run the calls on CPU 0 and the receiver on CPU 1")
    p.add_argument(
        "--pacing",
        choices=["process", "loop"],
        default="process" if RtpPacer.available() else "loop",
        help="send from the pacer's process (default where available) or from the loop's ticker",
    )
    p.add_argument(
        "--lead-ms",
        type=float,
        default=LEAD_S * 1000,
        help=f"the pacer's lead over the ticker (default {LEAD_S * 1000:g})",
    )
    args = p.parse_args(argv)

    for name, ns in micro().items():
        print(f"{name:40s} {ns:8.0f} ns")
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver, args=(child, args.duplex, 1 if args.pin else None), daemon=True)
    proc.start()
    if args.pin:
        os.sched_setaffinity(0, {0})
    try:
        if not parent.poll(30):
            raise SystemExit("receiver did not start")
        port = parent.recv()
        pacer = RtpPacer(lead=args.lead_ms / 1000) if args.pacing == "process" else None
        coro = run(args.calls, args.seconds, args.duplex, port, pacer)
        if args.loop == "uvloop":
            import uvloop

            result = uvloop.run(coro)
        else:
            result = asyncio.run(coro)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(STOP, (HOST, port))
        if not parent.poll(60):
            raise SystemExit("receiver did not report")
        rx = parent.recv()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    dev = rx["deviations"]
    ticks = result["ticks"]
    loss = result["sent"] - rx["received"]
    print(f"calls {args.calls}, {args.seconds:g} s, loop {args.loop}, pacing {args.pacing}, "
          f"duplex {args.duplex}, cpus {os.cpu_count()}")  # fmt: skip
    print(f"packets sent {result['sent']}, received {rx['received']} from {rx['streams']} streams, "
          f"loss {loss} ({100 * loss / max(1, result['sent']):.3f}%), rtcp {rx['rtcp']}")  # fmt: skip
    print(f"send interval |deviation from 20 ms| over {len(dev)} intervals: p50 {pct(dev, 50) / 1e6:.3f} ms, "
          f"p99 {pct(dev, 99) / 1e6:.3f} ms, max {(dev[-1] if dev else 0) / 1e6:.3f} ms, "
          f"over 2 ms {sum(d > 2_000_000 for d in dev)}")  # fmt: skip
    print(f"ticker lateness over {ticks.count} ticks: p50 {ticks.percentile(50) * 1e3:.3f} ms, "
          f"p99 {ticks.percentile(99) * 1e3:.3f} ms, max {ticks.max * 1e3:.3f} ms, "
          f"bursts {ticks.bursts}, skipped {ticks.skipped}")  # fmt: skip
    print(f"tick work (all calls' callbacks): p50 {ticks.work_percentile(50) * 1e3:.3f} ms, "
          f"p99 {ticks.work_percentile(99) * 1e3:.3f} ms")  # fmt: skip
    if pacer is not None:
        r = pacer.report
        print(f"pacer process ({args.lead_ms:g} ms lead) lateness over {r.get('slots')} slots: "
              f"p50 {r.get('lateness_p50_ms', 0):.3f} ms, p99 {r.get('lateness_p99_ms', 0):.3f} ms, "
              f"max {r.get('lateness_max_ms', 0):.3f} ms, bursts {r.get('bursts')}; send p50 "
              f"{r.get('send_p50_ms', 0):.3f} ms, p99 {r.get('send_p99_ms', 0):.3f} ms; "
              f"packets sent {r.get('sent')}, late {r.get('late')}, dropped {r.get('dropped')}, "
              f"ticks not handed over {pacer.dropped_ticks}")  # fmt: skip
    if args.duplex:
        print(f"inbound frames delivered {result['inbound_frames']}, jitter-buffer lost {result['jitter_lost']}")
    if pacer is not None:  # the sending process's CPU, over the same run
        result["cpu"] += pacer.report.get("cpu_s", 0.0) / args.seconds
    print(f"CPU (with the pacer process) {100 * result['cpu']:.1f}% of one core, load {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
