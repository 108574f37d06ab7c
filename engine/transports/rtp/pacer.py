"""Every call's RTP sent at its exact slot, by a small process of its own.

The event loop builds each call's packets on ``RtpTicker`` (sequence number, timestamp, marker,
DTMF: ``RtpSession.outgoing``), but a tick runs when the loop gets to it: behind the frames of
200 calls, a burst of WebSocket messages or a garbage collection, some ticks run milliseconds
late, and the far end hears the interval between packets wobble. So when a pacer is in use the
ticker only builds: tick ``n``'s packets go to the calls' ``PacedLane``s, one message per tick
carries them to the sending process (``sender.py``), and it sends them at
``origin + n * interval + lead``. The loop may run up to ``lead`` late without anyone hearing it.

Why a process and not a thread: a thread of this process needs the GIL at each slot, and gets it
when the loop's thread lets go (after the switch interval, or a whole garbage collection); and
``socket.sendto`` gives the GIL up around each system call, so a burst of 200 sends is taken over
by the loop's thread 200 times (the convoy effect). Measured with a thread (libc ``sendto`` called
holding the GIL, 2 ms switch interval): p99 interval deviation ~1.5 ms on RTP alone but 1.2-2.2 ms
in the whole server at 200 calls, from run to run. The process shares nothing with the server but
a socket pair, so only the kernel's scheduling is between it and its slots.

- Each lane's socket descriptor is passed to the process (``SCM_RIGHTS``) when the lane opens: it
  sends from the call's own socket, so the source port is the call's (symmetric RTP holds). It
  closes its copy when the lane closes.
- Messages go over a ``SOCK_SEQPACKET`` pair, never blocking the loop: if the process cannot take
  a tick's message (it is stuck), that tick's packets are dropped and counted. If the process dies,
  the pacer says so once in the log and every lane's ``push`` returns False: the calls send from
  the loop again, as without a pacer.
- The process asks for real-time scheduling (``SCHED_FIFO``, lowest priority; it sleeps but for
  ~2 ms a tick, and Linux's RT throttling bounds it anyway), else a raised priority, else runs as
  is (or as is at once, ``realtime=False``): with ``CAP_SYS_NICE`` (or as root) it
  runs the moment its slot comes even on a busy core; ``priority`` says what it got, and the
  start-up log line too.
- A packet built after its slot (the loop ran past the lead) goes out the moment it arrives.
- ``stop`` asks the process for its report (``report``: lateness and send-time percentiles,
  packets sent, late and dropped) and waits for it to exit.

``RtpPacer.available()`` says whether this platform has what the pacer needs (Linux: ``SCM_RIGHTS``
over ``SOCK_SEQPACKET``, libc's ``sendto``); where it has not, calls send from the loop.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import json
import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from .sender import ENTRY, LANE, ORIGIN, TICK

log = logging.getLogger(__name__)

__all__ = ["LEAD_S", "PacedLane", "RtpPacer", "sockaddr"]

LEAD_S = 0.015
"""The default lead: at 200 calls on one core, 10 ms left a few packets a slot late."""
MESSAGE_BYTES = 60_000
"""Largest message to the process (a tick of many calls goes as several)."""
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 2.0
SENDER = Path(__file__).with_name("sender.py")


class _Fileno(Protocol):
    def fileno(self) -> int: ...


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
    """One call's way to the sending process."""

    __slots__ = ("_pacer", "id", "_remote", "_address", "closed")

    def __init__(self, pacer: RtpPacer, lane_id: int) -> None:
        self._pacer = pacer
        self.id = lane_id
        self._remote: tuple[str, int] | None = None
        self._address = b""
        self.closed = False

    def push(self, tick: int, packet: bytes, remote: tuple[str, int]) -> bool:
        """Send ``packet`` to ``remote`` at tick ``tick``'s slot; False (nothing queued) when the
        caller must send it itself: ``remote`` is not an IP address, or the pacer is not sending."""
        pacer = self._pacer
        if pacer._control is None or self.closed:
            return False
        if remote != self._remote:
            address = sockaddr(remote[0], remote[1])
            if address is None:
                return False
            self._remote, self._address = remote, address
        address = self._address
        pacer._queue(tick, ENTRY.pack(self.id, len(address), len(packet)) + address + packet)
        return True

    def close(self) -> None:
        """Send nothing more; the process closes its copy of the descriptor."""
        if not self.closed:
            self.closed = True
            self._pacer._close(self.id)


