"""The one table mapping errors to a one-line message, a hint and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from mlxd.errors import (
    ConfigError,
    DaemonNotRunningError,
    HubError,
    MlxdError,
    ModelNotFoundError,
    ServiceManagerError,
)

#: BSD sysexits' EX_CONFIG: what launchd and systemd users expect for a bad config.
EXIT_CONFIG = 78
#: LSB "program is not running", as ``status`` commands answer.
EXIT_NOT_RUNNING = 3

P = ParamSpec("P")
R = TypeVar("R")

_TABLE: list[tuple[type[MlxdError], int, str | None]] = [
    (ConfigError, EXIT_CONFIG, "fix the file, then check it with `mlxd config check`"),
    (DaemonNotRunningError, EXIT_NOT_RUNNING, "start it with `mlxd start`"),
    (ModelNotFoundError, 1, "see the configured aliases with `mlxd models list`"),
    (ServiceManagerError, 1, None),
    (HubError, 1, None),
    (MlxdError, 1, None),
]


def exit_code_for(error: MlxdError) -> int:
    """The exit code the table assigns to an error."""
    for kind, code, _ in _TABLE:
        if isinstance(error, kind):
            return code
    return 1


def report(error: MlxdError) -> int:
    """Print the error as one line (plus its details and hint) on stderr; return the exit code."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {error.message}", markup=True)
    if isinstance(error, ConfigError) and error.problems != [error.message]:
        for problem in error.problems:
            console.print(f"  {problem}", markup=False)
    hint = error.hint or next((h for kind, _, h in _TABLE if isinstance(error, kind)), None)
    if hint:
        console.print(f"[dim]hint:[/] {hint}", markup=True)
    return exit_code_for(error)


def verbose() -> bool:
    """``--verbose`` anywhere on the command line shows tracebacks."""
    return "--verbose" in sys.argv


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn an ``MlxdError`` escaping a command into its one-line report and exit code."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except MlxdError as error:
            if verbose():
                raise
            raise SystemExit(report(error)) from None

    return wrapper
