"""``mlxd ps|load|unload|reload``: thin HTTP calls to the running daemon.

Exit 3 when the daemon does not answer (the error table maps ``DaemonNotRunningError``),
1 with the server's own message when it refuses, 78 when a reload is rejected.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from mlxd.cli.options import ConfigOption, JsonOption

if TYPE_CHECKING:
    from pathlib import Path

    from mlxd.cli.client import DaemonClient

AliasArgument = Annotated[str, typer.Argument(help="A configured model alias.")]


def _client(config: Path | None) -> DaemonClient:
    """A client for the running daemon (found from its run record, whatever its file says)."""
    from mlxd.cli.target import resolve

    # Loading a model can take a while: wait longer than for a status call.
    return resolve(config, strict=False).client(timeout=600.0)


def ps(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """List the models loaded in the running daemon."""
    from mlxd.cli.render import console, models_table
    from mlxd.cli.status_report import loaded_models

    models = loaded_models(_client(config).status().models)
    if as_json:
        typer.echo(json.dumps(models, indent=2))
    elif models:
        console().print(models_table(models))
    else:
        typer.echo("no models loaded")


def load(alias: AliasArgument, config: ConfigOption = None) -> None:
    """Load a model now and keep it until its idle time-to-live."""
    result = _client(config).load_model(alias)
    typer.echo(f"loaded {result.alias}")


def unload(alias: AliasArgument, config: ConfigOption = None) -> None:
    """Unload a model now (after its in-flight requests finish)."""
    result = _client(config).unload_model(alias)
    typer.echo(f"unloaded {result.alias}" if result.unloaded else f"{result.alias} was not loaded")


def reload(config: ConfigOption = None) -> None:
    """Make the daemon re-read its config file now.

    Exit status 78 means the new file was rejected and the old config stays.
    """
    from mlxd.errors import ConfigError

    try:
        result = _client(config).reload()
    except ConfigError as error:
        error.hint = "the daemon keeps serving the old config; fix the file and reload again"
        raise
    typer.echo(f"config reloaded (generation {result.generation})")


def register(app: typer.Typer) -> None:
    """Add the commands that administer a running daemon."""
    for command in (ps, load, unload, reload):
        app.command()(command)
