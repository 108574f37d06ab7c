"""The RTP pacer's sending process (see ``pacer.py``). Standard library only: it starts in tens of
milliseconds, holds a few MB, and nothing in it waits for the server's GIL or garbage collector.

    python -I sender.py FD INTERVAL LEAD [--no-realtime]

``FD`` is its end of a ``SOCK_SEQPACKET`` socket pair with the server. Once started it says ``R``
(ready); tick ``n``'s packets are sent at ``origin + n * INTERVAL + LEAD`` on ``time.monotonic``
(the system's CLOCK_MONOTONIC, the same in both processes). Messages from the server, one per
datagram:

- ``T`` origin (``!d``): tick 0's time; nothing is sent before it comes;
- ``O`` lane id (``!I``), with the lane's socket descriptor attached (``SCM_RIGHTS``): a lane opens;
- ``C`` lane id: it closes (its descriptor is closed here);
- ``P`` tick (``!q``), then entries of lane id, address length, packet length (``!IBH``), the
  ``struct sockaddr`` and the packet: one tick's packets (a tick may come in several messages);
- ``Q``: stop; the answer is ``S`` and a JSON report (slots, lateness and send-time percentiles in
  ms, packets sent, late and dropped, its CPU seconds), then the process exits.

The process also exits when the server's end closes (the server died). A packet whose slot has
passed when it arrives goes out at once (counted ``late``); a send the kernel refuses is
counted ``dropped``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import socket
import struct
import sys
import time
from collections import deque

TICK = struct.Struct("!q")
ORIGIN = struct.Struct("!d")
ENTRY = struct.Struct("!IBH")
LANE = struct.Struct("!I")
MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
MAX_MESSAGE = 1 << 16
KEEP = 1 << 16
"""Slots whose lateness and send time the report is taken over (the last ~22 minutes)."""


def _percentile(ordered: list[float], q: float) -> float:
    """Percentile ``q`` (0-100) of sorted samples; 0 for none."""
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


class Sender:
    def __init__(self, control: socket.socket, interval: float, lead: float) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._sendto = libc.sendto
        self._sendto.argtypes = (
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint32,
        )
        self._sendto.restype = ctypes.c_ssize_t
        self.control = control
        self.origin: float | None = None
        self.interval, self.lead = interval, lead
        self.lanes: dict[int, int] = {}
        self.batches: deque[tuple[int, bytes]] = deque()
        self.lateness: deque[float] = deque(maxlen=KEEP)
        self.work: deque[float] = deque(maxlen=KEEP)
        self.bursts = self.sent = self.late = self.dropped = 0

    def run(self, priority: str) -> None:
        self.control.sendall(b"R" + priority.encode())
        while self.origin is None:
            select.select([self.control], [], [])
            if not self._read():
                return
        origin, n = self.origin, 0
        while True:
            slot = origin + n * self.interval + self.lead
            while (wait := slot - time.monotonic()) > 0:
                readable, _, _ = select.select([self.control], [], [], wait)
                if readable:
                    if not self._read():
                        return
                    self._send(n - 1)  # built after their slot: out now, as close to it as can be
            now = time.monotonic()
            self.lateness.append(now - slot)
            behind = int((now - slot) / self.interval + 1e-9)
            if behind:  # this process itself was held up: send what is due now
                self.bursts += 1
                n += behind
            started = time.perf_counter()
            self._send(n)
            self.work.append(time.perf_counter() - started)
            n += 1

    def _read(self) -> bool:
        """Take every message waiting; False once the server asked to stop or went away."""
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.control, MAX_MESSAGE, 1, MSG_DONTWAIT)
            except BlockingIOError:
                return True
            if not data:
                return False
            kind = data[:1]
            if kind == b"P":
                self.batches.append((TICK.unpack_from(data, 1)[0], data))
            elif kind == b"T":
                self.origin = ORIGIN.unpack_from(data, 1)[0]
            elif kind == b"O" and fds:
                self.lanes[LANE.unpack_from(data, 1)[0]] = fds[0]
            elif kind == b"C":
                fd = self.lanes.pop(LANE.unpack_from(data, 1)[0], None)
                if fd is not None:
                    os.close(fd)
            elif kind == b"Q":
                self.control.sendall(b"S" + json.dumps(self.report()).encode())
                return False
            for fd in fds if kind != b"O" else fds[1:]:
                os.close(fd)

    def _send(self, tick: int) -> None:
        batches, lanes, sendto = self.batches, self.lanes, self._sendto
        while batches and batches[0][0] <= tick:
            due, data = batches.popleft()
            late = due < tick
            offset, end = 1 + TICK.size, len(data)
            while offset < end:
                lane, address_length, length = ENTRY.unpack_from(data, offset)
                offset += ENTRY.size
                address = data[offset : offset + address_length]
                offset += address_length
                packet = data[offset : offset + length]
                offset += length
                fd = lanes.get(lane)
                if fd is None:  # closed meanwhile
                    continue
                if sendto(fd, packet, length, MSG_DONTWAIT, address, address_length) < 0:
                    self.dropped += 1
                else:
                    self.sent += 1
                    self.late += late

    def report(self) -> dict[str, float]:
        lateness, work = sorted(self.lateness), sorted(self.work)
        return {
            "slots": len(lateness),
            "lateness_p50_ms": _percentile(lateness, 50) * 1e3,
            "lateness_p99_ms": _percentile(lateness, 99) * 1e3,
            "lateness_max_ms": (lateness[-1] if lateness else 0.0) * 1e3,
            "send_p50_ms": _percentile(work, 50) * 1e3,
            "send_p99_ms": _percentile(work, 99) * 1e3,
            "bursts": self.bursts,
            "sent": self.sent,
            "late": self.late,
            "dropped": self.dropped,
            "cpu_s": time.process_time(),
        }


def _prioritise(realtime: bool) -> str:
    """Ask the kernel to run this process first when its slot comes: real-time (``SCHED_FIFO``,
    lowest priority) if ``realtime`` and allowed (root or CAP_SYS_NICE), else a higher nice value;
    else as is. Which one it got is the answer."""
    if not realtime:
        return "normal"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        return "fifo"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -10)
        return "nice -10"
    except OSError:
        return "normal"


def main(argv: list[str]) -> int:
    fd, interval, lead = int(argv[1]), float(argv[2]), float(argv[3])
    realtime = "--no-realtime" not in argv[4:]
    control = socket.socket(fileno=fd)
    control.setblocking(False)
    priority = _prioritise(realtime)
    try:
        Sender(control, interval, lead).run(priority)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server went away
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
