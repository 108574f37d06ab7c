"""Concurrency benchmark: N simultaneous simulated calls against one server process on one core.

    python -m ringline.benchmarks.concurrency [--calls 1,10,50,100,200] [--turns 3] [--barge-in-ms 300]
        [--protocol twilio|telnyx|plivo|vonage|exotel]

Starts ``ringline serve --config config/bench.toml --port <free port>`` pinned to core 0 (or,
with ``--fake``, the caller's own fake agent, to measure the simulator alone), waits for
``GET /health`` to answer 200, then for each N runs the caller CLI pinned to core 1 in a
subprocess (``taskset -c 1 python -m ringline.benchmarks.caller ... --json``), and prints a
markdown table. ``--url`` and ``--server-pid`` use a server that is already running instead.
``--barge-in-ms MS`` is passed to the caller (every utterance after the first talks over the
previous reply, MS ms after its first audio) and adds the barge-in columns. ``--protocol`` picks
the provider media protocol the callers speak (at ``/media/<protocol>``; default twilio).
Only loopback addresses are targeted; every run has a timeout; the server it started is stopped
with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from ringline.benchmarks.caller import is_loopback_url
from ringline.benchmarks.protocols import PROTOCOLS

REPO = Path(__file__).resolve().parent.parent
HEALTH_TIMEOUT_S = 60.0
COLUMNS = [
    ("N", "calls", "d"),
    ("median ms", "latency_median_ms", ".0f"),
    ("p95 ms", "latency_p95_ms", ".0f"),
    ("turns answered", None, ""),
    ("CPU %", "server_cpu_pct", ".0f"),
    ("RSS MB", "server_rss_peak_mb", ".1f"),
    ("RSS/call MB", "server_rss_per_call_mb", ".3f"),
    ("audio-s per wall-s", "audio_per_wall_s", ".3f"),
    ("max gap ms", "max_gap_ms", ".0f"),
    ("gaps>60ms", "gaps_over_60ms", "d"),
    ("caller late frames", "late_frames", "d"),
    ("caller CPU %", "caller_cpu_pct", ".0f"),
    ("host steal %", "host_steal_pct", ".1f"),
]
BARGE_IN_COLUMNS = [
    ("barge-ins cleared", None, ""),
    ("barge-in stop p95 ms", "agent_stop_p95_ms", ".0f"),
]
# columns showing "a/b" of two report keys
RATIOS = {
    "turns answered": ("turns_answered", "turns_expected"),
    "barge-ins cleared": ("talked_over_cleared", "talked_over_turns"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pin(core: int | None) -> list[str]:
    """A command prefix that pins a process to ``core`` (none when that is impossible: a warning)."""
    if core is None:
        return []
    if shutil.which("taskset") is None or (os.cpu_count() or 1) <= core:
        print(f"warning: cannot pin to core {core} (no taskset or too few cores); running unpinned", file=sys.stderr)
        return []
    return ["taskset", "-c", str(core)]


def _ringline() -> str:
    exe = Path(sys.executable).with_name("ringline")
    if exe.exists():
        return str(exe)
    found = shutil.which("ringline")
    if found is None:
        raise SystemExit("the `ringline` command is not installed (pip install -e .)")
    return found


def wait_healthy(base: str, proc: subprocess.Popen[bytes] | None, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server exited with code {proc.returncode} before answering /health")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2.0) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{base}/health did not answer 200 within {timeout_s:.0f} s")


@contextlib.contextmanager
def started_server(args: argparse.Namespace) -> Iterator[tuple[str, int]]:
    """Yield (ws url, pid) of the server to measure, starting and stopping it if needed. A server
    it starts keeps its store in a temporary directory, ``args.data_dir`` while it runs."""
    if args.url is not None:
        if args.server_pid is None:
            raise SystemExit("--url needs --server-pid (the process to sample)")
        parts = urlsplit(args.url)
        wait_healthy(f"http://{parts.netloc}", None)
        yield args.url, args.server_pid
        return
    port = free_port()
    if args.fake:
        cmd = [sys.executable, "-m", "ringline.benchmarks.fake_agent", "--port", str(port)]
    else:
        if not args.config.exists():
            raise SystemExit(f"config {args.config} not found")
        cmd = [_ringline(), "serve", "--config", str(args.config), "--port", str(port)]
    cmd = pin(args.server_core) + cmd
    log_file = tempfile.NamedTemporaryFile(prefix="ringline-serve-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"starting: {' '.join(cmd)} (log {log_file.name})", file=sys.stderr)
    data_dir = tempfile.TemporaryDirectory(prefix="ringline-bench-data-")  # the server's store: thrown away after
    args.data_dir = Path(data_dir.name)
    env = os.environ | {"RINGLINE_DATA_DIR": data_dir.name}
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
    ok = False
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        yield f"ws://127.0.0.1:{port}/media/{args.protocol}", proc.pid  # taskset execs: same pid
        ok = True
    finally:
        stop_process(proc, log_file, keep_log=not ok, what="server")
        data_dir.cleanup()


def stop_process(proc: subprocess.Popen[bytes], log_file: IO[bytes], *, keep_log: bool, what: str) -> None:
    """SIGTERM (SIGKILL after 15 s) a process this benchmark started; its log is deleted unless kept."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log_file.close()
    if keep_log:
        print(f"{what} log kept: {log_file.name}", file=sys.stderr)
    else:
        os.unlink(log_file.name)


