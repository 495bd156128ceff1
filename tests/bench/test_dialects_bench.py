"""The dialects benchmark runs end to end and prints its table (timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.server
@pytest.mark.timeout(300)
def test_one_repetition_prints_a_row_per_dialect() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.dialects", "--reps", "1", "--tokens", "8"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "tok/s" not in line]
    names = [row.split("|")[1].strip() for row in rows]
    assert names == [
        "chat completions",
        "responses",
        "anthropic messages",
        "ollama /api/chat",
        "ollama /api/generate",
    ]
    assert rows[0].endswith("| 1.000× |")
