"""``ringline demo``: one scripted phone call through a real server and a real caller.

Starts the server on a free local port, has the caller simulator speak real speech clips to it
over Twilio Media Streams in real time, then prints the transcript, each turn's latency
breakdown, and writes the call as a stereo WAV (caller left, agent right).
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from ringline.api.app import CALLS, make_app
from ringline.benchmarks.caller import CallerScript, Utterance, run_call, write_stereo_wav
from ringline.benchmarks.clips import CLIP_TEXTS, load_clip
from ringline.config.settings import BUNDLED, load_settings

CALLER_LINES = ("book_table.wav", "open_tomorrow.wav", "thanks.wav")
STAGES = ("stt_final", "turn_committed", "llm_first_token", "tts_first_audio", "first_audio_sent")


async def run_demo(config: Path | None, out: Path) -> int:
    settings = load_settings(config or BUNDLED / "demo.toml")
    app = make_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    agent = settings.agent(None)
    print(f"Ringline demo: server on 127.0.0.1:{port}, agent {agent.name!r} (fake providers)")
    print("Calling it over Twilio Media Streams with recorded speech, in real time...\n", flush=True)
    try:
        script = CallerScript(
            tuple(Utterance(load_clip(name), CLIP_TEXTS[name]) for name in CALLER_LINES),
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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"
