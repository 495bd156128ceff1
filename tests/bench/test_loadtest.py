"""The load-and-fault run works end to end (a short version; the full one is in bench/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.loadtest import run

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def test_short_load_run_has_no_5xx_no_hangs_and_leaves_nothing_behind(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    figures = run(tiny_model_dir, clients=24, seconds=4.0, workdir=tmp_path / "work", cache="32MB")
    assert figures["requests"] > 24
    assert not [status for status in figures["by_status"] if status.startswith("5")]
    assert figures["transport_errors"] == 0
    assert figures["hung"] == 0
    assert figures["incomplete"] == 0
    assert figures["sequences_left"] == 0
    assert figures["healthy_after"] is True
    assert set(figures["by_outcome"]) >= {"stream", "bad"}
