"""The benchmark harness runs end to end and writes its report (timings are never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.server
@pytest.mark.timeout(600)
def test_quick_single_stream_run_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    argv = ["--quick", "--scenarios", "single", "--tokens", "8", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# mlxd benchmark results")
    assert "`python -m bench --quick --scenarios single --tokens 8 --out" in report
    assert "single streaming: mlxd / raw engine" in report
    assert "single non-streaming: mlxd / mlx_lm.server" in report
    assert "| mlx-lm |" in report
    assert "| cores |" in report


def test_a_rerun_keeps_the_written_analysis(tmp_path: Path) -> None:
    from bench import report
    from bench.machine import RunInfo

    out = tmp_path / "RESULTS.md"
    info = RunInfo(command="python -m bench", quick=True)
    out.write_text(report.render(info, [], {}, "Where the time goes: here."), encoding="utf-8")
    report.write(out, info, [], {})
    assert "Where the time goes: here." in out.read_text(encoding="utf-8")


def test_percentiles_interpolate() -> None:
    from bench.stats import median, percentile

    assert median([3.0, 1.0, 2.0]) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_unknown_scenarios_are_refused() -> None:
    from bench.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "single,nonsense"])
