"""The Typer application: one module per command group registers its commands here."""

from __future__ import annotations

import typer

from mlxd import __version__
from mlxd.cli import admin, config_cmd, models, serve, service


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlxd {__version__}")
        raise typer.Exit()


app = typer.Typer(
    name="mlxd",
    help="A local LLM daemon: an OpenAI-compatible API over MLX models, configured in one TOML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Serve local MLX models over the OpenAI API."""


serve.register(app)
service.register(app)
admin.register(app)
app.add_typer(models.app, name="models")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    """Entry point of the ``mlxd`` script."""
    app()
