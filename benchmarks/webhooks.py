"""Webhook benchmark: status-update delivery with live calls, what webhooks cost the calls, and a backlog's drain.

    python -m ringline.benchmarks.webhooks [--calls 100] [--turns 2] [--rounds 2] [--backlog 5000]

Starts ``ringline serve`` (config/bench.toml plus a ``[webhooks]`` table pointing at a receiver in this
process) pinned to core 0. Agent ``default`` sends its calls' status-updates to the receiver; agent
``quiet`` (the same agent with ``webhook.events = []``) sends none. Each round runs ``--calls`` live calls
from the caller simulator (core 1) with ``quiet``, then with ``default``, and compares their reply latency
(target: within 5 ms). The receiver (this process, on the caller's core) verifies every signature; an
event's delay is its arrival minus its ``timestamp`` (when the status change was committed with its outbox
row). Then ``--backlog`` events (5 per call) are written straight into the server's store and the time the
dispatcher takes to deliver them all gives its throughput.
Only loopback addresses are used; everything stops at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ringline.api.store import Direction, OutboxEvent, open_store
from ringline.api.webhooks.signing import SignatureError, verify
from ringline.benchmarks.concurrency import REPO, run_caller, started_server
from ringline.benchmarks.latency import toml_text

SECRET = "benchmark-webhook-secret"
EVENTS_PER_BACKLOG_CALL = 5


@dataclass
class Receiver:
    """Verifies and times every webhook it is sent."""

    delays_ms: list[float] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    bad: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        try:
            verify(SECRET, request.headers, body, now)
        except SignatureError:
            self.bad += 1
            return web.Response(status=401)
        sent = datetime.fromisoformat((await request.json())["timestamp"])
        self.delays_ms.append((now - sent.timestamp()) * 1000)
        self.arrivals.append(now)
        self._changed.set()
        return web.Response(status=204)

    def mark(self) -> int:
        return len(self.arrivals)

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while len(self.arrivals) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True


def _config(tmp: Path, base: Path, receiver_url: str) -> Path:
    data = tomllib.loads(base.read_text())
    data["webhooks"] = {"default_url": receiver_url, "secret": SECRET, "events": ["status-update"]}
    agents = data.setdefault("agents", {})
    agents["quiet"] = {**agents.get("default", {}), "webhook": {"events": []}}
    out = tmp / "webhooks.toml"
    out.write_text(toml_text(data))
    return out


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


async def _calls(
    receiver: Receiver, url: str, pid: int, args: argparse.Namespace, agent: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One caller run with ``agent``; its report and (for ``default``) the deliveries it caused."""
    args.param = [f"agent={agent}"]
    start = receiver.mark()
    report = await asyncio.to_thread(run_caller, url, pid, args.calls, args)
    if agent == "quiet":
        return report, {}
    expected = start + 3 * args.calls  # ringing, in_progress, ended
    complete = await receiver.wait_for(expected, 60.0)
    delays = receiver.delays_ms[start:]
    return report, {
        "received": len(delays),
        "expected": 3 * args.calls,
        "complete": complete,
        "delay_p50_ms": _pct(delays, 0.5),
        "delay_p95_ms": _pct(delays, 0.95),
        "delay_max_ms": max(delays) if delays else None,
    }


