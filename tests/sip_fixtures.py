"""Real SIP peers against Ringline on 127.0.0.1: sipp scenarios, baresip, a capture of what goes over
the loopback interface, and the server with ``[telephony.sip]``.

    async with sip_server() as server, Capture(f"udp src portrange {server.rtp_min}-{server.rtp_max}") as cap:
        result = await run_sipp("uac_call.xml", server.sip, tmp_path, codec=0, codec_name="PCMU", ...)
    assert result.ok, result
    streams = rtp_streams(cap.packets())

Everything is bounded: sipp by its own ``-timeout`` and a hard kill after that, baresip by ``-t``
and a kill on exit, dumpcap stopped on exit. Needs, from Debian: ``sip-tester`` (sipp), ``baresip-core``
and ``tshark`` (dumpcap; capturing on ``lo`` needs root or CAP_NET_RAW).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import random
import re
import shutil
import signal
import socket
import wave
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ringline.benchmarks.sip_load import (  # the capture reader, for the tests too
    RtpPacket,
    UdpPacket,
    g711_pcm,
    loud,
    read_pcap,
    rtp_streams,
)

__all__ = ["RtpPacket", "UdpPacket", "g711_pcm", "loud", "read_pcap", "rtp_streams"]
from ringline.config.settings import Settings, load_settings
from tests.api_fixtures import ApiServer, running

SIP_DIR = Path(__file__).resolve().parent / "sip"
SCENARIOS = SIP_DIR / "scenarios"
HOST = "127.0.0.1"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


# -- ports -----------------------------------------------------------------------------------------


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing holds right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, *, low: int = 20000, high: int = 60000) -> int:
    """The first port of ``count`` consecutive ports (starting even) free for UDP and TCP on 127.0.0.1."""
    for _ in range(200):
        base = random.randrange(low, high - count) & ~1
        if all(_free(p, socket.SOCK_DGRAM) and _free(p, socket.SOCK_STREAM) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


# -- the server ------------------------------------------------------------------------------------


@dataclass
class SipServer:
    """Ringline with its SIP user agent on 127.0.0.1."""

    api: ApiServer
    sip_port: int
    rtp_min: int
    rtp_max: int

    @property
    def sip(self) -> tuple[str, int]:
        return HOST, self.sip_port

    @property
    def rtp_filter(self) -> str:
        """A capture filter for the RTP Ringline sends and receives."""
        return f"udp portrange {self.rtp_min}-{self.rtp_max}"


def sip_settings(
    sip_port: int, rtp_min: int, rtp_max: int, *, recording: bool = False, webhook_url: str | None = None, **sip: Any
) -> Settings:
    """config/bench.toml (fake providers; every reply 1.0 s of tone) with ``[telephony.sip]`` on 127.0.0.1,
    callers from 127.0.0.1 allowed unless ``sip`` says otherwise; webhooks to ``webhook_url`` if given."""
    data = load_settings("config/bench.toml").model_dump()
    data["agents"]["default"]["recording"] = recording
    if webhook_url is not None:
        data["webhooks"] = {"default_url": webhook_url, "secret": "s" * 32}
    data["telephony"]["sip"] = {
        "listen_host": HOST,
        "listen_port": sip_port,
        "public_host": HOST,
        "rtp_port_min": rtp_min,
        "rtp_port_max": rtp_max,
        "allowed_addresses": [f"{HOST}/32"],
        "requests_per_second": 1000.0,
        **sip,
    }
    return Settings.model_validate(data)


@asynccontextmanager
async def sip_server(
    *, rtp_ports: int = 40, recording: bool = False, webhook_url: str | None = None, **sip: Any
) -> AsyncIterator[SipServer]:
    """The whole server (``running``) with the SIP user agent on a free port and ``rtp_ports`` RTP ports."""
    base = free_port_block(rtp_ports + 1)
    sip_port, rtp_min, rtp_max = base + rtp_ports, base, base + rtp_ports - 1
    settings = sip_settings(sip_port, rtp_min, rtp_max, recording=recording, webhook_url=webhook_url, **sip)
    async with running(settings) as api:
        yield SipServer(api, sip_port, rtp_min, rtp_max)


# -- the capture ---------------------------------------------------------------------------


class Capture:
    """dumpcap on the loopback interface with a capture ``filter``, to a pcap file; stopped on exit,
    once the file holds everything captured before (dumpcap gets packets from the kernel in blocks,
    and loses the block it has not got yet when stopped: on exit a datagram only this capture sees
    is sent, and the capture stops once the file has it)."""

    def __init__(self, filter: str, path: Path) -> None:
        self.filter = filter
        self.path = path
        self._process: asyncio.subprocess.Process | None = None
        self._end_port = free_udp_port()
        self._end = b"capture-end-%d" % random.getrandbits(64)

    async def __aenter__(self) -> Capture:
        dumpcap = shutil.which("dumpcap")
        if dumpcap is None:
            raise RuntimeError("dumpcap is missing: apt-get install tshark")
        self._process = await asyncio.create_subprocess_exec(
            dumpcap, "-i", "lo", "-P", "-q", "-f", f"({self.filter}) or udp dst port {self._end_port}",
            "-w", str(self.path),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stderr is not None
        said = b""
        try:
            async with asyncio.timeout(10):
                while b"File: " not in said:  # dumpcap says so once capturing
                    line = await self._process.stderr.readline()
                    if not line:
                        break
                    said += line
        except TimeoutError:
            pass
        if b"File: " not in said:
            await self._stop()
            raise RuntimeError(f"dumpcap did not start capturing: {said.decode(errors='replace')}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._drain()
        await self._stop()

    async def _drain(self) -> None:
        """Send the end datagram and wait (at most 5 s) until dumpcap has written it."""
        if self._process is None or self._process.returncode is not None:
            return
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(self._end, (HOST, self._end_port))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while True:
                    if self.path.exists() and self._end in self.path.read_bytes():
                        return
                    await asyncio.sleep(0.02)

    async def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()

    def packets(self) -> list[UdpPacket]:
        return [p for p in read_pcap(self.path) if p.dst[1] != self._end_port]


# -- sipp ------------------------------------------------------------------------------------------


@dataclass(repr=False)
class SippResult:
    """How a sipp run went: exit code 0 means every call of the scenario succeeded."""

    returncode: int
    workdir: Path
    screen: str
    errors: str
    messages: str
    logs: str
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def count(self, stat: str) -> int:
        """A cumulative counter of the statistics file (``SuccessfulCall(C)``, ``FailedCall(C)``, ...)."""
        return int(self.stats.get(stat, "0") or 0)

    def logged(self, name: str) -> list[str]:
        """Every value the scenario logged as ``name=VALUE``."""
        return re.findall(rf"\b{re.escape(name)}=(\S*)", self.logs)

    def __repr__(self) -> str:
        return (
            f"sipp exited {self.returncode} (0: every call succeeded)\n"
            f"--- errors ---\n{self.errors[-6000:]}\n--- messages ---\n{self.messages[-8000:]}\n"
            f"--- screen ---\n{self.screen[-3000:]}"
        )


def render_scenario(name: str, workdir: Path, **values: object) -> Path:
    """``scenarios/NAME`` with its ``{{placeholders}}`` filled in, written to ``workdir``."""
    text = (SCENARIOS / name).read_text()
    missing = set(_PLACEHOLDER.findall(text)) - set(values)
    if missing:
        raise ValueError(f"{name} needs values for {sorted(missing)}")
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / name
    path.write_text(_PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text))
    return path


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


async def run_sipp(
    scenario: str,
    remote: tuple[str, int] | None,
    workdir: Path,
    *,
    service: str = "ringline",
    calls: int = 1,
    limit: int = 1,
    rate: float | None = None,
    timeout_s: float = 20.0,
    media_port: int | None = None,
    sip_port: int | None = None,
    extra: Iterable[str] = (),
    **values: object,
) -> SippResult:
    """Run ``scenarios/SCENARIO`` (placeholders from ``values``) against ``remote`` (None: as a server,
    waiting for calls): ``calls`` calls, at most ``limit`` at once, ``rate`` new calls a second. sipp
    quits after ``timeout_s`` and is killed 5 s after that; its logs land in ``workdir``."""
    path = render_scenario(scenario, workdir, **values)
    stem = path.stem
    files = {k: workdir / f"{stem}.{k}" for k in ("screen", "errors", "messages", "logs", "stats")}
    args = [
        "sipp", *([f"{remote[0]}:{remote[1]}"] if remote else []),
        "-sf", str(path), "-s", service,
        "-i", HOST, "-p", str(sip_port or free_udp_port()),
        "-mi", HOST, "-mp", str(media_port or free_port_block(4)),
        "-cp", str(free_udp_port()),
        "-m", str(calls), "-l", str(limit),
        *(["-r", str(rate)] if rate is not None else []),
        "-timeout", f"{timeout_s:g}s", "-timeout_error",
        "-nostdin", "-max_recv_loops", "10000",
        "-trace_err", "-error_file", str(files["errors"]),
        "-trace_msg", "-message_file", str(files["messages"]),
        "-trace_logs", "-log_file", str(files["logs"]),
        "-trace_screen", "-screen_file", str(files["screen"]),
        "-trace_stat", "-stf", str(files["stats"]), "-fd", "1",
        *extra,
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *args, cwd=workdir, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout_s + 5)
        returncode = process.returncode
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        returncode = -9
    except asyncio.CancelledError:  # the test gave up on it: leave no sipp behind
        process.kill()
        await process.wait()
        raise
    assert returncode is not None
    stats: dict[str, str] = {}
    if files["stats"].exists():
        rows = list(csv.reader(files["stats"].read_text().splitlines(), delimiter=";"))
        if len(rows) >= 2:
            stats = dict(zip(rows[0], rows[-1], strict=False))
    return SippResult(
        returncode,
        workdir,
        _read(files["screen"]) or out.decode(errors="replace"),
        _read(files["errors"]),
        _read(files["messages"]),
        _read(files["logs"]),
        stats,
    )


def udp_bound(port: int) -> bool:
    """Whether some socket is bound to UDP ``port`` on 127.0.0.1 (read from /proc, binding nothing)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        address, hex_port = line.split()[1].split(":")
        if int(hex_port, 16) == port and address in ("0100007F", "00000000"):
            return True
    return False


