"""The cloud adapters' own CPU, one adapter at a time, against the vendor fakes in another process:

    python -m ringline.benchmarks.adapter_cpu [--calls 100] [--seconds 5] [--replies 2] [--repeats 3]

- ``deepgram``: ``--calls`` sessions stream mu-law 8 kHz in 20 ms frames, in real time, for
  ``--seconds``, first as between the caller's speech (``quiet_chunk_ms`` messages), then as in
  it (the ``speech`` hint given: ``chunk_ms`` messages): this process's CPU as % of a core, and
  per frame (what the call's frame path and the session's tasks spend on it); then what a session
  holds while it streams: its tasks (the ``websockets`` connection's included) and the objects the
  garbage collector tracks for it (each one work for every full collection).
- ``openai``: ``--calls`` streamed chat replies at once, ``--replies`` rounds, with a ten-message
  context and the fake at the published latencies (first token 350 ms, then 50 tokens/s): CPU per
  reply (request, stream, drain).

Why beside ``adapters.py``: that benchmark's p95 follows the server's CPU, and this VM's speed
drifts by a quarter from one run to the next, so an A/B of the whole server within that noise is
hard to read. CPU per unit of one adapter, repeated (``--repeats``) and compared in the same
minutes, is not. This process is pinned to ``--core`` (0), the fakes (``vendors/serve.py``) to
``--vendor-core`` (1); everything runs on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time

import uvloop

from ringline.benchmarks.concurrency import pin
from ringline.config.providers import DeepgramSttConfig, OpenAiLlmConfig
from ringline.engine.audio.clock import LoopClock
from ringline.engine.audio.formats import MULAW_8K
from ringline.engine.clients import HttpClients
from ringline.engine.llm.base import Context, Message
from ringline.engine.llm.openai import OpenAiLlm
from ringline.engine.stt.deepgram import DeepgramStt, DeepgramSttSession

FRAME_S = 0.02
REPLY = "Sure, here is the answer to that."


async def deepgram(vendor: dict[str, str], args: argparse.Namespace, clients: HttpClients) -> None:
    config = DeepgramSttConfig(provider="deepgram", api_key=vendor["api_key"], base_url=vendor["url"])
    stt = DeepgramStt(config, LoopClock(), clients=clients)
    gc.collect()
    objects, tasks = len(gc.get_objects()), len(asyncio.all_tasks())
    sessions = [await stt.open(MULAW_8K) for _ in range(args.calls)]

    async def read(session: DeepgramSttSession) -> None:
        async for _ in session:
            pass

    readers = [asyncio.create_task(read(s)) for s in sessions]
    tasks += len(readers)  # the benchmark's, not the sessions'
    frame = b"\xff" * MULAW_8K.bytes_for(int(FRAME_S * 1000))
    loop = asyncio.get_running_loop()
    ticks = int(args.seconds / FRAME_S)
    for _ in range(args.repeats):
        for speaking in (False, True):
            for session in sessions:
                session.speech(speaking)
            cpu, start = time.process_time(), loop.time()
            for i in range(ticks):
                for session in sessions:
                    await session.send(frame)
                await asyncio.sleep(max(0.0, start + (i + 1) * FRAME_S - loop.time()))
            cpu = time.process_time() - cpu
            wall = loop.time() - start
            print(
                f"deepgram: {args.calls} sessions, caller {'speaking' if speaking else 'silent'}: "
                f"{100 * cpu / wall:.1f} % of a core, {1e6 * cpu / (args.calls * ticks):.1f} us per 20 ms frame"
            )
    gc.collect()
    objects = (len(gc.get_objects()) - objects) / args.calls
    tasks = (len(asyncio.all_tasks()) - tasks) / args.calls
    print(f"deepgram: a session holds {tasks:.0f} tasks and {objects:.0f} GC-tracked objects (its reader's too)")
    for session in sessions:
        await session.aclose()
    await asyncio.gather(*readers, return_exceptions=True)


async def openai(vendor: dict[str, str], args: argparse.Namespace, clients: HttpClients) -> None:
    config = OpenAiLlmConfig(provider="openai", api_key=vendor["api_key"], base_url=vendor["url"])
    llm = OpenAiLlm(config, LoopClock(), clients=clients)
    context = Context("You are a helpful phone agent.")
    for i in range(5):
        context.add(Message("user", f"Tell me more about item {i}."))
        context.add(Message("assistant", REPLY))
    context.add(Message("user", "Tell me more."))

    async def reply() -> int:
        return len([event async for event in llm.stream(context, [])])

    await asyncio.gather(*(reply() for _ in range(args.calls)))  # connections made, pool warm
    for _ in range(args.repeats):
        cpu = time.process_time()
        for _ in range(args.replies):
            events = await asyncio.gather(*(reply() for _ in range(args.calls)))
            if not all(events):
                raise SystemExit("openai: a reply came back empty")
        await llm.settle()
        cpu = time.process_time() - cpu
        print(f"openai: {args.calls} replies at once: {1000 * cpu / (args.calls * args.replies):.2f} ms CPU per reply")
    await llm.aclose()


async def run(vendors: dict[str, dict[str, str]], args: argparse.Namespace) -> None:
    async with HttpClients() as clients:
        if "deepgram" in args.adapters:
            await deepgram(vendors["deepgram"], args, clients)
        if "openai" in args.adapters:
            await openai(vendors["openai"], args, clients)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.adapter_cpu", description=__doc__.split("\n")[0])
    p.add_argument("--adapters", default="deepgram,openai", help="comma-separated (default deepgram,openai)")
    p.add_argument("--calls", type=int, default=100, help="sessions, or replies at once (default 100)")
    p.add_argument("--seconds", type=float, default=5.0, help="Deepgram: seconds of audio per repeat (default 5)")
    p.add_argument("--replies", type=int, default=2, help="OpenAI: rounds of --calls replies per repeat (default 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--core", type=int, default=0)
    p.add_argument("--vendor-core", type=int, default=1)
    args = p.parse_args(argv)
    args.adapters = {a.strip() for a in args.adapters.split(",") if a.strip()}
    if not args.adapters <= {"deepgram", "openai"} or not 1 <= args.calls <= 1000:
        p.error("--adapters: deepgram and/or openai; --calls: 1..1000")
    serve = [sys.executable, "-m", "ringline.benchmarks.vendors.serve", "--llm-text", REPLY]
    serve += ["--llm-ttft-ms", "350", "--llm-tokens-per-s", "50"]
    proc = subprocess.Popen(pin(args.vendor_core) + serve, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the vendor fakes did not start")
        if (os.cpu_count() or 1) > args.core:
            os.sched_setaffinity(0, {args.core})
        uvloop.run(run(json.loads(line), args))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
