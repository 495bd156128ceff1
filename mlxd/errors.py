"""The error taxonomy every layer raises (stdlib only).

    MlxdError
    ├── ConfigError                   the config file or environment is invalid
    ├── RequestError                  the request is invalid (HTTP 400)
    │   └── ContextLengthError        the prompt does not fit the model's context
    ├── ModelNotFoundError            a name that is no configured alias (HTTP 404)
    ├── CapacityError                 the wait queue is full (HTTP 429)
    ├── UnavailableError              loading or draining; try again (HTTP 503)
    ├── ModelLoadError                weights could not be loaded this time (HTTP 503, retry)
    │   ├── ModelNotDownloadedError   the alias's repo is not in the cache (HTTP 404)
    │   ├── ModelDirNotFoundError     the alias's local directory does not exist (HTTP 404)
    │   ├── ModelCorruptError         incomplete, unreadable or non-finite weights (HTTP 422)
    │   └── ModelUnsupportedError     not an MLX model, or it carries code (HTTP 422)
    ├── GenerationError               generation failed inside the engine
    ├── DaemonNotRunningError         the CLI found no daemon to talk to
    ├── StartupError                  the daemon cannot start (port in use, cannot bind, MLX broken)
    ├── RankFailedError               a rank of a distributed daemon died or stopped answering
    ├── ServiceManagerError           launchctl / systemctl refused
    └── HubError                      downloading or validating a model failed

The HTTP layer maps these to statuses in one table (``mlxd.http.errors``), the CLI
maps them to a message, a hint and an exit code in another (``mlxd.cli.errors``).

A model that cannot be loaded fails in one of two ways. What passes (the engine
restarting, no room yet) stays a plain ``ModelLoadError``: 503 with ``Retry-After``.
What only a person can fix gets a subclass that the HTTP table answers with a status
OpenAI-style clients never retry (they retry 408, 409, 429 and every 5xx: these get 404
or 422), so a missing download is reported at once instead of after a minute of silent
retries.
"""

from __future__ import annotations

import json
import re

#: Characters that end or fake a line: C0 and C1 controls, DEL, the Unicode separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters escaped (``\\n``, ``\\u2028``).

    Every message mlxd prints or logs is one line: a value from a request or a file can
    then neither split it nor forge a line after it.
    """
    return _CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], text)


class MlxdError(Exception):
    """Base of every error mlxd raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint


class ConfigError(MlxdError):
    """The config is invalid; ``problems`` holds one line per offending key path."""

    code = "invalid_config"

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class RequestError(MlxdError):
    """A request that cannot be served as sent; ``param`` names the field."""

    code = "invalid_parameter"

    def __init__(
        self, message: str, *, param: str | None = None, code: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.param = param


class ContextLengthError(RequestError):
    """The prompt plus requested tokens exceed the model's context length."""

    code = "context_length_exceeded"


class ModelNotFoundError(MlxdError):
    """A request or command named a model that is no configured alias."""

    code = "model_not_found"


class CapacityError(MlxdError):
    """The wait queue is full; ``retry_after`` is a hint in seconds."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class UnavailableError(MlxdError):
    """The daemon is draining or a model is loading; ``retry_after`` in seconds."""

    code = "unavailable"

    def __init__(self, message: str, *, code: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ModelLoadError(MlxdError):
    """Weights or tokenizer could not be loaded; what was serving keeps serving."""

    code = "model_load_failed"


class ModelNotDownloadedError(ModelLoadError):
    """An alias names a Hub repo that is not in the cache; the message says what to pull."""

    code = "model_not_downloaded"


class ModelDirNotFoundError(ModelLoadError):
    """An alias names a local model directory that does not exist."""

    code = "model_dir_not_found"


class ModelCorruptError(ModelLoadError):
    """The model's files are incomplete, unreadable, or hold weights that are not finite."""

    code = "model_corrupt"


class ModelUnsupportedError(ModelLoadError):
    """The directory is no MLX model this mlx-lm can load, or it carries code mlxd never runs."""

    code = "model_unsupported"


class GenerationError(MlxdError):
    """Generation failed inside the engine for one request."""

    code = "internal_error"


class DaemonNotRunningError(MlxdError):
    """The CLI could not reach a running daemon."""

    code = "daemon_not_running"


class StartupError(MlxdError):
    """The daemon cannot start: its port is taken, its address cannot be bound, its MLX does not load."""

    code = "startup_failed"


class RankFailedError(MlxdError):
    """A rank of a distributed daemon died or stopped answering; the message names it and
    its host. The daemon stops (a supervisor may restart it)."""

    code = "rank_failed"


class ServiceManagerError(MlxdError):
    """launchctl or systemctl failed; the message carries the tool's own words."""

    code = "service_manager_failed"


class HubError(MlxdError):
    """Downloading or validating a model from the Hugging Face Hub failed."""

    code = "hub_error"


def _subclasses(kind: type[MlxdError]) -> list[type[MlxdError]]:
    found = []
    for sub in kind.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def error_for_code(code: object, message: str) -> MlxdError:
    """The exception of this module whose ``code`` is ``code`` (what a client reads back
    from a response), else a plain ``MlxdError`` carrying the code."""
    if code != MlxdError.code:
        for kind in _subclasses(MlxdError):
            if kind.__module__ == __name__ and kind.code == code:
                return kind(message)
    return MlxdError(message, code=code if isinstance(code, str) else None)
