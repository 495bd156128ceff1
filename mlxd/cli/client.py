"""The CLI's HTTP client for a running daemon (the CLI never imports the daemon)."""

from __future__ import annotations

from typing import Any

import httpx

from mlxd.config.schema import MlxdConfig
from mlxd.errors import DaemonNotRunningError, MlxdError


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

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
