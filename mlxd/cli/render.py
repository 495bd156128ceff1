"""Human output for the daemon commands: small rich tables, sizes and durations."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from mlxd.cli.status_report import StatusReport


def console(*, stderr: bool = False) -> Console:
    """A console that only colours a terminal and never reflows paths."""
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def human_bytes(value: object) -> str:
    """``4.1 GB`` style (powers of 1000, as macOS reports sizes)."""
    if not isinstance(value, int | float) or value < 0:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "-"  # unreachable


def human_duration(value: object) -> str:
    """``3h 12m``, ``4m 05s``, ``12s``."""
    if not isinstance(value, int | float) or value < 0:
        return "-"
    seconds = int(value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _grid() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    return table


def status_table(report: StatusReport) -> Table:
    """``mlxd status`` for people."""
    data = report.data
    table = _grid()
    if report.stopping:
        state = Text(f"stopping (pid {data['pid']} is finishing its requests)", style="yellow")
    elif report.silent:
        pid = data["pid"]
        state = Text(
            f"not answering (pid {pid} is alive: stopped, hung or swamped; `mlxd restart` replaces it)",
            style="red",
        )
    elif not report.running:
        state = Text("not running", style="red")
    elif report.config_error:
        state = Text.assemble(("running", "green"), ", ", ("config error: ", "yellow"), report.config_error)
    else:
        state = Text("running", style="green")
    table.add_row("mlxd", state)
    table.add_row("url", data["url"])
    if report.running:
        table.add_row("pid", str(data["pid"] or "-"))
        table.add_row("uptime", human_duration(data["uptime_s"]))
        table.add_row("version", str(data["version"] or "-"))
    service = data["service"]
    if report.manager_detail:
        service += f" ({report.manager_detail})"
    table.add_row("service", service)
    config = data["config"]
    where = config["path"] or "built-in defaults"
    if config["generation"] is not None:
        where += f" (generation {config['generation']})"
    table.add_row("config", where)
    if report.gave_up:
        table.add_row("gave up", Text(report.gave_up, style="red"))
    elif report.failed:
        table.add_row("last start", Text(f"failed: {report.failed}", style="red"))
    elif report.config_error and not report.running:
        table.add_row("config error", Text(report.config_error, style="yellow"))
    if restart := config.get("restart_required"):
        table.add_row("restart", Text(f"{', '.join(restart)} changed: restart mlxd to apply", style="yellow"))
    if report.running:
        names = [str(m.get("alias")) for m in data["models"]]
        table.add_row("models", ", ".join(names) if names else "none loaded")
    if ranks := data.get("distributed"):
        up = f"{ranks['ranks_up']}/{ranks['size']} up over {ranks['backend']}: {', '.join(ranks['hosts'])}"
        table.add_row("ranks", Text(up, style="green" if ranks["ranks_up"] == ranks["size"] else "yellow"))
    return table


def models_table(models: list[dict[str, Any]]) -> Table:
    """``mlxd ps``: the models the daemon holds."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ALIAS", "STATE", "MEMORY", "ACTIVE", "IDLE", "SOURCE"):
        table.add_column(column, justify="right" if column in {"MEMORY", "ACTIVE"} else "left")
    for model in models:
        active = model.get("active_sequences")
        table.add_row(
            str(model.get("alias", "?")),
            str(model.get("state", "?")),
            human_bytes(model.get("memory_bytes")),
            str(active) if isinstance(active, int) else "-",
            "-" if active else human_duration(model.get("idle_s")),
            str(model.get("source", "")),
        )
    return table
