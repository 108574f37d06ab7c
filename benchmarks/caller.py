"""Caller simulator: plays a telephony provider (Twilio, Telnyx, Plivo, Vonage, Exotel) against a
media WebSocket, speaking real speech.

Library::

    result = await run_call("ws://127.0.0.1:8080/media/twilio", script, record=True)
    write_stereo_wav("call.wav", result)
    report = await run_load(url, 200, lambda i: clip_script(i, turns=3))
    report = await run_load(url, 10, factory, wire_factory=wire_factory("telnyx"))  # url: .../media/telnyx

CLI (uvloop)::

    python -m ringline.benchmarks.caller --url ws://127.0.0.1:8080/media/twilio --calls 10 --turns 3
    python -m ringline.benchmarks.caller --url ... --calls 10 --turns 4 --barge-in-ms 300  # talk over replies
    python -m ringline.benchmarks.caller --url ... --calls 10 --hesitate-ms 400  # pause mid-turn, go on
    python -m ringline.benchmarks.caller --url ws://127.0.0.1:8080 --protocol vonage  # -> /media/vonage

Modules: ``script`` (what the caller does, what happened), ``session`` (the sans-IO caller),
``playback`` (the provider's playback buffer, sans-IO), ``wire`` (the ``CallerWire`` seam and
Twilio's messages; ``wire_telnyx``, ``wire_plivo``, ``wire_vonage``, ``wire_exotel``; ``protocols``
names them), ``call`` (``run_call``,
the asyncio adapter), ``load`` (``run_load`` and its report), ``recording`` (stereo WAV).
This module re-exports the public API and holds the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from ringline.benchmarks import collector
from ringline.benchmarks.call import run_call
from ringline.benchmarks.clips import CLIP_TEXTS, SPEECH_CLIPS, load_clip
from ringline.benchmarks.load import LoadReport, run_load
from ringline.benchmarks.playback import PlaybackBuffer
from ringline.benchmarks.protocols import PROTOCOLS, wire_factory
from ringline.benchmarks.recording import Recording, write_stereo_wav
from ringline.benchmarks.script import CallerScript, CallResult, EndReason, Reply, Turn, Utterance
from ringline.benchmarks.wire import SILENCE

__all__ = [
    "CallResult",
    "CallerScript",
    "EndReason",
    "LoadReport",
    "PlaybackBuffer",
    "Recording",
    "Reply",
    "Turn",
    "Utterance",
    "clip_script",
    "run_call",
    "run_load",
    "write_stereo_wav",
    "is_loopback_url",
    "media_socket_url",
    "wire_factory",
]

log = logging.getLogger(__name__)

# -- scripts from the bundled clips ----------------------------------------------------------------


def clip_script(
    call_index: int,
    turns: int,
    *,
    pause_ms: float = 400.0,
    reply_timeout_s: float = 10.0,
    wait_for_greeting: bool = False,
    custom_parameters: dict[str, str] | None = None,
    max_call_s: float | None = None,
    barge_in_after_ms: float | None = None,
    hesitate_ms: float | None = None,
    call_sid: str | None = None,
) -> CallerScript:
    """``turns`` utterances cycling through the speech clips, call ``i`` starting at clip ``i``.

    With ``barge_in_after_ms``, every utterance after the first starts that long after the
    previous reply's first audio arrived (talking over the agent), not ``pause_ms`` after it ended.
    With ``hesitate_ms``, every utterance is two clips (its own and the next) with that much
    silence between, rounded to whole 20 ms frames (on top of the clips' own quiet edges): a caller
    who pauses mid-turn, then goes on. A pause longer than the STT's final but shorter than the
    end-of-turn silence is the case for a reply prepared ahead (preemptive generation) that must
    be discarded.
    ``call_sid``: the stream's ``callSid`` (a call placed through the API); default a random one.
    """
    utterances = []
    for j in range(turns):
        name = SPEECH_CLIPS[(call_index + j) % len(SPEECH_CLIPS)]
        audio, text = load_clip(name), CLIP_TEXTS[name]
        if hesitate_ms is not None:
            more = SPEECH_CLIPS[(call_index + j + 1) % len(SPEECH_CLIPS)]
            audio += SILENCE * round(hesitate_ms / 20) + load_clip(more)
            text = f"{text} {CLIP_TEXTS[more]}"
        barge = barge_in_after_ms if j > 0 else None
        utterances.append(Utterance(audio, text, barge_in_after_ms=barge))
    bound = max_call_s if max_call_s is not None else 30.0 + turns * (reply_timeout_s + 15.0)
    return CallerScript(
        tuple(utterances),
        pause_ms=pause_ms,
        reply_timeout_s=reply_timeout_s,
        wait_for_greeting=wait_for_greeting,
        custom_parameters=dict(custom_parameters or {}),
        max_call_s=bound,
        call_sid=call_sid,
    )


# -- CLI -----------------------------------------------------------------------------------------


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def media_socket_url(url: str, protocol: str) -> str:
    """``url`` as given if it has a path, else ``url`` + ``/media/<protocol>``."""
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/media/" + protocol


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.caller", description=__doc__.split("\n")[0])
    p.add_argument(
        "--url",
        required=True,
        help="media WebSocket, e.g. ws://127.0.0.1:8080/media/twilio; without a path, /media/<protocol> is added",
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="twilio", help="provider protocol (default twilio)")
    p.add_argument(
        "--reorder-rate",
        type=float,
        default=0.0,
        metavar="RATE",
        help="telnyx: swap adjacent media frames at this rate (0..1) to exercise the server's reordering",
    )
    p.add_argument("--calls", type=int, default=1, help="concurrent calls (default 1)")
    p.add_argument("--turns", type=int, default=3, help="utterances per call (default 3)")
    p.add_argument(
        "--ramp", type=float, default=None, help="seconds over which calls start (default 20 ms a call, at most 5 s)"
    )
    p.add_argument("--pause-ms", type=float, default=400.0, help="reply played out -> next utterance (default 400)")
    p.add_argument("--reply-timeout", type=float, default=10.0, help="seconds to wait for a reply (default 10)")
    p.add_argument(
        "--barge-in-ms",
        type=float,
        default=None,
        metavar="MS",
        help="speak every utterance after the first MS ms after the previous reply's first audio arrived "
        "(talking over the agent) instead of after the reply ended; reports agent stop times",
    )
    p.add_argument(
        "--hesitate-ms",
        type=float,
        default=None,
        metavar="MS",
        help="say every utterance in two parts with MS ms of silence between (pausing mid-turn, then going on)",
    )
    p.add_argument("--greeting", action="store_true", help="the agent speaks first: wait for its greeting")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="call parameter (agent, from, to, var_*), passed the way the provider passes them",
    )
    p.add_argument("--server-pid", type=int, default=None, help="sample this process's CPU and RSS")
    p.add_argument("--json", type=Path, default=None, help="write the report (and per-call results) here")
    p.add_argument("--record", type=Path, default=None, help="write call 0 as a stereo WAV (caller left, agent right)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback URL")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not args.allow_remote and not is_loopback_url(args.url):
        p.error(f"{args.url} is not a loopback address; pass --allow-remote to call it")
    if not 0.0 <= args.reorder_rate <= 1.0:
        p.error("--reorder-rate must be within 0..1")
    if args.reorder_rate and args.protocol != "telnyx":
        p.error("--reorder-rate is for --protocol telnyx")
    args.url = media_socket_url(args.url, args.protocol)
    if args.barge_in_ms is not None and args.barge_in_ms < 0:
        p.error("--barge-in-ms must not be negative")
    if args.hesitate_ms is not None and not 0 <= args.hesitate_ms <= 10_000:
        p.error("--hesitate-ms: want 0..10000")
    for item in args.param:
        if "=" not in item:
            p.error(f"--param {item!r}: want KEY=VALUE")
    return args


async def _main(args: argparse.Namespace) -> LoadReport:
    params = dict(item.split("=", 1) for item in args.param)

    def factory(i: int) -> CallerScript:
        return clip_script(
            i,
            args.turns,
            pause_ms=args.pause_ms,
            reply_timeout_s=args.reply_timeout,
            wait_for_greeting=args.greeting,
            custom_parameters=params,
            barge_in_after_ms=args.barge_in_ms,
            hesitate_ms=args.hesitate_ms,
        )

    return await run_load(
        args.url,
        args.calls,
        factory,
        ramp_s=args.ramp,
        server_pid=args.server_pid,
        record_first=args.record is not None,
        wire_factory=wire_factory(args.protocol, reorder_rate=args.reorder_rate),
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    collector.hold()  # a collection would stall frames and be read as the server's latency
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        report = asyncio.run(_main(args))
    else:
        report = uvloop.run(_main(args))
    print(report.format())
    if args.record is not None and report.results and report.results[0].recording is not None:
        write_stereo_wav(args.record, report.results[0])
        print(f"recording: {args.record}")
    if args.json is not None:
        args.json.write_bytes(orjson.dumps(report.to_dict(include_calls=True), option=orjson.OPT_INDENT_2))
    return 0 if report.failed_calls == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
