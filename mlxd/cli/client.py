"""The CLI's HTTP client for a running daemon (the CLI never imports the daemon)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from mlxd.config.schema import MlxdConfig
from mlxd.errors import ConfigError, DaemonNotRunningError, MlxdError, ModelNotFoundError


def daemon_url(config: MlxdConfig) -> str:
    """The base URL the daemon of this config listens on (loopback when bound to all)."""
    host = config.server.host
    if host in {"0.0.0.0", "::", ""}:  # noqa: S104 - we connect, we do not bind
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{config.server.port}"


class DaemonClient:
    """A small synchronous client for mlxd's own endpoints."""

    def __init__(self, base_url: str, api_key: str = "", timeout: float = 10.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    @classmethod
    def for_config(cls, config: MlxdConfig, timeout: float = 10.0) -> DaemonClient:
        """A client for the daemon that ``config`` describes."""
        return cls(daemon_url(config), config.server.api_key.get_secret_value(), timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; a refused connection becomes ``DaemonNotRunningError``."""
        try:
            return self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
            raise DaemonNotRunningError(f"mlxd is not running at {self.base_url}") from exc
        except httpx.TimeoutException as exc:
            raise MlxdError(f"mlxd at {self.base_url} did not answer in time") from exc

    def is_healthy(self) -> bool:
        """True when ``GET /health`` answers 200."""
        try:
            return self.request("GET", "/health").status_code == 200
        except MlxdError:
            return False

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request and return its JSON body, raising the server's error message on 4xx/5xx."""
        response = self.request(method, path, **kwargs)
        body = response.json() if response.content else None
        if response.status_code >= 400:
            error = (body or {}).get("error", {}) if isinstance(body, dict) else {}
            raise MlxdError(error.get("message") or f"HTTP {response.status_code}", code=error.get("code"))
        return body

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Like ``json``, but server errors become their ``mlxd.errors`` class.

        ``model_not_found`` becomes ``ModelNotFoundError``; a rejected config (the 400 of
        ``POST /mlxd/reload``) becomes ``ConfigError`` with one problem per line.
        """
        response = self.request(method, path, **kwargs)
        body = _body(response)
        if response.status_code < 400:
            return body
        raise error_from_body(body, response.status_code)

    def status(self) -> dict[str, Any]:
        """``GET /mlxd/status``."""
        body = self.call("GET", "/mlxd/status")
        return body if isinstance(body, dict) else {}

    def load_model(self, alias: str) -> Any:
        """``POST /mlxd/models/{alias}/load``."""
        return self.call("POST", f"/mlxd/models/{quote(alias, safe='')}/load")

    def unload_model(self, alias: str) -> Any:
        """``POST /mlxd/models/{alias}/unload``."""
        return self.call("POST", f"/mlxd/models/{quote(alias, safe='')}/unload")

    def reload(self) -> dict[str, Any]:
        """``POST /mlxd/reload``: the new generation, or ``ConfigError`` when rejected (400)."""
        response = self.request("POST", "/mlxd/reload")
        body = _body(response)
        if response.status_code == 400:
            error = error_from_body(body, 400)
            if isinstance(error, ConfigError):
                raise error
            raise ConfigError(error.message, problems=_problems(body) or None)
        if response.status_code > 400:
            raise error_from_body(body, response.status_code)
        return body if isinstance(body, dict) else {}

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()


def _body(response: httpx.Response) -> Any:
    try:
        return response.json() if response.content else None
    except ValueError:
        return None


def _problems(body: Any) -> list[str]:
    """Config problems from an error body, wherever the server put the list."""
    if not isinstance(body, dict):
        return []
    error = body.get("error")
    for source in (error if isinstance(error, dict) else {}, body):
        for key in ("problems", "errors", "details"):
            items = source.get(key)
            if isinstance(items, list) and items:
                return [_problem_text(item) for item in items]
    return []


def _problem_text(item: Any) -> str:
    return str(item.get("message", item)) if isinstance(item, dict) else str(item)


def error_from_body(body: Any, status: int) -> MlxdError:
    """The ``mlxd.errors`` exception for an OpenAI-style error body."""
    body = body if isinstance(body, dict) else {}
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = str(error.get("message") or f"HTTP {status}")
    code = error.get("code")
    if code == "model_not_found":
        return ModelNotFoundError(message)
    if code in {"invalid_config", "config_error"}:
        return ConfigError(message, problems=_problems(body) or None)
    return MlxdError(message, code=code if isinstance(code, str) else None)
