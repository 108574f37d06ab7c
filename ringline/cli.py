"""``ringline``: run the server, or a demo call against it."""

from __future__ import annotations

import argparse
import gc
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ringline.engine.errors import ConfigError
from ringline.logs import setup_logging

if TYPE_CHECKING:
    from ringline.config.settings import ApiConfig


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


def _keys(args: argparse.Namespace) -> int:
    import asyncio

    from ringline.api.store import StoreError
    from ringline.config.settings import load_settings

    settings = load_settings(args.config)
    try:
        return asyncio.run(_keys_command(settings.api, args))
    except StoreError as exc:
        print(f"ringline: the database failed: {exc}", file=sys.stderr)
        return 1


async def _keys_command(api: ApiConfig, args: argparse.Namespace) -> int:
    """``ringline keys create|list|revoke`` on the store the config's ``[api]`` names."""
    from ringline.api.http import ALL_SCOPES
    from ringline.api.store import NotFound, open_store
    from ringline.api.v1.keys import create_key

    scopes: list[str] = []
    if args.keys_command == "create":
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        if not scopes or (unknown := sorted(set(scopes) - ALL_SCOPES)):
            what = f"unknown scopes {unknown}" if scopes else "no scopes"
            print(f"ringline: {what}; known: {', '.join(sorted(ALL_SCOPES))}", file=sys.stderr)
            return 2
    api.data_dir.mkdir(parents=True, exist_ok=True)
    store = await open_store(api.database)
    try:
        if args.keys_command == "create":
            secret, row = await create_key(store, args.name, scopes)
            print(f"created API key {row.id} ({row.name}): {', '.join(sorted(row.scopes))}", file=sys.stderr)
            print("the key is shown this once:", file=sys.stderr)
            print(secret, flush=True)
        elif args.keys_command == "list":
            offset = 0
            while True:
                page = await store.list_api_keys(limit=1000, offset=offset)
                for row in page.items:
                    state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
                    used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
                    scope_list = ",".join(sorted(row.scopes))
                    print(f"{row.id}  {row.prefix}...  {state}  last used {used}  {scope_list}  {row.name}")
                offset += len(page.items)
                if not page.items or offset >= page.total:
                    break
        else:
            try:
                row = await store.revoke_api_key(args.id)
            except NotFound:
                print(f"ringline: no API key {args.id}", file=sys.stderr)
                return 1
            print(f"revoked API key {row.id} ({row.name}); running servers stop accepting it within seconds")
    finally:
        await store.close()
    return 0


def _add_keys_commands(sub: argparse._SubParsersAction) -> None:
    keys = sub.add_parser("keys", help="create, list and revoke control API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    config_help = "TOML settings whose [api] names the database (default: built-in settings)"
    create = keys_sub.add_parser("create", help="create a key and print it (shown this once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. agents:read,calls:write (or admin)")
    listing = keys_sub.add_parser("list", help="list keys (never their secrets)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("id", help="the key's id (key_...)")
    for parser in (create, listing, revoke):
        parser.add_argument("--config", type=Path, help=config_help)
        parser.set_defaults(func=_keys)


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
    _add_keys_commands(sub)
    args = parser.parse_args(argv)
    quiet = args.command in ("demo", "keys") and args.log_level == "INFO"
    setup_logging("WARNING" if quiet else args.log_level)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"ringline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
