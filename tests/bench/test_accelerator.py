"""The accelerator mode (``python -m bench --gpu``) runs end to end on a model directory.

It is made for a GPU, but runs anywhere MLX does: here on the CPU with the tiny model and
the quick plan, to prove the harness, never its timings.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.accelerator import GPU_END, GPU_START, write_section

REPO = Path(__file__).resolve().parents[2]


def test_the_gpu_section_replaces_its_previous_self_and_keeps_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# results\n\nCPU tables\n", encoding="utf-8")
    write_section(out, f"{GPU_START}\nfirst\n{GPU_END}\n")
    write_section(out, f"{GPU_START}\nsecond\n{GPU_END}\n")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# results\n\nCPU tables\n")
    assert "second" in text
    assert "first" not in text
    assert text.count(GPU_START) == 1


def test_gpu_mode_needs_a_model_directory() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--gpu"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--gpu needs at least one --model-dir" in done.stderr


@pytest.mark.mlx
@pytest.mark.server
@pytest.mark.timeout(600)
def test_quick_gpu_run_on_the_tiny_model_writes_its_section(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# results\n", encoding="utf-8")
    argv = ["--gpu", "--quick", "--model-dir", str(tiny_model_dir), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# results\n")
    section = text.split(GPU_START, 1)[1]
    assert "1 client: mlxd / stream_generate" in section
    assert "4 clients, agg tok/s: mlxd / raw BatchGenerator" in section
    assert "4 clients, TTFT p99: mlxd / raw prefill of 4 prompts" in section
    assert "the clients spread over" not in section  # one client process unless asked
    # One memory row per round of mlxd at the top level (the quick plan's three).
    memory = section.split("**mlxd memory after each round at the top level**", 1)[1].split("**", 1)[0]
    rows = [line for line in memory.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 3


@pytest.mark.mlx
@pytest.mark.server
@pytest.mark.timeout(600)
def test_kept_connections_one_level_and_the_daemons_timeline(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Kept connections from clients spread over two processes (the quick run above has one)."""
    out, profile = tmp_path / "RESULTS.md", tmp_path / "profile"
    argv = ["--gpu", "--quick", "--levels", "4", "--keep-connections", "--model-dir", str(tiny_model_dir)]
    argv += ["--client-processes", "2"]
    argv += ["--profile", str(profile), "--timeline-only", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    section = out.read_text(encoding="utf-8").split(GPU_START, 1)[1]
    assert "each level's rounds reusing one client's connections" in section
    assert "the clients spread over 2 processes" in section
    assert "4 clients, agg tok/s: mlxd / raw BatchGenerator" in section
    assert "2 clients" not in section  # only the level asked for
    timeline = profile / f"mlxd-{tiny_model_dir.name}.timeline.json"
    assert (profile / f"mlxd-{tiny_model_dir.name}.folded").read_text(
        encoding="utf-8"
    ).strip() == ""  # no sampling
    summary = subprocess.run(
        [sys.executable, "-m", "bench.timeline", str(timeline), "2"], cwd=REPO, capture_output=True, text=True
    )
    assert summary.returncode == 0, summary.stderr[-3000:]
    # Each burst's requests were prefilled in its own window. How many prefills took them
    # depends on when each client process got a core (one, on an idle machine), and a
    # prompt the cache holds whole needs none; which requests make a burst (those within
    # 0.1 s of one another) depends on it too.
    bursts = summary.stdout.split("burst ")[1:]
    assert bursts, summary.stdout
    for burst in bursts:
        requests = re.search(r"(\d+) requests arrived over", burst)
        rows = re.search(r"prefills: \d+, rows \[([\d, ]*)\]", burst)
        assert requests is not None, burst
        assert rows is not None, burst
        assert sum(int(n) for n in rows.group(1).split(",") if n.strip()) <= int(requests.group(1)), burst
    assert "cache stores of " in summary.stdout