@asynccontextmanager
async def sipp_far_end(
    scenario: str, workdir: Path, *, timeout_s: float = 20.0, **values: object
) -> AsyncIterator[SippFarEnd]:
    """sipp running ``scenario`` as a server (the far end Ringline calls), listening once entered:
    ``far.sip_port`` takes SIP, ``far.media_port`` is what its SDP offers. Awaiting ``far.result``
    waits for it to finish; leaving without that stops it."""
    sip_port, media_port = free_udp_port(), free_port_block(4)
    task = asyncio.create_task(
        run_sipp(scenario, None, workdir, sip_port=sip_port, media_port=media_port, timeout_s=timeout_s, **values)
    )
    far = SippFarEnd(sip_port, media_port, task)
    try:
        async with asyncio.timeout(10):
            while not udp_bound(sip_port):
                if task.done():
                    raise RuntimeError(f"sipp did not start: {task.result()!r}")
                await asyncio.sleep(0.01)
        yield far
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@dataclass
class SippFarEnd:
    sip_port: int
    media_port: int
    task: asyncio.Task[SippResult]

    async def result(self, timeout_s: float = 30.0) -> SippResult:
        return await asyncio.wait_for(asyncio.shield(self.task), timeout_s)


# -- baresip ---------------------------------------------------------------------------------------

