"""Reply latency with providers at published cloud latencies, preemptive generation on and off.

    python -m ringline.benchmarks.latency [--calls 1,100] [--turns 3] [--config config/bench_latency.toml]
        [--protocol twilio|telnyx|plivo|vonage|exotel] [--hesitate-ms 400]

For each setting (preemptive generation off, then on) starts ``ringline serve`` pinned to core 0,
runs the caller simulator pinned to core 1 for each N, then reads every call's record from
``GET /calls/{id}`` for the server's per-stage breakdown (ms after the caller's last voiced frame
reached the server). Prints one markdown table: caller-measured latency median/p95, the median of
each stage, and how often a prepared reply was used or thrown away. ``--hesitate-ms`` has every
caller pause that long mid-turn and go on (``caller.py``): with a pause between the STT's final
and the end-of-turn silence, each turn prepares a reply for its first part and throws it away.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from ringline.benchmarks.concurrency import REPO, add_hesitate_option, run_caller, started_server
from ringline.benchmarks.protocols import PROTOCOLS

STAGES = ("stt_final", "turn_committed", "llm_first_token", "tts_first_audio", "first_audio_sent")


def _with_preemptive(config: Path, enabled: bool, tmp: Path) -> Path:
    """A copy of ``config`` with every agent's ``turn.preemptive_generation`` set."""
    data = tomllib.loads(config.read_text())
    for agent in data.get("agents", {}).values():
        agent.setdefault("turn", {})["preemptive_generation"] = enabled
    out = tmp / f"{config.stem}-preemptive-{'on' if enabled else 'off'}.toml"
    out.write_text(toml_text(data))
    return out


def toml_text(data: dict[str, Any], prefix: str = "") -> str:
    """Minimal TOML writer for the config shapes Ringline uses (tables, scalars, arrays)."""
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in scalars.items())
    for key, table in tables.items():
        name = f"{prefix}.{key}" if prefix else key
        body = toml_text(table, name)
        if any(not isinstance(v, dict) for v in table.values()):
            text += f"\n[{name}]\n"
        text += body
    return text


def _records(base: str, sids: list[str]) -> list[dict[str, Any]]:
    records = []
    for sid in sids:
        with urllib.request.urlopen(f"{base}/calls/{sid}", timeout=10) as resp:
            records.append(json.loads(resp.read()))
    return records


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def _p95(values: list[float]) -> float | None:
    return round(sorted(values)[int(0.95 * (len(values) - 1))], 1) if values else None


def measure_calls(url: str, pid: int, n: int, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """One caller run of ``n`` calls against the server at ``url``: a row of the caller's latency
    and the median of each stage from the server's call records, and the caller's whole report
    (with each stage's p95 as ``stage_p95_ms`` and the records' answered turns as ``server_turns``)."""
    base = "http" + url[2:].removesuffix(f"/media/{args.protocol}")
    report = run_caller(url, pid, n, args, keep_calls=True)
    sids = [c["call_sid"] for c in report.get("calls_detail", [])]
    records = _records(base, sids)
    turns = [t for r in records for t in r["turns"] if t.get("first_audio_sent") is not None]
    row = {
        "calls": n,
        "answered": f"{report.get('turns_answered')}/{report.get('turns_expected')}",
        "median": report.get("latency_median_ms"),
        "p95": report.get("latency_p95_ms"),
        **{stage: _median([t[stage] for t in turns if t.get(stage) is not None]) for stage in STAGES},
        "prepared used": sum(r["preemptive"]["used"] for r in records),
        "prepared discarded": sum(r["preemptive"]["discarded"] for r in records),
        "server CPU %": report.get("server_cpu_pct"),
    }
    report["stage_p95_ms"] = {stage: _p95([t[stage] for t in turns if t.get(stage) is not None]) for stage in STAGES}
    report["server_turns"] = turns
    return row, report


def measure(config: Path, preemptive: bool, calls: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        args.config = _with_preemptive(config, preemptive, Path(tmp))
        with started_server(args) as (url, pid):
            for n in calls:
                row = {"preemptive": "on" if preemptive else "off", **measure_calls(url, pid, n, args)[0]}
                print(json.dumps(row), file=sys.stderr)
                rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:z.0f}" if isinstance(value, float) else str(value)  # z: -0.3 is "0", not "-0"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, columns in the first row's order."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---:" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.latency", description=__doc__.split("\n")[0])
    p.add_argument("--calls", default="1,100", help="comma-separated N (default 1,100)")
    p.add_argument("--turns", type=int, default=3)
    p.add_argument("--config", type=Path, default=REPO / "config" / "bench_latency.toml")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    p.add_argument("--protocol", choices=PROTOCOLS, default="twilio", help="provider media protocol (default twilio)")
    add_hesitate_option(p)
    args = p.parse_args(argv)
    args.url = args.server_pid = None
    args.fake = False
    args.param = []
    args.barge_in_ms = None
    calls = [int(n) for n in args.calls.split(",")]
    config = args.config
    rows = measure(config, False, calls, args) + measure(config, True, calls, args)
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
