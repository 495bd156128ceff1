"""The Typer application: one module per command group registers its commands here.

Every command runs inside the root group's ``invoke``, the one place where errors are
turned into a line, a hint and an exit code (``mlxd.cli.errors``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from typer.core import TyperGroup

from mlxd import __version__
from mlxd.cli import admin, config_cmd, models, serve, service
from mlxd.cli.errors import reporting


@dataclass(frozen=True)
class CliOptions:
    """The root options, handed to every command as the Click context object."""

    verbose: bool = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mlxd {__version__}")
        raise typer.Exit()


class _Root(TyperGroup):
    """The ``mlxd`` group: runs its subcommands under the one error map."""

    def invoke(self, ctx: Any) -> Any:  # Typer's vendored click.Context
        # Asked only once something failed: the callback has set the options by then.
        with reporting(lambda: isinstance(ctx.obj, CliOptions) and ctx.obj.verbose):
            return super().invoke(ctx)


app = typer.Typer(
    name="mlxd",
    cls=_Root,
    help="A local LLM daemon: an OpenAI-compatible API over MLX models, configured in one TOML file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Show tracebacks on errors."),
) -> None:
    """Serve local MLX models over the OpenAI API."""
    ctx.obj = CliOptions(verbose=verbose)


serve.register(app)
service.register(app)
admin.register(app)
app.add_typer(models.app, name="models")
app.add_typer(config_cmd.app, name="config")


def main() -> None:
    """Entry point of the ``mlxd`` script."""
    app()
