"""``mlxd start|stop|restart|status|logs|install|uninstall``: run mlxd in the background.

Thin commands: they turn options into calls on ``lifecycle`` and the service managers
and print the outcome. Heavy imports happen inside the commands so ``mlxd --help``
stays fast.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from mlxd.cli.errors import EXIT_NOT_RUNNING
from mlxd.cli.options import ConfigOption, JsonOption

if TYPE_CHECKING:
    from pathlib import Path

    from mlxd.cli.lifecycle import Outcome
    from mlxd.cli.target import Target


class Manager(StrEnum):
    """Login services ``mlxd install`` can use."""

    launchd = "launchd"
    systemd = "systemd"


DemoOption = Annotated[
    bool, typer.Option("--demo", help="Add the `demo` alias (a tiny local model, no download).")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", min=0.1, help="Seconds to wait for /health to answer.")
]


def _strict_target(config: Path | None) -> Target:
    """The target for commands that start a daemon: an invalid config fails here (exit 78,
    as ``mlxd serve`` exits for the same file)."""
    from mlxd.cli.target import resolve

    return resolve(config, strict=True)


def _lenient_target(config: Path | None) -> Target:
    from mlxd.cli.target import resolve

    return resolve(config, strict=False)


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _say_started(outcome: Outcome) -> None:
    where = outcome.service + (f", pid {outcome.pid}" if outcome.pid else "")
    verb = "is already running" if outcome.already_running else "is running"
    typer.echo(f"mlxd {verb} at {outcome.url} ({where})")


def start(
    demo: DemoOption = False,
    timeout: TimeoutOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Start the daemon in the background.

    Returns once /health answers.
    """
    from mlxd.cli import lifecycle

    outcome = lifecycle.start(_strict_target(config), demo=demo, timeout_s=timeout, warn=_warn)
    _say_started(outcome)


def stop(config: ConfigOption = None) -> None:
    """Stop the daemon gracefully (in-flight requests finish first)."""
    from mlxd.cli import lifecycle

    stopped = lifecycle.stop(_lenient_target(config))
    typer.echo("mlxd stopped" if stopped else "mlxd was not running")


def restart(
    demo: DemoOption = False,
    timeout: TimeoutOption = 30.0,
    config: ConfigOption = None,
) -> None:
    """Stop and start the daemon again."""
    from mlxd.cli import lifecycle

    outcome = lifecycle.restart(_strict_target(config), demo=demo, timeout_s=timeout)
    _say_started(outcome)


def status(as_json: JsonOption = False, config: ConfigOption = None) -> None:
    """Show whether the daemon runs and what it has loaded.

    Exit status 3 means it is not running (or not answering).
    """
    from mlxd.cli.render import console, status_table
    from mlxd.cli.status_report import collect

    report_ = collect(_lenient_target(config))
    if as_json:
        typer.echo(json.dumps(report_.data, indent=2))
    else:
        console().print(status_table(report_))
    if not report_.running:
        raise typer.Exit(EXIT_NOT_RUNNING)


def logs(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines to show.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Show the daemon's log (-f follows it until Ctrl-C)."""
    from mlxd.cli import logfiles

    path = logfiles.daemon_log()
    if not path.is_file() and logfiles.console_log().is_file():
        path = logfiles.console_log()  # the daemon never got as far as opening its log
    if not path.is_file():
        _journal_or_nothing(lines, follow, path)
        return
    for line in logfiles.tail(path, lines):
        typer.echo(line)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            logfiles.follow(path, typer.echo)


def _journal_or_nothing(lines: int, follow: bool, expected: Path) -> None:
    """Under systemd the journal has stdout/stderr even when the log file does not exist."""
    from mlxd.cli.managers import installed_login_service
    from mlxd.cli.managers.systemd import SystemdManager

    service = installed_login_service()
    if isinstance(service, SystemdManager):
        try:
            subprocess.run(service.journal_argv(lines, follow), check=False)
        except FileNotFoundError:
            pass
        except KeyboardInterrupt:
            return
        else:
            return
    typer.echo(f"no log yet (mlxd writes it to {expected})", err=True)


def install(
    manager: Annotated[
        Manager | None,
        typer.Option("--manager", help="Login service (default: launchd on macOS, systemd on Linux)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the file it would write; change nothing.")
    ] = False,
    timeout: TimeoutOption = 30.0,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Return once the service is loaded; don't wait for /health.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Install mlxd as a login service and start it.

    Returns once /health answers (or at once with --no-wait).
    """
    from mlxd.cli import lifecycle
    from mlxd.cli.managers import login_service, platform_login_service
    from mlxd.errors import ServiceManagerError

    name = manager.value if manager is not None else platform_login_service()
    if name is None:
        raise ServiceManagerError(
            f"no login service is supported on {sys.platform}",
            hint="run the daemon with `mlxd start`, or pass --manager",
        )
    target = _strict_target(config)
    service = login_service(name)
    spec = lifecycle.spec_for(target)
    if dry_run:
        sys.stdout.write(service.render(spec))
        return
    outcome = lifecycle.install(target, service, timeout_s=None if no_wait else timeout, say=typer.echo)
    config_text = str(spec.config) if spec.config else "built-in defaults"
    if no_wait:
        typer.echo(
            f"the {name} service starts mlxd now and at every login ({outcome.url}, config: {config_text})"
        )
        typer.echo("check it with `mlxd status`")
        return
    _say_started(outcome)
    typer.echo(f"the {name} service starts it at every login too (config: {config_text})")


def uninstall(config: ConfigOption = None) -> None:
    """Stop mlxd and remove its login service.

    Nothing to do when it is not installed.
    """
    from mlxd.cli import lifecycle
    from mlxd.cli.managers import LOGIN_SERVICES, login_service

    timeout_s = lifecycle.stop_timeout(_lenient_target(config))
    removed = False
    for name in LOGIN_SERVICES:
        service = login_service(name)
        if service.is_installed():
            path = service.service_file()
            service.uninstall(timeout_s)
            typer.echo(f"removed the {name} service ({path})")
            removed = True
    if not removed:
        typer.echo("mlxd is not installed as a login service")


def register(app: typer.Typer) -> None:
    """Add the daemon-control commands to the CLI."""
    for command in (start, stop, restart, status, logs, install, uninstall):
        app.command()(command)