_BARESIP_CONFIG = """\
poll_method		epoll
net_interface		{host}
sip_listen		{host}:{sip_port}
audio_player		aubridge,nil
audio_alert		aubridge,nil
audio_source		aufile,{wav}
audio_srate		8000
audio_channels		1
rtp_ports		{rtp_min}-{rtp_max}
module_path		/usr/lib/baresip/modules
module			g711.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module_app		account.so
module_app		menu.so
module_app		ctrl_tcp.so
ctrl_tcp_listen		{host}:{ctrl_port}
snd_path		{recordings}
"""


def write_wav(path: Path, pcm: bytes, rate: int = 8000) -> Path:
    """Mono 16-bit PCM as a WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """The samples of a 16-bit WAV file (first channel if several) and its rate."""
    with wave.open(str(path)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return frames[:: w.getnchannels()], w.getframerate()


class Baresip:
    """baresip with a config directory of its own: answers every call at once, speaks ``wav``
    (8 kHz mono 16-bit) into each call, and records both directions of each call to WAV files
    (sndfile: ``dump-*-dec.wav`` what it heard, ``dump-*-enc.wav`` what it sent). Driven and
    watched through its ctrl_tcp socket (JSON in netstrings: commands in, events out)."""

    def __init__(
        self, workdir: Path, wav: Path, *, user: str = "bob", answer: str = "auto", quit_after_s: int = 40
    ) -> None:
        self.dir = workdir
        self.recordings = workdir / "recordings"
        self.wav = wav
        self.user = user
        self.answer = answer
        self.quit_after_s = quit_after_s
        base = free_port_block(24)
        self.sip_port, self.ctrl_port, self.rtp_min, self.rtp_max = base, base + 2, base + 4, base + 23
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.seen: list[dict[str, Any]] = []
        self._responses: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    @property
    def log(self) -> str:
        return _read(self.dir / "baresip.log")

    def _write_config(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        (self.dir / "config").write_text(
            _BARESIP_CONFIG.format(
                host=HOST, sip_port=self.sip_port, ctrl_port=self.ctrl_port, wav=self.wav,
                rtp_min=self.rtp_min, rtp_max=self.rtp_max, recordings=self.recordings,
            )
        )  # fmt: skip
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{HOST}:{self.sip_port}>;regint=0;answermode={self.answer};audio_codecs=PCMU/8000/1,PCMA/8000/1\n"
        )
        (self.dir / "contacts").write_text("")

    async def __aenter__(self) -> Baresip:
        self._write_config()
        with (self.dir / "baresip.log").open("wb") as log:
            self._process = await asyncio.create_subprocess_exec(
                "baresip", "-f", str(self.dir), "-t", str(self.quit_after_s),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        try:
            reader, self._writer = await self._connect()
        except BaseException:
            await self._stop()
            raise
        self._reader_task = asyncio.create_task(self._read(reader))
        return self

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(10):
            while True:
                try:
                    return await asyncio.open_connection(HOST, self.ctrl_port)
                except OSError:
                    assert self._process is not None
                    if self._process.returncode is not None:
                        raise RuntimeError(f"baresip exited {self._process.returncode}:\n{self.log}") from None
                    await asyncio.sleep(0.05)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                length = int((await reader.readuntil(b":"))[:-1])
                message = orjson.loads(await reader.readexactly(length))
                await reader.readexactly(1)  # the netstring's trailing comma
                if message.get("event"):
                    self.seen.append(message)
                    self.events.put_nowait(message)
                elif message.get("response"):
                    self._responses.put_nowait(message)

    async def command(self, command: str, params: str = "", *, timeout_s: float = 5.0) -> dict[str, Any]:
        """Run a baresip command (``dial``, ``hangup``, ``quit``, ...); its response."""
        assert self._writer is not None
        body = orjson.dumps({"command": command, "params": params, "token": command})
        self._writer.write(b"%d:%s," % (len(body), body))
        await self._writer.drain()
        return await asyncio.wait_for(self._responses.get(), timeout_s)

    async def event(self, type: str, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """The next event of ``type`` (``CALL_ESTABLISHED``, ``CALL_CLOSED``, ...), skipping others."""
        async with asyncio.timeout(timeout_s):
            while True:
                event = await self.events.get()
                if event.get("type") == type:
                    return event

    def recording(self, direction: str) -> np.ndarray:
        """What baresip heard (``dec``) or sent (``enc``) in its one call, as 8 kHz samples."""
        (path,) = sorted(self.recordings.glob(f"dump-*-{direction}.wav"))
        samples, rate = read_wav(path)
        assert rate == 8000, rate
        return samples

    async def __aexit__(self, *exc: object) -> None:
        await self._stop()

    async def _stop(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self.command("quit", timeout_s=1.0)
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), 3)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
