"""``benchmarks/adapter_cpu.py`` runs both adapters against the fakes and prints a number for each."""

from __future__ import annotations

import re
import subprocess
import sys


def test_the_adapter_cpu_benchmark_measures_both_adapters() -> None:
    cmd = [sys.executable, "-m", "ringline.benchmarks.adapter_cpu", "--calls", "3", "--seconds", "0.3"]
    cmd += ["--replies", "1", "--repeats", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"deepgram: 3 sessions, caller speaking: [\d.]+ % of a core, [\d.]+ us per 20 ms frame", done.stdout
    )
    assert re.search(r"openai: 3 replies at once: [\d.]+ ms CPU per reply", done.stdout)
