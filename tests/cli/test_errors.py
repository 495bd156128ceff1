"""The CLI's one error map: every ``MlxdError`` has an exit code and reads as one line.

The walk covers every subclass in the package (they are all imported first) but the HTTP
layer's own refusals, which never reach the CLI (it never imports ``mlxd.http``), so a new
error class fails here until someone decides what the CLI does with it.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from typer.testing import CliRunner

import mlxd
from mlxd.cli.app import app
from mlxd.cli.errors import exit_code_for, hint_for, report
from mlxd.errors import ConfigError, MlxdError, error_for_code
from tests.cli.conftest import Home


def _all_subclasses() -> list[type[MlxdError]]:
    for module in pkgutil.walk_packages(mlxd.__path__, "mlxd."):
        importlib.import_module(module.name)
    found: list[type[MlxdError]] = []
    pending = [MlxdError]
    while pending:
        for sub in pending.pop().__subclasses__():
            if not sub.__module__.startswith("mlxd.http."):
                found.append(sub)
            pending.append(sub)
    return found


#: Every error class by name, and the exit code the CLI gives it.
EXIT_CODES = {
    "MlxdError": 1,
    "ConfigError": 78,
    "RequestError": 1,
    "BodyError": 1,
    "ContextLengthError": 1,
    "GrammarError": 1,
    "ModelNotFoundError": 1,
    "CapacityError": 1,
    "UnavailableError": 1,
    "ModelLoadError": 1,
    "ModelNotDownloadedError": 1,
    "ModelDirNotFoundError": 1,
    "ModelCorruptError": 1,
    "ModelUnsupportedError": 1,
    "GenerationError": 1,
    "DaemonNotRunningError": 3,
    "StartupError": 1,
    "RankFailedError": 1,
    "ServiceManagerError": 1,
    "HubError": 1,
    "Interrupted": 130,
    "GaveUp": 0,
    "StartFailed": 1,
}


def make(kind: type[MlxdError], message: str) -> MlxdError:
    if kind.__name__ == "GaveUp":
        return kind(MlxdError(message))  # type: ignore[arg-type]
    return kind(message)


def test_every_error_class_has_a_decided_exit_code() -> None:
    classes = [MlxdError, *_all_subclasses()]
    assert sorted(c.__name__ for c in classes) == sorted(EXIT_CODES)
    for kind in classes:
        assert exit_code_for(make(kind, "boom")) == EXIT_CODES[kind.__name__], kind


@pytest.mark.parametrize("kind", [MlxdError, *_all_subclasses()], ids=lambda k: k.__name__)
def test_every_error_reads_as_one_line_with_at_most_a_hint(
    kind: type[MlxdError], capsys: pytest.CaptureFixture[str]
) -> None:
    error = make(kind, "first line\nforged: second line\r\u2028third")
    code = report(error)
    lines = capsys.readouterr().err.splitlines()
    assert code == EXIT_CODES[kind.__name__]
    assert lines[0].endswith(": first line\\nforged: second line\\r\\u2028third")
    assert all(line.startswith("hint: ") for line in lines[1:])
    assert len(lines) <= 2


def test_error_codes_read_back_as_their_class() -> None:
    """What the daemon answers becomes the same class on the CLI's side."""
    for kind in _all_subclasses():
        if kind.__module__ == "mlxd.errors" and kind.code != MlxdError.code:
            assert type(error_for_code(kind.code, "m")) is kind
    assert type(error_for_code("something_new", "m")) is MlxdError


runner = CliRunner()


def test_verbose_is_a_root_option_that_lets_the_traceback_through(home: Home) -> None:
    quiet = runner.invoke(app, ["ps"])
    assert quiet.exit_code == 3
    assert quiet.exception is None or isinstance(quiet.exception, SystemExit)
    assert "Traceback" not in quiet.stderr
    loud = runner.invoke(app, ["--verbose", "ps"])
    assert type(loud.exception).__name__ == "DaemonNotRunningError"


def test_an_unexpected_exception_is_one_line_too(home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlxd.cli.target

    def broken(*_: object, **__: object) -> None:
        raise ValueError("something nobody planned for\nsecond line")

    monkeypatch.setattr(mlxd.cli.target, "resolve", broken)
    result = runner.invoke(app, ["ps"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: unexpected error: ValueError: something nobody planned for",
        "hint: run it again as `mlxd --verbose …` to see the traceback",
    ]


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (ConfigError("config file not found: /x.toml"), "mlxd config init"),
        (ConfigError("invalid config", problems=["server.port (command line): too big"]), "command line"),
        (
            ConfigError("invalid config", problems=["server.port (from MLXD_SERVER__PORT): not an int"]),
            "environment",
        ),
        (ConfigError("invalid config", problems=["server.port (line 2): too big"]), "fix the file"),
    ],
)
def test_a_config_errors_hint_names_where_it_comes_from(error: ConfigError, hint: str) -> None:
    assert hint in (hint_for(error) or "")