class RtpPacer:
    """``start()``, then ``begin(origin)`` with tick 0's time on ``time.monotonic``; ``lane`` for
    each call's socket; ``flush()`` after each tick's packets are pushed; ``stop``."""

    def __init__(self, *, interval: float = 0.02, lead: float = LEAD_S, realtime: bool = True) -> None:
        if not 0 <= lead < interval:
            raise ValueError(f"lead must be within [0, interval), got {lead!r}")
        self.interval = interval
        self.lead = lead
        self.realtime = realtime
        """Whether the process asks for real-time scheduling (see the module's docstring)."""
        self.report: dict[str, Any] = {}
        """The process's report, once stopped (see ``sender.py``)."""
        self.priority = ""
        """The scheduling the process got: ``fifo`` (real time), ``nice -10`` or ``normal``."""
        self.dropped_ticks = 0
        """Ticks whose packets the process could not be handed (it was not reading)."""
        self._control: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._next_id = 0
        self._tick = -1
        self._entries: list[bytes] = []
        self._size = 0
        self._waiting: dict[int, int] = {}
        """Lanes opened before ``start``: their descriptors (duplicates), to hand over at the start."""

    @staticmethod
    def available() -> bool:
        return (
            sys.platform.startswith("linux")
            and hasattr(socket, "send_fds")
            and hasattr(socket, "SOCK_SEQPACKET")
            and ctypes.util.find_library("c") is not None
        )

    @property
    def running(self) -> bool:
        """Whether the process is taking packets (False before ``start``, after ``stop`` or its death)."""
        return self._control is not None

    def start(self) -> None:
        """Start the sending process and wait until it is ready (tens of ms, once); ``begin`` then
        sets tick 0's time."""
        if not self.available():
            raise RuntimeError("the RTP pacer needs Linux (SCM_RIGHTS, SOCK_SEQPACKET, libc); send from the loop")
        if self._process is not None:
            raise RuntimeError("the RTP pacer is already running")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            args = [str(theirs.fileno()), repr(self.interval), repr(self.lead)]
            args += [] if self.realtime else ["--no-realtime"]
            self._process = subprocess.Popen(
                [sys.executable, "-I", str(SENDER), *args], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL
            )
        ours.settimeout(START_TIMEOUT_S)
        try:
            ready = ours.recv(64)
        except OSError:
            ready = b""
        if not ready.startswith(b"R"):
            ours.close()
            self._process.kill()
            self._process.wait()
            self._process = None
            raise RuntimeError(f"the RTP sending process did not start within {START_TIMEOUT_S:g} s")
        ours.setblocking(False)
        self._control = ours
        self.report = {}
        waiting, self._waiting = self._waiting, {}
        for lane_id, fd in waiting.items():
            self._open(lane_id, fd)
            os.close(fd)
        self.priority = ready[1:].decode(errors="replace")
        log.info(
            "rtp pacer: sending process %d (%s scheduling), %g ms lead",
            self._process.pid,
            self.priority,
            self.lead * 1000,
        )

    def begin(self, origin: float) -> None:
        """Tick ``n``'s packets leave at ``origin + n * interval + lead`` (``time.monotonic``)."""
        self._send(b"T" + ORIGIN.pack(origin))

    def stop(self) -> None:
        """Ask the process for its report and wait for it to end."""
        for fd in self._waiting.values():
            os.close(fd)
        self._waiting.clear()
        control, process = self._control, self._process
        self._control = self._process = None
        if process is None:
            return
        if control is not None:
            with control:
                self._report(control)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log.warning("rtp pacer: the sending process did not stop; killed")
            process.kill()
            process.wait()

    def lane(self, sock: _Fileno) -> PacedLane:
        """A lane sending from ``sock`` (the process gets its own copy of the descriptor; before
        ``start``, at the start)."""
        lane = PacedLane(self, self._next_id)
        self._next_id += 1
        if self._process is None:
            self._waiting[lane.id] = os.dup(sock.fileno())
        else:
            self._open(lane.id, sock.fileno())
        return lane

    def _open(self, lane_id: int, fd: int) -> None:
        if (control := self._control) is not None:
            try:
                socket.send_fds(control, [b"O" + LANE.pack(lane_id)], [fd])
            except OSError as exc:
                self._lost(exc)

    def flush(self) -> None:
        """Hand the last tick's packets to the process (the ticker calls this after each tick)."""
        if self._entries:
            self._send_entries()

    # -- internals ---------------------------------------------------------------------------

    def _close(self, lane_id: int) -> None:
        fd = self._waiting.pop(lane_id, None)
        if fd is not None:
            os.close(fd)
        else:
            self._send(b"C" + LANE.pack(lane_id))

    def _queue(self, tick: int, entry: bytes) -> None:
        if tick != self._tick and self._entries:
            self._send_entries()
        self._tick = tick
        if self._size + len(entry) > MESSAGE_BYTES:
            self._send_entries()
        self._entries.append(entry)
        self._size += len(entry)

    def _send_entries(self) -> None:
        message = b"P" + TICK.pack(self._tick) + b"".join(self._entries)
        self._entries.clear()
        self._size = 0
        self._send(message)

    def _send(self, message: bytes) -> None:
        control = self._control
        if control is None:
            return
        try:
            control.send(message)
        except BlockingIOError:
            self.dropped_ticks += 1
            if self.dropped_ticks in (1, 100) or self.dropped_ticks % 10_000 == 0:
                log.warning("rtp pacer: the sending process is not keeping up (%d ticks dropped)", self.dropped_ticks)
        except OSError as exc:
            self._lost(exc)

    def _lost(self, exc: OSError) -> None:
        """The process is gone: every lane sends from the loop from now on."""
        log.error("rtp pacer: the sending process is gone (%s); the calls send their RTP themselves", exc)
        control, self._control = self._control, None
        if control is not None:
            control.close()

    def _report(self, control: socket.socket) -> None:
        control.settimeout(STOP_TIMEOUT_S)
        try:
            control.send(b"Q")
            answer = control.recv(1 << 16)
        except OSError as exc:
            log.warning("rtp pacer: no report from the sending process (%s)", exc)
            return
        if answer.startswith(b"S"):
            with contextlib.suppress(ValueError):
                self.report = json.loads(answer[1:])
