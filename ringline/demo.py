"""``ringline demo``: one phone call through a real server and a real caller, offline.

Starts the server on a free local port with the bundled agent (embedded Moonshine, a scripted
agent with a ``book_table`` tool, Piper), has the caller simulator speak recorded speech to it
(Piper's voice pitched up, so it is not the agent's) over Twilio Media Streams in real time: it
books a table, which calls the tool, then asks the opening hours and talks over the answer.
Then prints the transcript, each turn's latency breakdown, and writes the call as a stereo WAV
(caller left, agent right).
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ringline.api.app import CALLS, make_app
from ringline.benchmarks.caller import CallerScript, Utterance, run_call, write_stereo_wav
from ringline.benchmarks.clips import CLIP_TEXTS, load_clip
from ringline.config.settings import BUNDLED, AgentConfig, Settings, load_settings
from ringline.engine.llm.base import Tool
from ringline.engine.tools import CallControl, ToolRegistry, default_registry

CALLER_LINES: tuple[tuple[str, float | None], ...] = (
    ("demo_book.wav", None),
    ("demo_time.wav", None),
    ("demo_hours.wav", None),
    ("demo_thanks.wav", 2500.0),  # talks over the opening-hours answer 2.5 s into it
)
"""The caller's clips, each with when it barges in (ms after the reply starts) or None."""
STAGES = ("stt_final", "turn_committed", "llm_first_token", "tts_first_audio", "first_audio_sent")


async def run_demo(config: Path | None, out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix="ringline-demo-") as data_dir:
        settings = load_settings(config or BUNDLED / "demo.toml")
        settings = settings.model_copy(update={"api": settings.api.model_copy(update={"data_dir": Path(data_dir)})})
        return await _run_demo(settings, out)


async def _run_demo(settings: Settings, out: Path) -> int:
    """The demo, on a store of its own that goes when it ends."""
    agent = settings.agent(None)
    print(f"Ringline demo: agent {agent.name!r} ({_providers(agent)})")
    started = time.perf_counter()
    tools = DemoTools()
    app = make_app(settings, tools=tools, progress=lambda line: print(f"  {line}", flush=True))
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()  # loads and warms the models
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"Server ready on 127.0.0.1:{port} after {time.perf_counter() - started:.1f} s")
    print("Calling it over Twilio Media Streams with recorded speech, in real time...\n", flush=True)
    try:
        script = CallerScript(
            tuple(Utterance(load_clip(name), CLIP_TEXTS[name], barge) for name, barge in CALLER_LINES),
            wait_for_greeting=agent.first_speaker == "agent" and bool(agent.first_message),
            pause_ms=500,
            hangup_after_last_reply=False,
            max_call_s=120,
        )
        result = await run_call(f"ws://127.0.0.1:{port}/media/twilio", script, record=True)
        if result.error:
            print(f"ringline demo: the call failed: {result.error}")
            return 1
        record = await app[CALLS].wait_finished(result.call_sid)
    finally:
        await runner.cleanup()

    print("Transcript")
    for line in record.transcript:
        who = "caller" if line["role"] == "user" else "agent "
        cut = "  [interrupted]" if line.get("interrupted") else ""
        print(f"  {who}  {line['content']}{cut}")

    for tool, arguments, answer in tools.calls:
        print(f"  tool    {tool} {json.dumps(arguments)} -> {answer}")

    print("\nLatency per turn, ms after the caller's last voiced frame reached the server")
    header = ["turn", *STAGES, "heard by caller"]
    print("  " + "  ".join(f"{h:>16}" for h in header))
    replies = [t for t in record.turns if t.user_stopped is not None]
    for i, (metrics, turn) in enumerate(zip(replies, result.turns, strict=False), 1):
        ms = metrics.breakdown_ms()
        cells = [str(i), *(_ms(ms[s]) for s in STAGES), _ms(turn.latency_ms)]
        print("  " + "  ".join(f"{c:>16}" for c in cells))
    print(
        "  (heard by caller: last speech frame sent -> first reply audio received, on the caller's clock;"
        " it includes the end-of-turn silence)"
    )
    print(f"\nCall ended: {record.end_reason.value if record.end_reason else '?'} after {result.duration_s:.1f} s")
    if result.recording is not None:
        write_stereo_wav(out, result)
        print(f"Wrote {out} (caller left, agent right)")
    return 0


BOOK_TABLE = Tool(
    "book_table",
    "Book a table at the restaurant.",
    {
        "type": "object",
        "properties": {"party_size": {"type": "string"}, "time": {"type": "string"}},
        "required": ["party_size", "time"],
    },
)


class DemoTools:
    """Each call's tools: the built-in ones plus ``book_table``, which hands out confirmation
    numbers and remembers what it was asked (for the demo's printout)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self._numbers = itertools.count(1001)

    def __call__(self, agent_name: str, agent: AgentConfig) -> ToolRegistry:
        registry = default_registry()
        registry.register(BOOK_TABLE, self._book_table)
        return registry

    async def _book_table(self, arguments: dict[str, Any], control: CallControl) -> str:
        if not arguments.get("party_size") or not arguments.get("time"):
            result = "error: party_size and time are required"
        else:
            result = f"R {next(self._numbers)}"
        self.calls.append((BOOK_TABLE.name, arguments, result))
        return result


def _providers(agent: AgentConfig) -> str:
    return f"STT {agent.stt.provider}, LLM {agent.llm.provider}, TTS {agent.tts.provider}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