def add_hesitate_option(p: argparse.ArgumentParser) -> None:
    """``--hesitate-ms``, which ``run_caller`` passes on to the caller (``caller.py``)."""
    p.add_argument(
        "--hesitate-ms",
        type=float,
        default=None,
        metavar="MS",
        help="pass to the caller: every utterance in two parts, MS ms of silence between (prepared replies discarded)",
    )


def run_caller(url: str, pid: int, n: int, args: argparse.Namespace, *, keep_calls: bool = False) -> dict[str, Any]:
    """One caller run in a pinned subprocess; its JSON report (with per-call detail if
    ``keep_calls``), or an error row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        cmd = pin(args.caller_core) + [
            sys.executable, "-m", "ringline.benchmarks.caller",
            "--url", url, "--calls", str(n), "--turns", str(args.turns),
            "--server-pid", str(pid), "--json", str(out), "--protocol", args.protocol,
        ]  # fmt: skip
        for param in args.param:
            cmd += ["--param", param]
        if args.barge_in_ms is not None:
            cmd += ["--barge-in-ms", str(args.barge_in_ms)]
        if getattr(args, "hesitate_ms", None) is not None:  # set by the benchmarks with add_hesitate_option
            cmd += ["--hesitate-ms", str(args.hesitate_ms)]
        # ramp (<= 5 s) + per turn: ~2.5 s speech, reply, pauses; reply timeout 10 s worst case
        timeout = 60.0 + args.turns * 20.0
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return {"calls": n, "error": f"caller timed out after {timeout:.0f} s"}
        sys.stderr.write(proc.stdout)
        if not out.exists():
            return {"calls": n, "error": f"caller exited {proc.returncode}: {proc.stderr.strip()[-500:]}"}
        report = json.loads(out.read_text())
        if not keep_calls:
            report.pop("calls_detail", None)
        return report


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str | None, str]] = COLUMNS) -> str:
    lines = [
        "| " + " | ".join(title for title, _, _ in columns) + " |",
        "|" + "|".join("---:" for _ in columns) + "|",
    ]
    for row in rows:
        cells = []
        for title, key, spec in columns:
            if title in RATIOS:
                part, whole = RATIOS[title]
                cells.append(f"{row.get(part, '-')}/{row.get(whole, '-')}")
            else:
                value = row.get(key) if key else None
                cells.append("-" if value is None else format(value, spec))
        if "error" in row:
            cells[-1] += f" (error: {row['error']})"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ringline.benchmarks.concurrency", description=__doc__.split("\n")[0])
    p.add_argument("--calls", default="1,10,50,100,200", help="comma-separated N (default 1,10,50,100,200)")
    p.add_argument("--turns", type=int, default=3, help="utterances per call (default 3)")
    p.add_argument("--config", type=Path, default=REPO / "config" / "bench.toml")
    p.add_argument("--fake", action="store_true", help="measure against the caller's fake agent instead")
    p.add_argument("--url", default=None, help="use a running server (loopback only) ...")
    p.add_argument("--server-pid", type=int, default=None, help="... and this is its pid")
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--caller-core", type=int, default=1)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument(
        "--barge-in-ms", type=float, default=None, metavar="MS", help="pass to the caller: talk over replies"
    )
    p.add_argument("--protocol", choices=PROTOCOLS, default="twilio", help="provider media protocol (default twilio)")
    p.add_argument("--json", type=Path, default=None, help="write all reports here")
    args = p.parse_args(argv)
    if args.url is not None and not is_loopback_url(args.url):
        p.error("--url must be a loopback address")
    counts = [int(c) for c in args.calls.split(",") if c.strip()]
    if not counts or min(counts) < 1 or max(counts) > 1000:
        p.error("--calls: want 1..1000 each")
    rows: list[dict[str, Any]] = []
    with started_server(args) as (url, pid):
        for n in counts:
            print(f"--- {n} calls", file=sys.stderr)
            rows.append(run_caller(url, pid, n, args))
            time.sleep(1.0)  # let the server settle between runs
    print(markdown_table(rows, COLUMNS + BARGE_IN_COLUMNS if args.barge_in_ms is not None else COLUMNS))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all("error" not in r and not r.get("failed_calls") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
