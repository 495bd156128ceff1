"""Write ``RESULTS.md`` and print the same tables to the terminal.

The hand-written analysis between the ``analysis`` markers survives a rerun: the
report keeps whatever the previous file held there (re-check it against new numbers).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.table import Table as RichTable

from bench.machine import RunInfo
from bench.results import Headline, ScenarioResult, Table

ANALYSIS_START = "<!-- analysis:start -->"
ANALYSIS_END = "<!-- analysis:end -->"
NO_ANALYSIS = "_No analysis written for this run yet._"

COUNTING = """\
## How tokens are counted

Both servers (mlx_lm.server 0.32.2 included) end a stream with a usage chunk when asked with
`stream_options: {"include_usage": true}`. A content chunk may carry several tokens (mlxd
writes everything that is ready in one chunk when the client falls behind), so chunks are
never counted as tokens: every tokens/s figure uses `usage.completion_tokens` (non-streaming
requests use the same field of the response). The harness checks that every response carried
exactly `max_tokens` tokens and notes any exception under the scenario's tables; the raw
engine counts the tokens it generated. Chunks per request are reported separately. TTFT is
the time to the first chunk with non-empty `delta.content` (mlxd first sends an empty role
chunk, which does not count; mlx_lm.server sends `: keepalive` comments, which are skipped)."""

SETUP = """\
## Setup

- Model: the tiny random-weight llama from `mlxd.runtime.demo_model.build_tiny_model(seed=0)`
  (2 layers, hidden 64, vocab 768, context 2,048); its special tokens never win at
  temperature 0, so every request runs to `max_tokens`. Its engine cost is tiny, so server
  overhead shows directly.
- mlxd: `python -m mlxd serve --config FILE --port P` with `max_batch_size = 64`,
  `max_queue = 256`, `prefill_step_size = 256`, `keep_alive = "forever"`, temperature 0,
  default logging.
- mlx_lm.server: `python -m mlx_lm server --model DIR --port P {seed_flags}` (same batch
  and prefill sizes; its prompt cache and request logging at their defaults).
- Raw engine: mlx-lm in its own process (`stream_generate` for single requests,
  `BatchGenerator` with mlxd's batch settings for concurrent ones), no HTTP.
- Client: one asyncio process with `httpx.AsyncClient`, on the same machine as the servers
  (it competes with them for the 2 cores, equally for both). All traffic on 127.0.0.1.
- Each server and the raw engine run for the whole run (idle when not measured) so their
  measurements interleave; start time and memory use fresh processes."""


def _md_table(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def _summary(results: Iterable[ScenarioResult]) -> str:
    headlines: list[Headline] = [h for result in results for h in result.headlines]
    if not headlines:
        return ""
    table = Table("Headline numbers", ["measure", "value", "target", "verdict"])
    table.rows = [[h.label, h.shown, h.goal, h.verdict] for h in headlines]
    return "## Summary\n\n" + _md_table(table)


def read_analysis(path: Path) -> str:
    """The analysis kept in an existing report, or a placeholder."""
    if not path.exists():
        return NO_ANALYSIS
    text = path.read_text(encoding="utf-8")
    start, end = text.find(ANALYSIS_START), text.find(ANALYSIS_END)
    if start == -1 or end < start:
        return NO_ANALYSIS
    return text[start + len(ANALYSIS_START) : end].strip() or NO_ANALYSIS


def render(info: RunInfo, results: list[ScenarioResult], failures: dict[str, str], analysis: str) -> str:
    """The whole Markdown report."""
    from bench.servers import MLX_LM_FLAGS

    header = [
        "# mlxd benchmark results",
        "",
        f"Command: `{info.command}`" + (" (quick smoke run: few repetitions)" if info.quick else ""),
        "",
        f"Date: {info.started:%Y-%m-%d %H:%M} UTC; the run took {info.seconds / 60:.1f} minutes.",
        "",
        "| versions | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.versions.items()),
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.machine().items()),
        "",
        "Ratios are mlxd / other: above 1 mlxd is faster, except for TTFT ratios (lower is better).",
        "Absolute numbers drift on shared machines; compare the ratios.",
    ]
    parts = ["\n".join(header), _summary(results)]
    parts.append(f"## Analysis\n\n{ANALYSIS_START}\n{analysis}\n{ANALYSIS_END}")
    for result in results:
        body = [f"## {result.title}", result.method.replace("\n", " ")]
        body += [_md_table(table) for table in result.tables]
        body += result.notes
        parts.append("\n\n".join(body))
    for name, error in failures.items():
        parts.append(f"## {name}: failed\n\n```\n{error}\n```")
    parts.append(SETUP.format(seed_flags=MLX_LM_FLAGS))
    parts.append(COUNTING)
    return "\n\n".join(p for p in parts if p) + "\n"


def write(path: Path, info: RunInfo, results: list[ScenarioResult], failures: dict[str, str]) -> None:
    """Write the report, keeping the analysis of the previous one."""
    text = render(info, results, failures, read_analysis(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def show(console: Console, results: list[ScenarioResult]) -> None:
    """Print every table, then the headline numbers."""
    for result in results:
        for table in result.tables:
            rich = RichTable(*table.columns, title=f"{result.title}: {table.title}", title_justify="left")
            for row in table.rows:
                rich.add_row(*row)
            console.print(rich)
    headlines = [h for result in results for h in result.headlines]
    summary = RichTable(
        "measure", "value", "target", "verdict", title="Headline numbers", title_justify="left"
    )
    for h in headlines:
        summary.add_row(h.label, h.shown, h.goal, h.verdict)
    console.print(summary)
