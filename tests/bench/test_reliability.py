"""The reliability run works end to end (without its load part, which test_loadtest covers);
the full run's counts are in bench/RESULTS.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.reliability import run, suite_bad_inputs, table

pytestmark = [pytest.mark.mlx, pytest.mark.server]


def test_the_bad_inputs_are_the_test_suites_own() -> None:
    cases = suite_bad_inputs()
    sources = {case.source for case in cases}
    assert sources == {"test_bad_input", "test_strict_input", "guards", "loadtest"}
    assert len(cases) > 100
    assert any(isinstance(case.body, bytes) for case in cases)


def test_a_short_reliability_run_sees_no_5xx_and_nothing_cut(tmp_path: Path) -> None:
    from mlxd.runtime.demo_model import build_tiny_model

    model = build_tiny_model(tmp_path / "long", max_position_embeddings=32768)
    figures = run(model, tmp_path / "work", clients=16, seconds=None)
    bad, storm, stop, flood = (
        figures[k] for k in ("bad_inputs", "disconnect_storm", "stop_under_load", "connection_flood")
    )
    assert bad["5xx"] == 0
    assert bad["accepted"] == []
    assert bad["by_status"]["4xx"] == bad["inputs"]
    assert storm["5xx_in_metrics"] == 0
    assert storm["sequences_left"] == 0
    assert stop["cut"] == 0
    assert stop["outcomes"]["stream ended with error event + [DONE]"] == 8, stop
    assert stop["outcomes"]["request 503 unavailable"] == 4
    assert stop["exit_code"] == 0
    assert flood["answers"]["503"] > 0
    assert flood["health_after"] == 200
    assert figures["ok"] is True
    assert "| SIGTERM under load |" in table(figures)