async def _backlog(receiver: Receiver, data_dir: Path, count: int) -> dict[str, Any]:
    """Write ``count`` events into the server's store (``EVENTS_PER_BACKLOG_CALL`` per call, in order)
    and time their delivery: the dispatcher finds them at its next poll."""
    store = await open_store(f"sqlite:///{data_dir / 'ringline.db'}")
    try:
        calls = max(1, count // EVENTS_PER_BACKLOG_CALL)
        stamp = datetime.now(UTC).isoformat()
        start = receiver.mark()
        written = time.time()
        for i in range(calls):
            events = [
                OutboxEvent("status-update", {"type": "status-update", "timestamp": stamp, "n": k}, receiver.url)
                for k in range(EVENTS_PER_BACKLOG_CALL)
            ]
            await store.create_call(Direction.INBOUND, from_number=f"+1415555{i % 10000:04d}", outbox=events)
        written_s = time.time() - written
    finally:
        await store.close()
    total = calls * EVENTS_PER_BACKLOG_CALL
    complete = await receiver.wait_for(start + total, 300.0)
    arrivals = receiver.arrivals[start:]
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else 0.0
    return {
        "events": total,
        "received": len(arrivals),
        "complete": complete,
        "write_s": written_s,
        "deliver_s": span,
        "per_s": len(arrivals) / span if span else None,
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


async def run(args: argparse.Namespace) -> int:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    backlog: dict[str, Any] = {}
    print(f"load average before: {_loadavg()}", file=sys.stderr)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            args.config = _config(Path(tmp), args.config, receiver.url)
            with started_server(args) as (url, pid):
                for r in range(1, args.rounds + 1):
                    for agent in ("quiet", "default"):
                        print(f"--- round {r}: {args.calls} calls, agent {agent}", file=sys.stderr)
                        report, delivery = await _calls(receiver, url, pid, args, agent)
                        rows.append((agent, report, delivery))
                if args.backlog:
                    print(f"--- backlog of {args.backlog} events", file=sys.stderr)
                    backlog = await _backlog(receiver, args.data_dir, args.backlog)
    finally:
        await runner.cleanup()
    print(f"load average after: {_loadavg()}", file=sys.stderr)
    _print(rows, backlog, receiver, args)
    ok = receiver.bad == 0 and all("error" not in rep and (not d or d["complete"]) for _, rep, d in rows)
    return 0 if ok and (not backlog or backlog["complete"]) else 1


def _print(
    rows: list[tuple[str, dict[str, Any], dict[str, Any]]],
    backlog: dict[str, Any],
    receiver: Receiver,
    args: argparse.Namespace,
) -> None:
    print(f"{args.calls} live calls x {args.turns} turns per run; receiver on 127.0.0.1 (answers 204 at once)\n")
    print("| run | webhooks | reply median ms | reply p95 ms | turns answered | server CPU % | delivered | "
          "delay p50 ms | delay p95 ms | delay max ms |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, (agent, r, d) in enumerate(rows):
        delivered = f"{d['received']}/{d['expected']}" if d else "-"
        print(
            f"| {i // 2 + 1} | {'status-update' if agent == 'default' else 'none'} | "
            f"{_fmt(r.get('latency_median_ms'), '.1f')} | {_fmt(r.get('latency_p95_ms'), '.1f')} | "
            f"{r.get('turns_answered')}/{r.get('turns_expected')} | {_fmt(r.get('server_cpu_pct'), '.0f')} | "
            f"{delivered} | {_fmt(d.get('delay_p50_ms'), '.1f')} | {_fmt(d.get('delay_p95_ms'), '.1f')} | "
            f"{_fmt(d.get('delay_max_ms'), '.1f')} |"
        )
    medians = {a: [r["latency_median_ms"] for x, r, _ in rows if x == a and r.get("latency_median_ms")] for a in
               ("quiet", "default")}  # fmt: skip
    p95s = {a: [r["latency_p95_ms"] for x, r, _ in rows if x == a and r.get("latency_p95_ms")] for a in
            ("quiet", "default")}  # fmt: skip
    if medians["quiet"] and medians["default"]:
        shift = statistics.mean(medians["default"]) - statistics.mean(medians["quiet"])
        shift95 = statistics.mean(p95s["default"]) - statistics.mean(p95s["quiet"])
        print(f"\nreply latency with webhooks: median {shift:+.1f} ms, p95 {shift95:+.1f} ms (target: within 5 ms)")
    if backlog:
        print(
            f"\nbacklog: {backlog['received']}/{backlog['events']} events "
            f"({EVENTS_PER_BACKLOG_CALL} per call, in order) delivered in {backlog['deliver_s']:.2f} s: "
            f"{_fmt(backlog['per_s'], '.0f')} events/s "
            f"(written in {backlog['write_s']:.2f} s)"
        )
    print(f"signature failures at the receiver: {receiver.bad}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.webhooks", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=100, help="live calls per run (default 100)")
    p.add_argument("--turns", type=int, default=2, help="utterances per call (default 2)")
    p.add_argument("--rounds", type=int, default=2, help="runs without, then with, webhooks (default 2)")
    p.add_argument("--backlog", type=int, default=5000, help="events written at once to time delivery (0: skip)")
    p.add_argument("--config", type=Path, default=REPO / "config" / "bench.toml")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    args = p.parse_args(argv)
    if not (1 <= args.calls <= 1000 and 1 <= args.rounds <= 10 and 0 <= args.backlog <= 100_000):
        p.error("--calls 1..1000, --rounds 1..10, --backlog 0..100000")
    args.url = args.server_pid = None
    args.fake, args.param, args.barge_in_ms = False, [], None
    if args.caller_core is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > args.caller_core:
        os.sched_setaffinity(0, {args.caller_core})  # the receiver shares the caller's core, not the server's
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
