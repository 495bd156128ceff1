"""The error taxonomy every layer raises (stdlib only).

    MlxdError
    ├── ConfigError                   the config file or environment is invalid
    ├── RequestError                  the request is invalid (HTTP 400)
    │   └── ContextLengthError        the prompt does not fit the model's context
    ├── ModelNotFoundError            a name that is no configured alias (HTTP 404)
    ├── CapacityError                 the wait queue is full (HTTP 429)
    ├── UnavailableError              loading or draining; try again (HTTP 503)
    ├── ModelLoadError                weights could not be loaded
    ├── GenerationError               generation failed inside the engine
    ├── DaemonNotRunningError         the CLI found no daemon to talk to
    ├── ServiceManagerError           launchctl / systemctl refused
    └── HubError                      downloading or validating a model failed

The HTTP layer maps these to statuses in one table (``mlxd.http.errors``), the CLI
maps them to a message, a hint and an exit code in another (``mlxd.cli.errors``).
"""

from __future__ import annotations


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

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
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


class GenerationError(MlxdError):
    """Generation failed inside the engine for one request."""

    code = "internal_error"


class DaemonNotRunningError(MlxdError):
    """The CLI could not reach a running daemon."""

    code = "daemon_not_running"


class ServiceManagerError(MlxdError):
    """launchctl or systemctl failed; the message carries the tool's own words."""

    code = "service_manager_failed"


class HubError(MlxdError):
    """Downloading or validating a model from the Hugging Face Hub failed."""

    code = "hub_error"
