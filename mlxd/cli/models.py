"""``mlxd models``: pull, list and remove models (filled in by its own change)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Download, list and remove models.", no_args_is_help=True)
