"""The CLI's one error map: an exception leaving any command becomes one line, a hint, an exit code.

The root command of the Typer app (``mlxd.cli.app``) runs every command inside
``reporting``, so no command handles errors itself: it raises an ``mlxd.errors`` class
and the table below decides what the user reads and what the shell gets. Anything else
that escapes is a bug, still reported as one line; ``mlxd --verbose`` shows tracebacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from typer import Abort, Exit
from typer.exceptions import TyperException

from mlxd.errors import (
    ConfigError,
    DaemonNotRunningError,
    MlxdError,
    ModelNotFoundError,
    one_line,
)

#: BSD sysexits' EX_CONFIG: what launchd and systemd users expect for a bad config.
EXIT_CONFIG = 78
#: LSB "program is not running", as ``status`` commands answer.
EXIT_NOT_RUNNING = 3
#: A command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class Interrupted(MlxdError):
    """The user pressed Ctrl-C; the message says what was kept."""

    code = "interrupted"


class GaveUp(MlxdError):
    """A supervised daemon failed to start and must not be relaunched: exit 0, reason recorded.

    launchd relaunches a job that exits non-zero forever, so ``mlxd serve`` under a
    supervisor reports the failure, records it for ``mlxd status`` and exits 0.
    """

    code = "gave_up"

    def __init__(self, cause: MlxdError) -> None:
        super().__init__(cause.message, hint="fix it, then `mlxd start` tries again")
        self.cause = cause


class StartFailed(MlxdError):
    """The daemon did not become healthy; ``log_lines`` says why, in its own words."""

    code = "start_failed"

    def __init__(
        self,
        message: str,
        log_lines: list[str] | None = None,
        hint: str = "see the whole log with `mlxd logs`",
    ) -> None:
        super().__init__(message, hint=hint)
        self.log_lines = log_lines or []


#: error class -> (exit code, default hint, what the line starts with). First match wins,
#: so subclasses come first.
_TABLE: list[tuple[type[MlxdError], int, str | None, str]] = [
    (GaveUp, 0, None, "error"),
    (Interrupted, EXIT_INTERRUPTED, None, "interrupted"),
    (ConfigError, EXIT_CONFIG, "fix the file, then check it with `mlxd config check`", "error"),
    (DaemonNotRunningError, EXIT_NOT_RUNNING, "start it with `mlxd start`", "error"),
    (ModelNotFoundError, 1, "see the configured aliases with `mlxd models list`", "error"),
    (MlxdError, 1, None, "error"),
]


def _entry(error: MlxdError) -> tuple[int, str | None, str]:
    return next((code, hint, label) for kind, code, hint, label in _TABLE if isinstance(error, kind))


def exit_code_for(error: MlxdError) -> int:
    """The exit code the table assigns to an error."""
    return _entry(error)[0]


def hint_for(error: MlxdError) -> str | None:
    """What to do about an error: its own hint, else the table's (for a config error, one
    that names where its problems come from when none is the file)."""
    if error.hint:
        return error.hint
    if isinstance(error, ConfigError) and (hint := _config_hint(error)) is not None:
        return hint
    return _entry(error)[1]


def _config_hint(error: ConfigError) -> str | None:
    """A config error's hint when the file is not where its problems come from."""
    if error.message.startswith("config file not found"):
        return "create one with `mlxd config init`, or pass the file you meant with --config"
    problems = error.problems
    if problems and all("(command line)" in p for p in problems):
        return "fix the option on the command line (`mlxd serve --help` lists them)"
    if problems and all("(from MLXD_" in p for p in problems):
        return "fix or unset the environment variable it names"
    return None


def report(error: MlxdError) -> int:
    """Print the error as one line (then its details and hint) on stderr; return the exit code."""
    from rich.console import Console
    from rich.text import Text

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    code, _, label = _entry(error)
    console.print(Text.assemble((f"{label}:", "bold red"), " ", one_line(error.message)))
    for line in details(error):
        console.print(Text(f"  {one_line(line)}"))
    if hint := hint_for(error):
        console.print(Text.assemble(("hint:", "dim"), " ", one_line(hint)))
    return code


def details(error: MlxdError) -> list[str]:
    """The lines shown under the message: a config's problems, a failed start's log lines."""
    if isinstance(error, GaveUp):
        return details(error.cause)
    if isinstance(error, ConfigError):
        return [p for p in error.problems if p != error.message]
    if isinstance(error, StartFailed) and error.log_lines:
        return ["last log lines:", *error.log_lines]
    return []


def _unexpected(exc: Exception) -> MlxdError:
    first = (str(exc).strip().splitlines() or [""])[0]
    return MlxdError(
        f"unexpected error: {type(exc).__name__}: {first}".rstrip(": "),
        hint="run it again as `mlxd --verbose …` to see the traceback",
    )


@contextmanager
def reporting(verbose: Callable[[], bool]) -> Iterator[None]:
    """Run a command: errors become their report and exit code; ``verbose()`` lets them through."""
    try:
        yield
    except (Exit, Abort, TyperException):
        raise  # Typer's own: typer.Exit, usage errors
    except MlxdError as error:
        if verbose():
            raise
        raise Exit(report(error)) from None
    except Exception as exc:
        if verbose():
            raise
        raise Exit(report(_unexpected(exc))) from None
