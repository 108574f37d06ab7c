"""``ringline``: run the server, or a demo call against it."""

from __future__ import annotations

import argparse
import gc
import re
import sys
from pathlib import Path

from ringline.engine.errors import ConfigError
from ringline.logs import setup_logging


def _serve(args: argparse.Namespace) -> int:
    import uvloop
    from aiohttp import web

    from ringline.api.app import make_app
    from ringline.config.settings import BUNDLED, load_settings
    from ringline.demo import DemoTools

    if args.config is None:  # a newcomer's first run: the demo's offline agent, tools included
        print(f"ringline: no --config, serving the bundled demo agent ({BUNDLED / 'demo.toml'})", flush=True)
        settings = load_settings(BUNDLED / "demo.toml")
        app = make_app(settings, tools=DemoTools(), progress=lambda line: print(f"  {line}", flush=True))
    else:
        settings = load_settings(args.config)
        app = make_app(settings)
    host = args.host or settings.server.host
    port = settings.server.port if args.port is None else args.port
    app.on_startup.append(_freeze_startup_objects)

    def banner(message: str) -> None:  # aiohttp's "Running on URL" once the socket listens
        url = re.search(r"http://\S+", message)
        base = url.group(0) if url else f"http://{host}:{port}"
        print(f"ringline serving on {base} (media: ws{base[4:]}/media/twilio)", flush=True)

    web.run_app(
        app,
        host=host,
        port=port,
        print=banner,
        loop=uvloop.new_event_loop(),
        shutdown_timeout=settings.server.shutdown_timeout_s,
        access_log=None,
    )
    return 0


async def _freeze_startup_objects(app: object) -> None:
    """Move everything alive after start-up (modules, config, tables) out of the collector's
    reach: full collections then scan only per-call objects, so their pauses stay short."""
    gc.collect()
    gc.freeze()


def _demo(args: argparse.Namespace) -> int:
    import uvloop

    from ringline.demo import run_demo

    return uvloop.run(run_demo(config=args.config, out=Path(args.out)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ringline", description=__doc__)
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config", type=Path, help="TOML settings file (default: the bundled demo agent on embedded models)"
    )
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8080; 0 picks one)")
    serve.set_defaults(func=_serve)
    demo = sub.add_parser("demo", help="one scripted call end to end, with a latency breakdown and a WAV")
    demo.add_argument("--config", type=Path, help="TOML settings (default: the bundled demo agent)")
    demo.add_argument("--out", default="ringline-demo.wav", help="stereo WAV: caller left, agent right")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    setup_logging("WARNING" if args.command == "demo" and args.log_level == "INFO" else args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ringline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
