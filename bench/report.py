"""Write ``RESULTS.md`` and print the same tables to the terminal.

The hand-written analysis between the ``analysis`` markers survives a rerun: the
report keeps whatever the previous file held there (re-check it against new numbers).
"""

from __future__ import annotations

import re
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

- Models: random-weight llamas from `mlxd.runtime.demo_model`, with the same byte-level BPE
  tokenizer and ChatML template; their special tokens never win at temperature 0, so every
  request runs to `max_tokens`.
{models}
- mlxd: `python -m mlxd serve --config FILE` with `max_batch_size = 64`, `max_queue = 256`,
  `prefill_step_size = 256`, `keep_alive = "forever"`, temperature 0; logging, prompt cache
  and `stream_interval` (20 ms) at their defaults (the switching and prompt-cache-off
  scenarios change only what they say).
- mlx_lm.server: `python -m mlx_lm server --model DIR --port P {seed_flags}` (same batch
  and prefill sizes; its prompt cache and request logging at their defaults).
- Raw engine: mlx-lm in its own process (`stream_generate` for single requests,
  `BatchGenerator` with mlxd's batch settings for concurrent ones), no HTTP.
- Client: one asyncio process with `httpx.AsyncClient`, on the same machine as the servers
  (it competes with them for the cores, equally for both). All traffic on 127.0.0.1.
- Each model is measured in turn. While it is, each server and the raw engine run on it
  for the whole time (idle when not measured) so their measurements interleave; start time,
  memory, switching and the prompt-cache-off daemon use fresh processes."""


def _md_table(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |"]
    lines.append("|" + "|".join("---" for _ in table.columns) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table.rows]
    return "\n".join(lines)


def summary_tables(results: Iterable[ScenarioResult]) -> list[Table]:
    """The headline numbers: those with a goal (and their verdicts), then the others."""
    headlines: list[Headline] = [h for result in results for h in result.headlines]
    goals = [h for h in headlines if h.goal is not None]
    met = sum(1 for h in goals if h.verdict == "met")
    tables = []
    if goals:
        targets = Table(
            f"Targets: {met} of {len(goals)} met", ["measure", "model", "value", "target", "verdict"]
        )
        targets.rows = [[h.label, h.model or "-", h.shown, h.target, h.verdict] for h in goals]
        tables.append(targets)
    others = [h for h in headlines if h.goal is None]
    if others:
        table = Table("Other headline numbers", ["measure", "model", "value"])
        table.rows = [[h.label, h.model or "-", h.shown] for h in others]
        tables.append(table)
    return tables


def _summary(results: Iterable[ScenarioResult]) -> str:
    tables = summary_tables(results)
    return "## Summary\n\n" + "\n\n".join(_md_table(t) for t in tables) if tables else ""


def heading(result: ScenarioResult) -> str:
    """A result's section title, naming its model when it has one."""
    return f"{result.title} ({result.model} model)" if result.model else result.title


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
        f"Models: {', '.join(m.name for m in info.models)} (see Setup); each section and headline names"
        " the model it ran on.",
        "",
        "Ratios are mlxd / other: above 1 mlxd is faster, except for TTFT and latency ratios (lower is"
        " better).",
        "Absolute numbers drift on shared machines; compare the ratios.",
    ]
    parts = ["\n".join(header), _summary(results)]
    parts.append(f"## Analysis\n\n{ANALYSIS_START}\n{analysis}\n{ANALYSIS_END}")
    for result in results:
        body = [f"## {heading(result)}", result.method.replace("\n", " ")]
        body += [_md_table(table) for table in result.tables]
        body += result.notes
        if result.seconds:
            body.append(f"_This section took {result.seconds / 60:.1f} minutes._")
        parts.append("\n\n".join(body))
    for name, error in failures.items():
        parts.append(f"## {name}: failed\n\n```\n{error}\n```")
    described = "\n".join(f"  - {m.name}: {m.description}" for m in info.models)
    parts.append(SETUP.format(models=described, seed_flags=MLX_LM_FLAGS))
    parts.append(COUNTING)
    return "\n\n".join(p for p in parts if p) + "\n"


#: A section other runs wrote (``python -m bench --gpu``, ``bench.dialects``, a before/after
#: comparison) sits between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
_KEPT = re.compile(r"<!-- (?P<name>[a-z0-9-]+):start -->.*?<!-- (?P=name):end -->", re.S)


def kept_sections(path: Path) -> list[str]:
    """The marked sections of an existing report (the analysis aside): a rerun keeps them."""
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    return [m.group(0) for m in _KEPT.finditer(text) if m.group("name") != "analysis"]


def write(path: Path, info: RunInfo, results: list[ScenarioResult], failures: dict[str, str]) -> None:
    """Write the report, keeping the analysis and the marked sections of the previous one."""
    kept = kept_sections(path)
    text = render(info, results, failures, read_analysis(path))
    if kept:
        text = text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def write_section(path: Path, section: str, start: str, end: str) -> None:
    """Put a section between ``start`` and ``end`` into ``path`` (replacing an earlier one,
    else appending it), keeping the rest of the file."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    path.write_text(text, encoding="utf-8")


def show(console: Console, results: list[ScenarioResult]) -> None:
    """Print every table, then the headline numbers."""
    for result in results:
        for table in result.tables:
            console.print(_rich(table, f"{heading(result)}: {table.title}"))
    for table in summary_tables(results):
        console.print(_rich(table, table.title))


def _rich(table: Table, title: str) -> RichTable:
    rich = RichTable(*table.columns, title=title, title_justify="left")
    for row in table.rows:
        rich.add_row(*row)
    return rich
