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
    argv = ["--quick", "--scenarios", "single", "--models", "tiny", "--tokens", "8", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# mlxd benchmark results")
    assert "`python -m bench --quick --scenarios single --models tiny --tokens 8 --out" in report
    assert "single streaming: mlxd / raw engine" in report
    assert "## 1. Single-stream decode (tiny model)" in report
    assert "**Targets: " in report
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


def test_a_rerun_keeps_the_sections_other_runs_wrote(tmp_path: Path) -> None:
    from bench import report
    from bench.accelerator import GPU_END, GPU_START
    from bench.machine import RunInfo

    out = tmp_path / "RESULTS.md"
    info = RunInfo(command="python -m bench", quick=True)
    gpu = f"{GPU_START}\n## On a GPU\nmeasured there\n{GPU_END}"
    dialects = "<!-- dialects:start -->\n## Dialects\nall within 3%\n<!-- dialects:end -->"
    out.write_text(
        report.render(info, [], {}, "kept") + "\n" + dialects + "\n\n" + gpu + "\n", encoding="utf-8"
    )
    report.write(out, info, [], {})
    text = out.read_text(encoding="utf-8")
    assert text.count(GPU_START) == 1
    assert "measured there" in text
    assert "all within 3%" in text
    assert text.count("<!-- analysis:start -->") == 1


def test_percentiles_interpolate() -> None:
    from bench.stats import median, percentile

    assert median([3.0, 1.0, 2.0]) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_unknown_scenarios_are_refused() -> None:
    from bench.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--scenarios", "single,nonsense"])


@pytest.mark.server
@pytest.mark.timeout(600)
def test_quick_switching_run_reports_both_switches(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    argv = ["--quick", "--scenarios", "switch", "--models", "tiny", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = out.read_text(encoding="utf-8")
    assert "## 6. Switching aliases and models (tiny model)" in report
    for pattern in ("plain, repeated", "adapter, repeated", "model A, repeated", "alternating"):
        assert f"| {pattern} | mlx_lm.server |" in report
    assert "adapter switching, latency p50: mlxd / mlx_lm.server" in report
    assert "model switch cost: mlxd" in report
    assert "requests failed" not in report


def test_models_are_chosen_on_the_command_line() -> None:
    from bench.cli import parse_args

    assert [m.name for m in parse_args([]).models] == ["tiny", "small"]
    assert [m.name for m in parse_args(["--models", "small"]).models] == ["small"]
    with pytest.raises(SystemExit):
        parse_args(["--models", "tiny,huge"])


def test_the_small_model_gets_a_trimmed_plan_with_the_goal_levels() -> None:
    from bench import goals
    from bench.plan import plan_for

    tiny, small = plan_for(False), plan_for(False, model="small")
    assert small.single_reps < tiny.single_reps
    assert small.concurrency_tokens < tiny.concurrency_tokens
    for plan in (tiny, small):
        assert goals.CONCURRENT_LEVEL in plan.concurrency_levels
    for plan in (tiny, small, plan_for(True), plan_for(True, model="small")):
        assert plan.turns == 5
    assert plan_for(True, 8, "small").single_tokens == 8


def test_goals_read_both_ways() -> None:
    from bench.goals import Goal
    from bench.results import Headline

    floor, ceiling = Goal(0.97), Goal(0.3, lower_is_better=True)
    assert Headline("x", 1.0, floor).verdict == "met"
    assert Headline("x", 0.5, floor).verdict == "missed by 48%"
    assert Headline("x", 0.25, ceiling).verdict == "met"
    assert Headline("x", 0.6, ceiling).verdict == "missed by 100%"
    assert Headline("x", float("nan"), ceiling).verdict == "-"
    assert Headline("x", 0.25, ceiling).target == "≤ 0.30×"
    assert Headline("x", 0.1, Goal(2.0, lower_is_better=True), unit="s").target == "≤ 2.00 s"
    assert Headline("x", 1.0).target == "-"


def test_the_summary_puts_goals_first_and_names_models() -> None:
    from bench import report
    from bench.goals import Goal
    from bench.results import Headline, ScenarioResult

    tiny = ScenarioResult(
        "single", "1. Single", "", headlines=[Headline("a", 1.0, Goal(0.97)), Headline("b", 2.0)]
    )
    small = ScenarioResult("single", "1. Single", "", headlines=[Headline("a", 0.5, Goal(0.97))])
    tiny.label("tiny")
    small.label("small")
    targets, others = report.summary_tables([tiny, small])
    assert targets.title == "Targets: 1 of 2 met"
    assert [row[:2] for row in targets.rows] == [["a", "tiny"], ["a", "small"]]
    assert others.rows == [["b", "tiny", "2.00×"]]
    assert report.heading(small) == "1. Single (small model)"


@pytest.mark.mlx
def test_the_harness_configs_are_valid_mlxd_configs(
    tiny_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    from bench.servers import mlxd_config, model_table
    from mlxd.config.loader import load_config

    models = model_table("plain", tiny_model_dir, default=True) + model_table(
        "adapter", tiny_model_dir, adapter=tiny_adapter_dir
    )
    path = tmp_path / "mlxd.toml"
    path.write_text(mlxd_config(models, 8080, prompt_cache_bytes=0, max_loaded_models=1), encoding="utf-8")
    config = load_config(path)
    assert config.runtime.prompt_cache_bytes == 0
    assert config.runtime.max_loaded_models == 1
    assert config.runtime.max_batch_size == 64
    assert config.models["adapter"].adapter == str(tiny_adapter_dir)
    assert config.models["plain"].default
