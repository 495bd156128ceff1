"""The engine-options section of the benchmark report: rendered, and written into
``RESULTS.md`` in place (its full run takes minutes on the small model, so it is not run here)."""

from __future__ import annotations

from pathlib import Path

from bench import engine_options
from bench.machine import RunInfo
from bench.report import write_section
from bench.results import Headline, Table


def _section(ratio: float) -> engine_options.Section:
    table = Table("First turn after a restart", ["daemon", "TTFT"], [["restarted", "0.20 s"]])
    headline = Headline(
        "turn-1 TTFT after a restart: disk cache / none", ratio, engine_options.RESTART_TTFT_VS_NO_DISK
    )
    return engine_options.Section([table], [headline])


def test_the_section_replaces_its_earlier_self_and_keeps_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# mlxd benchmark results\n\nthe main run\n", encoding="utf-8")
    info = RunInfo(command="python -m bench --engine-options", quick=False)
    plan = engine_options.Plan()
    write_section(
        out, engine_options.render(_section(0.5), plan, info), engine_options.START, engine_options.END
    )
    first = out.read_text(encoding="utf-8")
    assert first.startswith("# mlxd benchmark results\n\nthe main run\n")
    assert "| turn-1 TTFT after a restart: disk cache / none | 0.50× | ≤ 0.30× | missed by 67% |" in first
    write_section(
        out, engine_options.render(_section(0.05), plan, info), engine_options.START, engine_options.END
    )
    second = out.read_text(encoding="utf-8")
    assert second.count(engine_options.START) == 1
    assert "| 0.05× | ≤ 0.30× | met |" in second
    assert "0.50×" not in second
    assert second.startswith("# mlxd benchmark results\n\nthe main run\n")
