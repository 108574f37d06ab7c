"""Every call's RTP sent at its exact slot, from a thread of the process's own.

The event loop builds each call's packets on ``RtpTicker`` (sequence number, timestamp, marker,
DTMF: ``RtpSession.outgoing``), but a tick runs when the loop gets to it: behind the frames of
200 calls, a burst of WebSocket messages or a garbage collection, some ticks run milliseconds
late, and the far end hears the interval between packets wobble. So when a pacer is in use the
ticker only builds: tick ``n``'s packets are handed to the call's ``PacedLane``, and the pacer's
thread sends them at ``origin + n * interval + lead``. The loop may then run up to ``lead`` late
without anyone hearing it; the packets leave from a thread that does nothing else.

Two details make the thread keep its slots on a busy interpreter:

- the GIL: a thread waking at its slot waits for the loop's thread to let go of the GIL, which it
  is asked to do after the process's switch interval (5 ms by default). ``start`` lowers the
  interval to ``switch_interval`` (2 ms, see ``SWITCH_INTERVAL_S``) while the pacer runs. It
  costs the loop nothing while the pacer sleeps: the interval only matters when another thread
  is waiting for the GIL.
- the sends: ``socket.sendto`` releases the GIL around the system call, and the loop's thread,
  waiting, takes it: the next send would wait a switch interval to get it back, 200 times a slot
  (the convoy effect). The pacer calls libc's ``sendto`` through ``ctypes.PyDLL``, which keeps the
  GIL: a non-blocking UDP send is a few microseconds, and the whole burst of 200 calls ~1 ms.

Each lane sends on a duplicate of its call's RTP socket descriptor (same socket, same source
port), which the thread closes once the lane is closed: a descriptor number the call's closed
socket gave back is never written to. A packet built after its slot (the loop stalled past the
lead) goes out at the next slot with the ones due then, in order. A send the kernel refuses
(buffer full) is counted in ``dropped``, never retried.

``RtpPacer.available()`` says whether this platform has what the pacer needs (Linux's libc); where
it has not, calls send from the loop as before (``RtpTicker`` without a pacer).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import Protocol

from .clock import TickStats

log = logging.getLogger(__name__)

__all__ = ["PacedLane", "RtpPacer"]

MSG_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)
SWITCH_INTERVAL_S = 0.002
"""The GIL switch interval while the pacer runs (CPython's default is 0.005). Shorter gets the thread
its GIL sooner after a slot's wake-up, but also lets the loop's thread take it back mid-burst: a
burst of 200 sends is ~2 ms on loopback, and at 0.5 ms the burst was cut up and the interval
deviation's p99 rose (3.5 ms against 1.6 ms at 2 ms, ``benchmarks/rtp_clock.py``)."""
LEAD_S = 0.015


class _Fileno(Protocol):
    def fileno(self) -> int: ...


def _libc_sendto() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    """libc's ``sendto``, called holding the GIL; None where there is no such libc."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        sendto = ctypes.PyDLL(name, use_errno=True).sendto
    except (OSError, AttributeError):
        return None
    sendto.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    sendto.restype = ctypes.c_ssize_t
    return sendto


_SENDTO = _libc_sendto()


def sockaddr(host: str, port: int) -> bytes | None:
    """``struct sockaddr_in`` / ``sockaddr_in6`` for an IP literal (None for anything else)."""
    try:
        return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(host))
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return None
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16s", port, 0, packed) + struct.pack("=I", 0)


class PacedLane:
    """One call's packets waiting for their slots. The loop's thread ``push``es and ``close``s;
    the pacer's thread sends and, once closed, closes the descriptor."""

    __slots__ = ("_fd", "_queue", "_remote", "_address", "closed", "sent", "late", "dropped")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: deque[tuple[int, bytes, bytes]] = deque()
        self._remote: tuple[str, int] | None = None
        self._address = b""
        self.closed = False
        self.sent = 0
        self.late = 0
        """Packets sent at a later slot than theirs (built after it: the loop ran past the lead)."""
        self.dropped = 0
        """Sends the kernel refused (its buffer full, the network down)."""

    def push(self, tick: int, packet: bytes, remote: tuple[str, int]) -> bool:
        """Send ``packet`` to ``remote`` at tick ``tick``'s slot; False (nothing queued) if
        ``remote`` is not an IP address, for the caller to send it itself."""
        if remote != self._remote:
            address = sockaddr(remote[0], remote[1])
            if address is None:
                return False
            self._remote, self._address = remote, address
        self._queue.append((tick, packet, self._address))
        return True

    def close(self) -> None:
        """Send nothing more; the pacer closes the descriptor at its next slot."""
        self.closed = True

    def _flush(self, tick: int, sendto: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        queue = self._queue
        while queue and queue[0][0] <= tick:
            due, packet, address = queue.popleft()
            if due < tick:
                self.late += 1  # counted before the send: whoever receives it sees the count
            self._send(packet, address, sendto)

    def _drain(self, sendto: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        """Send everything queued now (the pacer is stopping)."""
        while self._queue:
            _, packet, address = self._queue.popleft()
            self._send(packet, address, sendto)

    def _send(self, packet: bytes, address: bytes, sendto: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        if sendto(self._fd, packet, len(packet), MSG_DONTWAIT, address, len(address)) < 0:
            self.dropped += 1
        else:
            self.sent += 1


class RtpPacer:
    """The sending thread. ``start(origin)`` with tick 0's time on ``time.monotonic``; ``lane``
    for each call's socket; ``stop`` ends the thread and closes every lane's descriptor."""

    def __init__(
        self, *, interval: float = 0.02, lead: float = LEAD_S, switch_interval: float = SWITCH_INTERVAL_S
    ) -> None:
        if not 0 <= lead < interval:
            raise ValueError(f"lead must be within [0, interval), got {lead!r}")
        self.interval = interval
        self.lead = lead
        self.switch_interval = switch_interval
        self.stats = TickStats()
        """How late the thread ran each slot (after the GIL was its), and each slot's send time."""
        self._new: deque[PacedLane] = deque()
        self._lanes: list[PacedLane] = []
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._switch_before: float | None = None

    @staticmethod
    def available() -> bool:
        return _SENDTO is not None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, origin: float) -> None:
        """Start sending, tick ``n``'s packets at ``origin + n * interval + lead`` (monotonic)."""
        if _SENDTO is None:
            raise RuntimeError("the RTP pacer needs Linux's libc sendto; send from the loop instead")
        if self._thread is not None:
            raise RuntimeError("the RTP pacer is already running")
        self._stopping.clear()
        current = sys.getswitchinterval()
        if current > self.switch_interval:
            self._switch_before = current
            sys.setswitchinterval(self.switch_interval)
        self._thread = threading.Thread(target=self._run, args=(origin, _SENDTO), name="rtp-pacer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread (within a slot), send what the open lanes still hold and close every
        lane's descriptor."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopping.set()
        thread.join()
        if self._switch_before is not None:
            sys.setswitchinterval(self._switch_before)
            self._switch_before = None
        for lane in self._lanes + list(self._new):
            if not lane.closed and _SENDTO is not None:
                lane._drain(_SENDTO)
            lane.closed = True
            _close(lane._fd)
        self._lanes.clear()
        self._new.clear()

    def lane(self, sock: _Fileno) -> PacedLane:
        """A lane sending from ``sock`` (its descriptor is duplicated; the caller keeps its own)."""
        lane = PacedLane(os.dup(sock.fileno()))
        self._new.append(lane)
        return lane

    def __len__(self) -> int:
        return len(self._lanes) + len(self._new)

    def _run(self, origin: float, sendto: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        interval, lead, stats, stopping = self.interval, self.lead, self.stats, self._stopping
        n = 0
        while not stopping.is_set():
            slot = origin + n * interval + lead
            delay = slot - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now = time.monotonic()
            stats.record(max(0.0, now - slot))
            behind = int((now - slot) / interval + 1e-9)
            if behind:  # this thread itself was held up: send what is due now, in order
                stats.bursts += 1
                n += behind
            started = time.perf_counter()
            self._send(n, sendto)
            stats._work.append(time.perf_counter() - started)
            n += 1

    def _send(self, tick: int, sendto: ctypes._CFuncPtr) -> None:  # type: ignore[name-defined]
        lanes = self._lanes
        while self._new:
            lanes.append(self._new.popleft())
        closed = False
        for lane in lanes:
            if lane.closed:
                closed = True
                continue
            lane._flush(tick, sendto)
        if closed:
            for lane in lanes:
                if lane.closed:
                    _close(lane._fd)
            self._lanes = [lane for lane in lanes if not lane.closed]


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
