"""Control API under load while calls are live: list and get calls from many clients at once.

    python -m ringline.benchmarks.api_load [--calls 100] [--clients 100] [--history 1000] [--turns 3]

Starts ``ringline serve`` (config/bench.toml, the API's per-key limit lifted) pinned to core 0 with
a store in a temporary directory, puts ``--history`` ended calls with transcripts in it and makes an
API key. Then, twice, runs the caller simulator with ``--calls`` live calls (pinned to core 1): once
alone, for the reply latency baseline, and once while ``--clients`` HTTP clients (this process, also
on core 1) each loop over ``GET /api/v1/calls?limit=50`` and ``GET /api/v1/calls/{id}`` for as long
as the calls last. Prints a markdown table: requests per second, p50/p95 per endpoint, errors, and
the live calls' reply latency without and with the API load.
Only loopback addresses are targeted; everything stops when the calls end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ringline.api.http import generate_key, hash_key
from ringline.api.store import CallMessage, Direction, Role, open_store, utcnow
from ringline.benchmarks.concurrency import REPO, run_caller, started_server
from ringline.benchmarks.latency import toml_text

LINES = (
    (Role.ASSISTANT, "Thanks for calling Ringline Bistro, how can I help?"),
    (Role.USER, "I'd like to book a table for two tonight."),
    (Role.ASSISTANT, "Lovely. And for what time?"),
    (Role.USER, "Seven o'clock, please."),
)


@dataclass
class Endpoint:
    name: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[int | str, int] = field(default_factory=dict)

    def row(self, wall_s: float) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "endpoint": self.name,
            "requests": len(lat),
            "rps": len(lat) / wall_s if wall_s else 0.0,
            "p50_ms": statistics.median(lat) if lat else None,
            "p95_ms": lat[int(0.95 * (len(lat) - 1))] if lat else None,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
        }


def _config(tmp: Path, base: Path, concurrency: int | None) -> Path:
    data = tomllib.loads(base.read_text())
    data.setdefault("api", {})["requests_per_key"] = 1_000_000_000
    if concurrency is not None:
        data["api"]["max_concurrent_requests"] = concurrency
    out = tmp / "api_load.toml"
    out.write_text(toml_text(data))
    return out


async def seed(data_dir: Path, history: int) -> tuple[str, list[str]]:
    """An admin key and ``history`` ended calls with a short transcript each, written straight into
    the server's SQLite store (WAL: the server keeps running)."""
    store = await open_store(f"sqlite:///{data_dir / 'ringline.db'}")
    try:
        key = generate_key()
        await store.create_api_key("api-load", key[:8], hash_key(key), ["admin"])
        ids = []
        for i in range(history):
            call = await store.create_call(
                Direction.INBOUND, agent_id="default", from_number=f"+1415555{i % 10000:04d}", to_number="+14155550100"
            )
            await store.append_journal(
                [CallMessage(call.id, seq, role, text, utcnow()) for seq, (role, text) in enumerate(LINES, start=1)], []
            )
            await store.end_call(call.id, "caller_hangup")
            ids.append(call.id)
        return key, ids
    finally:
        await store.close()


async def _client(
    session: aiohttp.ClientSession, base: str, ids: list[str], stats: dict[str, Endpoint], stop: asyncio.Event
) -> None:
    rng = random.Random()
    while not stop.is_set():
        for name, path in (("list calls", "/api/v1/calls?limit=50"), ("get call", f"/api/v1/calls/{rng.choice(ids)}")):
            started = time.perf_counter()
            try:
                async with session.get(base + path) as resp:
                    await resp.read()
                    status: int | str = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                status = type(exc).__name__
            endpoint = stats[name]
            if status == 200:
                endpoint.latencies_ms.append((time.perf_counter() - started) * 1000)
            else:
                endpoint.errors[status] = endpoint.errors.get(status, 0) + 1


async def load_during_calls(
    url: str, pid: int, key: str, ids: list[str], args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """Run the caller (in a thread: it is a subprocess) while ``args.clients`` clients hit the API."""
    base = "http" + url[2:].removesuffix("/media/twilio")
    stats = {name: Endpoint(name) for name in ("list calls", "get call")}
    stop = asyncio.Event()
    connector = aiohttp.TCPConnector(limit=args.clients)
    headers = {"Authorization": f"Bearer {key}"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, headers=headers, timeout=timeout) as session:
        clients = [asyncio.create_task(_client(session, base, ids, stats, stop)) for _ in range(args.clients)]
        started = time.perf_counter()
        report = await asyncio.to_thread(run_caller, url, pid, args.calls, args)
        wall = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*clients)
    return report, [e.row(wall) for e in stats.values()], wall


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.api_load", description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=100, help="live calls during the load (default 100)")
    p.add_argument("--clients", type=int, default=100, help="concurrent API clients (default 100)")
    p.add_argument("--history", type=int, default=1000, help="ended calls in the store beforehand (default 1000)")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--api-concurrency", type=int, default=None, help="[api] max_concurrent_requests (default: 4)")
    p.add_argument("--config", type=Path, default=REPO / "config" / "bench.toml")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    args = p.parse_args(argv)
    if not (1 <= args.calls <= 1000 and 1 <= args.clients <= 1000 and 1 <= args.history <= 100_000):
        p.error("--calls and --clients 1..1000, --history 1..100000")
    args.url = args.server_pid = None
    args.fake, args.param, args.barge_in_ms = False, [], None
    if args.caller_core is not None and hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > args.caller_core:
        os.sched_setaffinity(0, {args.caller_core})  # the API clients share the caller's core, not the server's
    with tempfile.TemporaryDirectory() as tmp:
        args.config = _config(Path(tmp), args.config, args.api_concurrency)
        with started_server(args) as (url, pid):
            print(f"seeding {args.history} ended calls ...", file=sys.stderr)
            key, ids = asyncio.run(seed(args.data_dir, args.history))
            print(f"--- {args.calls} calls alone", file=sys.stderr)
            alone = run_caller(url, pid, args.calls, args)
            print(f"--- {args.calls} calls with {args.clients} API clients", file=sys.stderr)
            loaded, endpoints, wall = asyncio.run(load_during_calls(url, pid, key, ids, args))
    print(f"{args.clients} API clients for {wall:.0f} s, {args.calls} calls live, {args.history} stored\n")
    print("| endpoint | requests/s | p50 ms | p95 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for e in endpoints:
        errors = f"{e['errors']} {e['error_kinds']}" if e["errors"] else "0"
        p50, p95 = _fmt(e["p50_ms"], ".1f"), _fmt(e["p95_ms"], ".1f")
        print(f"| {e['endpoint']} | {e['rps']:.0f} | {p50} | {p95} | {errors} |")
    print("\n| live calls | reply median ms | reply p95 ms | turns answered | server CPU % | caller late frames |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in (("alone", alone), ("with API load", loaded)):
        print(
            f"| {name} | {_fmt(r.get('latency_median_ms'), '.0f')} | {_fmt(r.get('latency_p95_ms'), '.0f')} | "
            f"{r.get('turns_answered')}/{r.get('turns_expected')} | {_fmt(r.get('server_cpu_pct'), '.0f')} | "
            f"{r.get('late_frames', '-')} |"
        )
    shift = None
    if alone.get("latency_median_ms") is not None and loaded.get("latency_median_ms") is not None:
        shift = loaded["latency_median_ms"] - alone["latency_median_ms"]
        print(f"\nreply latency median moved by {shift:+.0f} ms under API load (target: within 10 ms)")
    ok = all("error" not in r for r in (alone, loaded))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
